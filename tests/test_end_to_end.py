"""The real gateway app, served by uvicorn, over real HTTP on loopback to the sandbox upstreams.

The in-process tests (`test_billing_query.py`, `test_checkout.py`) prove the behaviour; these prove
the same product works across sockets and process-style boundaries: the Starlette app with its
lifespan, Strawberry's HTTP view, the httpx clients' real connection pools and the simulators'
real uvicorn servers (where a dropped connection is a closed socket and a timeout is a real wait).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from gateway.__main__ import DEMO_API_KEY, demo_environ
from gateway.app import create_app
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.sandbox import (
    ALMANAC_ORGANIZATION_IDS,
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
    SandboxThread,
)
from gateway.settings import load_settings
from tests.servers import ServerThread
from tests.support import (
    AUTOPOSTING_CHECKOUT,
    CANCEL_URL,
    START_CHECKOUT,
    SUCCESS_URL,
    assert_complete,
    billing_account_query,
    billing_accounts_query,
)

# Credentials a caller brings per request, which the sandbox does not know.
REJECTED_ALMANAC_TOKEN = "alm_e2e_rejected_token"
REJECTED_AUTOPOSTING_KEY = "sk-social-e2e-rejected-key"
SECRETS = (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    REJECTED_ALMANAC_TOKEN,
    REJECTED_AUTOPOSTING_KEY,
)

# The demo's gateway key, which every GraphQL request presents.
GATEWAY_KEY = {"authorization": f"Bearer {DEMO_API_KEY}"}
# The per-request credential headers, and the credentials configured for requests without them.
CREDENTIAL_HEADERS = {"almanac": "x-almanac-token", "autoposting": "x-autoposting-api-key"}
SERVICE_CREDENTIALS = {"almanac": ALMANAC_OWNER_TOKEN, "autoposting": AUTOPOSTING_PRO_KEY}

ALMANAC_BILLING = "/v1/organizations/{}/billing"
ALMANAC_CHECKOUT = "/v1/organizations/{}/billing/checkout"
AUTOPOSTING_RESOURCES = (
    "/billing/status",
    "/billing/credit-summary",
    "/usage/tokens",
    "/auth/profile",
)

ACCOUNT_FIELDS = """
    __typename
    ... on BillingAccount {
      provider accountId
      currentPlan { planId name }
      plans { planId current }
      usageMeters { featureId used }
    }
    ... on Error { code message errorProvider: provider }
    ... on InvalidInputError { field }
    ... on ProviderError { retryable upstreamStatus }
"""
ONE_ACCOUNT = billing_account_query(ACCOUNT_FIELDS)
MANY_ACCOUNTS = billing_accounts_query(ACCOUNT_FIELDS)
# The published examples (README, demo GraphiQL link) select `provider` on the success type and on
# Error in one selection set: valid because both are `Provider!`.
EXAMPLE_QUERIES = [pytest.param(EXAMPLE_QUERY, id="as-published")]
EXAMPLE_MUTATIONS = [pytest.param(EXAMPLE_MUTATION, id="as-published")]
ALMANAC_AND_AUTOPOSTING = [
    {"provider": "ALMANAC", "accountId": "org_acme"},
    {"provider": "AUTOPOSTING"},
]


# --- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    # Reached by name, as a real upstream is: a client keeping cookies would keep the sandbox's
    # (it keeps none for an IP address), and conftest's check would fail the test that sent one.
    with SandboxThread(host="localhost") as running:
        yield running


def serve_gateway(sandbox: SandboxThread, **environ: str) -> ServerThread:
    """The real app, configured as `demo` configures it (plus `environ`), under uvicorn."""

    def make_app(gateway_url: str) -> Any:
        base = demo_environ({}, sandbox.almanac_url, sandbox.autoposting_url, gateway_url)
        # These gateways serve a whole module of fault tests: no test may open the next one's
        # circuit (tests/test_faults.py covers the breaker).
        base["GATEWAY_BREAKER_FAILURES"] = "1000"
        return create_app(load_settings({**base, **environ}))

    return ServerThread(make_app)


@pytest.fixture(scope="module")
def gateway(sandbox: SandboxThread) -> Iterator[str]:
    """No GET retries, so every upstream call the tests count is one the gateway chose to make."""
    with serve_gateway(sandbox, GATEWAY_GET_RETRIES="0") as server:
        yield server.url


@pytest.fixture(scope="module")
def retrying_gateway(sandbox: SandboxThread) -> Iterator[str]:
    with serve_gateway(sandbox, GATEWAY_GET_RETRIES="2") as server:
        yield server.url


@pytest.fixture(scope="module")
def impatient_gateway(sandbox: SandboxThread) -> Iterator[str]:
    """Waits 0.3 s for an Almanac answer, and does not retry."""
    with serve_gateway(
        sandbox, GATEWAY_GET_RETRIES="0", GATEWAY_ALMANAC_READ_TIMEOUT="0.3"
    ) as server:
        yield server.url


@pytest.fixture(autouse=True)
def state(sandbox: SandboxThread) -> Iterator[SandboxState]:
    sandbox.state.reset()
    yield sandbox.state
    sandbox.state.reset()


# --- requests ------------------------------------------------------------------------------------


def assert_no_secrets(response: httpx.Response) -> None:
    """No credential, configured or per request, shows in a body or header the gateway sends."""
    exposed = response.text + json.dumps(dict(response.headers))
    leaked = [secret for secret in SECRETS if secret in exposed]
    assert not leaked, f"{response.request.url} answered with credentials {leaked}"


def post_graphql(
    http: httpx.Client,
    base_url: str,
    query: str,
    variables: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST one operation as JSON; returns the data, failing on HTTP or top-level GraphQL errors."""
    response = http.post(
        f"{base_url}/graphql",
        json={"query": query, "variables": dict(variables or {})},
        headers={**GATEWAY_KEY, **(headers or {})},
    )
    assert_no_secrets(response)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "errors" not in body, body["errors"]
    data: dict[str, Any] = body["data"]
    return data


