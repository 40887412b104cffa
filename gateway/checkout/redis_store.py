"""Idempotency keys in Redis, shared by every replica of the gateway (`GATEWAY_REDIS_URL`).

`RedisIdempotencyStore` keeps the contract of `checkout.idempotency` across processes. A key is one
Redis hash, `billing-gateway:idem:<scope>:<key>` (scopes hold digests only, never a secret), with
the fields `fingerprint`, `token`, `lease` and, once finished, `outcome` (JSON). It expires `ttl`
after it was reserved. Live keys are counted in three sorted sets, `billing-gateway:live:all`,
`...:live:caller:<digest or ->` and `...:live:credential:<provider>:<digest>`, each member the
SHA-1 of a key's name scored by its expiry (ms), each set expiring with its newest member. Each
step is one Lua script, so it is atomic across processes:

- reserve: create the hash if the key is free (Redis's own clock starts the lease), else answer
  what it holds. For a new key, first drop the expired members of the three sets (reclaiming
  expired keys), then refuse the key if the caller's, the credential's or the overall quota is
  full, answering which one and when its oldest key expires. The same token finding its own
  reservation again (a command retried after a lost answer) gets it back instead of waiting on
  itself.
- complete: write `outcome` only if the token still matches and none is written yet.
- release: delete only if the token still matches and no outcome is written, and uncount it.
- admit: the caller's rate (`CheckoutRate`'s algorithm on Redis's clock), one string per caller,
  `billing-gateway:rate:checkout:<digest or ->`, holding its due time and expiring with it: every
  replica draws on the same rate.

Nothing here relies on Redis evicting keys: live keys are bounded by the quotas and leave by
expiry, and under `maxmemory-policy noeviction` (docs/replicas.md) a full Redis refuses writes,
which `reserve` answers as `GatewayUnavailable` (`warn_if_evicting` logs a Redis that would
evict instead).

A caller finding the key in flight with its own fingerprint polls (short, growing pauses) until
an outcome is written (a replay), the key is released (it reserves it itself) or `wait_timeout`
passes: then `GatewayUnavailable`, retryable, so a request never hangs on another. A key whose
owner outlived its `lease` (the process died mid-checkout) is read as an unknown outcome, the
same answer as a timed-out POST, never as a release: the checkout may exist at the provider.

Redis failing (down, timing out, read-only after a failover) during `reserve` is
`GatewayUnavailable` before anything is sent upstream, so an outage can never create a
checkout twice. `complete` and `release` failing are logged and swallowed: the caller still gets
its session or its real error, and the key it leaves in flight reads as an unknown outcome once
its lease ends (conservative: at worst a retry with the same key is refused, never repeated).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from gateway import errors
from gateway.checkout.idempotency import (
    UNKNOWN_OUTCOME,
    Acquired,
    Conflict,
    Outcome,
    RememberedFailure,
    Replay,
    Reservation,
    Scope,
)
from gateway.checkout.limits import CheckoutLimits, CheckoutRate, limit_reached
from gateway.errors import CheckoutLimit, GatewayUnavailable, UpstreamError, UpstreamUnreachable
from gateway.http.health import Check, CheckResult
from gateway.models import CheckoutSession
from gateway.provider import Provider

logger = logging.getLogger("gateway.idempotency")

KEY_PREFIX = "billing-gateway:idem:"
LIVE_PREFIX = "billing-gateway:live:"
RATE_PREFIX = "billing-gateway:rate:checkout:"
# maxmemory policies under which Redis may drop a key to make room (every key here has a TTL).
EVICTING_POLICIES = ("allkeys-", "volatile-")
# Longer than the longest checkout: the profile GET with its retries, then the POST (read timeouts
# up to 30 s). A lease that ends earlier would turn a slow checkout into an unknown outcome.
DEFAULT_LEASE = 120.0
# How long a caller waits for the same key in flight on another request before it is told to
# retry; below common load balancer and client timeouts.
DEFAULT_WAIT_TIMEOUT = 30.0
POLL_FIRST = 0.01
POLL_MAX = 0.2
# Connection defaults of `open_redis`: a black-holed Redis fails a request in seconds, and one
# quick retry covers a pooled connection that a Redis restart closed.
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 2.0
LEASE_ENDED = (
    "The first request with this idempotency key ended without recording its answer (its "
    "gateway stopped mid-checkout)."
)

# KEYS: the key's hash, then the live sets of the caller, the credential and all keys.
# ARGV: fingerprint, token, ttl ms, lease ms, then the quotas in the order of the live sets.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HMGET', KEYS[1], 'fingerprint', 'token', 'lease', 'outcome')
if not held[1] then
  local limits = {'caller_keys', 'credential_keys', 'key_capacity'}
  for i = 1, 3 do
    local live = KEYS[i + 1]
    redis.call('ZREMRANGEBYSCORE', live, '-inf', now)
    if redis.call('ZCARD', live) >= tonumber(ARGV[i + 4]) then
      local oldest = redis.call('ZRANGE', live, 0, 0, 'WITHSCORES')
      return {'limited', limits[i], tostring(tonumber(oldest[2]) - now)}
    end
  end
  local expires = now + tonumber(ARGV[3])
  local member = redis.sha1hex(KEYS[1])
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'token', ARGV[2],
             'lease', now + tonumber(ARGV[4]), 'expires', expires)
  -- In flight, the hash outlives its lease even past the ttl, or a retry with the same key would
  -- find it gone and send a second checkout; `complete` brings its expiry back to `expires`.
  redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), tonumber(ARGV[4])))
  for i = 2, 4 do
    redis.call('ZADD', KEYS[i], expires, member)
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
  return {'acquired', '', ''}
end
if held[2] == ARGV[2] and not held[4] then
  return {'acquired', '', ''}
end
if held[1] ~= ARGV[1] then
  return {'conflict', '', ''}
end
if held[4] then
  return {'finished', held[4], ''}
end
return {'pending', '', tostring(tonumber(held[3]) - now)}
"""
# KEYS: the key's hash. ARGV: token, outcome (JSON), grace ms for a key completed past its ttl.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  redis.call('HSET', KEYS[1], 'outcome', ARGV[2])
  local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
  if expires > 0 then
    -- Completed past its ttl, the outcome is still kept ARGV[3] ms, for callers polling the key.
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now >= expires then expires = now + tonumber(ARGV[3]) end
    redis.call('PEXPIREAT', KEYS[1], expires)
  end
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  local member = redis.sha1hex(KEYS[1])
  for i = 2, #KEYS do
    redis.call('ZREM', KEYS[i], member)
  end
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: the caller's rate string. ARGV: the interval and the tolerance (burst x interval), in ms.
# Answers -1 when admitted, else the milliseconds to wait.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = tonumber(redis.call('GET', KEYS[1]) or now)
if due < now then due = now end
due = due + tonumber(ARGV[1])
if due - now > tonumber(ARGV[2]) then
  return due - tonumber(ARGV[2]) - now
