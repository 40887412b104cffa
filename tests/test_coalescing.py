"""Reuse of upstream answers: identical GETs in flight coalesced, and the short cache.

Through the schema (a fresh context per request, as the app builds one) for what callers see, and
through one client with a gated mock transport for cancellation and the cache's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway import normalize
from gateway.clients import MAX_KEPT_ANSWER_BYTES, NormalizedAnswers
from gateway.credentials import Credential
from gateway.errors import UpstreamUnavailable
from gateway.normalize import Drift, DriftKind, DriftRecorder
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
)
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.request_id import REQUEST_ID
from gateway.upstreams import AlmanacClient, AutopostingClient, reuse
from gateway.upstreams.reuse import (
    AHEAD_MAX_LOAD,
    AHEAD_MIN_SECONDS,
    CachePolicy,
    Coalescer,
    MemoryResponseCache,
    ProcessLoad,
    credential_digest,
    request_key,
)
from tests.support import FakeClock, Gateway, eventually, make_settings, sandbox_transports

NO_DRIFT: DriftRecorder = lambda drift: None  # noqa: E731


def IDLE() -> float:  # noqa: N802 - a constant load
    """The load of a process with CPU to spare."""
    return 0.0


ALMANAC = """{ billingAccount(provider: ALMANAC, accountId: "org_acme") {
  __typename ... on BillingAccount { accountId manage { allowed } }
  ... on ProviderError { code provider } } }"""
BOTH = """{
  almanac: billingAccount(provider: ALMANAC, accountId: "org_acme") {
    __typename ... on BillingAccount { manage { allowed } }
  }
  autoposting: billingAccount(provider: AUTOPOSTING) {
    __typename ... on BillingAccount { accountId subscription { status } }
  }
}"""
OWNER_PRO = {"x-almanac-token": ALMANAC_OWNER_TOKEN, "x-autoposting-api-key": AUTOPOSTING_PRO_KEY}
VIEWER_TRIAL = {
    "x-almanac-token": ALMANAC_VIEWER_TOKEN,
    "x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY,
}
BILLING = "/v1/organizations/org_acme/billing"
TOKEN = Credential("alm_token_one")
OTHER_TOKEN = Credential("alm_token_two")


def slow(state: SandboxState, seconds: float = 0.05) -> None:
    """Every upstream answer waits, so that concurrent requests overlap."""
    for provider in ("almanac", "autoposting"):
        state.add_fault(provider, Fault(delay=seconds))


# Through the schema


@pytest.fixture
async def gateway(state: SandboxState) -> AsyncIterator[Gateway]:
    # Counts of GETs made for concurrent requests: none started ahead for later ones (tested on
    # its own below).
    gw = Gateway(
        settings=make_settings(GATEWAY_COALESCE="true", GATEWAY_COALESCE_AHEAD="0"), state=state
    )
    yield gw
    await gw.aclose()


async def test_concurrent_requests_for_one_account_and_credential_make_one_upstream_get(
    gateway: Gateway, state: SandboxState
) -> None:
    slow(state)

    results = await asyncio.gather(*(gateway.execute(ALMANAC) for _ in range(10)))

    assert all(r["billingAccount"]["manage"]["allowed"] is True for r in results)
    assert state.count("almanac", "GET", BILLING) == 1


async def test_callers_with_other_credentials_are_never_coalesced_and_see_their_own_data(
    gateway: Gateway, state: SandboxState
) -> None:
    slow(state)
    order = [OWNER_PRO, VIEWER_TRIAL] * 10

    results = await asyncio.gather(*(gateway.execute(BOTH, headers=h) for h in order))

    for headers, data in zip(order, results, strict=True):
        owner = headers is OWNER_PRO
        assert data["almanac"]["manage"]["allowed"] is owner
        assert data["autoposting"]["accountId"] == ("org-pro-demo" if owner else "org-trial-demo")
        assert data["autoposting"]["subscription"]["status"] == ("ACTIVE" if owner else "TRIALING")
    # One GET per credential and resource, each sent with its own credential.
    assert state.count("almanac", "GET", BILLING) == 2
    assert state.count("autoposting", "GET", "/billing/status") == 2
    sent = {c.headers["authorization"] for c in state.calls("almanac")}
    assert sent == {f"Bearer {ALMANAC_OWNER_TOKEN}", f"Bearer {ALMANAC_VIEWER_TOKEN}"}


async def test_a_failing_shared_get_gives_every_waiter_the_typed_error(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("almanac", Fault(delay=0.05, status=503), times=1)

    results = await asyncio.gather(*(gateway.execute(ALMANAC) for _ in range(5)))

    for data in results:
        assert data["billingAccount"] == {
            "__typename": "ProviderError",
            "code": "UPSTREAM_UNAVAILABLE",
            "provider": "ALMANAC",
        }
    assert state.count("almanac") == 1


async def test_coalescing_can_be_turned_off(state: SandboxState) -> None:
    gateway = Gateway(settings=make_settings(GATEWAY_COALESCE="false"), state=state)
    slow(state)
    try:
        await asyncio.gather(*(gateway.execute(ALMANAC) for _ in range(3)))
    finally:
        await gateway.aclose()

    assert state.count("almanac") == 3


async def test_answers_are_cached_across_requests_only_when_configured(
    state: SandboxState,
) -> None:
    settings = make_settings(GATEWAY_COALESCE="true", GATEWAY_CACHE_SECONDS="60")
    gateway = Gateway(settings=settings, state=state)
    try:
        for _ in range(3):
            await gateway.execute(ALMANAC)
            await gateway.execute(ALMANAC, headers=VIEWER_TRIAL)
    finally:
        await gateway.aclose()

    assert state.count("almanac", "GET", BILLING) == 2  # one per credential


async def test_nothing_is_cached_by_default(gateway: Gateway, state: SandboxState) -> None:
    for _ in range(3):
        await gateway.execute(ALMANAC)

    assert state.count("almanac") == 3


# One client


class Gate:
    """A mock upstream whose answers wait until `open()`; counts requests and cancellations."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.cancelled = 0
        self.event = asyncio.Event()

    def open(self) -> None:
        self.event.set()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            await self.event.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return httpx.Response(self.status, json={"n": len(self.requests), "plans": []})


