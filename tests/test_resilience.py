"""The circuit breaker and the retry budget: alone over a fake clock, then wired into a client.

Nothing sleeps: the clock is a fake the tests move, and the client's `sleep` only moves it too.
Every client test counts the requests that reached its `httpx.MockTransport`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.credentials import Credential
from gateway.errors import (
    ErrorCode,
    UpstreamBadResponse,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.provider import Provider
from gateway.settings import UpstreamSettings
from gateway.upstreams import AlmanacClient
from gateway.upstreams._base import Sleep
from gateway.upstreams.resilience import (
    BreakerState,
    CircuitBreaker,
    RetryBudget,
    Ticket,
)
from tests.support import FakeClock

TOKEN = "alm_resilience_secret_token"
CREDENTIAL = Credential(TOKEN)
ORG = "org_acme"
BILLING = f"/v1/organizations/{ORG}/billing"
CHECKOUT = f"{BILLING}/checkout"
RESET = 30.0

Reply = Callable[[httpx.Request], httpx.Response]


# --- the breaker alone ---------------------------------------------------------------------------


def make_breaker(clock: FakeClock, failures: int = 3) -> CircuitBreaker:
    return CircuitBreaker("almanac", failures=failures, reset=RESET, clock=clock)


def call(breaker: CircuitBreaker, outcome: str) -> Ticket | None:
    """Admit one call and report `outcome` ("ok" or "fail") for it, when it was admitted."""
    ticket = breaker.acquire()
    if ticket is not None:
        if outcome == "ok":
            breaker.record_success(ticket)
        else:
            breaker.record_failure(ticket, "UPSTREAM_TIMEOUT")
    return ticket


# Steps: "ok" / "fail" (a call and its outcome), "refused" (a call that must fail fast),
# a number (seconds passing). Then the state and retry_after expected at the end.
TRANSITIONS = [
    pytest.param(["fail", "fail"], BreakerState.CLOSED, 0.0, id="closed-below-threshold"),
    pytest.param(["fail", "fail", "fail"], BreakerState.OPEN, RESET, id="closed-to-open-at-n"),
    pytest.param(
        ["fail", "fail", "ok", "fail", "fail"], BreakerState.CLOSED, 0.0, id="success-resets-count"
    ),
    pytest.param(
        ["fail", "fail", "fail", "refused", 10.0, "refused"],
        BreakerState.OPEN,
        RESET - 10.0,
        id="open-fails-fast-and-counts-down",
    ),
    pytest.param(
        ["fail", "fail", "fail", RESET], BreakerState.HALF_OPEN, 0.0, id="open-to-half-open"
    ),
    pytest.param(
        ["fail", "fail", "fail", RESET, "ok"], BreakerState.CLOSED, 0.0, id="probe-success-closes"
    ),
    pytest.param(
        ["fail", "fail", "fail", RESET, "fail"],
        BreakerState.OPEN,
        RESET,
        id="probe-failure-reopens-for-another-reset",
    ),
    pytest.param(
        ["fail", "fail", "fail", RESET, "fail", RESET - 1, "refused", 1.0, "ok", "fail", "fail"],
        BreakerState.CLOSED,
        0.0,
        id="closed-again-counts-from-zero",
    ),
]


@pytest.mark.parametrize(("steps", "state", "retry_after"), TRANSITIONS)
def test_breaker_transitions(steps: list[Any], state: BreakerState, retry_after: float) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)

    for step in steps:
        if isinstance(step, float):
            clock.advance(step)
        elif step == "refused":
            assert breaker.acquire() is None
        else:
            assert call(breaker, step) is not None, step

    assert breaker.state is state
    assert breaker.retry_after() == pytest.approx(retry_after)


def test_half_open_admits_one_probe_and_refuses_everyone_else_until_it_ends() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failures=1)
    call(breaker, "fail")
    clock.advance(RESET)

    probe = breaker.acquire()
    others = [breaker.acquire() for _ in range(5)]

    assert probe is not None
    assert probe.probe
    assert others == [None] * 5
    assert 0 < breaker.retry_after() <= 1.0
    breaker.record_success(probe)
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.acquire() is not None for _ in range(5))


def test_a_probe_that_ends_without_a_verdict_frees_the_slot_for_the_next_caller() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failures=1)
    call(breaker, "fail")
    clock.advance(RESET)

    cancelled = breaker.acquire()
    assert cancelled is not None
    breaker.release(cancelled)
    probe = breaker.acquire()

    assert probe is not None
    assert probe.probe
    assert breaker.state is BreakerState.HALF_OPEN


def test_outcomes_of_calls_admitted_before_the_breaker_moved_are_ignored() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, failures=2)
    slow_success, slow_failure = breaker.acquire(), breaker.acquire()
    assert slow_success is not None
    assert slow_failure is not None
    call(breaker, "fail")
    call(breaker, "fail")
    assert breaker.state is BreakerState.OPEN

    breaker.record_success(slow_success)  # does not close it
    clock.advance(RESET / 2)
    breaker.record_failure(slow_failure, "UPSTREAM_TIMEOUT")  # does not extend it

    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(RESET / 2)


def test_state_changes_are_logged_at_warning_with_the_provider_and_both_states(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    clock = FakeClock()
    breaker = make_breaker(clock, failures=2)
    call(breaker, "fail")
    call(breaker, "fail")
    clock.advance(RESET)
    call(breaker, "ok")

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == [
        "almanac circuit breaker closed -> open after 2 consecutive failures (UPSTREAM_TIMEOUT)",
        "almanac circuit breaker open -> half-open",
        "almanac circuit breaker half-open -> closed",
    ]


@pytest.mark.parametrize(("failures", "reset"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_breaker_needs_a_positive_threshold_and_reset(failures: int, reset: float) -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker("almanac", failures=failures, reset=reset)


# --- the budget alone ----------------------------------------------------------------------------


def test_a_budget_starts_full_then_allows_about_ratio_retries_per_call() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window=10.0, clock=clock)
    assert budget.capacity == 10.0
    retries = sum(budget.try_retry() for _ in range(20))
    assert retries == 10

    allowed = 0
    for _ in range(100):
        budget.record_call()
        allowed += budget.try_retry()

    assert allowed == 20


def test_a_budget_refills_at_its_floor_rate_up_to_its_capacity() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=2.0, window=5.0, clock=clock)
    while budget.try_retry():
        pass

    clock.advance(1.0)
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]
    clock.advance(3600.0)
    assert budget.tokens == 10.0


def test_a_budget_with_no_floor_still_holds_one_retry() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=FakeClock())

    assert [budget.try_retry(), budget.try_retry()] == [True, False]


# --- wired into a client -------------------------------------------------------------------------


@dataclass
class Upstream:
    """A fake provider: answers from `replies` in turn (the last one repeats), counting calls."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, requests wait here until it is
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        return reply(request)

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.requests if method is None or r.method == method)


