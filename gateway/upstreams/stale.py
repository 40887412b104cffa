"""Stale-if-error: the last good answer of a billing read stands in when the provider fails.

`StaleIfError.read` fetches an answer; once the loader has normalized it (`settle`), and when the
policy is on (`seconds` > 0), the answer is kept in a `StaleStore` under its `stale_key` (provider,
resource, account and a hash of the credential, never the credential) for `seconds`. When a fetch
fails with an error that says the provider is down (`STALE_ERRORS`: a timeout, an unreachable
provider, a 5xx or an open circuit) and an answer of that key was kept less than `seconds` ago,
that answer is used instead, and the `Served` result carries the failure it stands in for. Nothing
else is ever answered from the store: not a rejected credential (401, 403), a 404, a rate limit,
nor an answer that breaks the contract; and a usage read (`usage=True`) only when the policy's
`usage` is on. Keys hold the credential's hash, so a kept answer is only ever served to a read made
with the same credential, of the same account.

`MemoryStaleStore` keeps answers in this process, as JSON bytes, at most `max_bytes` in all (least
recently kept go first) and none over `MAX_ENTRY_BYTES`; `RedisStaleStore` keeps them in the Redis
shared by the replicas, each expiring after `seconds`. A store that fails or is slow raises
`CacheUnavailable`: the read goes on without it (nothing kept, or the failure raised as it is).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from redis.asyncio import Redis

from gateway import jsonfast
from gateway.credentials import Credential
from gateway.errors import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.upstreams.redis_keys import DEFAULT_TIMEOUT, RedisKeyspace
from gateway.upstreams.resilience import Clock
from gateway.upstreams.reuse import CacheUnavailable, credential_digest
from gateway.upstreams.store_health import StoreHealth

logger = logging.getLogger("gateway.upstream.stale")

# Failures a kept answer may stand in for: the provider is down, slow or failing fast (an open
# circuit is an `UpstreamUnavailable`).
STALE_ERRORS: tuple[type[UpstreamError], ...] = (
    UpstreamTimeout,
    UpstreamUnreachable,
    UpstreamUnavailable,
)
# Answers larger than this are not kept (a billing answer is a few kilobytes).
MAX_ENTRY_BYTES = 1024 * 1024
# What an in-process entry costs beyond its key and JSON: the tuple, the float, dict slots.
_ENTRY_OVERHEAD = 200
KEY_PREFIX = "billing-gateway:stale:"


def stale_key(provider: str, resource: str, account: str | None, credential: Credential) -> str:
    """The key of one read: provider, resource, account and the credential's hash."""
    where = "-" if account is None else quote(account, safe="")
    return f"{provider} {resource} {where} {credential_digest(credential)}"


@dataclass(frozen=True, slots=True)
class Kept:
    """An answer kept by a `StaleStore`, and when it was fetched (Unix time)."""

    value: object
    fetched_at: float


@dataclass(frozen=True, slots=True)
class Served:
    """What a read answered: `value`, fetched at `fetched_at` (Unix time); `failure` is the error
    a kept answer stands in for, None for a live answer."""

    value: object
    fetched_at: float
    failure: UpstreamError | None = None


class StaleStore(Protocol):
    """Kept answers by `stale_key`. Either method may raise `CacheUnavailable`, and nothing else."""

    async def get(self, key: str) -> Kept | None:
        """The answer kept under `key` and not expired, or None."""

    async def set(self, key: str, kept: Kept, ttl: float) -> None:
        """Keep `kept` under `key` for `ttl` seconds (an answer over `MAX_ENTRY_BYTES`: not)."""


class MemoryStaleStore:
    """A `StaleStore` in this process: at most `max_bytes` of keys and JSON in all."""

    def __init__(self, *, max_bytes: int, clock: Clock = time.monotonic) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.max_bytes = max_bytes
        self.size = 0
        self._clock = clock
        # key -> (expires at, fetched at, JSON): bytes, so a kept answer is never shared mutable.
        self._entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()

    async def get(self, key: str) -> Kept | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, fetched_at, data = entry
        if self._clock() >= expires:
            self._remove(key)
            return None
        return Kept(jsonfast.loads(data), fetched_at)

    async def set(self, key: str, kept: Kept, ttl: float) -> None:
        # A copy: orjson's bytes keep the capacity of its buffer (4 KiB for a 1.7 KB answer),
        # which would make `max_bytes` a quarter of what is held.
        data = bytes(memoryview(jsonfast.dumps(kept.value)))
        if ttl <= 0 or len(data) > MAX_ENTRY_BYTES:
            return
        self._remove(key)
        self._entries[key] = (self._clock() + ttl, kept.fetched_at, data)
        self.size += _cost(key, data)
        while self.size > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= _cost(key, entry[2])

    def __len__(self) -> int:
        return len(self._entries)