@pytest.fixture
def gate() -> Gate:
    return Gate()


def almanac(gate: Gate, **options: object) -> AlmanacClient:
    settings = make_settings(GATEWAY_GET_RETRIES="0").upstream(Provider.ALMANAC)
    return AlmanacClient(settings, transport=httpx.MockTransport(gate.handler), **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(gate: Gate) -> AsyncIterator[AlmanacClient]:
    client = almanac(gate)
    yield client
    await client.aclose()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_cancelled_waiter_leaves_the_shared_get_to_the_others(
    client: AlmanacClient, gate: Gate
) -> None:
    calls = [
        asyncio.create_task(client.get_billing_state("org_acme", credential=TOKEN))
        for _ in range(3)
    ]
    await settle()
    calls[0].cancel()  # the first caller, whose task sends the request
    await settle()
    gate.open()

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] == results[2] == {"n": 1, "plans": []}
    assert results[1] is results[2]
    assert len(gate.requests) == 1
    assert gate.cancelled == 0


async def test_the_shared_get_is_cancelled_when_every_waiter_is(
    client: AlmanacClient, gate: Gate
) -> None:
    calls = [
        asyncio.create_task(client.get_billing_state("org_acme", credential=TOKEN))
        for _ in range(2)
    ]
    await settle()
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    await settle()

    assert gate.cancelled == 1
    # The next caller starts a fresh call rather than joining the cancelled one.
    gate.open()
    assert await client.get_billing_state("org_acme", credential=TOKEN) == {"n": 2, "plans": []}


async def test_every_waiter_of_a_failed_get_gets_the_same_typed_error() -> None:
    gate = Gate(status=503)
    client = almanac(gate)
    calls = [
        asyncio.create_task(client.get_billing_state("org_acme", credential=TOKEN))
        for _ in range(3)
    ]
    await settle()
    gate.open()
    results = await asyncio.gather(*calls, return_exceptions=True)
    await client.aclose()

    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert len(gate.requests) == 1