end
redis.call('SET', KEYS[1], due, 'PX', due - now)
return -1
"""


def open_redis(
    url: str,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
) -> Redis:
    """A pooled client for `url` (redis:// or rediss://), shareable by every Redis user of an app.

    The app's lifespan creates it and closes it (`await client.aclose()`).
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
        health_check_interval=30,
    )


def redis_check(client: Redis, *, timeout: float) -> Check:
    """A readiness check: Redis answers PING within `timeout`."""

    async def check() -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await client.ping()
        except (RedisError, TimeoutError) as exc:
            return CheckResult(False, {"error": type(exc).__name__})
        return CheckResult(True, {"latency_ms": round((time.perf_counter() - started) * 1000, 1)})

    return check


class RedisIdempotencyStore:
    """An `IdempotencyStore` in Redis, shared by processes; see the module docstring.

    Redis failing in `admit` falls back to a rate kept in this process (a checkout without a key
    goes on working while Redis is down, still limited); in `reserve` it is
    `GatewayUnavailable`.
    """

    def __init__(
        self,
        client: Redis,
        ttl: float,
        *,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        prefix: str = KEY_PREFIX,
        limits: CheckoutLimits | None = None,
    ) -> None:
        if ttl <= 0 or lease <= 0 or wait_timeout <= 0:
            raise ValueError("ttl, lease and wait_timeout must be positive")
        self.ttl = ttl
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.prefix = prefix
        self.limits = limits or CheckoutLimits()
        self._fallback_rate = CheckoutRate(self.limits.rate_per_minute, self.limits.burst)
        self._reserve = client.register_script(_RESERVE)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)
        self._admit = client.register_script(_ADMIT)

    def redis_key(self, scope: Scope, key: str) -> str:
        """Where `key` of `scope` is kept."""
        return f"{self.prefix}{scope}:{key}"

    def _keys(self, scope: Scope, key: str) -> list[str]:
        """The key's hash, then the live sets it is counted in (the order `_RESERVE` reads)."""
        return [
            self.redis_key(scope, key),
            LIVE_PREFIX + scope.caller_owner,
            LIVE_PREFIX + scope.credential_owner,
            LIVE_PREFIX + "all",
        ]

    async def admit(self, caller: str | None) -> None:
        interval = math.ceil(60_000 / self.limits.rate_per_minute)
        try:
            wait_ms = await self._admit(
                keys=[RATE_PREFIX + (caller or "-")], args=[interval, interval * self.limits.burst]
            )
            wait = None if int(wait_ms) < 0 else int(wait_ms) / 1000
        except RedisError as exc:
            logger.warning("checkout rate counted in this process (%s)", type(exc).__name__)
            wait = self._fallback_rate.take(caller)
        if wait is not None:
            raise limit_reached(
                CheckoutLimit.CALLER_RATE, self.limits, retry_after=wait, caller=caller
            )

    async def reserve(self, scope: Scope, key: str, fingerprint: str) -> Reservation:
        keys = self._keys(scope, key)
        token = uuid.uuid4().hex
        limits = self.limits
        args: list[str | int] = [
            fingerprint,
            token,
            _ms(self.ttl),
            _ms(self.lease),
            limits.keys_per_caller,
            limits.keys_per_credential,
            limits.max_keys,
        ]
        deadline = time.monotonic() + self.wait_timeout
        pause = POLL_FIRST
        while True:
            try:
                raw = await self._reserve(keys=keys, args=args)
            except RedisError as exc:
                raise _unavailable(scope) from exc
            state, detail, number = (_text(part) for part in raw)
            if state == "acquired":
                return Acquired(token)
            if state == "conflict":
                return Conflict()
            if state == "finished":
                return Replay(_decode(detail, scope))
            if state == "limited":
                raise limit_reached(
                    CheckoutLimit(detail),
                    limits,
                    retry_after=int(number) / 1000,
                    caller=scope.caller,
                    provider=scope.provider,
                )
            if int(number) <= 0:
                return Replay(_lease_ended(scope))
            if time.monotonic() >= deadline:
                raise GatewayUnavailable(
                    "A request with this idempotency key is still in progress; retry shortly "
                    "with the same key to get its answer.",
                    provider=scope.provider,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def complete(self, scope: Scope, key: str, token: str, outcome: Outcome) -> None:
        try:
            await self._complete(
                keys=[self.redis_key(scope, key)], args=[token, _encode(outcome), _ms(2 * POLL_MAX)]
            )
        except RedisError as exc:
            logger.warning("idempotency outcome not recorded (%s)", type(exc).__name__)

    async def release(self, scope: Scope, key: str, token: str) -> None:
        try:
            await self._release(keys=self._keys(scope, key), args=[token])
        except RedisError as exc:
            logger.warning("idempotency key not released (%s)", type(exc).__name__)


async def warn_if_evicting(client: Redis, *, within: float = 1.0) -> str | None:
    """Log a warning if Redis may evict keys (its `maxmemory-policy`); the policy, if readable.

    An evicted key in flight or finished would let a retry create a second checkout. Managed Redis
    services may refuse CONFIG, and Redis may be down at start-up: then nothing is known, and
    nothing is logged, within `within` seconds.
    """
    try:
        async with asyncio.timeout(within):
            config = await client.config_get("maxmemory-policy")
    except (RedisError, TimeoutError):
        return None
    policy = _text(next(iter(config.values()), None) or b"")
    if policy.startswith(EVICTING_POLICIES):
        logger.warning(
            "Redis maxmemory-policy is %s: it may evict idempotency keys, and a retried checkout "
            "would then be sent twice; set maxmemory-policy noeviction (docs/replicas.md)",
            policy,
        )
    return policy or None


# --- outcomes as JSON ----------------------------------------------------------------------------


def _encode(outcome: Outcome) -> str:
    if isinstance(outcome, CheckoutSession):
        data: dict[str, Any] = {
            "kind": "session",
            "provider": outcome.provider.value,
            "account_id": outcome.account_id,
            "plan_id": outcome.plan_id,
            "url": outcome.url,
            "session_id": outcome.session_id,
            "raw": outcome.raw,
        }
    else:
        data = {
            "kind": "failure",
            "error": outcome.error_type.__name__,
            "message": outcome.message,
            "provider": outcome.provider.value,
            "status": outcome.status,
            "upstream_code": outcome.upstream_code,
        }
    return json.dumps(data, separators=(",", ":"))


def _decode(text: str, scope: Scope) -> Outcome:
    try:
        data = json.loads(text)
        provider = Provider(data["provider"])
        if data["kind"] == "session":
            return CheckoutSession(
                provider,
                data["account_id"],
                data["plan_id"],
                data["url"],
                data["session_id"],
                raw=data["raw"],
            )
        return RememberedFailure(
            _error_type(data["error"]),
            data["message"],
            provider,
            data["status"],
            data["upstream_code"],
        )
    except (ValueError, KeyError, TypeError):
        # Written by another version, or damaged: what happened is unknown, so say so.
        logger.warning("unreadable idempotency outcome; answered as an unknown outcome")
        return _lease_ended(scope)


def _error_type(name: str) -> type[UpstreamError]:
    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, UpstreamError):
        return found
    return UpstreamUnreachable


def _lease_ended(scope: Scope) -> RememberedFailure:
    return RememberedFailure(UpstreamUnreachable, LEASE_ENDED + UNKNOWN_OUTCOME, scope.provider)


def _unavailable(scope: Scope) -> GatewayUnavailable:
    return GatewayUnavailable(
        "The gateway cannot reach its idempotency store, so it did not send the checkout: retry "
        "shortly with the same idempotency key.",
        provider=scope.provider,
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "KEY_PREFIX",
    "LIVE_PREFIX",
    "RATE_PREFIX",
    "RedisIdempotencyStore",
    "open_redis",
    "redis_check",
    "warn_if_evicting",
]
