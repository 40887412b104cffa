"""Garbage collected on a clock while the app runs (gateway/collector.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from gateway.collector import collected_on_a_clock
from gateway.sandbox import SandboxState
from tests.support import make_settings, sandbox_transports, serve


class Node:
    """An object that can sit in a reference cycle and be referenced weakly."""

    other: Node | None = None


def cyclic_garbage() -> weakref.ref[Node]:
    """A two-object cycle nothing else references: only the cyclic collector frees it."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


async def test_the_automatic_collector_is_off_while_the_clock_runs_and_on_again_after() -> None:
    assert gc.isenabled()
    async with collected_on_a_clock(0.05):
        assert not gc.isenabled()

    assert gc.isenabled()


async def test_cyclic_garbage_is_collected_within_about_an_interval() -> None:
    async with collected_on_a_clock(0.05):
        garbage = cyclic_garbage()
        assert garbage() is not None  # the automatic collector is off: nothing frees it
        await asyncio.sleep(0.2)

        assert garbage() is None


async def test_every_few_intervals_the_collection_is_a_full_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Garbage that was alive when the young generations were last collected sits in the old
    one: only a full collection frees it."""
    generations: list[int] = []
    six = asyncio.Event()

    def collect(generation: int) -> None:
        generations.append(generation)
        if len(generations) == 6:
            six.set()

    monkeypatch.setattr(gc, "collect", collect)
    async with collected_on_a_clock(0.005, full_every=3):
        await asyncio.wait_for(six.wait(), timeout=10)

    assert generations[:6] == [1, 1, 2, 1, 1, 2]


async def test_the_collector_stays_off_until_the_last_of_two_clocks_stops() -> None:
    first = collected_on_a_clock(0.05)
    second = collected_on_a_clock(0.05)
    await first.__aenter__()
    await second.__aenter__()
    await first.__aexit__(None, None, None)
    assert not gc.isenabled()
    await second.__aexit__(None, None, None)

    assert gc.isenabled()


async def test_an_interval_of_zero_leaves_pythons_own_collection() -> None:
    async with collected_on_a_clock(0):
        assert gc.isenabled()


async def test_the_app_collects_on_a_clock_while_it_runs_unless_told_not_to(
    state: SandboxState,
) -> None:
    async with serve(make_settings(), sandbox_transports(state)):
        assert not gc.isenabled()
    assert gc.isenabled()
    async with serve(make_settings(GATEWAY_GC_INTERVAL_SECONDS="0"), sandbox_transports(state)):
        assert gc.isenabled()
