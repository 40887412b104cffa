"""Garbage collection on a clock, instead of by allocation count.

Python's cyclic collector runs every 700 net allocations of tracked objects, and each run walks
the young objects still alive: under load, those are mostly the requests in flight and the
answers the caches keep, not garbage. Measured in a worker (docs/performance.md), that was 14% of
the CPU of a one-organization request at 32 connections and 21% of a five-account one, while a
request leaves about 36 objects in reference cycles. `collected_on_a_clock` turns the automatic
collector off while the app runs and collects the young generations every `interval` seconds,
everything every `full_every` intervals: cyclic garbage lives at most about that long (a few
megabytes at thousands of requests a second).

Each collection walks what survived since the last one, at once: a longer interval costs less CPU
and pauses the event loop longer. Measured under wrk (BENCHMARKS.md), five accounts at 32
connections spent 0.67-0.82 ms a request in collections on Python's schedule, 0.56 at 0.1 s, 0.14
at 0.25 s and 0.20 at 1 s (each its own run); at 1 s the p99 of a one-account request rose from
about 30 to about 90 ms, at 0.25 s it stayed at 25-30 ms. 0.25 s is the default
(`GATEWAY_GC_INTERVAL_SECONDS`).

Several apps may run in one process (tests): the collector stays off while any clock runs, and
the automatic collector is turned back on, if it was on, when the last one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

DEFAULT_INTERVAL_SECONDS = 0.25
DEFAULT_FULL_EVERY = 60

_running = 0
_was_enabled = True


@contextlib.asynccontextmanager
async def collected_on_a_clock(
    interval: float = DEFAULT_INTERVAL_SECONDS, full_every: int = DEFAULT_FULL_EVERY
) -> AsyncIterator[None]:
    """Collect garbage every `interval` seconds (all generations every `full_every`) instead of
    by allocation count, while the block runs; `interval` 0 leaves Python's own collection."""
    if interval <= 0:
        yield
        return
    global _running, _was_enabled
    if _running == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _running += 1
    task = asyncio.create_task(_collect(interval, full_every))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _running -= 1
        if _running == 0 and _was_enabled:
            gc.enable()


async def _collect(interval: float, full_every: int) -> None:
    rounds = 0
    while True:
        await asyncio.sleep(interval)
        rounds += 1
        gc.collect(2 if rounds % full_every == 0 else 1)