async def test_gets_with_other_credentials_paths_or_params_are_sent_separately(
    client: AlmanacClient, gate: Gate
) -> None:
    calls = [
        client.get_billing_state("org_acme", credential=TOKEN),
        client.get_billing_state("org_acme", credential=OTHER_TOKEN),
        client.get_billing_state("org_other", credential=TOKEN),
        client.get(BILLING, credential=TOKEN, params={"a": "1"}),
    ]
    tasks = [asyncio.create_task(c) for c in calls]
    await settle()
    gate.open()
    await asyncio.gather(*tasks)

    assert len(gate.requests) == 4


async def test_posts_are_never_coalesced_nor_cached(gate: Gate) -> None:
    client = almanac(
        gate, cache=MemoryResponseCache(max_entries=10), cache_policy=CachePolicy(60, 60)
    )
    posts = [
        asyncio.create_task(
            client.create_checkout("org_acme", plan_id="p", success_url=None, credential=TOKEN)
        )
        for _ in range(2)
    ]
    await settle()
    gate.open()
    await asyncio.gather(*posts)
    await client.create_checkout("org_acme", plan_id="p", success_url=None, credential=TOKEN)
    await client.aclose()

    assert len(gate.requests) == 3


async def test_coalesced_waiters_are_counted_in_the_metrics(
    client: AlmanacClient, gate: Gate
) -> None:
    metrics = Metrics()
    metrics.watch([client])
    tasks = [
        asyncio.create_task(client.get_billing_state("org_acme", credential=TOKEN))
        for _ in range(4)
    ]
    await settle()
    gate.open()
    await asyncio.gather(*tasks)

    labels = {"provider": "almanac", "endpoint": "/v1/organizations/{id}/billing"}
    value = metrics.registry.get_sample_value("gateway_upstream_coalesced_waiters_total", labels)
    assert value == 3


# The cache


async def test_a_cached_answer_is_served_within_its_ttl_and_fetched_again_after(gate: Gate) -> None:
    clock = FakeClock()
    metrics = Metrics()
    client = almanac(
        gate,
        cache=MemoryResponseCache(max_entries=10, clock=clock),
        cache_policy=CachePolicy(state_seconds=30),
    )
    metrics.watch([client])
    gate.open()

    first = await client.get_billing_state("org_acme", credential=TOKEN)
    clock.now += 29.9
    second = await client.get_billing_state("org_acme", credential=TOKEN)
    clock.now += 0.1
    third = await client.get_billing_state("org_acme", credential=TOKEN)
    await client.aclose()

    assert first == second == {"n": 1, "plans": []}
    assert third == {"n": 2, "plans": []}
    labels = {"provider": "almanac", "endpoint": "/v1/organizations/{id}/billing"}
    sample = metrics.registry.get_sample_value
    assert sample("gateway_upstream_cache_lookups_total", {**labels, "result": "hit"}) == 1
    assert sample("gateway_upstream_cache_lookups_total", {**labels, "result": "miss"}) == 2


async def test_the_cache_keeps_each_credentials_answer_apart(gate: Gate) -> None:
    client = almanac(gate, cache=MemoryResponseCache(max_entries=10), cache_policy=CachePolicy(30))
    gate.open()

    one = await client.get_billing_state("org_acme", credential=TOKEN)
    two = await client.get_billing_state("org_acme", credential=OTHER_TOKEN)
    again = await client.get_billing_state("org_acme", credential=TOKEN)
    await client.aclose()

    assert one == again == {"n": 1, "plans": []}
    assert two == {"n": 2, "plans": []}


async def test_errors_are_not_cached() -> None:
    gate = Gate(status=503)
    gate.open()
    client = almanac(gate, cache=MemoryResponseCache(max_entries=10), cache_policy=CachePolicy(30))
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await client.get_billing_state("org_acme", credential=TOKEN)
    await client.aclose()

    assert len(gate.requests) == 2