def get(http: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    response = http.get(url, **kwargs)
    assert_no_secrets(response)
    return response


# --- reading accounts ----------------------------------------------------------------------------


@pytest.mark.parametrize("query", EXAMPLE_QUERIES)
def test_the_readme_example_query_makes_one_upstream_call_per_needed_resource(
    http: httpx.Client, gateway: str, state: SandboxState, query: str
) -> None:
    data = post_graphql(http, gateway, query)

    acme, globex, autoposting = data["billingAccounts"]
    assert [acme["accountId"], globex["accountId"], autoposting["accountId"]] == [
        "org_acme",
        "org_globex",
        "org-pro-demo",
    ]
    assert all(item["__typename"] == "BillingAccount" for item in data["billingAccounts"])
    assert acme["currentPlan"]["planId"] == "pro"
    assert acme["currentPlan"]["price"] == {"amount": "29", "currency": "USD"}
    assert acme["manage"]["allowed"] is True
    assert globex["currentPlan"]["planId"] == "free"
    assert autoposting["currentPlan"]["planId"] == "plan_pro"
    assert autoposting["subscription"]["status"] == "ACTIVE"
    assert {m["featureId"] for m in autoposting["usageMeters"]} == {
        "credits",
        "social_accounts",
        "ai_tokens",
    }
    for organization in ("org_acme", "org_globex"):
        assert state.count("almanac", "GET", ALMANAC_BILLING.format(organization)) == 1
    for path in AUTOPOSTING_RESOURCES:
        assert state.count("autoposting", "GET", path) == 1, path
    assert state.count() == 6
    # The configured service credentials went to their own provider only.
    for call in state.calls("almanac"):
        assert call.headers["authorization"] == f"Bearer {ALMANAC_OWNER_TOKEN}"
    for call in state.calls("autoposting"):
        assert call.headers["authorization"] == f"Bearer {AUTOPOSTING_PRO_KEY}"


def test_five_organizations_and_the_autoposting_account_are_fetched_concurrently_over_http(
    http: httpx.Client, gateway: str, state: SandboxState
) -> None:
    organizations = list(ALMANAC_ORGANIZATION_IDS[:5])
    for provider in ("almanac", "autoposting"):
        state.add_fault(provider, Fault(delay=0.3))
    accounts = [{"provider": "ALMANAC", "accountId": org} for org in organizations]
    accounts.append({"provider": "AUTOPOSTING"})

    started = time.perf_counter()
    data = post_graphql(http, gateway, MANY_ACCOUNTS, {"accounts": accounts})
    elapsed = time.perf_counter() - started

    items = data["billingAccounts"]
    for item, org in zip(items[:5], organizations, strict=True):
        assert_complete(item, "ALMANAC", org)
    assert_complete(items[5], "AUTOPOSTING", "org-pro-demo")
    for org in organizations:
        assert state.count("almanac", "GET", ALMANAC_BILLING.format(org)) == 1
    for path in AUTOPOSTING_RESOURCES:
        assert state.count("autoposting", "GET", path) == 1, path
    assert state.count() == 9
    # Nine calls of 0.3 s each: one by one would take 2.7 s; concurrent, about 0.6 s.
    assert elapsed < 1.2


# --- checkouts -----------------------------------------------------------------------------------


def test_an_almanac_checkout_over_http_posts_only_plan_id_and_success_url(
    http: httpx.Client, gateway: str, sandbox: SandboxThread, state: SandboxState
) -> None:
    fields = {
        "provider": "ALMANAC",
        "accountId": "org_acme",
        "planId": "team",
        "successUrl": SUCCESS_URL,
        "cancelUrl": CANCEL_URL,
    }
    session = post_graphql(http, gateway, START_CHECKOUT, {"input": fields})["startCheckout"]

    assert session["__typename"] == "CheckoutSession"
    assert session["provider"] == "ALMANAC"
    assert session["planId"] == "team"
    assert session["sessionId"]
    assert session["sessionId"] in session["url"]
    assert session["url"].startswith(f"{sandbox.almanac_url}/hosted/checkout/")
    [call] = state.calls("almanac", "POST", ALMANAC_CHECKOUT.format("org_acme"))
    assert call.body == {"plan_id": "team", "success_url": SUCCESS_URL}
    assert state.count() == 1
    [created] = state.checkouts
    assert (created.account_id, created.plan_id) == ("org_acme", "team")
    assert (created.session_id, created.url) == (session["sessionId"], session["url"])
    assert "Sandbox checkout" in get(http, session["url"]).text


@pytest.mark.parametrize("mutation", EXAMPLE_MUTATIONS)
def test_the_readme_example_mutation_posts_exactly_the_three_autoposting_fields(
    http: httpx.Client, gateway: str, state: SandboxState, mutation: str
) -> None:
    session = post_graphql(http, gateway, mutation)["startCheckout"]

    assert session["__typename"] == "CheckoutSession"
    assert session["provider"] == "AUTOPOSTING"
    assert session["sessionId"]
    assert session["sessionId"] in session["url"]
    [call] = state.calls("autoposting", "POST", "/billing/checkout")
    assert call.body == {"planId": "plan_pro", "successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL}
    assert state.count() == 1
    [created] = state.checkouts
    assert created.session_id == session["sessionId"]


def test_the_demo_default_redirect_urls_point_back_at_the_running_gateway(
    http: httpx.Client, gateway: str, state: SandboxState
) -> None:
    fields = {"provider": "AUTOPOSTING", "planId": "plan_pro"}
    session = post_graphql(http, gateway, START_CHECKOUT, {"input": fields})["startCheckout"]

    assert session["__typename"] == "CheckoutSession"
    [call] = state.calls("autoposting", "POST", "/billing/checkout")
    assert call.body == {
        "planId": "plan_pro",
        "successUrl": f"{gateway}/?checkout=success",
        "cancelUrl": f"{gateway}/?checkout=cancel",
    }
    assert len(state.checkouts) == 1


# --- typed errors --------------------------------------------------------------------------------


def checkout(**fields: str) -> tuple[str, dict[str, Any], str]:
    return START_CHECKOUT, {"input": fields}, "startCheckout"


def account(provider: str, account_id: str | None = None) -> tuple[str, dict[str, Any], str]:
    return ONE_ACCOUNT, {"provider": provider, "id": account_id}, "billingAccount"


@pytest.mark.parametrize(
    ("operation", "headers", "fault", "expected", "calls"),
    [
        pytest.param(
            checkout(provider="AUTOPOSTING", planId="plan_pro", successUrl="/relative"),
            {},
            None,
            {"__typename": "InvalidInputError", "code": "INVALID_INPUT", "field": "successUrl"},
            {},
            id="invalid-success-url",
        ),
        pytest.param(
            checkout(provider="ALMANAC", accountId="org_acme", planId="pro"),
            {"x-almanac-token": ALMANAC_VIEWER_TOKEN},
            None,
            {"__typename": "NotAllowedError", "code": "NOT_ALLOWED", "provider": "ALMANAC"},
            {("almanac", "POST", ALMANAC_CHECKOUT.format("org_acme")): 1},
            id="viewer-checkout",
        ),
        pytest.param(
            account("ALMANAC", "org_acme"),
            {"x-almanac-token": REJECTED_ALMANAC_TOKEN},
            None,
            {"__typename": "NotAllowedError", "code": "UNAUTHENTICATED"},
            {("almanac", "GET", ALMANAC_BILLING.format("org_acme")): 1},
            id="rejected-almanac-token",
        ),
        pytest.param(
            account("AUTOPOSTING"),
            {"x-autoposting-api-key": REJECTED_AUTOPOSTING_KEY},
            None,
            {"__typename": "NotAllowedError", "code": "UNAUTHENTICATED"},
            # The parts the query selects go out with the status, in the same round trip.
            {("autoposting", "GET", path): 1 for path in AUTOPOSTING_RESOURCES},
            id="rejected-autoposting-key",
        ),
        pytest.param(
            checkout(**AUTOPOSTING_CHECKOUT),
            {"x-autoposting-api-key": AUTOPOSTING_SUSPENDED_KEY},
            None,
            {
                "__typename": "BillingSuspendedError",
                "code": "BILLING_SUSPENDED",
                "provider": "AUTOPOSTING",
            },
            {("autoposting", "POST", "/billing/checkout"): 1},
            id="suspended-checkout",
        ),
        pytest.param(
            account("ALMANAC", "org_nobody"),
            {},
            None,
            {
                "__typename": "ProviderError",
                "code": "NOT_FOUND",
                "retryable": False,
                "upstreamStatus": 404,
            },
            {("almanac", "GET", ALMANAC_BILLING.format("org_nobody")): 1},
            id="unknown-organization",
        ),
        pytest.param(
            account("ALMANAC", "org_acme"),
            {},
            Fault(status=500, body={"detail": "database on fire"}),
            {
                "__typename": "ProviderError",
                "code": "UPSTREAM_UNAVAILABLE",
                "retryable": True,
                "upstreamStatus": 500,
            },
            {("almanac", "GET", ALMANAC_BILLING.format("org_acme")): 1},
            id="almanac-500",
        ),
    ],
)
def test_each_typed_error_comes_back_over_http_after_the_expected_upstream_calls(
    http: httpx.Client,
    gateway: str,
    state: SandboxState,
    operation: tuple[str, dict[str, Any], str],
    headers: dict[str, str],
    fault: Fault | None,
    expected: dict[str, Any],
    calls: dict[tuple[str, str, str], int],
) -> None:
    query, variables, field = operation
    if fault is not None:
        state.add_fault("almanac", fault)

    error = post_graphql(http, gateway, query, variables, headers=headers)[field]

    assert {key: error[key] for key in expected} == expected
    assert error["message"]
    assert "fire" not in error["message"]
    for (provider, method, path), count in calls.items():
        assert state.count(provider, method, path) == count, path
    assert state.count() == sum(calls.values())
    assert state.checkouts == []
    for call in state.calls():
        presented = headers.get(
            CREDENTIAL_HEADERS[call.provider], SERVICE_CREDENTIALS[call.provider]
        )
        assert call.headers["authorization"] == f"Bearer {presented}"


# --- one provider failing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway_fixture", "failing", "fault", "code"),
    [
        pytest.param("gateway", "almanac", Fault(status=500), "UPSTREAM_UNAVAILABLE", id="500"),
        pytest.param("gateway", "almanac", Fault(drop=True), "UPSTREAM_UNREACHABLE", id="drop"),
        pytest.param(
            "impatient_gateway", "almanac", Fault(delay=1), "UPSTREAM_TIMEOUT", id="read-timeout"
        ),
        pytest.param(
            "gateway",
            "autoposting",
            Fault(status=200, body="<html><body>Sign in</body></html>", content_type="text/html"),
            "UPSTREAM_BAD_RESPONSE",
            id="html-200",
        ),
    ],
)
def test_one_provider_failing_leaves_the_other_providers_account_complete(
    request: pytest.FixtureRequest,
    http: httpx.Client,
    state: SandboxState,
    gateway_fixture: str,
    failing: str,
    fault: Fault,
    code: str,
) -> None:
    base_url = request.getfixturevalue(gateway_fixture)
    state.add_fault(failing, fault)

    data = post_graphql(http, base_url, MANY_ACCOUNTS, {"accounts": ALMANAC_AND_AUTOPOSTING})

    almanac, autoposting = data["billingAccounts"]
    if failing == "almanac":
        broken = almanac
        assert_complete(autoposting, "AUTOPOSTING", "org-pro-demo")
        for path in AUTOPOSTING_RESOURCES:
            assert state.count("autoposting", "GET", path) == 1, path
        assert state.count("almanac", "GET", ALMANAC_BILLING.format("org_acme")) == 1
        assert state.count() == 5
    else:
        broken = autoposting
        assert_complete(almanac, "ALMANAC", "org_acme")
        assert state.count("almanac", "GET", ALMANAC_BILLING.format("org_acme")) == 1
        # The parts the query selects went out with the status, in one round trip, once each.
        for path in AUTOPOSTING_RESOURCES:
            assert state.count("autoposting", "GET", path) == 1, path
        assert state.count() == 5
    assert broken["__typename"] == "ProviderError"
    assert broken["code"] == code
    assert broken["errorProvider"] == failing.upper()
    assert broken["retryable"] is (code != "UPSTREAM_BAD_RESPONSE")


# --- retries -------------------------------------------------------------------------------------


def test_a_failed_billing_get_is_retried_and_the_retry_is_counted_upstream(
    http: httpx.Client, retrying_gateway: str, state: SandboxState
) -> None:
    path = ALMANAC_BILLING.format("org_acme")
    state.add_fault("almanac", Fault(status=503), method="GET", path=path, times=1)

    data = post_graphql(
        http, retrying_gateway, ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_acme"}
    )

    assert_complete(data["billingAccount"], "ALMANAC", "org_acme")
    assert state.count("almanac", "GET", path) == 2
    assert state.count() == 2


def test_a_failed_checkout_post_is_sent_once_even_by_a_retrying_gateway(
    http: httpx.Client, retrying_gateway: str, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=503), method="POST", path="/billing/checkout")

    variables = {"input": AUTOPOSTING_CHECKOUT}
    error = post_graphql(http, retrying_gateway, START_CHECKOUT, variables)["startCheckout"]

    assert error["__typename"] == "ProviderError"
    assert error["code"] == "UPSTREAM_UNAVAILABLE"
    assert error["retryable"] is True
    assert state.count("autoposting", "POST", "/billing/checkout") == 1
    assert state.count() == 1
    assert state.checkouts == []


