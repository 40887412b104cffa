"""A keyspace of one store in a shared Redis: prefixed keys, each command within a time limit.

The response cache, the stale answers and the rate limits each keep their keys under a prefix of
their own, and each answers a Redis that is down or slow (past `timeout` seconds a command) with an
exception of its store's kind, which its client turns into a miss or a skipped write: a shared
store never fails a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

T = TypeVar("T")

# Per command: far above a healthy Redis's answer (under a millisecond on a LAN, a few across
# zones), far below an upstream GET.
DEFAULT_TIMEOUT = 0.25


class RedisKeyspace:
    """Keys under `prefix` in `client`; `unavailable` is the exception a failed command raises."""

    unavailable: type[Exception] = Exception

    def __init__(self, client: Redis, *, prefix: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.prefix = prefix
        self.timeout = timeout
        self._client = client

    def redis_key(self, key: str) -> str:
        """Where the entry of `key` is kept."""
        return self.prefix + key

    async def command(self, name: str, call: Awaitable[T]) -> T:
        """`call`'s answer within `timeout`, else `unavailable` naming the command `name`."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (RedisError, TimeoutError) as exc:
            raise self.unavailable(f"Redis {name} failed: {type(exc).__name__}") from exc