def answer(
    status: int,
    body: object = None,
    *,
    content: bytes | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        data = content if content is not None else httpx.Response(200, json=body).content
        return httpx.Response(
            status,
            content=data,
            headers={"content-type": content_type, **(headers or {})},
            request=request,
        )

    return reply


def fail(exc_class: type[httpx.TransportError]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_class("simulated", request=request)

    return reply


OK = answer(200, {"organization_id": ORG})


@dataclass
class Harness:
    client: AlmanacClient
    upstream: Upstream
    clock: FakeClock
    delays: list[float]

    async def get(self) -> object:
        return await self.client.get_billing_state(ORG, credential=CREDENTIAL)

    async def post(self) -> object:
        return await self.client.create_checkout(
            ORG, plan_id="pro", success_url=None, credential=CREDENTIAL
        )


Connect = Callable[..., Harness]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    clients: list[AlmanacClient] = []

    def make(*replies: Reply, sleep: Sleep | None = None, **overrides: Any) -> Harness:
        settings: dict[str, Any] = {
            "provider": Provider.ALMANAC,
            "base_url": "http://almanac.test",
            "credential": None,
            "currency": "USD",
            "get_retries": 0,
            "retry_backoff": 0.2,
            "retry_after_cap": 5.0,
            "breaker_failures": 3,
            "breaker_reset": RESET,
        }
        settings.update(overrides)
        clock = FakeClock()
        delays: list[float] = []

        async def moving_sleep(delay: float) -> None:
            delays.append(delay)
            clock.advance(delay)

        upstream = Upstream(list(replies))
        client = AlmanacClient(
            UpstreamSettings(**settings),
            transport=httpx.MockTransport(upstream),
            sleep=sleep or moving_sleep,
            clock=clock,
        )
        clients.append(client)
        return Harness(client, upstream, clock, delays)

    yield make
    for client in clients:
        await client.aclose()


async def open_breaker(h: Harness, failures: int = 3) -> None:
    for _ in range(failures):
        with pytest.raises(UpstreamError):
            await h.get()
    assert h.client.breaker.state is BreakerState.OPEN


UNHEALTHY = [
    pytest.param(fail(httpx.ReadTimeout), UpstreamTimeout, id="read-timeout"),
    pytest.param(fail(httpx.ConnectTimeout), UpstreamTimeout, id="connect-timeout"),
    pytest.param(fail(httpx.ConnectError), UpstreamUnreachable, id="refused"),
    pytest.param(fail(httpx.RemoteProtocolError), UpstreamUnreachable, id="dropped"),
    pytest.param(fail(httpx.ReadError), UpstreamUnreachable, id="dropped-mid-body"),
    pytest.param(answer(500, {}), UpstreamUnavailable, id="500"),
    pytest.param(answer(502, {}), UpstreamUnavailable, id="502"),
    pytest.param(answer(503, {}), UpstreamUnavailable, id="503"),
    # Not a 429: it answers one credential, and throttles only that one (test_throttle.py).
    pytest.param(
        answer(200, content=b"<html>Sign in</html>", content_type="text/html"),
        UpstreamBadResponse,
        id="html-200",
    ),
    pytest.param(
        answer(200, content=b'{"organization_id": "org_'), UpstreamBadResponse, id="trunc"
    ),
    pytest.param(
        answer(302, content=b"", headers={"location": "/login"}), UpstreamBadResponse, id="redirect"
    ),
]


@pytest.mark.parametrize(("reply", "error_class"), UNHEALTHY)
async def test_n_consecutive_unhealthy_calls_open_the_breaker_and_the_next_call_sends_nothing(
    connect: Connect, reply: Reply, error_class: type[UpstreamError]
) -> None:
    h = connect(reply)
    for _ in range(3):
        with pytest.raises(error_class):
            await h.get()
    assert h.upstream.count() == 3

    with pytest.raises(UpstreamCircuitOpen) as caught:
        await h.get()

    assert h.upstream.count() == 3
    error = caught.value
    assert error.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert error.retryable is True
    assert error.retry_after == pytest.approx(RESET)
    assert error.status is None
    assert error.message == "Almanac is unavailable after repeated failures; retry after 30 s."
    assert TOKEN not in str(error)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422])
