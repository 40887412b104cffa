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

import json
import logging

from redis.asyncio import Redis

from gateway.upstreams.redis_keys import DEFAULT_TIMEOUT, RedisKeyspace
from gateway.upstreams.reuse import Cached, CacheUnavailable

logger = logging.getLogger("gateway.upstream")

KEY_PREFIX = "billing-gateway:cache:"


class RedisResponseCache(RedisKeyspace):
    """A `ResponseCache` in Redis, shared by processes; see the module docstring."""

    unavailable = CacheUnavailable

    def __init__(
        self, client: Redis, *, prefix: str = KEY_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(client, prefix=prefix, timeout=timeout)

    async def get(self, key: str) -> Cached | None:
        raw = await self.command("GET", self._client.get(self.redis_key(key)))
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
        px = max(1, round(ttl * 1000))
        await self.command("SET", self._client.set(self.redis_key(key), data, px=px))


__all__ = ["DEFAULT_TIMEOUT", "KEY_PREFIX", "RedisResponseCache"]
