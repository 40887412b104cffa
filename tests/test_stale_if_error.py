"""Stale-if-error: the last good billing answer stands in when a provider is down.

The gateway apps run in process with their lifespans, over the sandbox upstreams behind a
`Scripted` transport that answers instead of the sandbox for one credential (or all) while a test
says so, and counts every request. One table per rule: the failures a kept answer stands in for,
and the ones it never does. Then the rules one by one: off by default, the window, usage meters,
one credential's answer never served to another, checkouts and previews, metrics, Redis shared by
two replicas, and the bounds of the in-process store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from gateway import jsonfast
from gateway.checkout.redis_store import open_redis
from gateway.credentials import Credential
from gateway.errors import UpstreamTimeout
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.upstreams.stale import (
    MAX_ENTRY_BYTES,
    Kept,
    MemoryStaleStore,
    RedisStaleStore,
    StaleIfError,
    stale_key,
)
from tests.redis_server import RedisServer
from tests.support import START_CHECKOUT, TEST_API_KEY, make_settings, metric, serve

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
WINDOW = {"GATEWAY_STALE_IF_ERROR_SECONDS": "300"}
ACME = "/v1/organizations/org_acme/billing"
ACCOUNTS = """
query($accounts: [AccountInput!]!) {
  billingAccounts(accounts: $accounts) {
    __typename
    ... on BillingAccount {
      provider accountId
      currentPlan { planId }
      plans { planId current }
      manage { allowed }
      subscription { status }
      usageMeters { featureId used }
      freshness { fetchedAt stale reason }
    }
    ... on Error { code message }
    ... on ProviderError { retryable retryAfterSeconds upstreamStatus }
  }
}
"""
ALMANAC_ACME = {"provider": "ALMANAC", "accountId": "org_acme"}
AUTOPOSTING = {"provider": "AUTOPOSTING"}
PREVIEW = """
query($input: CheckoutPreviewInput!) {
  checkoutPreview(input: $input) { __typename ... on Error { code } }
}
"""
SECRETS = (ALMANAC_OWNER_TOKEN, ALMANAC_VIEWER_TOKEN, AUTOPOSTING_PRO_KEY, AUTOPOSTING_TRIAL_KEY)

Reply = Callable[[httpx.Request], httpx.Response]


# --- an upstream that fails on cue ---------------------------------------------------------------


def status(code: int, body: object = None, **headers: str) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, json=body if body is not None else {}, headers=headers)

    return reply


def raises(exc_class: type[httpx.TransportError]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_class("simulated", request=request)

    return reply


def html(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text="<html>Sign in</html>", headers={"content-type": "text/html"})


@dataclass
class Scripted(httpx.AsyncBaseTransport):
    """The sandbox app, except where `replies` names the request's credential (or "*") and,
    optionally, its path: then that reply. Every request is counted in `calls`."""

    inner: httpx.AsyncBaseTransport
    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, reply: Reply, *, token: str = "*", path: str = "*") -> None:
        self.replies[(token, path)] = reply

    def heal(self) -> None:
        self.replies.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        path = request.url.path
        self.calls.append((token, path))
        for rule in ((token, path), (token, "*"), ("*", path), ("*", "*")):
            reply = self.replies.get(rule)
            if reply is not None:
                return reply(request)
        return await self.inner.handle_async_request(request)

    def count(self, path: str | None = None) -> int:
        return sum(1 for _, called in self.calls if path is None or called == path)


@dataclass
class Upstreams:
    almanac: Scripted
    autoposting: Scripted

    def transports(self) -> dict[Provider, httpx.AsyncBaseTransport]:
        return {Provider.ALMANAC: self.almanac, Provider.AUTOPOSTING: self.autoposting}


@pytest.fixture
def upstreams() -> Upstreams:
    state = SandboxState()
    return Upstreams(
        Scripted(httpx.ASGITransport(app=create_almanac_app(state))),
        Scripted(httpx.ASGITransport(app=create_autoposting_app(state))),
    )


@asynccontextmanager
async def gateway(upstreams: Upstreams, **environ: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway app with its own lifespan (as one process), and a client of it."""
    async with serve(make_settings(**environ), upstreams.transports(), headers=KEY) as client:
        yield client