async def test_answers_that_are_the_callers_doing_never_open_the_breaker(
    connect: Connect, status: int
) -> None:
    h = connect(answer(status, {"detail": "no"}))
    for _ in range(10):
        with pytest.raises(UpstreamError) as caught:
            await h.get()
        assert caught.value.status == status

    assert h.upstream.count() == 10
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_a_callers_error_between_failures_resets_the_count(connect: Connect) -> None:
    h = connect(answer(503, {}), answer(503, {}), answer(404, {}), answer(503, {}))
    for _ in range(5):
        with pytest.raises(UpstreamError):
            await h.get()

    assert h.upstream.count() == 5
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_one_get_with_all_its_retries_counts_as_one_failed_call(connect: Connect) -> None:
    h = connect(answer(503, {}), get_retries=2)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await h.get()

    assert h.upstream.count() == 6
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_retry_after_of_the_fail_fast_error_counts_down_to_the_probe(
    connect: Connect,
) -> None:
    h = connect(answer(503, {}))
    await open_breaker(h)
    waits = []
    for _ in range(3):
        with pytest.raises(UpstreamCircuitOpen) as caught:
            await h.get()
        waits.append(caught.value.retry_after)
        h.clock.advance(12.5)

    assert waits == [pytest.approx(30.0), pytest.approx(17.5), pytest.approx(5.0)]
    assert "retry after 5 s" in str(caught.value)
    assert h.upstream.count() == 3


