"""Idempotency keys of `startCheckout`: through the schema against the sandbox, and the store."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.checkout.idempotency import (
    Acquired,
    CheckoutLimits,
    Conflict,
    MemoryIdempotencyStore,
    RememberedFailure,
    Replay,
    Scope,
    checkout_scope,
)
from gateway.checkout.start import checkout_was_refused
from gateway.context import caller_digest
from gateway.credentials import Credential
from gateway.errors import (
    BillingSuspended,
    CheckoutLimit,
    CheckoutLimitReached,
    UpstreamBadResponse,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.models import CheckoutSession
from gateway.provider import Provider
from gateway.sandbox import (
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
)
from tests.support import (
    AUTOPOSTING_CHECKOUT,
    CANCEL_URL,
    SUCCESS_URL,
    TEST_API_KEY,
    FakeClock,
    Gateway,
    make_settings,
    start_checkout,
)

KEY = "5f0c9a8e-2b1d-4c3e-9f7a-6d5e4c3b2a10"
ALMANAC = {"provider": "ALMANAC", "accountId": "org_acme", "planId": "pro"}


def posts(state: SandboxState) -> int:
    return state.count("autoposting", "POST")


# --- the same key again ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "provider"),
    [(AUTOPOSTING_CHECKOUT, "autoposting"), (ALMANAC, "almanac")],
    ids=["autoposting", "almanac"],
)
async def test_the_same_key_and_input_twice_return_the_same_session_after_one_post(
    gateway: Gateway, state: SandboxState, fields: dict[str, str], provider: str
) -> None:
    first = await start_checkout(gateway, **fields, idempotencyKey=KEY)
    second = await start_checkout(gateway, **fields, idempotencyKey=KEY)

    assert first["__typename"] == "CheckoutSession"
    assert second == first
    assert state.count(provider, "POST") == 1
    assert len(state.checkouts) == 1


async def test_without_a_key_every_call_starts_a_checkout_of_its_own(
    gateway: Gateway, state: SandboxState
) -> None:
    first = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT)
    second = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT)

    assert first["sessionId"] != second["sessionId"]
    assert posts(state) == 2


async def test_concurrent_calls_with_the_same_key_and_input_share_one_post_and_one_session(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(delay=0.2), method="POST")

    first, second = await asyncio.gather(
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
    )

    assert first["__typename"] == "CheckoutSession"
    assert second == first
    assert posts(state) == 1
    assert len(state.checkouts) == 1


DIFFERENT_INPUT = [
    pytest.param(AUTOPOSTING_CHECKOUT, {"successUrl": f"{SUCCESS_URL}?again"}, id="success-url"),
    pytest.param(AUTOPOSTING_CHECKOUT, {"cancelUrl": f"{CANCEL_URL}?again"}, id="cancel-url"),
    pytest.param(AUTOPOSTING_CHECKOUT, {"planId": "pro"}, id="plan-id-spelling"),
    pytest.param(AUTOPOSTING_CHECKOUT, {"accountId": "org-pro-demo"}, id="account-id-given"),
    pytest.param(ALMANAC, {"planId": "team"}, id="almanac-plan"),
    pytest.param(ALMANAC, {"cancelUrl": CANCEL_URL}, id="almanac-cancel-url-not-sent"),
]


@pytest.mark.parametrize(("fields", "change"), DIFFERENT_INPUT)
async def test_the_same_key_with_different_input_is_an_idempotency_conflict_without_a_post(
    gateway: Gateway, state: SandboxState, fields: dict[str, str], change: dict[str, str]
) -> None:
    first = await start_checkout(gateway, **fields, idempotencyKey=KEY)
    calls = state.count()

    error = await start_checkout(gateway, **{**fields, **change}, idempotencyKey=KEY)

    assert first["__typename"] == "CheckoutSession"
    assert error["__typename"] == "InvalidInputError"
    assert error["code"] == "IDEMPOTENCY_CONFLICT"
    assert error["field"] == "idempotencyKey"
    assert state.count() == calls
    assert len(state.checkouts) == 1


class PostStarted(httpx.AsyncBaseTransport):
    """Sets `started` when a POST is handed to the provider."""

    def __init__(self, inner: httpx.AsyncBaseTransport, started: asyncio.Event) -> None:
        self.inner = inner
        self.started = started

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.started.set()
        return await self.inner.handle_async_request(request)


async def test_a_call_with_other_input_while_the_key_is_in_flight_is_refused_at_once(
    state: SandboxState,
) -> None:
    started = asyncio.Event()
    gateway = Gateway(
        settings=make_settings(),
        state=state,
        wrap_transport=lambda _provider, transport: PostStarted(transport, started),
    )
    state.add_fault("autoposting", Fault(delay=0.3), method="POST")
    try:
        first = asyncio.create_task(
            start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        )
        await started.wait()
        other = {**AUTOPOSTING_CHECKOUT, "cancelUrl": CANCEL_URL + "?x"}
        error = await start_checkout(gateway, **other, idempotencyKey=KEY)
        in_flight = not first.done()
        session = await first
    finally:
        await gateway.aclose()

    assert error["code"] == "IDEMPOTENCY_CONFLICT"
    assert in_flight
    assert session["__typename"] == "CheckoutSession"
    assert posts(state) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY},
        {"authorization": "Bearer another-gateway-key"},
    ],
    ids=["another-provider-credential", "another-gateway-key"],
)
async def test_the_same_key_from_another_caller_is_independent(
    gateway: Gateway, state: SandboxState, headers: dict[str, str]
) -> None:
    mine = await start_checkout(
        gateway,
        {"authorization": f"Bearer {TEST_API_KEY}"},
        **AUTOPOSTING_CHECKOUT,
        idempotencyKey=KEY,
    )
    theirs = await start_checkout(gateway, headers, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)

    assert theirs["__typename"] == "CheckoutSession"
    assert theirs["sessionId"] != mine["sessionId"]
    assert posts(state) == 2


async def test_the_same_key_for_another_provider_is_independent(
    gateway: Gateway, state: SandboxState
) -> None:
    autoposting = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
    almanac = await start_checkout(gateway, **ALMANAC, idempotencyKey=KEY)

    assert autoposting["__typename"] == almanac["__typename"] == "CheckoutSession"
    assert state.count("almanac", "POST") == state.count("autoposting", "POST") == 1


async def test_a_key_expires_after_the_ttl_and_then_starts_a_new_checkout(
    state: SandboxState,
) -> None:
    clock = FakeClock()
    gateway = Gateway(
        settings=make_settings(),
        state=state,
        idempotency=MemoryIdempotencyStore(60, clock=clock),
    )
    try:
        first = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        clock.now += 59
        within = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        clock.now += 2
        after = await start_checkout(
            gateway, **{**AUTOPOSTING_CHECKOUT, "cancelUrl": CANCEL_URL + "?x"}, idempotencyKey=KEY
        )
    finally:
        await gateway.aclose()

    assert within == first
    assert after["__typename"] == "CheckoutSession"
    assert after["sessionId"] != first["sessionId"]
    assert posts(state) == 2


# --- failures ----------------------------------------------------------------------------------


SUSPENDED = {"success": False, "error": "billing_suspended", "message": "Billing is suspended"}


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(status=403, body=SUSPENDED), "BILLING_SUSPENDED"),
        (Fault(status=400, body={"success": False, "error": "bad_request"}), "UPSTREAM_REJECTED"),
        (Fault(status=409, body={"success": False, "error": "conflict"}), "UPSTREAM_REJECTED"),
        # Retry-After 0: a longer wait throttles the credential, and the retry would not be sent.
        (Fault(status=429, headers={"Retry-After": "0"}), "RATE_LIMITED"),
        (Fault(status=401, body={"success": False, "error": "unauthorized"}), "UNAUTHENTICATED"),
    ],
    ids=["403-billing-suspended", "400", "409", "429", "401"],
)
async def test_a_checkout_the_provider_refused_can_be_retried_with_the_same_key(
    gateway: Gateway, state: SandboxState, fault: Fault, code: str
) -> None:
    state.add_fault("autoposting", fault, method="POST", times=1)

    refused = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
    retried = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)

    assert refused["code"] == code
    assert retried["__typename"] == "CheckoutSession"
    assert posts(state) == 2
    assert len(state.checkouts) == 1


async def test_a_suspended_key_posts_again_on_a_retry_with_the_same_idempotency_key(
    gateway: Gateway, state: SandboxState
) -> None:
    headers = {"x-autoposting-api-key": AUTOPOSTING_SUSPENDED_KEY}

    first = await start_checkout(gateway, headers, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
    second = await start_checkout(gateway, headers, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)

    assert first["__typename"] == second["__typename"] == "BillingSuspendedError"
    assert posts(state) == 2
    assert state.checkouts == []


async def test_a_failure_before_the_post_releases_the_key(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=503), path="/auth/profile", times=1)
    fields = {**AUTOPOSTING_CHECKOUT, "accountId": "org-pro-demo"}

    failed = await start_checkout(gateway, **fields, idempotencyKey=KEY)
    retried = await start_checkout(gateway, **fields, idempotencyKey=KEY)

    assert failed["code"] == "UPSTREAM_UNAVAILABLE"
    assert failed["retryable"] is True
    assert retried["__typename"] == "CheckoutSession"
    assert posts(state) == 1


async def test_a_checkout_refused_by_an_open_circuit_was_never_sent_and_releases_the_key(
    state: SandboxState,
) -> None:
    gateway = Gateway(
        settings=make_settings(GATEWAY_BREAKER_FAILURES="1", GATEWAY_BREAKER_RESET_SECONDS="0.1"),
        state=state,
    )
    state.add_fault("autoposting", Fault(status=503), method="POST", times=1)
    try:
        await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey="opens-the-circuit")
        failing_fast = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        await asyncio.sleep(0.15)
        retried = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
    finally:
        await gateway.aclose()

    assert failing_fast["code"] == "UPSTREAM_UNAVAILABLE"
    assert failing_fast["upstreamStatus"] is None
    assert "new idempotency key" not in failing_fast["message"]
    assert retried["__typename"] == "CheckoutSession"
    assert posts(state) == 2


class AnswerLost(httpx.AsyncBaseTransport):
    """Lets the checkout POST reach the provider, which creates the checkout, then loses the
    answer with `error`: the case an idempotency key exists for."""

    def __init__(self, inner: httpx.AsyncBaseTransport, error: type[httpx.TransportError]) -> None:
        self.inner = inner
        self.error = error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            await response.aread()
            raise self.error("answer lost", request=request)
        return response


@pytest.mark.parametrize(
    ("fault", "lost", "code", "created"),
    [
        (Fault(status=503), None, "UPSTREAM_UNAVAILABLE", 0),
        (Fault(status=500), None, "UPSTREAM_UNAVAILABLE", 0),
        (Fault(status=502), None, "UPSTREAM_UNAVAILABLE", 0),
        (
            Fault(status=200, body="<html>", content_type="text/html"),
            None,
            "UPSTREAM_BAD_RESPONSE",
            0,
        ),
        (None, httpx.ReadTimeout, "UPSTREAM_TIMEOUT", 1),
        (None, httpx.RemoteProtocolError, "UPSTREAM_UNREACHABLE", 1),
    ],
    ids=["503", "500", "502", "html-success", "read-timeout-after-sending", "connection-lost"],
)
async def test_a_checkout_with_an_unknown_outcome_is_remembered_and_never_posted_again(
    state: SandboxState,
    fault: Fault | None,
    lost: type[httpx.TransportError] | None,
    code: str,
    created: int,
) -> None:
    def wrap(provider: Provider, transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        return AnswerLost(transport, lost) if lost else transport

    gateway = Gateway(settings=make_settings(), state=state, wrap_transport=wrap)
    if fault is not None:
        state.add_fault("autoposting", fault, method="POST", times=1)
    try:
        first = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        second = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        conflict = await start_checkout(
            gateway, **{**AUTOPOSTING_CHECKOUT, "planId": "pro"}, idempotencyKey=KEY
        )
    finally:
        await gateway.aclose()

    assert first["__typename"] == "ProviderError"
    assert first["code"] == code
    assert "retry with a new idempotency key after checking" in first["message"]
    assert first["retryable"] is False
    assert second == first
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT"
    assert posts(state) == 1
    assert len(state.checkouts) == created


async def test_a_checkout_cancelled_while_posting_is_remembered_as_an_unknown_outcome(
    state: SandboxState,
) -> None:
    started = asyncio.Event()
    gateway = Gateway(
        settings=make_settings(),
        state=state,
        wrap_transport=lambda _provider, transport: PostStarted(transport, started),
    )
    state.add_fault("autoposting", Fault(delay=0.3), method="POST", times=1)
    try:
        first = asyncio.create_task(
            start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
        )
        await started.wait()
        first.cancel()  # the caller went away while the POST was on its way
        with pytest.raises(asyncio.CancelledError):
            await first
        retried = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY)
    finally:
        await gateway.aclose()

    assert retried["code"] == "UPSTREAM_UNREACHABLE"
    assert "interrupted" in retried["message"]
    assert "retry with a new idempotency key after checking" in retried["message"]
    assert posts(state) == 1


async def test_a_concurrent_call_waiting_on_an_unknown_outcome_gets_the_same_error(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(delay=0.2, status=503), method="POST", times=1)

    first, second = await asyncio.gather(
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
    )

    assert first["code"] == "UPSTREAM_UNAVAILABLE"
    assert second == first
    assert posts(state) == 1


async def test_a_concurrent_call_waiting_on_a_refused_checkout_tries_again_itself(
    gateway: Gateway, state: SandboxState
) -> None:
    refused = Fault(delay=0.2, status=429, headers={"Retry-After": "0"})  # throttles nothing
    state.add_fault("autoposting", refused, method="POST", times=1)

    first, second = await asyncio.gather(
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
        start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=KEY),
    )

    assert first["code"] == "RATE_LIMITED"
    assert second["__typename"] == "CheckoutSession"
    assert posts(state) == 2


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (UpstreamCircuitOpen("open", provider=Provider.AUTOPOSTING), True),
        (UpstreamUnauthorized("401", provider=Provider.AUTOPOSTING, status=401), True),
        (UpstreamForbidden("403", provider=Provider.AUTOPOSTING, status=403), True),
        (BillingSuspended("403", provider=Provider.AUTOPOSTING, status=403), True),
        (UpstreamNotFound("404", provider=Provider.AUTOPOSTING, status=404), True),
        (UpstreamRejected("422", provider=Provider.AUTOPOSTING, status=422), True),
        (UpstreamRateLimited("429", provider=Provider.AUTOPOSTING, status=429), True),
        (UpstreamUnavailable("503", provider=Provider.AUTOPOSTING, status=503), False),
        (UpstreamTimeout("timeout", provider=Provider.AUTOPOSTING), False),
        (UpstreamUnreachable("dropped", provider=Provider.AUTOPOSTING), False),
        (UpstreamBadResponse("html", provider=Provider.AUTOPOSTING, status=200), False),
        (asyncio.CancelledError(), False),
        (KeyError("bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_a_post_never_sent_or_refused_by_the_provider_counts_as_refused(
    error: BaseException, refused: bool
) -> None:
    assert checkout_was_refused(error) is refused


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "line\nbreak", "tab\there", "nul\x00", "zero\u200bwidth", "bell\x07"],
    ids=["empty", "too-long", "newline", "tab", "nul", "zero-width-space", "control"],
)
async def test_a_malformed_key_is_refused_before_any_upstream_call(
    gateway: Gateway, state: SandboxState, key: str
) -> None:
    error = await start_checkout(
        gateway, **{**AUTOPOSTING_CHECKOUT, "accountId": "org-pro-demo"}, idempotencyKey=key
    )

    assert error["__typename"] == "InvalidInputError"
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "idempotencyKey"
    assert key not in error["message"] or not key
    assert state.count() == 0


@pytest.mark.parametrize("key", ["k" * 255, "x", "order 42 / ünïcode"], ids=["255", "1", "text"])
async def test_a_key_of_1_to_255_printable_characters_is_accepted(
    gateway: Gateway, state: SandboxState, key: str
) -> None:
    session = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, idempotencyKey=key)

    assert session["__typename"] == "CheckoutSession"


def test_a_scope_holds_digests_of_the_credential_and_caller_never_their_values() -> None:
    credential = Credential(AUTOPOSTING_PRO_KEY)
    caller = caller_digest(f"Bearer {TEST_API_KEY}")
    scope = checkout_scope(Provider.AUTOPOSTING, credential, caller)

    assert AUTOPOSTING_PRO_KEY not in str(scope)
    assert TEST_API_KEY not in str(scope)
    assert (
        len(
            {
                scope,
                checkout_scope(Provider.ALMANAC, credential, caller),
                checkout_scope(Provider.AUTOPOSTING, Credential(AUTOPOSTING_TRIAL_KEY), caller),
                checkout_scope(Provider.AUTOPOSTING, credential, None),
                checkout_scope(Provider.AUTOPOSTING, credential, caller_digest("Bearer other")),
            }
        )
        == 5
    )


@pytest.mark.parametrize(
    ("header", "same_as_bearer_key"),
    [("Bearer key", True), ("bearer  key ", True), ("Basic key", False), ("key", True)],
)
def test_the_caller_digest_reads_the_bearer_token(header: str, same_as_bearer_key: bool) -> None:
    assert (caller_digest(header) == caller_digest("Bearer key")) is same_as_bearer_key
    assert caller_digest(None) is None
    assert caller_digest("Bearer ") is None


# --- the in-memory store -----------------------------------------------------------------------

SESSION = CheckoutSession(Provider.AUTOPOSTING, None, "plan_pro", "https://pay/x", "cs_1", raw={})
SCOPE = Scope(Provider.AUTOPOSTING, "0" * 64, "c" * 64)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(60, clock=clock, limits=CheckoutLimits(max_keys=3))


async def acquire(store: MemoryIdempotencyStore, key: str, fingerprint: str = "f") -> str:
    reservation = await store.reserve(SCOPE, key, fingerprint)
    assert isinstance(reservation, Acquired)
    return reservation.token


async def test_the_store_purges_expired_entries_so_memory_stays_bounded(
    store: MemoryIdempotencyStore, clock: FakeClock
) -> None:
    for key in ("a", "b"):
        await store.complete(SCOPE, key, await acquire(store, key), SESSION)
    assert store.size == 2

    clock.now += 61
    await acquire(store, "c")

    assert store.size == 1  # "a" and "b" are gone; "c" is in flight


async def test_a_full_store_refuses_a_new_key_and_keeps_every_live_one(
    store: MemoryIdempotencyStore, clock: FakeClock
) -> None:
    for key in ("a", "b", "c"):
        await store.complete(SCOPE, key, await acquire(store, key), SESSION)
        clock.now += 10

    with pytest.raises(CheckoutLimitReached) as refused:
        await store.reserve(SCOPE, "d", "f")

    assert refused.value.limit is CheckoutLimit.KEY_CAPACITY
    assert refused.value.retry_after == 30  # when "a", reserved 30 s ago with a TTL of 60, expires
    assert store.size == 3
    for key in ("a", "b", "c"):
        assert await store.reserve(SCOPE, key, "f") == Replay(SESSION)


async def test_a_full_store_reclaims_expired_keys_before_refusing_a_new_one(
    store: MemoryIdempotencyStore, clock: FakeClock
) -> None:
    for key in ("a", "b", "c"):
        await store.complete(SCOPE, key, await acquire(store, key), SESSION)
        clock.now += 10

    clock.now += 31  # "a" has expired; "b" and "c" are live

    assert isinstance(await store.reserve(SCOPE, "a", "other input"), Acquired)
    assert await store.reserve(SCOPE, "b", "f") == Replay(SESSION)
    with pytest.raises(CheckoutLimitReached):
        await store.reserve(SCOPE, "d", "f")


async def test_the_store_refuses_other_input_while_in_flight_and_after(
    store: MemoryIdempotencyStore,
) -> None:
    token = await acquire(store, "k", "first")
    assert await store.reserve(SCOPE, "k", "second") == Conflict()

    await store.complete(SCOPE, "k", token, SESSION)

    assert await store.reserve(SCOPE, "k", "second") == Conflict()
    assert await store.reserve(SCOPE, "k", "first") == Replay(SESSION)


async def test_a_waiter_on_a_released_key_reserves_it_for_itself(
    store: MemoryIdempotencyStore,
) -> None:
    token = await acquire(store, "k")
    waiter = asyncio.create_task(store.reserve(SCOPE, "k", "f"))
    await asyncio.sleep(0)
    assert not waiter.done()

    await store.release(SCOPE, "k", token)

    assert isinstance(await waiter, Acquired)


async def test_a_waiter_gets_a_remembered_failure_as_a_fresh_error_each_time(
    store: MemoryIdempotencyStore,
) -> None:
    failure = RememberedFailure(UpstreamTimeout, "lost", Provider.AUTOPOSTING)
    token = await acquire(store, "k")
    waiter = asyncio.create_task(store.reserve(SCOPE, "k", "f"))
    await asyncio.sleep(0)

    await store.complete(SCOPE, "k", token, failure)
    replay = await waiter

    assert replay == Replay(failure)
    first, second = failure.error(), failure.error()
    assert first is not second
    assert isinstance(first, UpstreamTimeout)
    assert isinstance(first, UpstreamError)
    assert (first.message, first.provider, first.retryable) == ("lost", Provider.AUTOPOSTING, False)


async def test_a_stale_token_neither_completes_nor_releases_another_reservation(
    store: MemoryIdempotencyStore,
) -> None:
    token = await acquire(store, "k")

    await store.complete(SCOPE, "k", "not-the-token", SESSION)
    await store.release(SCOPE, "k", "not-the-token")
    waiter = asyncio.create_task(store.reserve(SCOPE, "k", "f"))
    await asyncio.sleep(0)

    assert not waiter.done()
    await store.complete(SCOPE, "k", token, SESSION)
    assert await waiter == Replay(SESSION)


async def test_a_key_in_flight_past_its_expiry_is_kept_until_it_ends_then_forgotten(
    store: MemoryIdempotencyStore, clock: FakeClock
) -> None:
    token = await acquire(store, "slow")
    clock.now += 61
    await acquire(store, "other")  # reclaims what has expired: not a key in flight
    waiter = asyncio.create_task(store.reserve(SCOPE, "slow", "f"))
    await asyncio.sleep(0)
    assert not waiter.done()

    await store.complete(SCOPE, "slow", token, SESSION)

    assert await waiter == Replay(SESSION)
    assert store.size == 1  # completed past its expiry: forgotten at once; "other" is live


@pytest.mark.parametrize("ttl", [0, -1])
def test_the_store_refuses_a_ttl_that_cannot_work(ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        MemoryIdempotencyStore(ttl)


@pytest.mark.parametrize(
    "limit", ["max_keys", "keys_per_caller", "keys_per_credential", "rate_per_minute", "burst"]
)
def test_checkout_limits_refuse_a_quota_or_rate_below_one(limit: str) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CheckoutLimits(**{limit: 0})