# --- secrets -------------------------------------------------------------------------------------


def test_failing_requests_log_no_credential_in_records_or_on_the_console(
    http: httpx.Client,
    gateway: str,
    state: SandboxState,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    state.add_fault("almanac", Fault(status=500), times=1)
    state.add_fault("autoposting", Fault(drop=True), path="/billing/status", times=1)

    failed = post_graphql(http, gateway, MANY_ACCOUNTS, {"accounts": ALMANAC_AND_AUTOPOSTING})
    rejected = post_graphql(
        http,
        gateway,
        START_CHECKOUT,
        {"input": {"provider": "ALMANAC", "accountId": "org_acme", "planId": "pro"}},
        headers={"x-almanac-token": REJECTED_ALMANAC_TOKEN},
    )

    assert [item["code"] for item in failed["billingAccounts"]] == [
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_UNREACHABLE",
    ]
    assert rejected["startCheckout"]["code"] == "UNAUTHENTICATED"
    # The server thread's records reach caplog: the failures were logged, without credentials.
    upstream = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    assert any("answered 500" in message for message in upstream), upstream
    assert any("answered 401" in message for message in upstream), upstream
    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    console = "".join(capfd.readouterr())
    for secret in SECRETS:
        assert secret not in logged, secret
        assert secret not in console, secret


# --- operational basics --------------------------------------------------------------------------


def test_the_root_redirects_to_the_graphql_endpoint(http: httpx.Client, gateway: str) -> None:
    response = get(http, f"{gateway}/", follow_redirects=False)

    assert response.is_redirect
    assert response.headers["location"] == "/graphql"


def test_the_health_check_answers_json_without_calling_an_upstream(
    http: httpx.Client, gateway: str, state: SandboxState
) -> None:
    response = get(http, f"{gateway}/healthz")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert state.count() == 0


def test_a_browser_gets_the_graphiql_page(http: httpx.Client, gateway: str) -> None:
    response = get(http, f"{gateway}/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


def test_a_malformed_json_body_is_a_400_and_calls_no_upstream(
    http: httpx.Client, gateway: str, state: SandboxState
) -> None:
    response = http.post(
        f"{gateway}/graphql",
        content=b'{"query": "{ billingAccount(provider: ALMANAC',
        headers={**GATEWAY_KEY, "content-type": "application/json"},
    )

    assert_no_secrets(response)
    assert response.status_code == 400
    assert "json" in response.text.lower()
    assert state.count() == 0
