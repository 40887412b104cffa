"""Rate limits per credential: a 429 answers one credential, so it throttles that credential only.

A provider's 429 says how long *this credential* must wait (`Retry-After`, or `X-RateLimit-Reset`
as a Unix time; `DEFAULT_WAIT` when it says neither). `UpstreamClient` records that wait in a
`RateLimits` under `throttle_key` (the provider and a hash of the credential, never the credential)
and, until it has passed, answers that credential's calls to that provider `UpstreamRateLimited`
with the time left, without sending them. Other credentials, and the circuit breaker, never see it.

`MemoryRateLimits` keeps the waits of this process: at most `max_entries` credentials (the ones
whose waits end soonest go first), each wait at most `MAX_WAIT`, so many credentials cannot grow
it without end. `RedisRateLimits` keeps them in the Redis the idempotency keys live in (one string
per throttled credential expiring with its wait, `billing-gateway:throttle:<key>`), so every
replica agrees. A store that cannot answer raises `RateLimitsUnavailable`, and the client carries
on without it: the credential is not throttled here, and the provider says so again if it must.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import math
import time
from collections.abc import Mapping
from typing import Protocol

from redis.asyncio import Redis

from gateway.credentials import Credential
from gateway.upstreams.mapping import parse_retry_after
from gateway.upstreams.redis_keys import DEFAULT_TIMEOUT, RedisKeyspace
from gateway.upstreams.resilience import Clock
from gateway.upstreams.reuse import credential_digest
from gateway.upstreams.store_health import StoreHealth

# A 429 that names no wait: the first step of the exponential backoff Autoposting advises.
DEFAULT_WAIT = 1.0
# The longest wait kept: a provider's (or a broken proxy's) "retry in a year" locks a credential
# out of the gateway for an hour at most; the provider can always say it again.
MAX_WAIT = 3600.0
# Throttled credentials kept per process (`MemoryRateLimits`): about 140 bytes each.
DEFAULT_MAX_ENTRIES = 10_000
KEY_PREFIX = "billing-gateway:throttle:"
# `X-RateLimit-Reset` above this is in milliseconds (seconds would be the year 5138).
_MILLISECONDS = 1e11


def throttle_key(provider: str, credential: Credential | None) -> str:
    """The key of one credential's rate limit at one provider."""
    return f"{provider} {credential_digest(credential)}"