async def post(
    client: httpx.AsyncClient,
    query: str,
    variables: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": dict(variables)}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    for secret in SECRETS:
        assert secret not in response.text
    body: dict[str, Any] = response.json()
    return body


async def account(
    client: httpx.AsyncClient,
    which: Mapping[str, str] = ALMANAC_ACME,
    headers: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One account of `billingAccounts`, and the GraphQL errors of the response."""
    body = await post(client, ACCOUNTS, {"accounts": [dict(which)]}, headers)
    [item] = body["data"]["billingAccounts"]
    return item, body.get("errors", [])


def fetched_at(item: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(item["freshness"]["fetchedAt"]).timestamp()


def without_freshness(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "freshness"}


# --- rule: the failures a kept answer stands in for ----------------------------------------------

# id (the finding), the provider's failure, extra settings, the freshness reason expected.
STANDS_IN: list[Any] = [
    pytest.param(raises(httpx.ReadTimeout), {}, "UPSTREAM_TIMEOUT", id="read-timeout"),
    pytest.param(raises(httpx.ConnectTimeout), {}, "UPSTREAM_TIMEOUT", id="connect-timeout"),
    pytest.param(raises(httpx.ConnectError), {}, "UPSTREAM_UNREACHABLE", id="connection-refused"),
    pytest.param(
        raises(httpx.RemoteProtocolError), {}, "UPSTREAM_UNREACHABLE", id="connection-dropped"
    ),
    pytest.param(status(500), {}, "UPSTREAM_UNAVAILABLE", id="500"),
    pytest.param(
        status(503), {"GATEWAY_GET_RETRIES": "2"}, "UPSTREAM_UNAVAILABLE", id="503-retried"
    ),
]


@pytest.mark.parametrize(("failure", "environ", "reason"), STANDS_IN)
async def test_a_read_failing_with_a_retryable_error_answers_the_last_good_one_marked_stale(
    upstreams: Upstreams, failure: Reply, environ: dict[str, str], reason: str
) -> None:
    async with gateway(upstreams, **WINDOW, **environ) as client:
        before = time.time()
        live, _ = await account(client)
        after = time.time()
        upstreams.almanac.fail(failure)
        stale, errors = await account(client)

    assert live["__typename"] == "BillingAccount"
    assert live["freshness"]["stale"] is False
    assert live["freshness"]["reason"] is None
    assert before - 1 <= fetched_at(live) <= after + 1
    assert stale["__typename"] == "BillingAccount"
    assert stale["freshness"] == {**live["freshness"], "stale": True, "reason": reason}
    # Plans, manage and ids come from the kept answer; usage meters are not served stale.
    assert without_freshness(stale) == {**without_freshness(live), "usageMeters": None}
    [error] = errors
    assert error["path"] == ["billingAccounts", 0, "usageMeters"]
    assert error["extensions"]["code"] == reason


async def test_an_open_circuit_answers_the_last_good_one_without_calling_the_provider(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW, GATEWAY_BREAKER_FAILURES="1") as client:
        live, _ = await account(client)
        upstreams.almanac.fail(status(500))
        failed, _ = await account(client)  # the one failure opens the circuit (and is stale too)
        calls = upstreams.almanac.count()
        fast, _ = await account(client)

    assert failed["freshness"]["reason"] == "UPSTREAM_UNAVAILABLE"
    assert upstreams.almanac.count() == calls  # the circuit answered, not the provider
    assert fast["__typename"] == "BillingAccount"
    assert fast["freshness"] == {
        **live["freshness"],
        "stale": True,
        "reason": "UPSTREAM_UNAVAILABLE",
    }
    assert fast["plans"] == live["plans"]


# --- rule: what is never answered from the store -------------------------------------------------

# id (the finding), the provider's answer, the error the caller sees instead of the kept answer.
NEVER_STANDS_IN: list[Any] = [
    pytest.param(status(401), "NotAllowedError", "UNAUTHENTICATED", id="401-rejected-credential"),
    pytest.param(status(403), "NotAllowedError", "NOT_ALLOWED", id="403-forbidden"),
    pytest.param(status(404), "ProviderError", "NOT_FOUND", id="404"),
    pytest.param(status(429, **{"retry-after": "60"}), "ProviderError", "RATE_LIMITED", id="429"),
    pytest.param(html, "ProviderError", "UPSTREAM_BAD_RESPONSE", id="html-200"),
    pytest.param(status(400), "ProviderError", "UPSTREAM_REJECTED", id="400"),
]


@pytest.mark.parametrize(("answer", "typename", "code"), NEVER_STANDS_IN)
async def test_an_answer_that_is_not_an_outage_is_never_covered_by_the_kept_one(
    upstreams: Upstreams, answer: Reply, typename: str, code: str
) -> None:
    async with gateway(upstreams, **WINDOW) as client:
        live, _ = await account(client)
        upstreams.almanac.fail(answer)
        refused, _ = await account(client)
        served = await metric(client, "gateway_stale_answers_total")

    assert live["__typename"] == "BillingAccount"
    assert (refused["__typename"], refused["code"]) == (typename, code)
    assert served == 0


# --- rule: off by default, and only within the window --------------------------------------------


async def test_without_the_setting_a_failed_read_answers_its_error(upstreams: Upstreams) -> None:
    async with gateway(upstreams) as client:
        live, _ = await account(client)
        upstreams.almanac.fail(raises(httpx.ReadTimeout))
        failed, _ = await account(client)

    assert live["freshness"]["stale"] is False
    assert (failed["__typename"], failed["code"]) == ("ProviderError", "UPSTREAM_TIMEOUT")


async def test_a_kept_answer_older_than_the_window_is_not_served() -> None:
    clock = [1_000.0]
    policy = StaleIfError(MemoryStaleStore(max_bytes=1 << 20), seconds=60, clock=lambda: clock[0])
    key = stale_key("almanac", "billing", "org_acme", Credential("alm_a"))
    live = await policy.read(key, _answer({"plans": []}))
    await policy.settle(key, live, provider="almanac", resource="billing")

    clock[0] += 60
    within = await policy.read(key, _fail(UpstreamTimeout))
    clock[0] += 0.001
    with pytest.raises(UpstreamTimeout):
        await policy.read(key, _fail(UpstreamTimeout))

    assert (within.value, within.fetched_at) == ({"plans": []}, 1_000.0)
    assert isinstance(within.failure, UpstreamTimeout)


def _answer(value: object) -> Callable[[], Any]:
    async def fetch() -> object:
        return value

    return fetch


def _fail(error_class: type[UpstreamTimeout]) -> Callable[[], Any]:
    async def fetch() -> object:
        raise error_class("down", provider=Provider.ALMANAC)

    return fetch


async def test_a_stale_answer_is_never_kept_again_so_the_window_runs_from_the_last_live_read(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW) as client:
        live, _ = await account(client)
        upstreams.almanac.fail(raises(httpx.ReadTimeout))
        first, _ = await account(client)
        second, _ = await account(client)

    assert fetched_at(first) == fetched_at(second) == fetched_at(live)


async def test_an_answer_that_does_not_normalize_is_not_kept_over_the_last_good_one(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW) as client:
        live, _ = await account(client)
        upstreams.almanac.fail(status(200, {"plans": "not a list"}))
        broken, _ = await account(client)
        upstreams.almanac.fail(raises(httpx.ReadTimeout))
        stale, _ = await account(client)

    assert (broken["__typename"], broken["code"]) == ("ProviderError", "UPSTREAM_BAD_RESPONSE")
    assert stale["freshness"]["stale"] is True
    assert stale["plans"] == live["plans"]


# --- rule: usage meters only when separately enabled ---------------------------------------------


async def test_usage_meters_of_a_kept_almanac_answer_are_served_when_usage_is_enabled(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW, GATEWAY_STALE_IF_ERROR_USAGE="true") as client:
        live, _ = await account(client)
        upstreams.almanac.fail(raises(httpx.ConnectError))
        stale, errors = await account(client)

    assert errors == []
    assert stale["freshness"]["stale"] is True
    assert stale["usageMeters"] == live["usageMeters"]
    assert live["usageMeters"]


@pytest.mark.parametrize("usage", [False, True], ids=["usage-live-only", "usage-enabled"])
async def test_autoposting_usage_meters_are_served_stale_only_when_usage_is_enabled(
    upstreams: Upstreams, usage: bool
) -> None:
    environ = {**WINDOW, "GATEWAY_STALE_IF_ERROR_USAGE": str(usage).lower()}
    async with gateway(upstreams, **environ) as client:
        live, _ = await account(client, AUTOPOSTING)
        upstreams.autoposting.fail(status(503), path="/billing/credit-summary")
        upstreams.autoposting.fail(status(503), path="/usage/tokens")
        later, errors = await account(client, AUTOPOSTING)

    assert later["__typename"] == "BillingAccount"
    assert later["plans"] == live["plans"]
    if usage:
        assert errors == []
        assert later["usageMeters"] == live["usageMeters"]
        assert later["freshness"]["stale"] is True
        assert later["freshness"]["reason"] == "UPSTREAM_UNAVAILABLE"
    else:
        assert later["usageMeters"] is None
        assert [error["extensions"]["code"] for error in errors] == ["UPSTREAM_UNAVAILABLE"]
        # The status and profile were live: the account itself is not stale.
        assert later["freshness"]["stale"] is False


async def test_a_stale_autoposting_status_withholds_its_account_meter_but_keeps_plans_and_state(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW) as client:
        live, _ = await account(client, AUTOPOSTING)
        upstreams.autoposting.fail(raises(httpx.ReadTimeout), path="/billing/status")
        stale, errors = await account(client, AUTOPOSTING)

    assert stale["__typename"] == "BillingAccount"
    assert stale["freshness"]["stale"] is True
    assert stale["freshness"]["reason"] == "UPSTREAM_TIMEOUT"
    assert (stale["plans"], stale["subscription"]) == (live["plans"], live["subscription"])
    assert stale["usageMeters"] is None
    assert [error["extensions"]["code"] for error in errors] == ["UPSTREAM_TIMEOUT"]


# --- rule: one credential's answer is never served to another ------------------------------------


async def test_a_kept_answer_is_never_served_to_another_credential_nor_for_another_account(
    upstreams: Upstreams,
) -> None:
    owner = {"x-almanac-token": ALMANAC_OWNER_TOKEN}
    viewer = {"x-almanac-token": ALMANAC_VIEWER_TOKEN}
    async with gateway(upstreams, **WINDOW) as client:
        kept, _ = await account(client, headers=owner)
        upstreams.almanac.fail(raises(httpx.ReadTimeout))
        other_credential, _ = await account(client, headers=viewer)
        other_account, _ = await account(
            client, {"provider": "ALMANAC", "accountId": "org_globex"}, headers=owner
        )
        same, _ = await account(client, headers=owner)

    assert kept["manage"]["allowed"] is True
    assert (other_credential["__typename"], other_credential["code"]) == (
        "ProviderError",
        "UPSTREAM_TIMEOUT",
    )
    assert (other_account["__typename"], other_account["code"]) == (
        "ProviderError",
        "UPSTREAM_TIMEOUT",
    )
    assert same["freshness"]["stale"] is True


async def test_autoposting_keys_keep_their_own_answers(upstreams: Upstreams) -> None:
    pro = {"x-autoposting-api-key": AUTOPOSTING_PRO_KEY}
    trial = {"x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY}
    async with gateway(upstreams, **WINDOW) as client:
        pro_live, _ = await account(client, AUTOPOSTING, pro)
        trial_live, _ = await account(client, AUTOPOSTING, trial)
        upstreams.autoposting.fail(status(502))
        pro_stale, _ = await account(client, AUTOPOSTING, pro)
        trial_stale, _ = await account(client, AUTOPOSTING, trial)

    assert pro_live["accountId"] != trial_live["accountId"]
    assert pro_stale["accountId"] == pro_live["accountId"]
    assert pro_stale["subscription"] == pro_live["subscription"]
    assert trial_stale["accountId"] == trial_live["accountId"]
    assert trial_stale["subscription"] == trial_live["subscription"]


# --- rule: checkouts and previews are never answered stale ---------------------------------------


async def test_a_checkout_and_a_preview_fail_with_their_own_error_while_reads_are_stale(
    upstreams: Upstreams,
) -> None:
    preview_input = {"provider": "ALMANAC", "accountId": "org_acme", "planId": "team"}
    checkout_input = {
        **preview_input,
        "successUrl": "https://app.example.com/done",
        "cancelUrl": "https://app.example.com/cancel",
    }
    async with gateway(upstreams, **WINDOW, GATEWAY_STALE_IF_ERROR_USAGE="true") as client:
        await account(client)
        previewed = await post(client, PREVIEW, {"input": preview_input})
        upstreams.almanac.fail(status(503))
        stale, _ = await account(client)
        preview_down = await post(client, PREVIEW, {"input": preview_input})
        checkout_down = await post(client, START_CHECKOUT, {"input": checkout_input})

    assert previewed["data"]["checkoutPreview"]["__typename"] == "CheckoutPreview"
    assert stale["freshness"]["stale"] is True
    assert preview_down["data"]["checkoutPreview"] == {
        "__typename": "ProviderError",
        "code": "UPSTREAM_UNAVAILABLE",
    }
    checkout = checkout_down["data"]["startCheckout"]
    assert (checkout["__typename"], checkout["code"]) == ("ProviderError", "UPSTREAM_UNAVAILABLE")


# --- metrics -------------------------------------------------------------------------------------


async def test_stale_answers_are_counted_per_provider_resource_and_reason(
    upstreams: Upstreams,
) -> None:
    async with gateway(upstreams, **WINDOW) as client:
        await account(client)
        await account(client, AUTOPOSTING)
        upstreams.almanac.fail(raises(httpx.ReadTimeout))
        upstreams.autoposting.fail(status(503), path="/billing/status")
        for _ in range(2):
            await account(client)
        await account(client, AUTOPOSTING)
        almanac = await metric(
            client,
            "gateway_stale_answers_total",
            provider="almanac",
            resource="billing",
            reason="UPSTREAM_TIMEOUT",
        )
        autoposting = await metric(
            client, "gateway_stale_answers_total", provider="autoposting", resource="billing_status"
        )
        total = await metric(client, "gateway_stale_answers_total")

    assert (almanac, autoposting, total) == (2, 1, 3)


# --- replicas: the store in Redis ----------------------------------------------------------------


async def test_an_answer_kept_by_one_replica_stands_in_on_another_and_redis_holds_no_secret(
    upstreams: Upstreams, redis_url: str
) -> None:
    environ = {**WINDOW, "GATEWAY_REDIS_URL": redis_url}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(gateway(upstreams, **environ))
        second = await stack.enter_async_context(gateway(upstreams, **environ))
        live, _ = await account(first)
        upstreams.almanac.fail(raises(httpx.ConnectError))
        stale, _ = await account(second)

    client = open_redis(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter("billing-gateway:stale:*")]
        raw = [await client.get(key) for key in keys]
        ttls = [await client.pttl(key) for key in keys]
    finally:
        await client.aclose()
    assert stale["freshness"] == {
        **live["freshness"],
        "stale": True,
        "reason": "UPSTREAM_UNREACHABLE",
    }
    assert stale["plans"] == live["plans"]
    assert len(keys) == 1
    values = [value for value in raw if isinstance(value, bytes)]
    assert len(values) == 1
    assert keys[0].startswith("billing-gateway:stale:almanac billing org_acme ")
    for secret in SECRETS:
        assert all(secret not in key for key in keys)
        assert all(secret.encode() not in value for value in values)
    assert all(0 < ttl <= 300_000 for ttl in ttls)


async def test_with_redis_down_a_failed_read_answers_its_error_and_a_live_one_its_data(
    upstreams: Upstreams,
) -> None:
    with RedisServer() as server:
        async with gateway(upstreams, **WINDOW, GATEWAY_REDIS_URL=server.url) as client:
            await account(client)
            server.stop()
            live, _ = await account(client)
            upstreams.almanac.fail(raises(httpx.ReadTimeout))
            failed, _ = await account(client)

    assert live["__typename"] == "BillingAccount"
    assert (failed["__typename"], failed["code"]) == ("ProviderError", "UPSTREAM_TIMEOUT")


# --- bounds of the in-process store --------------------------------------------------------------


async def test_the_memory_store_never_holds_more_than_its_bytes_and_drops_the_oldest() -> None:
    store = MemoryStaleStore(max_bytes=100_000)
    answer = {"plans": [{"plan_id": f"p{i}", "name": "x" * 100} for i in range(20)]}
    size = len(jsonfast.dumps(answer))
    for n in range(1_000):
        await store.set(f"almanac billing org_{n} digest", Kept(answer, 1.0), 300)
        assert store.size <= store.max_bytes

    assert 100_000 // (size + 250) <= len(store) <= 100_000 // size
    assert await store.get("almanac billing org_999 digest") is not None
    assert await store.get("almanac billing org_0 digest") is None


async def test_an_answer_larger_than_the_entry_limit_is_not_kept() -> None:
    store = MemoryStaleStore(max_bytes=64 * MAX_ENTRY_BYTES)
    huge = {"blob": "x" * MAX_ENTRY_BYTES}

    await store.set("k", Kept(huge, 1.0), 300)

    assert await store.get("k") is None
    assert store.size == 0


async def test_a_redis_store_does_not_keep_an_answer_larger_than_the_entry_limit(
    redis_url: str,
) -> None:
    client = open_redis(redis_url)
    try:
        store = RedisStaleStore(client)
        await store.set("big", Kept({"blob": "x" * MAX_ENTRY_BYTES}, 1.0), 300)
        await store.set("small", Kept({"a": 1}, 2.5), 300)
        assert await store.get("big") is None
        assert await store.get("small") == Kept({"a": 1}, 2.5)
    finally:
        await client.aclose()
