"""Faults injected into the sandbox upstreams, seen through the real app over loopback.

Each row of the table breaks one provider one way and asserts what a caller sees (typename, code,
retryable, retryAfterSeconds), how many requests reached the upstream (retries included), and that
the other provider's account in the same response is complete. Then the circuit breaker opens and
closes over HTTP, and the sandbox's mid-response drop is checked on its own.

The gateways retry GETs twice. Two settings are not read from the environment and are set here:
a short retry backoff, so that rows cost only their faults' own delays, and a wide retry-budget
floor, so that the budget never changes a row's counts (`test_resilience.py` covers the budget).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    Fault,
    SandboxState,
    SandboxThread,
    create_almanac_app,
)
from gateway.settings import Settings, UpstreamSettings, load_settings
from tests.servers import HOST, ServerThread
from tests.support import START_CHECKOUT, assert_complete

# Run by `make test`, left out of `make test-fast`.
pytestmark = pytest.mark.slow

API_KEY = "gw-faults-test-key"
AUTHORIZATION = {"authorization": f"Bearer {API_KEY}"}
SECRETS = (ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY, API_KEY)
ALMANAC_READ_TIMEOUT = 0.3
# Long enough that a slow machine does not reach half-open between two requests by accident.
BREAKER_RESET = 0.5
ORG = "org_acme"
ALMANAC_BILLING = f"/v1/organizations/{ORG}/billing"
AUTOPOSTING_RESOURCES = (
    "/billing/status",
    "/billing/credit-summary",
    "/usage/tokens",
    "/auth/profile",
)
AUTOPOSTING_ORG = "org-pro-demo"

ACCOUNTS = """
query($accounts: [AccountInput!]!) {
  billingAccounts(accounts: $accounts) {
    __typename
    ... on BillingAccount {
      provider accountId
      currentPlan { planId price { amount } }
      plans { planId current }
      usageMeters { featureId used }
      manage { allowed reason reasonRaw }
    }
    ... on Error { code message errorProvider: provider }
    ... on ProviderError { retryable retryAfterSeconds upstreamStatus }
  }
}
"""
BOTH = {"accounts": [{"provider": "ALMANAC", "accountId": ORG}, {"provider": "AUTOPOSTING"}]}


# --- servers -------------------------------------------------------------------------------------


def gateway_settings(sandbox: SandboxThread, **environ: str) -> Settings:
    settings = load_settings(
        {
            "GATEWAY_ALMANAC_URL": sandbox.almanac_url,
            "GATEWAY_AUTOPOSTING_URL": sandbox.autoposting_url,
            "GATEWAY_ALMANAC_TOKEN": ALMANAC_OWNER_TOKEN,
            "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_PRO_KEY,
            "GATEWAY_API_KEYS": API_KEY,
            "GATEWAY_REDIRECT_HOSTS": "app.example.com",
            "GATEWAY_GET_RETRIES": "2",
            "GATEWAY_CONNECT_TIMEOUT": "1",
            "GATEWAY_ALMANAC_READ_TIMEOUT": str(ALMANAC_READ_TIMEOUT),
            "GATEWAY_AUTOPOSTING_READ_TIMEOUT": "2",
            "GATEWAY_BREAKER_FAILURES": "1000",
            **environ,
        }
    )

    def fast(upstream: UpstreamSettings) -> UpstreamSettings:
        return dataclasses.replace(upstream, retry_backoff=0.01, retry_budget_min_per_second=1000.0)

    return dataclasses.replace(
        settings, almanac=fast(settings.almanac), autoposting=fast(settings.autoposting)
    )


def serve(settings: Settings) -> ServerThread:
    return ServerThread(lambda url: create_app(settings))


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{HOST}:{port}"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(sandbox: SandboxThread) -> Iterator[str]:
    with serve(gateway_settings(sandbox)) as server:
        yield server.url


@pytest.fixture
def fresh_gateway(sandbox: SandboxThread) -> Iterator[str]:
    """A gateway of its own: what one row leaves in it (a throttled credential) stays there."""
    with serve(gateway_settings(sandbox)) as server:
        yield server.url


@pytest.fixture(scope="module")
def refused_gateway(sandbox: SandboxThread) -> Iterator[str]:
    """Almanac points at a closed loopback port."""
    with serve(gateway_settings(sandbox, GATEWAY_ALMANAC_URL=closed_port_url())) as server:
        yield server.url


@pytest.fixture
def breaker_gateway(sandbox: SandboxThread) -> Iterator[str]:
    """Opens after 3 failed calls, for 0.5 s; no retries, so each request is one call."""
    settings = gateway_settings(
        sandbox,
        GATEWAY_GET_RETRIES="0",
        GATEWAY_BREAKER_FAILURES="3",
        GATEWAY_BREAKER_RESET_SECONDS=str(BREAKER_RESET),
    )
    with serve(settings) as server:
        yield server.url


@pytest.fixture(autouse=True)
def state(sandbox: SandboxThread) -> Iterator[SandboxState]:
    sandbox.state.reset()
    yield sandbox.state
    sandbox.state.reset()


@pytest.fixture(scope="module")
def acme_billing(sandbox: SandboxThread) -> dict[str, Any]:
    """Almanac's real billing answer for org_acme, for the schema-drift rows to alter."""
    response = httpx.get(
        f"{sandbox.almanac_url}{ALMANAC_BILLING}",
        headers={"authorization": f"Bearer {ALMANAC_OWNER_TOKEN}"},
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


# --- requests ------------------------------------------------------------------------------------


def post_graphql(
    http: httpx.Client, base_url: str, query: str, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """One operation with the gateway key; fails on HTTP errors, top-level errors or leaks."""
    response = http.post(
        f"{base_url}/graphql",
        json={"query": query, "variables": dict(variables)},
        headers=AUTHORIZATION,
    )
    assert response.status_code == 200, response.text
    for secret in SECRETS:
        assert secret not in response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    data: dict[str, Any] = body["data"]
    return data


def assert_autoposting_complete_after_one_call_each(
    account: Mapping[str, Any], state: SandboxState
) -> None:
    assert_complete(account, "AUTOPOSTING", AUTOPOSTING_ORG)
    for path in AUTOPOSTING_RESOURCES:
        assert state.count("autoposting", "GET", path) == 1, path
    assert state.count("autoposting") == len(AUTOPOSTING_RESOURCES)


def assert_almanac_complete_after_one_call(account: Mapping[str, Any], state: SandboxState) -> None:
    assert_complete(account, "ALMANAC", ORG)
    assert state.count("almanac", "GET", ALMANAC_BILLING) == 1
    assert state.count("almanac") == 1


# --- the fault table -----------------------------------------------------------------------------

Body = dict[str, Any]
MakeFault = Callable[[Body], Fault]


def drift(change: Callable[[Body], None]) -> MakeFault:
    """A 200 answer: Almanac's real body for org_acme, changed by `change`."""

    def make(real: Body) -> Fault:
        body = _copy(real)
        change(body)
        return Fault(status=200, body=body)

    return make


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _missing_organization_id(body: Body) -> None:
    del body["organization_id"]


def _missing_plan_name(body: Body) -> None:
    del body["plans"][0]["name"]


def _usage_as_text(body: Body) -> None:
    body["usage"][0]["usage"] = "12"


def _price_as_text(body: Body) -> None:
    body["plans"][1]["price"] = "29"


def _banana_reason(body: Body) -> None:
    body["manage"]["reason"] = "banana"


def _extra_fields(body: Body) -> None:
    body["beta"] = {"anything": [1, 2, 3]}
    body["plans"][0]["sparkles"] = True
    body["usage"][0]["colour"] = "teal"
    body["manage"]["since"] = 1_700_000_000


def error(
    code: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
) -> dict[str, Any]:
    return {
        "__typename": "ProviderError",
        "code": code,
        "retryable": retryable,
        "retryAfterSeconds": retry_after,
        "upstreamStatus": status,
    }


DATA = {"__typename": "BillingAccount"}
ACME_PLANS = ("free", "pro", "pro_yearly", "team", "enterprise")

# id, faulted provider, fault (or a function of Almanac's real body), gateway fixture, what the
# faulted account looks like, requests that reached the faulted provider, least seconds taken.
FAULTS: list[Any] = [
    pytest.param("almanac", Fault(delay=0.1), "gateway", DATA, 1, 0.1, id="latency-below-timeout"),
    pytest.param(
        "almanac",
        Fault(delay=ALMANAC_READ_TIMEOUT + 0.3),
        "gateway",
        error("UPSTREAM_TIMEOUT", retryable=True),
        3,
        3 * ALMANAC_READ_TIMEOUT,
        id="read-timeout",
    ),
    pytest.param(
        "almanac",
        None,
        "refused_gateway",
        error("UPSTREAM_UNREACHABLE", retryable=True),
        3,
        0,
        id="connection-refused",
    ),
    pytest.param(
        "almanac",
        Fault(drop=True),
        "gateway",
        error("UPSTREAM_UNREACHABLE", retryable=True),
        3,
        0,
        id="dropped-before-response",
    ),
    pytest.param(
        "almanac",
        Fault(drop_after=20),
        "gateway",
        error("UPSTREAM_UNREACHABLE", retryable=True),
        3,
        0,
        id="dropped-mid-response",
    ),
    pytest.param(
        "almanac",
        Fault(status=429, body={"detail": "slow down"}, headers={"Retry-After": "1"}),
        "gateway",
        DATA,
        2,
        1.0,
        id="429-retry-after-1-then-ok",
    ),
    pytest.param(
        "almanac",
        Fault(status=429, body={"detail": "slow down"}, headers={"Retry-After": "120"}),
        "fresh_gateway",  # the 429 throttles the credential for 120 s: the next rows' is spared
        error("RATE_LIMITED", retryable=True, status=429, retry_after=120.0),
        1,
        0,
        id="429-retry-after-beyond-cap",
    ),
    pytest.param(
        "almanac",
        Fault(status=500, body={"detail": "database on fire"}),
        "gateway",
        error("UPSTREAM_UNAVAILABLE", retryable=True, status=500),
        1,
        0,
        id="500-not-retried",
    ),
    pytest.param("almanac", Fault(status=502), "gateway", DATA, 2, 0, id="502-once-then-ok"),
    pytest.param(
        "almanac",
        Fault(status=503),
        "gateway",
        error("UPSTREAM_UNAVAILABLE", retryable=True, status=503),
        3,
        0,
        id="503-every-time",
    ),
    pytest.param(
        "almanac",
        Fault(status=200, body="<html><body>Sign in</body></html>", content_type="text/html"),
        "gateway",
        error("UPSTREAM_BAD_RESPONSE", retryable=False, status=200),
        1,
        0,
        id="html-200",
    ),
    pytest.param(
        "almanac",
        Fault(status=200, body=b'{"organization_id": "org_'),
        "gateway",
        error("UPSTREAM_BAD_RESPONSE", retryable=False, status=200),
        1,
        0,
        id="truncated-json",
    ),
    pytest.param(
        "almanac",
        drift(_missing_organization_id),
        "gateway",
        error("UPSTREAM_BAD_RESPONSE", retryable=False),
        1,
        0,
        id="drift-identifying-field-missing",
    ),
    pytest.param(
        "almanac",
        drift(_missing_plan_name),
        "gateway",
        {**DATA, "plans": [{"planId": plan, "current": plan == "pro"} for plan in ACME_PLANS[1:]]},
        1,
        0,
        id="drift-identifying-field-of-a-list-element-missing-drops-the-element",
    ),
    pytest.param(
        "almanac",
        drift(_usage_as_text),
        "gateway",
        {
            **DATA,
            "usageMeters": [
                {"featureId": "editors", "used": 7},
                {"featureId": "storage_gb", "used": 12},
            ],
        },
        1,
        0,
        id="drift-identifying-field-of-a-list-element-wrong-type-drops-the-element",
    ),
    pytest.param(
        "almanac",
        drift(_price_as_text),
        "gateway",
        {**DATA, "currentPlan": {"planId": "pro", "price": None}},
        1,
        0,
        id="drift-descriptive-field-wrong-type-is-null",
    ),
    pytest.param(
        "almanac",
        drift(_banana_reason),
        "gateway",
        {**DATA, "manage": {"allowed": True, "reason": "OTHER", "reasonRaw": "banana"}},
        1,
        0,
        id="drift-unknown-enum-value",
    ),
    pytest.param(
        "almanac",
        drift(_extra_fields),
        "gateway",
        {**DATA, "manage": {"allowed": True, "reason": "PERMISSION", "reasonRaw": "permission"}},
        1,
        0,
        id="drift-unknown-extra-fields",
    ),
    pytest.param(
        "autoposting",
        Fault(status=503),
        "gateway",
        error("UPSTREAM_UNAVAILABLE", retryable=True, status=503),
        3,
        0,
        id="autoposting-503-every-time",
    ),
    pytest.param(
        "autoposting",
        Fault(drop_after=10),
        "gateway",
        error("UPSTREAM_UNREACHABLE", retryable=True),
        3,
        0,
        id="autoposting-dropped-mid-response",
    ),
]

# Which requests a fault applies to (times=1: only the first attempt, so the retry succeeds).
FAULT_TIMES = {"429-retry-after-1-then-ok": 1, "502-once-then-ok": 1}
FAULTED_PATHS = {"almanac": ALMANAC_BILLING, "autoposting": "/billing/status"}


@pytest.mark.parametrize(
    ("provider", "fault", "gateway_fixture", "expected", "calls", "least_seconds"), FAULTS
)
def test_each_fault_gives_its_typed_answer_after_its_upstream_calls_and_spares_the_other_provider(
    request: pytest.FixtureRequest,
    http: httpx.Client,
    state: SandboxState,
    acme_billing: Body,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    fault: Fault | MakeFault | None,
    gateway_fixture: str,
    expected: dict[str, Any],
    calls: int,
    least_seconds: float,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.upstream")
    base_url = request.getfixturevalue(gateway_fixture)
    row = request.node.callspec.id
    path = FAULTED_PATHS[provider]
    if fault is not None:
        injected = fault if isinstance(fault, Fault) else fault(acme_billing)
        state.add_fault(provider, injected, method="GET", path=path, times=FAULT_TIMES.get(row))

    started = time.perf_counter()
    almanac, autoposting = post_graphql(http, base_url, ACCOUNTS, BOTH)["billingAccounts"]
    elapsed = time.perf_counter() - started

    faulted = almanac if provider == "almanac" else autoposting
    assert {key: faulted.get(key) for key in expected} == expected, faulted
    if expected["__typename"] == "BillingAccount":
        account_id = ORG if provider == "almanac" else AUTOPOSTING_ORG
        assert_complete(faulted, provider.upper(), account_id)
    else:
        assert faulted["errorProvider"] == provider.upper()
        assert faulted["message"]
        assert "fire" not in faulted["message"]
        assert "slow down" not in faulted["message"]
    assert elapsed >= least_seconds

    if provider == "almanac":
        assert_autoposting_complete_after_one_call_each(autoposting, state)
        if gateway_fixture == "refused_gateway":
            # Nothing listens, so the sandbox saw nothing; the gateway logged each attempt.
            attempts = [
                r.getMessage()
                for r in caplog.records
                if r.getMessage().startswith(f"almanac GET {ALMANAC_BILLING} failed: ConnectError")
            ]
            assert len(attempts) == calls, attempts
            assert state.count("almanac") == 0
        else:
            assert state.count("almanac", "GET", ALMANAC_BILLING) == calls
            assert state.count("almanac") == calls
    else:
        assert_almanac_complete_after_one_call(almanac, state)
        # The other resources are asked for in the same batch, once each; the account fails
        # on its billing status.
        assert state.count("autoposting", "GET", path) == calls
        for other in AUTOPOSTING_RESOURCES[1:]:
            assert state.count("autoposting", "GET", other) == 1, other
        assert state.count("autoposting") == calls + len(AUTOPOSTING_RESOURCES) - 1


# --- the circuit breaker over HTTP ---------------------------------------------------------------


def accounts(http: httpx.Client, base_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    almanac, autoposting = post_graphql(http, base_url, ACCOUNTS, BOTH)["billingAccounts"]
    assert_complete(autoposting, "AUTOPOSTING", AUTOPOSTING_ORG)
    return almanac, autoposting


def test_the_breaker_opens_after_n_failures_fails_fast_without_calls_and_closes_after_a_probe(
    http: httpx.Client, breaker_gateway: str, state: SandboxState
) -> None:
    state.add_fault("almanac", Fault(status=500))

    for call in (1, 2, 3):
        almanac, _ = accounts(http, breaker_gateway)
        assert (almanac["code"], almanac["upstreamStatus"]) == ("UPSTREAM_UNAVAILABLE", 500)
        assert state.count("almanac") == call

    # Open: no upstream call, for reads and for checkouts alike.
    almanac, _ = accounts(http, breaker_gateway)
    checkout = post_graphql(
        http,
        breaker_gateway,
        START_CHECKOUT,
        {"input": {"provider": "ALMANAC", "accountId": ORG, "planId": "team"}},
    )["startCheckout"]
    for failed_fast in (almanac, checkout):
        assert failed_fast["__typename"] == "ProviderError"
        assert failed_fast["code"] == "UPSTREAM_UNAVAILABLE"
        assert failed_fast["retryable"] is True
        assert failed_fast["upstreamStatus"] is None
        assert 0 < failed_fast["retryAfterSeconds"] <= BREAKER_RESET
        assert "Almanac is unavailable" in failed_fast["message"]
    assert state.count("almanac") == 3
    assert state.checkouts == []

    # Half-open with the fault still there: the one probe fails and the breaker opens again.
    time.sleep(BREAKER_RESET + 0.05)
    probe, _ = accounts(http, breaker_gateway)
    again, _ = accounts(http, breaker_gateway)
    assert (probe["code"], probe["upstreamStatus"]) == ("UPSTREAM_UNAVAILABLE", 500)
    assert (again["code"], again["upstreamStatus"]) == ("UPSTREAM_UNAVAILABLE", None)
    assert 0 < again["retryAfterSeconds"] <= BREAKER_RESET
    assert state.count("almanac") == 4

    # The upstream recovers: the next probe succeeds and closes the breaker.
    state.clear_faults()
    time.sleep(BREAKER_RESET + 0.05)
    for call in (5, 6):
        almanac, _ = accounts(http, breaker_gateway)
        assert_complete(almanac, "ALMANAC", ORG)
        assert state.count("almanac") == call
    assert state.count("autoposting") == 8 * len(AUTOPOSTING_RESOURCES)


# --- the sandbox's mid-response drop -------------------------------------------------------------


def read_until_dropped(client: httpx.Client, url: str) -> tuple[httpx.Response, bytes]:
    """Stream `url`: the answer's head and the body bytes received before the drop."""
    chunks: list[bytes] = []
    headers = {"authorization": f"Bearer {ALMANAC_OWNER_TOKEN}"}
    with (
        client.stream("GET", url, headers=headers) as response,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        chunks.extend(response.iter_raw())
    return response, b"".join(chunks)


@pytest.mark.parametrize(
    ("fault", "length"),
    [
        pytest.param(Fault(drop_after=20), None, id="real-handler"),
        pytest.param(Fault(status=503, body="x" * 100, drop_after=0), 100, id="status-fault"),
        pytest.param(
            Fault(delay=0.05, status=200, body={"a": "b" * 50}, drop_after=7), 59, id="delay"
        ),
    ],
)
def test_a_drop_after_fault_sends_the_head_and_part_of_the_body_then_closes_over_loopback(
    sandbox: SandboxThread,
    state: SandboxState,
    uvicorn_errors: list[logging.LogRecord],
    fault: Fault,
    length: int | None,
) -> None:
    state.add_fault("almanac", fault, path=ALMANAC_BILLING, times=1)
    url = f"{sandbox.almanac_url}{ALMANAC_BILLING}"

    with httpx.Client() as client:
        response, received = read_until_dropped(client, url)
        after = client.get(url, headers={"authorization": f"Bearer {ALMANAC_OWNER_TOKEN}"})

    assert response.status_code == (fault.status or 200)
    declared = int(response.headers["content-length"])
    assert declared == (length or len(after.content))
    assert fault.drop_after is not None
    assert len(received) == fault.drop_after < declared
    assert after.content.startswith(received) or fault.status is not None
    assert after.status_code == 200
    assert state.count("almanac", "GET", ALMANAC_BILLING) == 2
    assert uvicorn_errors == []  # no "Exception in ASGI application", no 500 fallback


def test_a_body_no_longer_than_drop_after_is_sent_whole(
    sandbox: SandboxThread, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=200, body={"success": True}, drop_after=1000))

    response = httpx.get(f"{sandbox.autoposting_url}/health")

    assert response.json() == {"success": True}


async def test_a_drop_after_fault_without_a_server_raises_connection_reset() -> None:
    state = SandboxState()
    state.add_fault("almanac", Fault(drop_after=5), times=1)
    transport = httpx.ASGITransport(app=create_almanac_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://almanac.test") as client:
        with pytest.raises(ConnectionResetError):
            await client.get(ALMANAC_BILLING)


def test_drop_after_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="drop_after"):
        Fault(drop_after=-1)
