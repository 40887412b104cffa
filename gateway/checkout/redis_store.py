"""Idempotency keys in Redis, shared by every replica of the gateway (`GATEWAY_REDIS_URL`).

`RedisIdempotencyStore` keeps the contract of `checkout.idempotency` across processes. A key is one
Redis hash, `billing-gateway:idem:<scope>:<key>` (scopes hold digests only, never a secret), with
the fields `fingerprint`, `token`, `lease` and, once finished, `outcome` (JSON). It expires `ttl`
after it was reserved. Each step is one Lua script, so it is atomic across processes:

- reserve: create the hash if the key is free (Redis's own clock starts the lease), else answer
  what it holds. The same token finding its own reservation again (a command retried after a
  lost answer) gets it back instead of waiting on itself.
- complete: write `outcome` only if the token still matches and none is written yet.
- release: delete only if the token still matches and no outcome is written.

A caller finding the key in flight with its own fingerprint polls (short, growing pauses) until
an outcome is written (a replay), the key is released (it reserves it itself) or `wait_timeout`
passes: then `IdempotencyUnavailable`, retryable, so a request never hangs on another. A key whose
owner outlived its `lease` (the process died mid-checkout) is read as an unknown outcome, the
same answer as a timed-out POST, never as a release: the checkout may exist at the provider.

Redis failing (down, timing out, read-only after a failover) during `reserve` is
`IdempotencyUnavailable` before anything is sent upstream, so an outage can never create a
checkout twice. `complete` and `release` failing are logged and swallowed: the caller still gets
its session or its real error, and the key it leaves in flight reads as an unknown outcome once
its lease ends (conservative: at worst a retry with the same key is refused, never repeated).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from gateway import errors
from gateway.checkout.idempotency import (
    Acquired,
    Conflict,
    Outcome,
    RememberedFailure,
    Replay,
    Reservation,
)
from gateway.errors import GatewayError, UpstreamError, UpstreamUnavailable, UpstreamUnreachable
from gateway.http.health import Check, CheckResult
from gateway.models import CheckoutSession
from gateway.provider import Provider

logger = logging.getLogger("gateway.idempotency")

KEY_PREFIX = "billing-gateway:idem:"
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
# Same wording as checkout.start.UNKNOWN_OUTCOME (not imported: checkout depends on the store).
UNKNOWN_OUTCOME = (
    " The checkout may have been created, so this idempotency key gives this answer until it "
    "expires: retry with a new idempotency key after checking the account's billing for it."
)

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HMGET', KEYS[1], 'fingerprint', 'token', 'lease', 'outcome')
if not held[1] then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'token', ARGV[2],
             'lease', now + tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
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
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  redis.call('HSET', KEYS[1], 'outcome', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
   and redis.call('HEXISTS', KEYS[1], 'outcome') == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class IdempotencyUnavailable(UpstreamUnavailable):
    """The shared idempotency store cannot answer; nothing was sent to the provider. Retryable.

    Provisional: it is an `UpstreamUnavailable` only so that the schema's existing mapping gives a
    typed, retryable `ProviderError` (code UPSTREAM_UNAVAILABLE, no upstream status); it is not the
    provider's failure, and its message says so. A gateway-side code and error type belong in
    `gateway.errors` and the schema.
    """

    def __init__(self, message: str, *, provider: Provider | None) -> None:
        # No provider answered: none of UpstreamError's upstream fields apply. The resolver's
        # `attributed_to` names the provider when the scope did not.
        GatewayError.__init__(self, message, provider=provider)
        self.status = None
        self.upstream_code = None
        self.retry_after = None


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
    """An `IdempotencyStore` in Redis, shared by processes; see the module docstring."""

    def __init__(
        self,
        client: Redis,
        ttl: float,
        *,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if ttl <= 0 or lease <= 0 or wait_timeout <= 0:
            raise ValueError("ttl, lease and wait_timeout must be positive")
        self.ttl = ttl
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    def redis_key(self, scope: str, key: str) -> str:
        """Where `key` of `scope` is kept."""
        return f"{self.prefix}{scope}:{key}"

    async def reserve(self, scope: str, key: str, fingerprint: str) -> Reservation:
        name = self.redis_key(scope, key)
        token = uuid.uuid4().hex
        args: list[str | int] = [fingerprint, token, _ms(self.ttl), _ms(self.lease)]
        deadline = time.monotonic() + self.wait_timeout
        pause = POLL_FIRST
        while True:
            try:
                raw = await self._reserve(keys=[name], args=args)
            except RedisError as exc:
                raise _unavailable(scope) from exc
            state, outcome, lease_left = (_text(part) for part in raw)
            if state == "acquired":
                return Acquired(token)
            if state == "conflict":
                return Conflict()
            if state == "finished":
                return Replay(_decode(outcome, scope))
            if int(lease_left) <= 0:
                return Replay(_lease_ended(scope))
            if time.monotonic() >= deadline:
                raise IdempotencyUnavailable(
                    "A request with this idempotency key is still in progress; retry shortly "
                    "with the same key to get its answer.",
                    provider=_provider(scope),
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def complete(self, scope: str, key: str, token: str, outcome: Outcome) -> None:
        try:
            await self._complete(keys=[self.redis_key(scope, key)], args=[token, _encode(outcome)])
        except RedisError as exc:
            logger.warning("idempotency outcome not recorded (%s)", type(exc).__name__)

    async def release(self, scope: str, key: str, token: str) -> None:
        try:
            await self._release(keys=[self.redis_key(scope, key)], args=[token])
        except RedisError as exc:
            logger.warning("idempotency key not released (%s)", type(exc).__name__)


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


def _decode(text: str, scope: str) -> Outcome:
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


def _lease_ended(scope: str) -> RememberedFailure:
    provider = _provider(scope)
    if provider is None:  # not a checkout scope: no caller-facing failure can name a provider
        raise IdempotencyUnavailable(
            "The first request with this idempotency key ended unrecorded.", provider=None
        )
    return RememberedFailure(UpstreamUnreachable, LEASE_ENDED + UNKNOWN_OUTCOME, provider)


def _provider(scope: str) -> Provider | None:
    """The provider named by a checkout scope (`checkout:<provider>:...`, see `checkout_scope`)."""
    try:
        return Provider(scope.split(":")[1])
    except (IndexError, ValueError):
        return None  # the resolver's `attributed_to` names it


def _unavailable(scope: str) -> IdempotencyUnavailable:
    return IdempotencyUnavailable(
        "The gateway cannot reach its idempotency store, so it did not send the checkout: retry "
        "shortly with the same idempotency key.",
        provider=_provider(scope),
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "KEY_PREFIX",
    "IdempotencyUnavailable",
    "RedisIdempotencyStore",
    "open_redis",
    "redis_check",
]
