"""Answers reused between requests: coalescing of identical GETs in flight, and a short cache.

Both are keyed by `request_key`: provider, path, query parameters and a hash of the credential, so
an answer fetched with one credential is only ever reused for a call made with the same one. The
credential itself is never part of a key (keys may be logged, or stored in a shared cache).

Coalescing (`Coalescer`): a GET whose key is already in flight in this process waits for that
call instead of sending its own. Every waiter gets the same decoded JSON or the same exception. The
shared call runs as a task of its own, so a cancelled waiter leaves it running for the others; when
its last waiter is cancelled, it is cancelled too. It runs in the context of its first caller (its
request id goes upstream).

Cache (`ResponseCache`): an async interface of string keys and JSON-compatible values with a
time-to-live. `MemoryResponseCache` is a bounded LRU of this process; `upstreams.redis_cache` keeps
entries in Redis, shared by every process pointed at it. Only successful answers are stored. A
cache that cannot answer (a shared store down or slow) raises `CacheUnavailable`, and the client
carries on without it: a failed lookup is a miss, a failed store is skipped.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlencode

from gateway.credentials import Credential
from gateway.upstreams.observers import NoObserver, ReuseObserver
from gateway.upstreams.resilience import Clock
from gateway.upstreams.store_health import StoreHealth

T = TypeVar("T")

_CREDENTIAL_DOMAIN = b"billing-gateway/credential\x00"


def credential_digest(credential: Credential | None) -> str:
    """A hash naming `credential` in keys; "-" for none."""
    if credential is None:
        return "-"
    return hashlib.sha256(_CREDENTIAL_DOMAIN + credential.reveal().encode()).hexdigest()[:32]


def request_key(
    provider: str, path: str, params: Mapping[str, str] | None, credential: Credential | None
) -> str:
    """The key of a GET: equal keys ask one provider the same thing with the same credential."""
    query = urlencode(sorted(params.items())) if params else ""
    return f"{provider} GET {path}?{query} {credential_digest(credential)}"


@dataclass(frozen=True, slots=True)
class Cached:
    """A cache hit (the value may itself be None)."""

    value: object


class CacheUnavailable(Exception):
    """A `ResponseCache` failed or did not answer in time; its message names no key. Never reaches a
    caller: the client reads it as a miss, or skips the store (see `_base`'s reuse contract)."""


class ResponseCache(Protocol):
    """Decoded upstream answers by `request_key`, each kept for its own time-to-live.

    Either method may raise `CacheUnavailable`, and nothing else, when the store fails.
    """

    async def get(self, key: str) -> Cached | None:
        """The live entry of `key`, or None."""

    async def set(self, key: str, value: object, ttl: float) -> None:
        """Keep `value` (JSON-compatible) under `key` for `ttl` seconds."""


class MemoryResponseCache:
    """A `ResponseCache` in this process: least recently used entries go beyond `max_entries`."""

    def __init__(self, *, max_entries: int, clock: Clock | None = None) -> None:
        self.max_entries = max_entries
        self._clock: Clock = clock or time.monotonic
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()

    async def get(self, key: str) -> Cached | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return Cached(value)

    async def set(self, key: str, value: object, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# A shared call that took less starts none ahead (`Coalescer`).
AHEAD_MIN_SECONDS = 0.005
# Nor does one that ends while the process was busy on CPU for more than this share of the last
# `LOAD_WINDOW_SECONDS` (or more): it has no CPU to spare for upstream calls nobody waits for yet.
AHEAD_MAX_LOAD = 0.9
LOAD_WINDOW_SECONDS = 0.1


class ProcessLoad:
    """The share of wall time this process spent on CPU over its last window of at least
    `window` seconds (measured when asked; a window with no question in it counts whole)."""

    def __init__(
        self,
        window: float = LOAD_WINDOW_SECONDS,
        *,
        clock: Clock = time.monotonic,
        cpu: Clock = time.process_time,
    ) -> None:
        self.window = window
        self._clock = clock
        self._cpu = cpu
        self._since = clock()
        self._cpu_since = cpu()
        self._load = 0.0

    def __call__(self) -> float:
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= self.window:
            cpu = self._cpu()
            self._load = (cpu - self._cpu_since) / elapsed
            self._since, self._cpu_since = now, cpu
        return self._load


# The process's load, shared by every coalescer of the process.
PROCESS_LOAD = ProcessLoad()


class _Shared(Generic[T]):
    __slots__ = ("call", "callers", "started", "task", "waiters")

    def __init__(
        self, call: Callable[[], Awaitable[T]], task: asyncio.Task[T], started: float
    ) -> None:
        self.call = call
        self.task = task
        self.started = started
        self.waiters = 0  # callers waiting now
        self.callers = 0  # callers it has had


class Coalescer:
    """Runs one call per key at a time; callers of a key in flight wait for its result.

    With `ahead` (0: off), a call that `ahead` or more callers shared, and that took at least
    `AHEAD_MIN_SECONDS`, starts the next call of its key as it ends, for the callers still to come,
    unless the process's `load` is above `AHEAD_MAX_LOAD`. Without it, callers that arrive together
    wait for one upstream call together, are answered together, and come back together: under steady
    load the event loop's work and the upstream's wait take turns instead of overlapping (half a
    worker idle at 20 ms upstream, BENCHMARKS.md). With it, the callers that come back find a call
    already on its way. A call started ahead is like any call in flight (the reuse contract: an
    answer from a call that started before the caller came, never from one that ended before), costs
    at most one upstream call each time a shared one ends, and runs for no request: in a context of
    its own (no request id, counted in no request's figures). A call that took less than
    `AHEAD_MIN_SECONDS` starts none: its callers lost little waiting for it together, and calls
    started ahead of so fast an upstream would follow one another back to back, each costing the
    worker its CPU (12% more per request for five accounts at 0 ms). A busy process starts none
    either: waiting in step costs little when the CPU has no idle time to fill, and calls ahead
    would take CPU from the requests (a worker saturated at 0 ms upstream sees its calls take longer
    than `AHEAD_MIN_SECONDS` while they wait for the loop).
    """

    def __init__(self, *, ahead: int = 0, load: Callable[[], float] | None = None) -> None:
        self.ahead = ahead
        self.load = load or PROCESS_LOAD
        self._calls: dict[str, _Shared[object]] = {}

    async def run(
        self,
        key: str,
        call: Callable[[], Awaitable[object]],
        *,
        joined: Callable[[], None] | None = None,
    ) -> object:
        """`call()`'s result, shared with concurrent callers of `key`; `joined` is called when
        this caller waits for a call already in flight."""
        shared = self._calls.get(key)
        if shared is None:
            shared = self._start(key, call, asyncio.ensure_future(call()))
        elif joined is not None:
            joined()
        shared.waiters += 1
        shared.callers += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            shared.waiters -= 1
            if shared.waiters == 0 and not shared.task.done():
                # Nobody waits any more (every waiter was cancelled): stop the call, and let the
                # next caller of the key start a fresh one rather than join a cancelled call.
                self._forget(key, shared)
                shared.task.cancel()

    def _start(
        self, key: str, call: Callable[[], Awaitable[object]], task: asyncio.Task[object]
    ) -> _Shared[object]:
        shared = _Shared(call, task, asyncio.get_running_loop().time())
        self._calls[key] = shared
        task.add_done_callback(functools.partial(self._finished, key, shared))
        return shared

    def _forget(self, key: str, shared: _Shared[object]) -> None:
        if self._calls.get(key) is shared:
            del self._calls[key]

    def _finished(self, key: str, shared: _Shared[object], task: asyncio.Future[object]) -> None:
        self._forget(key, shared)
        if task.cancelled():
            return
        failed = task.exception()  # retrieved: every waiter may have gone before it failed
        loop = asyncio.get_running_loop()
        if (
            self.ahead
            and shared.callers >= self.ahead
            and failed is None
            and loop.time() - shared.started >= AHEAD_MIN_SECONDS
            and key not in self._calls
            and self.load() <= AHEAD_MAX_LOAD
        ):
            ahead = loop.create_task(_coroutine(shared.call), context=contextvars.Context())
            self._start(key, shared.call, ahead)


async def _coroutine(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class CacheGroup(enum.Enum):
    """What an endpoint's answer is, for how long it may be reused (`CachePolicy`)."""

    STATE = "state"  # plan catalogs, billing state and status, profiles
    USAGE = "usage"  # usage meters: credits, tokens


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Seconds an answer of each group is reused; 0 (the default): not cached."""

    state_seconds: float = 0.0
    usage_seconds: float = 0.0

    def ttl(self, group: CacheGroup | None) -> float:
        """The time-to-live of an answer of `group` (None: never cached)."""
        if group is CacheGroup.STATE:
            return self.state_seconds
        if group is CacheGroup.USAGE:
            return self.usage_seconds
        return 0.0

    @property
    def enabled(self) -> bool:
        """Whether any answer is cached."""
        return self.state_seconds > 0 or self.usage_seconds > 0


class SharedAnswers:
    """One client's reuse of GET answers: its cache, then coalescing (this module's contract).

    `cached` gives the cache group of each endpoint template whose answers may be cached; a
    cache that cannot answer never fails a GET (a failed lookup is a miss, a failed store is
    skipped), and is reported to the `observer` and warned about once (`StoreHealth`).
    """

    def __init__(
        self,
        provider: str,
        *,
        cache: ResponseCache | None,
        policy: CachePolicy,
        coalesce: bool,
        cached: Mapping[str, CacheGroup],
        coalesce_ahead: int = 0,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.cached = cached
        self.cache = cache if policy.enabled else None
        self.coalescer = Coalescer(ahead=coalesce_ahead) if coalesce else None
        self.observer: ReuseObserver = NoObserver()
        self._health = StoreHealth(
            f"{provider} response cache",
            {"get": "lookups are misses", "set": "answers are not kept"},
        )

    @property
    def active(self) -> bool:
        """Whether any answer may be reused."""
        return self.cache is not None or self.coalescer is not None

    async def get(
        self,
        key: str,
        endpoint: str,
        fetch: Callable[[], Awaitable[object]],
        *,
        coalesce: bool,
    ) -> object:
        """The answer of `key`: cached, else shared with an identical call in flight (when
        `coalesce`), else `fetch()`ed, and kept when its endpoint's group is cached."""
        ttl = self.policy.ttl(self.cached.get(endpoint))
        cache = self.cache if ttl > 0 else None
        if cache is not None:
            cached = await self._lookup(cache, key, endpoint)
            if cached is not None:
                return cached.value

        async def fetch_and_keep() -> object:
            body = await fetch()
            if cache is not None:
                await self._keep(cache, key, body, ttl, endpoint)
            return body

        if self.coalescer is None or not coalesce:
            return await fetch_and_keep()
        return await self.coalescer.run(
            key,
            fetch_and_keep,
            joined=lambda: self.observer.request_coalesced(self.provider, endpoint),
        )

    async def _lookup(self, cache: ResponseCache, key: str, endpoint: str) -> Cached | None:
        try:
            cached = await cache.get(key)
        except CacheUnavailable as exc:
            self.observer.cache_failed(self.provider, endpoint, operation="get")
            self._health.failed("get", exc)
            return None
        self._health.answered("get")
        self.observer.cache_lookup(self.provider, endpoint, hit=cached is not None)
        return cached

    async def _keep(
        self, cache: ResponseCache, key: str, body: object, ttl: float, endpoint: str
    ) -> None:
        try:
            await cache.set(key, body, ttl)
        except CacheUnavailable as exc:
            self.observer.cache_failed(self.provider, endpoint, operation="set")
            self._health.failed("set", exc)
            return
        self._health.answered("set")