async def test_a_post_fails_fast_while_the_breaker_is_open_without_being_sent(
    connect: Connect,
) -> None:
    h = connect(answer(503, {}))
    await open_breaker(h)

    with pytest.raises(UpstreamCircuitOpen):
        await h.post()

    assert h.upstream.count("POST") == 0
    assert h.upstream.count() == 3


async def test_failing_posts_open_the_breaker_too(connect: Connect) -> None:
    h = connect(answer(502, {}))
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await h.post()

    with pytest.raises(UpstreamCircuitOpen):
        await h.get()
    assert h.upstream.count("POST") == 3
    assert h.upstream.count() == 3


async def test_half_open_sends_one_probe_while_concurrent_calls_fail_fast(
    connect: Connect,
) -> None:
    h = connect(answer(503, {}), answer(503, {}), answer(503, {}), OK)
    await open_breaker(h)
    h.clock.advance(RESET)
    h.upstream.gate = asyncio.Event()

    probe = asyncio.create_task(h.get())
    await h.upstream.waiting.wait()  # the probe has reached the upstream and waits there
    concurrent = await asyncio.gather(h.get(), h.post(), h.get(), return_exceptions=True)
    h.upstream.gate.set()

    assert await probe == {"organization_id": ORG}
    for error in concurrent:
        assert isinstance(error, UpstreamCircuitOpen), error
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 1
    assert h.upstream.count() == 4
    assert h.client.breaker.state is BreakerState.CLOSED
    assert await h.get() == {"organization_id": ORG}
    assert h.upstream.count() == 5


async def test_a_failed_probe_is_not_retried_and_reopens_for_another_reset(
    connect: Connect,
) -> None:
    h = connect(answer(503, {}), get_retries=2)
    await open_breaker(h)
    calls = h.upstream.count()
    h.clock.advance(RESET)

    with pytest.raises(UpstreamUnavailable) as probe:
        await h.get()
    with pytest.raises(UpstreamCircuitOpen) as after:
        await h.get()

    assert not isinstance(probe.value, UpstreamCircuitOpen)
    assert h.upstream.count() == calls + 1
    assert after.value.retry_after == pytest.approx(RESET)
    assert h.client.breaker.state is BreakerState.OPEN


async def test_a_cancelled_probe_lets_the_next_call_probe(connect: Connect) -> None:
    h = connect(answer(503, {}), answer(503, {}), answer(503, {}), OK)
    await open_breaker(h)
    h.clock.advance(RESET)
    h.upstream.gate = asyncio.Event()

    probe = asyncio.create_task(h.get())
    await h.upstream.waiting.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    h.upstream.gate.set()

    assert await h.get() == {"organization_id": ORG}
    assert h.upstream.count() == 5
    assert h.client.breaker.state is BreakerState.CLOSED


async def test_a_get_stops_retrying_when_other_calls_open_the_breaker_during_its_backoff(
    connect: Connect,
) -> None:
    delays: list[float] = []

    async def others_fail_meanwhile(delay: float) -> None:
        delays.append(delay)
        other = h.client.breaker.acquire()
        assert other is not None
        h.client.breaker.record_failure(other, "UPSTREAM_TIMEOUT")

    h = connect(answer(503, {}), get_retries=2, breaker_failures=1, sleep=others_fail_meanwhile)

    with pytest.raises(UpstreamUnavailable) as caught:
        await h.get()

    assert not isinstance(caught.value, UpstreamCircuitOpen)  # the real cause, not the breaker
    assert len(delays) == 1
    assert h.upstream.count() == 1
    assert h.client.breaker.state is BreakerState.OPEN