def _cost(key: str, data: bytes) -> int:
    return len(key) + len(data) + _ENTRY_OVERHEAD


class RedisStaleStore(RedisKeyspace):
    """A `StaleStore` in Redis, shared by processes: one string per key,
    `billing-gateway:stale:<key>`, holding the fetch time, a newline and the JSON, expiring
    after its `ttl`."""

    unavailable = CacheUnavailable

    def __init__(
        self, client: Redis, *, prefix: str = KEY_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, prefix=prefix, timeout=timeout)

    async def get(self, key: str) -> Kept | None:
        raw = await self.command("GET", self._client.get(self.redis_key(key)))
        if not isinstance(raw, bytes):
            return None
        stamp, _, data = raw.partition(b"\n")
        try:
            return Kept(jsonfast.loads(data), float(stamp))
        except ValueError:  # another version's entry, or a damaged one
            logger.warning("unreadable stale answer in Redis; read as none")
            return None

    async def set(self, key: str, kept: Kept, ttl: float) -> None:
        data = jsonfast.dumps(kept.value)
        if ttl <= 0 or len(data) > MAX_ENTRY_BYTES:
            return
        value = f"{kept.fetched_at!r}\n".encode() + data
        px = max(1, round(ttl * 1000))
        await self.command("SET", self._client.set(self.redis_key(key), value, px=px))


# Told of every kept answer served: provider, resource and the failure's code (metrics).
StaleObserver = Callable[[str, str, str], None]


class StaleIfError:
    """The stale-if-error policy of the app: its store, its window and whether usage reads take
    part (see the module docstring). Off (`seconds` 0, the default) it only fetches.

    A read is two steps: `read` fetches (or finds the kept answer when the fetch fails), the
    caller normalizes what it got, then `settle` keeps a live answer, or counts a kept one served,
    so that an answer that does not normalize is never kept.
    """

    def __init__(
        self,
        store: StaleStore | None = None,
        *,
        seconds: float = 0.0,
        usage: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.seconds = seconds
        self.usage = usage
        self._clock = clock
        self.observer: StaleObserver | None = None
        self._health = StoreHealth(
            "stale answer store",
            {"get": "failures are not answered from it", "set": "answers not kept"},
        )

    @property
    def enabled(self) -> bool:
        """Whether answers are kept and served."""
        return self.store is not None and self.seconds > 0

    def covers(self, *, usage: bool) -> bool:
        """Whether reads of this kind (usage meters or not) are kept and served."""
        return self.enabled and (self.usage or not usage)

    async def read(
        self, key: str, fetch: Callable[[], Awaitable[object]], *, usage: bool = False
    ) -> Served:
        """`fetch()`'s answer; or, when it fails with one of `STALE_ERRORS`, the answer kept under
        `key` within the window, carrying that failure (else the failure is raised)."""
        if not self.covers(usage=usage) or self.store is None:
            return Served(await fetch(), self._clock())
        try:
            payload = await fetch()
        except STALE_ERRORS as failure:
            kept = await self._kept(self.store, key)
            if kept is None:
                raise
            logger.info(
                "answering a stale answer fetched %.0f s ago (%s)",
                self._clock() - kept.fetched_at,
                failure.code.value,
            )
            return Served(kept.value, kept.fetched_at, failure)
        return Served(payload, self._clock())

    async def settle(
        self, key: str, served: Served, *, provider: str, resource: str, usage: bool = False
    ) -> None:
        """`served` was used: keep it when it is live, count it when it was kept."""
        if served.failure is not None:
            if self.observer is not None:
                self.observer(provider, resource, served.failure.code.value)
            return
        if not self.covers(usage=usage) or self.store is None:
            return
        try:
            await self.store.set(key, Kept(served.value, served.fetched_at), self.seconds)
        except CacheUnavailable as exc:
            self._health.failed("set", exc)
            return
        self._health.answered("set")

    async def _kept(self, store: StaleStore, key: str) -> Kept | None:
        try:
            kept = await store.get(key)
        except CacheUnavailable as exc:
            self._health.failed("get", exc)
            return None
        self._health.answered("get")
        if kept is None or self._clock() - kept.fetched_at > self.seconds:
            return None
        return kept
