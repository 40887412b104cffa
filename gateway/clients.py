"""What lives as long as the app: the upstream clients, the models normalized from the answers
they share between requests, and the recorder of the contract drift those answers show."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    import httpx

import orjson

from gateway.normalize import Drift, DriftRecorder
from gateway.provider import Provider
from gateway.settings import Settings
from gateway.upstreams import AlmanacClient, AutopostingClient
from gateway.upstreams.reuse import CachePolicy, MemoryResponseCache, ResponseCache
from gateway.upstreams.stale import MemoryStaleStore, StaleIfError, StaleStore
from gateway.upstreams.throttle import MemoryRateLimits, RateLimits

V = TypeVar("V")

# Normalized answers kept for reuse (`NormalizedAnswers`): a few hundred small models (256 billing
# answers, both tables: about 3.5 MB, tracemalloc).
DEFAULT_NORMALIZED_ENTRIES = 256
# An answer whose compact JSON is longer is normalized for each request and kept in neither table,
# so that what they hold stays bounded however an upstream answers (a billing answer is about
# 1.6 KB; 256 answers at this bound hold about 70 MB: docs/performance.md).
MAX_KEPT_ANSWER_BYTES = 32 * 1024


class NormalizedAnswers:
    """Normalized models by the upstream JSON they were made from: by identity, and by content
    when its normalization showed no drift.

    Coalesced and cached GETs hand one decoded answer to every request that shares them; each
    request normalized it again, which cost more than the rest of its loads. Models are frozen,
    so one normalization serves them all. An entry holds its answer, so the id it is keyed by
    cannot be reused while it is kept. Each loader keys its own kind: one answer may be
    normalized differently by two loaders (their options are the app's, the same for every
    answer).

    A new answer equal to one normalized before (most of them: billing state changes seldom)
    gets that one's models, looked up by its compact JSON, when that normalization reported no
    contract drift: normalizing it again would make the same models and report nothing. An
    answer that showed drift is normalized every time, so that drift is counted per answer.
    Least recently used entries of either table go beyond `max_entries`; an answer longer than
    `MAX_KEPT_ANSWER_BYTES` is kept in neither.
    """

    def __init__(self, max_entries: int = DEFAULT_NORMALIZED_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str], tuple[object, object]] = OrderedDict()
        self._by_content: OrderedDict[tuple[str, bytes], object] = OrderedDict()

    def get(
        self,
        kind: str,
        payload: object,
        normalize: Callable[[DriftRecorder], V],
        drift: DriftRecorder,
    ) -> V:
        """`normalize(drift)` of `payload`, made once while `payload` (or, without drift, an
        answer of the same content) is kept."""
        key = (id(payload), kind)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is payload:
            self._entries.move_to_end(key)
            return cast(V, entry[1])
        try:
            text: bytes | None = orjson.dumps(payload)
        except TypeError:  # an integer beyond 64 bits: kept by identity only
            text = None
        if text is not None and len(text) > MAX_KEPT_ANSWER_BYTES:
            return normalize(drift)
        content = (kind, text) if text is not None else None
        value = self._by_content.get(content) if content is not None else None
        if value is not None and content is not None:
            self._by_content.move_to_end(content)
        else:
            drifted = False

            def recording(found: Drift) -> None:
                nonlocal drifted
                drifted = True
                drift(found)

            value = normalize(recording)
            if content is not None and not drifted:
                _keep(self._by_content, content, value, self.max_entries)
        _keep(self._entries, key, (payload, value), self.max_entries)
        return cast(V, value)

    def __len__(self) -> int:
        return len(self._entries)


K = TypeVar("K")


def _keep(table: OrderedDict[K, Any], key: K, value: object, max_entries: int) -> None:
    table[key] = value
    table.move_to_end(key)
    if len(table) > max_entries:
        table.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Clients:
    """The upstream clients, shared by all requests for the life of the app, the models
    normalized from the answers they share between requests, and where the drift found while
    normalizing goes (each normalization reports its own: a shared answer counts once)."""

    almanac: AlmanacClient
    autoposting: AutopostingClient
    drift: DriftRecorder
    normalized: NormalizedAnswers = field(default_factory=lambda: NormalizedAnswers())
    # The last good billing answers, served when a provider is down (off unless configured).
    stale: StaleIfError = field(default_factory=StaleIfError)

    @classmethod
    def create(
        cls,
        settings: Settings,
        transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
        *,
        cache: ResponseCache | None = None,
        drift: DriftRecorder,
        rate_limits: RateLimits | None = None,
        stale_store: StaleStore | None = None,
    ) -> Clients:
        """Clients for both providers; `transports` replaces the network (tests, benchmarks),
        `cache` the in-process cache of upstream answers (a shared one: `RedisResponseCache`).
        Either is used only when the settings cache some answers. `drift` receives the contract
        drift of every answer normalized. `rate_limits` keeps the credentials a 429 throttles and
        `stale_store` the last good billing answers (shared ones: in Redis); by default in this
        process, the latter only when the settings turn stale-if-error on."""
        transports = transports or {}
        policy = CachePolicy(
            state_seconds=settings.cache_seconds, usage_seconds=settings.cache_usage_seconds
        )
        if cache is None and policy.enabled:
            cache = MemoryResponseCache(max_entries=settings.cache_max_entries)
        common: dict[str, Any] = {
            "max_connections": settings.upstream_max_connections,
            "coalesce": settings.coalesce,
            "coalesce_ahead": settings.coalesce_ahead,
            "cache": cache,
            "cache_policy": policy,
            # One store for both clients: its keys name the provider.
            "rate_limits": rate_limits if rate_limits is not None else MemoryRateLimits(),
        }
        if stale_store is None and settings.stale_if_error_seconds > 0:
            stale_store = MemoryStaleStore(max_bytes=settings.stale_max_bytes)
        return cls(
            almanac=AlmanacClient(
                settings.almanac, transport=transports.get(Provider.ALMANAC), **common
            ),
            autoposting=AutopostingClient(
                settings.autoposting, transport=transports.get(Provider.AUTOPOSTING), **common
            ),
            drift=drift,
            stale=StaleIfError(
                stale_store,
                seconds=settings.stale_if_error_seconds,
                usage=settings.stale_if_error_usage,
            ),
        )

    async def aclose(self) -> None:
        """Close both connection pools."""
        await asyncio.gather(self.almanac.aclose(), self.autoposting.aclose())
