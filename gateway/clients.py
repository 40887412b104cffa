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

from gateway.normalize import DriftRecorder
from gateway.provider import Provider
from gateway.settings import Settings
from gateway.upstreams import AlmanacClient, AutopostingClient
from gateway.upstreams.reuse import CachePolicy, MemoryResponseCache, ResponseCache
from gateway.upstreams.stale import MemoryStaleStore, StaleIfError, StaleStore
from gateway.upstreams.throttle import MemoryRateLimits, RateLimits

V = TypeVar("V")

# Normalized answers kept for reuse (`NormalizedAnswers`): a few hundred small models.
DEFAULT_NORMALIZED_ENTRIES = 256


class NormalizedAnswers:
    """Normalized models by the identity of the upstream JSON they were made from.

    Coalesced and cached GETs hand one decoded answer to every request that shares them; each
    request normalized it again, which cost more than the rest of its loads. Models are frozen,
    so one normalization serves them all. An entry holds its answer, so the id it is keyed by
    cannot be reused while it is kept; least recently used entries go beyond `max_entries`.
    Each loader keys its own kind: one answer may be normalized differently by two loaders.
    """

    def __init__(self, max_entries: int = DEFAULT_NORMALIZED_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str], tuple[object, object]] = OrderedDict()

    def get(self, kind: str, payload: object, normalize: Callable[[], V]) -> V:
        """`normalize()` of `payload`, made once while `payload` is kept."""
        key = (id(payload), kind)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is payload:
            self._entries.move_to_end(key)
            return cast(V, entry[1])
        value = normalize()
        self._entries[key] = (payload, value)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


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