def rate_limit_wait(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a 429 asks the caller to wait: `Retry-After` (seconds or an HTTP date), else
    `X-RateLimit-Reset` (a Unix time) from `now`; None when it says neither."""
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if retry_after is not None:
        return retry_after
    raw = (headers.get("x-ratelimit-reset") or "").strip()
    try:
        reset = float(raw)
    except ValueError:
        return None
    if not math.isfinite(reset) or reset < 0:
        return None
    if reset > _MILLISECONDS:
        reset /= 1000
    return max(0.0, reset - (time.time() if now is None else now))


def held_wait(wait: float | None) -> float:
    """How long a 429 that asked for `wait` throttles its credential: `DEFAULT_WAIT` when it asked
    for nothing, at most `MAX_WAIT`."""
    return min(MAX_WAIT, DEFAULT_WAIT if wait is None else max(0.0, wait))


class RateLimitsUnavailable(Exception):
    """A shared `RateLimits` failed or did not answer in time; its message names no key."""


class RateLimits(Protocol):
    """How long each throttled credential must still wait, by `throttle_key`.

    Either method may raise `RateLimitsUnavailable`, and nothing else, when the store fails.
    """

    async def remaining(self, key: str) -> float:
        """Seconds `key` must still wait; 0 when it is not throttled."""

    async def hold(self, key: str, seconds: float) -> None:
        """Throttle `key` for `seconds` from now (replacing any earlier wait; 0: not at all)."""


class MemoryRateLimits:
    """`RateLimits` of this process, bounded by `max_entries` (see the module docstring)."""

    def __init__(
        self, *, max_entries: int = DEFAULT_MAX_ENTRIES, clock: Clock = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._until: dict[str, float] = {}

    async def remaining(self, key: str) -> float:
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[key]
            return 0.0
        return left

    async def hold(self, key: str, seconds: float) -> None:
        if seconds <= 0:
            self._until.pop(key, None)
            return
        now = self._clock()
        self._until[key] = now + seconds
        if len(self._until) > self.max_entries:
            self._shrink(now)

    def _shrink(self, now: float) -> None:
        # Past the bound: drop what has ended, then the waits that end soonest, down to 90% of the
        # bound, so that a full pass is paid once per tenth of it. A credential dropped early is
        # sent again, and its provider throttles it again.
        self._until = {key: until for key, until in self._until.items() if until > now}
        excess = len(self._until) - self.max_entries * 9 // 10
        if excess > 0:
            for key, _ in heapq.nsmallest(excess, self._until.items(), key=lambda kv: kv[1]):
                del self._until[key]

    def __len__(self) -> int:
        return len(self._until)


class RedisRateLimits(RedisKeyspace):
    """`RateLimits` in Redis, shared by processes: one string per throttled credential, expiring
    with its wait (on Redis's clock), so what it holds is bounded by the 429s of the last
    `MAX_WAIT`."""

    unavailable = RateLimitsUnavailable

    def __init__(
        self, client: Redis, *, prefix: str = KEY_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, prefix=prefix, timeout=timeout)
        # Lookups in flight by key: a request's GETs all carry the same credential (25 accounts:
        # 25 concurrent lookups of one key), so they share one PTTL rather than send one each.
        self._lookups: dict[str, asyncio.Future[float]] = {}

    async def remaining(self, key: str) -> float:
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._remaining(key))
            self._lookups[key] = lookup
            lookup.add_done_callback(functools.partial(self._looked_up, key))
        return await asyncio.shield(lookup)

    def _looked_up(self, key: str, lookup: asyncio.Future[float]) -> None:
        if self._lookups.get(key) is lookup:
            del self._lookups[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every waiter may have been cancelled

    async def _remaining(self, key: str) -> float:
        left = await self.command("PTTL", self._client.pttl(self.redis_key(key)))
        # -2: no such key; -1: a key without expiry, which this class never writes.
        return left / 1000 if isinstance(left, int) and left > 0 else 0.0

    async def hold(self, key: str, seconds: float) -> None:
        if seconds > 0:
            px = max(1, math.ceil(seconds * 1000))
            await self.command("SET", self._client.set(self.redis_key(key), b"1", px=px))
        else:
            await self.command("DEL", self._client.delete(self.redis_key(key)))


class CredentialThrottle:
    """One client's view of the rate limits: the wait left for a credential at its provider, and
    holding one after a 429. A store that cannot answer throttles nothing (warned once)."""

    def __init__(self, provider: str, rate_limits: RateLimits) -> None:
        self.provider = provider
        self.rate_limits = rate_limits
        self._health = StoreHealth(
            f"{provider} rate limit store",
            {"get": "throttled credentials are sent", "set": "429s are not kept"},
        )

    async def remaining(self, credential: Credential | None) -> float:
        """Seconds `credential` must still wait here (0: none, or the store cannot say)."""
        try:
            left = await self.rate_limits.remaining(throttle_key(self.provider, credential))
        except RateLimitsUnavailable as exc:
            self._health.failed("get", exc)
            return 0.0
        self._health.answered("get")
        return left

    async def hold(self, credential: Credential | None, retry_after: float | None) -> None:
        """Throttle `credential` here for the wait its 429 named (`held_wait`)."""
        try:
            await self.rate_limits.hold(
                throttle_key(self.provider, credential), held_wait(retry_after)
            )
        except RateLimitsUnavailable as exc:
            self._health.failed("set", exc)
            return
        self._health.answered("set")