async def test_usage_is_cached_only_with_its_own_setting(gate: Gate) -> None:
    gate.open()

    def autoposting(policy: CachePolicy) -> AutopostingClient:
        settings = make_settings().upstream(Provider.AUTOPOSTING)

        async def handler(request: httpx.Request) -> httpx.Response:
            gate.requests.append(request)
            return httpx.Response(200, json={"success": True, "data": {}})

        return AutopostingClient(
            settings,
            transport=httpx.MockTransport(handler),
            cache=MemoryResponseCache(max_entries=10),
            cache_policy=policy,
        )

    state_only = autoposting(CachePolicy(state_seconds=30))
    for _ in range(2):
        await state_only.get_billing_status(credential=TOKEN)
        await state_only.get_profile(credential=TOKEN)
        await state_only.get_credit_summary(credential=TOKEN)
        await state_only.get_token_usage(period="30d", credential=TOKEN)
    await state_only.aclose()
    paths = [r.url.path for r in gate.requests]
    assert paths.count("/billing/status") == paths.count("/auth/profile") == 1
    assert paths.count("/billing/credit-summary") == paths.count("/usage/tokens") == 2

    gate.requests.clear()
    with_usage = autoposting(CachePolicy(state_seconds=30, usage_seconds=10))
    for _ in range(2):
        await with_usage.get_credit_summary(credential=TOKEN)
        await with_usage.get_token_usage(period="30d", credential=TOKEN)
    await with_usage.aclose()
    assert len(gate.requests) == 2


async def test_the_memory_cache_drops_the_least_recently_used_entry_beyond_its_bound() -> None:
    cache = MemoryResponseCache(max_entries=2)
    await cache.set("a", 1, 60)
    await cache.set("b", 2, 60)
    assert await cache.get("a") is not None  # "b" is now the least recently used
    await cache.set("c", 3, 60)

    assert await cache.get("b") is None
    assert [(await cache.get(k)) is not None for k in ("a", "c")] == [True, True]
    assert len(cache) == 2


def test_keys_name_a_hash_of_the_credential_never_the_credential() -> None:
    key = request_key("almanac", BILLING, {"b": "2", "a": "1"}, TOKEN)

    assert TOKEN.reveal() not in key
    assert credential_digest(TOKEN) in key
    assert key == request_key("almanac", BILLING, {"a": "1", "b": "2"}, TOKEN)
    assert key != request_key("almanac", BILLING, {"a": "1", "b": "2"}, OTHER_TOKEN)
    assert request_key("almanac", BILLING, None, None).endswith(" -")


async def test_a_coalescer_forgets_a_key_once_its_call_is_done() -> None:
    coalescer = Coalescer()
    calls = 0

    async def call() -> object:
        nonlocal calls
        calls += 1
        return calls

    assert await coalescer.run("k", call) == 1
    # A key kept after its call would answer the finished call's result again.
    assert await coalescer.run("k", call) == 2


# Normalized models shared with the answers