async def test_state_changes_of_a_client_are_logged_without_paths_or_credentials(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.upstream.resilience")
    h = connect(fail(httpx.ConnectError))
    await open_breaker(h)

    [record] = [r for r in caplog.records if r.name == "gateway.upstream.resilience"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "almanac circuit breaker closed -> open after 3 consecutive failures (UPSTREAM_UNREACHABLE)"
    )


# --- the budget, wired in ------------------------------------------------------------------------


async def test_failing_gets_retry_at_most_the_budget_ratio_over_the_floor(
    connect: Connect,
) -> None:
    originals = 200
    h = connect(
        answer(503, {}),
        get_retries=2,
        retry_budget_ratio=0.2,
        retry_budget_min_per_second=1.0,
        breaker_failures=10_000,
    )
    # The client's sleep moves the clock, so the floor's refill is part of the bound.
    floor = h.client.retry_budget.capacity
    started = h.clock.now

    for _ in range(originals):
        with pytest.raises(UpstreamUnavailable):
            await h.get()

    elapsed = h.clock.now - started
    bound = originals * 1.2 + floor + elapsed * 1.0
    assert h.upstream.count() <= bound
    # Without a budget, every call would have been tried three times.
    assert h.upstream.count() < originals * 3
    assert h.upstream.count() >= originals * 1.2


async def test_a_frozen_clock_shows_the_exact_budget_of_a_full_bucket_plus_the_ratio(
    connect: Connect,
) -> None:
    delays: list[float] = []

    async def frozen(delay: float) -> None:
        delays.append(delay)

    h = connect(
        answer(503, {}),
        get_retries=2,
        retry_budget_ratio=0.2,
        retry_budget_min_per_second=1.0,
        breaker_failures=10_000,
        sleep=frozen,
    )
    for _ in range(100):
        with pytest.raises(UpstreamUnavailable):
            await h.get()

    # 100 originals, at most 0.2 x 100 retries from deposits plus 10 from the full bucket.
    assert 100 + 20 <= h.upstream.count() <= 100 * 1.2 + 10
    assert len(delays) == h.upstream.count() - 100


REFUSED_RETRIES = [
    pytest.param(fail(httpx.ReadTimeout), UpstreamTimeout, id="timeout"),
    pytest.param(fail(httpx.ConnectError), UpstreamUnreachable, id="refused"),
    pytest.param(fail(httpx.RemoteProtocolError), UpstreamUnreachable, id="dropped"),
    pytest.param(answer(503, {}), UpstreamUnavailable, id="503"),
    # Retry-After 0: the 429 leaves its credential unthrottled, so the second call is sent.
    pytest.param(answer(429, {}, headers={"retry-after": "0"}), UpstreamRateLimited, id="429"),
]


@pytest.mark.parametrize(("reply", "error_class"), REFUSED_RETRIES)
async def test_a_retry_the_budget_refuses_raises_the_original_error_unsent(
    connect: Connect, reply: Reply, error_class: type[UpstreamError]
) -> None:
    h = connect(
        reply,
        get_retries=2,
        retry_budget_ratio=0.0,
        retry_budget_min_per_second=0.0,
        breaker_failures=100,
    )
    with pytest.raises(error_class):
        await h.get()  # spends the bucket's one token on one retry
    assert h.upstream.count() == 2

    with pytest.raises(error_class) as caught:
        await h.get()

    assert type(caught.value) is error_class
    assert h.upstream.count() == 3
    assert len(h.delays) == 1


async def test_the_floor_gives_back_a_retry_a_second_after_the_budget_is_spent(
    connect: Connect,
) -> None:
    h = connect(
        answer(503, {}),
        answer(503, {}),
        answer(503, {}),
        OK,
        get_retries=1,
        retry_budget_ratio=0.0,
        retry_budget_min_per_second=1.0,
        breaker_failures=100,
    )
    while h.client.retry_budget.try_retry():
        pass

    with pytest.raises(UpstreamUnavailable):
        await h.get()
    assert h.upstream.count() == 1
    h.clock.advance(1.0)
    h.delays.clear()
    with pytest.raises(UpstreamUnavailable):
        await h.get()  # one retry, refilled by the floor
    assert h.upstream.count() == 3
    assert len(h.delays) == 1


async def test_a_post_is_never_retried_whatever_the_budget_holds(connect: Connect) -> None:
    h = connect(answer(503, {}), OK, get_retries=5, retry_budget_ratio=1.0)

    with pytest.raises(UpstreamUnavailable):
        await h.post()

    assert h.upstream.count("POST") == 1
    assert h.delays == []
