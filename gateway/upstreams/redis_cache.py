"""The response cache in Redis, shared by every replica of the gateway (`GATEWAY_REDIS_URL`).

`RedisResponseCache` is a `ResponseCache` (`gateway.upstreams.reuse`): each entry is one Redis
string, `billing-gateway:cache:<request key>`, holding the decoded upstream answer as JSON, written
with `SET ... PX <ttl in ms>` so that Redis expires it. A request key names the provider, the path,
the query and a hash of the credential, never the credential: an answer is only ever reused for a
call made with the same credential, by whichever process made it.

A cache is an optimisation: every command has a short time limit (`DEFAULT_TIMEOUT`), and Redis
failing or not answering within it is `CacheUnavailable`, which the client reads as a miss (get) or
skips (set), so a hung Redis adds at most that limit per command to a GET and never fails it. An
entry that does not decode (written by another version, or damaged) is a miss.

Its own module, not `redis_store`'s: it implements an interface of the upstream layer, which the
idempotency store (checkout's layer) has no business importing.
"""

from __future__ import annotations

import asyncio
import json
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.upstreams.reuse import Cached, CacheUnavailable

logger = logging.getLogger("gateway.upstream")

KEY_PREFIX = "billing-gateway:cache:"
# Per command: far above a healthy Redis's answer (under a millisecond on a LAN, a few across
# zones), far below an upstream GET. A get and a set are at most 2 x this on a cacheable GET.
DEFAULT_TIMEOUT = 0.25


class RedisResponseCache:
    """A `ResponseCache` in Redis, shared by processes; see the module docstring."""

    def __init__(
        self, client: Redis, *, prefix: str = KEY_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.prefix = prefix
        self.timeout = timeout
        self._client = client

    def redis_key(self, key: str) -> str:
        """Where the entry of `key` is kept."""
        return self.prefix + key

    async def get(self, key: str) -> Cached | None:
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._client.get(self.redis_key(key))
        except (RedisError, TimeoutError) as exc:
            raise CacheUnavailable(f"Redis GET failed: {type(exc).__name__}") from exc
        if raw is None:
            return None
        try:
            return Cached(json.loads(raw))
        except ValueError:  # UnicodeDecodeError included
            logger.warning("unreadable response cache entry; read as a miss")
            return None

    async def set(self, key: str, value: object, ttl: float) -> None:
        if ttl <= 0:
            return
        # ASCII: a lone surrogate escaped in an upstream's JSON survives, which UTF-8 would refuse.
        data = json.dumps(value, separators=(",", ":"))
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.set(self.redis_key(key), data, px=max(1, round(ttl * 1000)))
        except (RedisError, TimeoutError) as exc:
            raise CacheUnavailable(f"Redis SET failed: {type(exc).__name__}") from exc


__all__ = ["DEFAULT_TIMEOUT", "KEY_PREFIX", "RedisResponseCache"]