@pytest.fixture
def normalized(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The Almanac answers normalized from now on, in order."""
    seen: list[object] = []
    real = normalize.almanac_billing

    def counting(payload: object, **options: str) -> object:
        seen.append(payload)
        return real(payload, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(normalize, "almanac_billing", counting)
    return seen


async def test_requests_sharing_one_upstream_answer_share_its_normalized_models(
    gateway: Gateway, state: SandboxState, normalized: list[object]
) -> None:
    slow(state)

    results = await asyncio.gather(*(gateway.execute(ALMANAC) for _ in range(10)))

    assert all(r["billingAccount"]["manage"]["allowed"] is True for r in results)
    assert state.count("almanac", "GET", BILLING) == 1
    assert len(normalized) == 1


async def test_a_new_answer_equal_to_one_without_drift_is_not_normalized_again(
    gateway: Gateway, state: SandboxState, normalized: list[object]
) -> None:
    for _ in range(3):
        await gateway.execute(ALMANAC)
    assert state.count("almanac", "GET", BILLING) == 3
    assert len(normalized) == 1
    state.add_fault(
        "almanac", Fault(status=200, body={**(await real_billing()), "organization_id": "org_x"})
    )

    await gateway.execute(ALMANAC)  # another answer: normalized

    assert len(normalized) == 2


async def real_billing() -> dict[str, object]:
    upstream = make_settings().upstream(Provider.ALMANAC)
    client = AlmanacClient(upstream, transport=sandbox_transports(SandboxState())[Provider.ALMANAC])
    try:
        body = await client.get_billing_state(
            "org_acme", credential=Credential(ALMANAC_OWNER_TOKEN)
        )
    finally:
        await client.aclose()
    assert isinstance(body, dict)
    return body


def test_normalized_answers_are_kept_by_identity_and_by_content_and_bounded() -> None:
    answers = NormalizedAnswers(max_entries=2)
    first, equal, other = {"a": 1}, {"a": 1}, {"a": 2}
    made: list[object] = []

    def make(payload: object) -> Callable[[DriftRecorder], object]:
        def normalize(drift: DriftRecorder) -> object:
            made.append(payload)
            return object()

        return normalize

    one = answers.get("kind", first, make(first), NO_DRIFT)
    assert answers.get("kind", first, make(first), NO_DRIFT) is one
    assert answers.get("kind", equal, make(equal), NO_DRIFT) is one  # the same content
    assert answers.get("other kind", first, make(first), NO_DRIFT) is not one
    assert answers.get("kind", other, make(other), NO_DRIFT) is not one
    assert len(answers) == 2
    assert made == [first, first, other]


def test_an_answer_longer_than_what_is_kept_is_normalized_each_time_and_kept_nowhere() -> None:
    answers = NormalizedAnswers()
    long = {"text": "x" * MAX_KEPT_ANSWER_BYTES}
    made: list[object] = []

    def normalize(drift: DriftRecorder) -> object:
        made.append(long)
        return object()

    first = answers.get("kind", long, normalize, NO_DRIFT)
    again = answers.get("kind", long, normalize, NO_DRIFT)  # the same object, even

    assert first is not again
    assert len(made) == 2
    assert len(answers) == 0


def test_an_answer_that_showed_drift_is_normalized_and_counted_every_time() -> None:
    answers = NormalizedAnswers()
    seen: list[Drift] = []
    found = Drift(Provider.ALMANAC, "/v1/x", "plans[].price", DriftKind.MALFORMED, 1)

    def normalize(drift: DriftRecorder) -> object:
        drift(found)
        return object()

    first = answers.get("kind", {"a": 1}, normalize, seen.append)
    again = answers.get("kind", {"a": 1}, normalize, seen.append)

    assert first is not again
    assert seen == [found, found]


# The next call started ahead (GATEWAY_COALESCE_AHEAD)


class GatedCalls:
    """A call that waits for its gate to open, and counts how many were made and with which
    request id."""

    def __init__(self, *, fail: bool = False) -> None:
        self.made = 0
        self.request_ids: list[str | None] = []
        self.gates: list[asyncio.Event] = []
        self.fail = fail

    async def __call__(self) -> object:
        self.made += 1
        number = self.made
        self.request_ids.append(REQUEST_ID.get())
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail:
            raise UpstreamUnavailable("down", provider=Provider.ALMANAC)
        return number

    def open(self) -> None:
        """Let the latest call end."""
        self.gates[-1].set()


async def callers(
    coalescer: Coalescer, calls: GatedCalls, count: int
) -> list[asyncio.Task[object]]:
    tasks = [asyncio.create_task(coalescer.run("k", calls)) for _ in range(count)]
    await settle()
    return tasks


async def test_a_call_shared_by_enough_callers_starts_the_next_one_as_it_ends() -> None:
    coalescer = Coalescer(ahead=3, load=IDLE)
    calls = GatedCalls()
    token = REQUEST_ID.set("req-first")
    try:
        first = await callers(coalescer, calls, 3)
    finally:
        REQUEST_ID.reset(token)
    await asyncio.sleep(AHEAD_MIN_SECONDS)
    calls.open()
    assert await asyncio.gather(*first) == [1, 1, 1]
    await settle()

    # The next call is on its way before anyone asks: a caller now joins it.
    assert calls.made == 2
    later = await callers(coalescer, calls, 1)
    calls.open()
    assert await asyncio.gather(*later) == [2]
    # It ran for no request: no request id of the callers that came before.
    assert calls.request_ids == ["req-first", None]


async def shared_call_ended(
    count: int,
    *,
    ahead: int = 2,
    took: float = AHEAD_MIN_SECONDS,
    load: Callable[[], float] = IDLE,
) -> tuple[Coalescer, GatedCalls]:
    """A coalescer whose first call `count` callers shared, ended after `took` seconds."""
    coalescer = Coalescer(ahead=ahead, load=load)
    calls = GatedCalls()
    tasks = await callers(coalescer, calls, count)
    await asyncio.sleep(took)
    calls.open()
    await asyncio.gather(*tasks)
    await settle()
    return coalescer, calls


async def test_a_call_with_few_callers_no_ahead_or_a_quick_answer_starts_none() -> None:
    for ahead, count, took in ((3, 2, AHEAD_MIN_SECONDS), (0, 10, AHEAD_MIN_SECONDS), (3, 5, 0)):
        _, calls = await shared_call_ended(count, ahead=ahead, took=took)

        assert calls.made == 1, (ahead, count, took)


async def test_a_call_that_ends_while_the_process_is_busy_starts_none_ahead() -> None:
    _, calls = await shared_call_ended(4, load=lambda: AHEAD_MAX_LOAD + 0.1)

    assert calls.made == 1


def test_the_process_load_is_its_cpu_time_over_the_last_window() -> None:
    wall, cpu = FakeClock(), FakeClock()
    load = ProcessLoad(0.1, clock=wall, cpu=cpu)
    assert load() == 0.0
    wall.advance(0.05)
    cpu.advance(0.05)
    assert load() == 0.0  # the window is not over: the last figure
    wall.advance(0.075)
    assert load() == pytest.approx(0.05 / 0.125)
    wall.advance(1.0)
    cpu.advance(0.25)
    assert load() == pytest.approx(0.25)


async def test_a_failed_call_starts_none_ahead() -> None:
    coalescer = Coalescer(ahead=2, load=IDLE)
    calls = GatedCalls(fail=True)
    tasks = await callers(coalescer, calls, 4)
    calls.open()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await settle()

    assert all(isinstance(result, UpstreamUnavailable) for result in results)
    assert calls.made == 1


async def test_a_call_started_ahead_that_nobody_joins_ends_the_chain() -> None:
    coalescer, calls = await shared_call_ended(5)
    calls.open()  # the call started ahead ends with no caller
    await settle()

    assert calls.made == 2
    # The key is free again: the next caller starts a call of its own.
    again = await callers(coalescer, calls, 1)
    calls.open()
    assert await asyncio.gather(*again) == [3]


async def test_a_call_started_ahead_is_cancelled_when_its_only_caller_is() -> None:
    coalescer, calls = await shared_call_ended(2)
    [waiting] = await callers(coalescer, calls, 1)
    waiting.cancel()
    await settle()

    assert calls.made == 2
    assert len(coalescer._calls) == 0


async def test_the_app_starts_the_next_get_ahead_for_the_requests_that_follow(
    state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reuse, "PROCESS_LOAD", IDLE)  # the test process's own load aside
    gateway = Gateway(settings=make_settings(GATEWAY_COALESCE_AHEAD="4"), state=state)
    slow(state, 0.5)  # long enough for the next request to come while the GET ahead is out
    try:
        first = await asyncio.gather(*(gateway.execute(ALMANAC) for _ in range(4)))
        # As the shared GET ended, the next one started: a request now joins it.
        await eventually(lambda: state.count("almanac", "GET", BILLING) == 2)
        later = await gateway.execute(ALMANAC)
        await asyncio.sleep(0.1)  # one caller only: it starts none ahead
    finally:
        await gateway.aclose()

    assert all(r["billingAccount"]["manage"]["allowed"] is True for r in [*first, later])
    assert state.count("almanac", "GET", BILLING) == 2
