"""Contract drift through the real app: the sandbox upstreams answer their real bodies, changed.

Each row of `CASES` changes one field of one answer (missing, of the wrong type, an unknown enum
value, extra keys) and asserts what a caller sees, what `gateway_upstream_contract_drift_total`
counts and what is logged: a descriptive field degrades to null or its default, counted once and
logged once (a WARNING that carries no value); a field that identifies the object fails it
(`UPSTREAM_BAD_RESPONSE` naming the field; a list element is dropped instead, counted). A value
planted in a changed field (`SECRET`) must appear in no log line, label or error message.

The app runs in process with its lifespan, under `httpx.ASGITransport`, over the sandbox apps.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.normalize import CONTRACTS, Contract
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    Fault,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.upstreams import AlmanacClient, AutopostingClient
from tests.support import (
    CANCEL_URL,
    START_CHECKOUT,
    SUCCESS_URL,
    TEST_API_KEY,
    client_of,
)

SECRET = "DRIFT-VALUE-4be1"  # planted in changed fields: never in a log line, label or message
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
ORG = "org_acme"
ALMANAC_BILLING = f"/v1/organizations/{ORG}/billing"
DRIFT_METRIC = "gateway_upstream_contract_drift_total"
README = Path(__file__).resolve().parent.parent / "README.md"

ACCOUNT = """
query($provider: Provider!, $accountId: ID) {
  billingAccount(provider: $provider, accountId: $accountId) {
    __typename
    ... on BillingAccount {
      accountId
      plans {
        planId name price { amount currency } interval intervalRaw group current
        features { featureId included }
      }
      currentPlan { planId }
      subscription {
        status statusRaw planId billingCycle currentPeriodEnd trialEnd cancelledAt suspendedAt
        pendingPlanId pendingChangeAt
      }
      manage { allowed reason reasonRaw }
      usageMeters {
        featureId used granted remaining unlimited overageAllowed resetsAt usedFraction
      }
    }
    ... on Error { code message }
  }
}
"""
PREVIEW = """
query($input: CheckoutPreviewInput!) {
  checkoutPreview(input: $input) {
    __typename
    ... on CheckoutPreview {
      currency hostedCheckoutRequired total { amount } lines: lineItems { name }
    }
    ... on Error { code message }
  }
}
"""

Body = dict[str, Any]
Change = Callable[[Body], object]  # alters the body in place; what it returns is ignored
Read = Callable[[Body], object]


# --- the rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """A GraphQL operation and the upstream answer it reads, to be answered changed."""

    provider: Provider
    method: str
    path: str
    document: str
    variables: Mapping[str, Any]
    result: str  # the top-level field of `data`
    upstream_body: Mapping[str, Any] | None = None  # what the real request sends


ALMANAC_ACCOUNT = Operation(
    Provider.ALMANAC,
    "GET",
    ALMANAC_BILLING,
    ACCOUNT,
    {"provider": "ALMANAC", "accountId": ORG},
    "billingAccount",
)
ALMANAC_CHECKOUT = Operation(
    Provider.ALMANAC,
    "POST",
    f"{ALMANAC_BILLING}/checkout",
    START_CHECKOUT,
    {
        "input": {
            "provider": "ALMANAC",
            "accountId": ORG,
            "planId": "team",
            "successUrl": SUCCESS_URL,
        }
    },
    "startCheckout",
    {"plan_id": "team", "success_url": SUCCESS_URL},
)
ALMANAC_PREVIEW = Operation(
    Provider.ALMANAC,
    "POST",
    f"{ALMANAC_BILLING}/preview",
    PREVIEW,
    {"input": {"provider": "ALMANAC", "accountId": ORG, "planId": "team"}},
    "checkoutPreview",
    {"plan_id": "team"},
)


def autoposting_account(path: str) -> Operation:
    # accountId asked for: the profile is read too.
    return Operation(
        Provider.AUTOPOSTING, "GET", path, ACCOUNT, {"provider": "AUTOPOSTING"}, "billingAccount"
    )


STATUS = autoposting_account("/billing/status")
CREDITS = autoposting_account("/billing/credit-summary")
TOKENS = autoposting_account("/usage/tokens")
PROFILE = autoposting_account("/auth/profile")
AUTOPOSTING_CHECKOUT = Operation(
    Provider.AUTOPOSTING,
    "POST",
    "/billing/checkout",
    START_CHECKOUT,
    {
        "input": {
            "provider": "AUTOPOSTING",
            "planId": "plan_pro",
            "successUrl": SUCCESS_URL,
            "cancelUrl": CANCEL_URL,
        }
    },
    "startCheckout",
    {"planId": "plan_pro", "successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL},
)


def delete(*path: Any) -> Change:
    def change(body: Body) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def put(*path: Any, value: object) -> Change:
    def change(body: Body) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def extra_keys(*paths: tuple[Any, ...]) -> Change:
    """Unknown keys (with planted values) added to the object at each path."""

    def change(body: Body) -> None:
        for i, path in enumerate(paths):
            target: Any = body
            for key in path:
                target = target[key]
            target[f"new_field_{i}"] = {"nested": [SECRET]}

    return change


def plan(plan_id: str, attribute: str | None = None) -> Read:
    def read(account: Body) -> object:
        found = next(p for p in account["plans"] if p["planId"] == plan_id)
        return found if attribute is None else found[attribute]

    return read


def plan_ids(account: Body) -> object:
    return [p["planId"] for p in account["plans"]]


def features(plan_id: str) -> Callable[[Body], list[Body]]:
    def read(account: Body) -> list[Body]:
        found: list[Body] = next(p for p in account["plans"] if p["planId"] == plan_id)["features"]
        return found

    return read


def meter(feature_id: str, attribute: str | None = None) -> Read:
    def read(account: Body) -> object:
        found = next(m for m in account["usageMeters"] if m["featureId"] == feature_id)
        return found if attribute is None else found[attribute]

    return read


def meter_ids(account: Body) -> object:
    return [m["featureId"] for m in account["usageMeters"]]


def at(*path: str) -> Read:
    def read(result: Body) -> object:
        value: Any = result
        for key in path:
            value = value[key]
        return value

    return read


def failed(field: str) -> Read:
    """The answer failed: its typed error names `field`."""

    def read(result: Body) -> object:
        assert field in result["message"], result["message"]
        return (result["__typename"], result["code"])

    return read


def session_from_url(session: Body) -> object:
    return (session["__typename"], session["sessionId"] == session["url"].rsplit("/", 1)[-1])


FAILED = ("ProviderError", "UPSTREAM_BAD_RESPONSE")
M, X, U = "missing", "malformed", "unknown_value"  # drift kinds
# Answers whose `data` is the envelope's: the changes apply to it.
ENVELOPED = {Provider.AUTOPOSTING}


@dataclass(frozen=True)
class Case:
    finding: str  # what drifted, and how
    operation: Operation
    change: Change
    read: Read  # of the operation's result
    expected: object
    drift: tuple[str, str] | None  # (field, kind) counted once; None: nothing counted
    errors: bool = False  # a nullable field failed: `errors` in the response


def case(
    finding: str,
    operation: Operation,
    change: Change,
    read: Read,
    expected: object,
    drift: tuple[str, str] | None,
    *,
    errors: bool = False,
) -> Any:
    return pytest.param(Case(finding, operation, change, read, expected, drift, errors), id=finding)


A, S = ALMANAC_ACCOUNT, STATUS
CASES = [
    # Almanac billing state: what identifies the account fails it, naming the field.
    case("almanac-organization-id-missing", A, delete("organization_id"),
         failed("organization_id is missing"), FAILED, None),
    case("almanac-organization-id-number", A, put("organization_id", value=7),
         failed("organization_id must be a string"), FAILED, None),
    case("almanac-plans-missing", A, delete("plans"), failed("plans is missing"), FAILED, None),
    case("almanac-plans-object", A, put("plans", value={"plan_id": SECRET}),
         failed("plans must be a list"), FAILED, None),
    case("almanac-current-plan-id-missing", A, delete("plans", 1, "plan_id"),
         failed("plans[1].plan_id is missing"), FAILED, None),
    case("almanac-current-plan-name-number", A, put("plans", 1, "name", value=3),
         failed("plans[1].name must be a string"), FAILED, None),
    # ... a plan, feature or meter without its id is dropped, counted.
    case("almanac-other-plan-id-missing", A, delete("plans", 0, "plan_id"), plan_ids,
         ["pro", "pro_yearly", "team", "enterprise"], ("plans[].plan_id", M)),
    case("almanac-other-plan-name-missing", A, delete("plans", 0, "name"), plan_ids,
         ["pro", "pro_yearly", "team", "enterprise"], ("plans[].name", M)),
    case("almanac-plan-not-an-object", A, put("plans", 0, value=SECRET), plan_ids,
         ["pro", "pro_yearly", "team", "enterprise"], ("plans[]", X)),
    case("almanac-feature-id-missing", A, delete("plans", 1, "features", 0, "feature_id"),
         lambda a: [f["featureId"] for f in features("pro")(a)], ["editors", "storage_gb"],
         ("plans[].features[].feature_id", M)),
    case("almanac-meter-feature-id-missing", A, delete("usage", 0, "feature_id"), meter_ids,
         ["editors", "storage_gb"], ("usage[].feature_id", M)),
    case("almanac-meter-usage-string", A, put("usage", 0, "usage", value=SECRET), meter_ids,
         ["editors", "storage_gb"], ("usage[].usage", X)),
    # ... a descriptive field degrades to null or its default, counted; an optional one missing
    # is normal and not counted.
    case("almanac-price-missing-is-normal", A, delete("plans", 1, "price"),
         plan("pro", "price"), None, None),
    case("almanac-price-string", A, put("plans", 1, "price", value=SECRET),
         plan("pro", "price"), None, ("plans[].price", X)),
    case("almanac-interval-number", A, put("plans", 1, "interval", value=30),
         lambda a: (plan("pro", "interval")(a), plan("pro", "intervalRaw")(a)), (None, None),
         ("plans[].interval", X)),
    case("almanac-interval-unknown", A, put("plans", 1, "interval", value="fortnightly"),
         lambda a: (plan("pro", "interval")(a), plan("pro", "intervalRaw")(a)),
         ("OTHER", "fortnightly"), ("plans[].interval", U)),
    case("almanac-group-number", A, put("plans", 2, "group", value=5),
         plan("pro_yearly", "group"), None, ("plans[].group", X)),
    case("almanac-current-string", A, put("plans", 0, "current", value="false"),
         plan("free", "current"), False, ("plans[].current", X)),
    case("almanac-features-string", A, put("plans", 1, "features", value=SECRET),
         plan("pro", "features"), [], ("plans[].features", X)),
    case("almanac-feature-included-string", A,
         put("plans", 0, "features", 0, "included", value=SECRET),
         lambda a: features("free")(a)[0], {"featureId": "pages", "included": None},
         ("plans[].features[].included", X)),
    case("almanac-usage-string", A, put("usage", value=SECRET), meter_ids, [], ("usage", X)),
    case("almanac-granted-missing", A, delete("usage", 0, "granted"),
         lambda a: (meter("pages", "granted")(a), meter("pages", "usedFraction")(a)),
         (None, None), ("usage[].granted", M)),
    case("almanac-granted-string", A, put("usage", 0, "granted", value=SECRET),
         meter("pages", "granted"), None, ("usage[].granted", X)),
    case("almanac-remaining-missing", A, delete("usage", 0, "remaining"),
         meter("pages", "remaining"), None, ("usage[].remaining", M)),
    case("almanac-remaining-null", A, put("usage", 0, "remaining", value=None),
         meter("pages", "remaining"), None, ("usage[].remaining", X)),
    case("almanac-unlimited-string", A, put("usage", 0, "unlimited", value="no"),
         meter("pages", "unlimited"), False, ("usage[].unlimited", X)),
    case("almanac-overage-string", A, put("usage", 2, "overage_allowed", value="yes"),
         meter("storage_gb", "overageAllowed"), False, ("usage[].overage_allowed", X)),
    case("almanac-reset-string", A, put("usage", 0, "next_reset_at", value=SECRET),
         meter("pages", "resetsAt"), None, ("usage[].next_reset_at", X)),
    case("almanac-reset-negative", A, put("usage", 0, "next_reset_at", value=-5),
         meter("pages", "resetsAt"), None, ("usage[].next_reset_at", X)),
    case("almanac-manage-missing", A, delete("manage"), at("manage"), None, ("manage", M)),
    case("almanac-manage-string", A, put("manage", value=SECRET), at("manage"), None,
         ("manage", X)),
    case("almanac-manage-allowed-missing", A, delete("manage", "allowed"), at("manage"), None,
         ("manage.allowed", M)),
    case("almanac-manage-allowed-string", A, put("manage", "allowed", value="yes"),
         at("manage"), None, ("manage.allowed", X)),
    case("almanac-manage-reason-missing", A, delete("manage", "reason"), at("manage"),
         {"allowed": True, "reason": None, "reasonRaw": None}, ("manage.reason", M)),
    case("almanac-manage-reason-number", A, put("manage", "reason", value=2), at("manage"),
         {"allowed": True, "reason": None, "reasonRaw": None}, ("manage.reason", X)),
    case("almanac-manage-reason-unknown", A, put("manage", "reason", value="banana"),
         at("manage"), {"allowed": True, "reason": "OTHER", "reasonRaw": "banana"},
         ("manage.reason", U)),
    case("almanac-extra-keys-are-ignored", A,
         extra_keys((), ("manage",), ("plans", 1), ("plans", 1, "features", 0), ("usage", 0)),
         lambda a: (a["manage"]["reason"], plan("pro", "name")(a), meter("pages", "used")(a)),
         ("PERMISSION", "Pro", 420.0), None),
    # Almanac checkout and preview.
    case("almanac-checkout-url-missing", ALMANAC_CHECKOUT, delete("url"),
         failed("url is missing"), FAILED, None),
    case("almanac-checkout-url-not-http", ALMANAC_CHECKOUT, put("url", value="javascript:x"),
         failed("url must be an absolute http(s) URL"), FAILED, None),
    case("almanac-preview-plan-id-missing", ALMANAC_PREVIEW, delete("plan_id"),
         failed("plan_id is missing"), FAILED, None),
    case("almanac-preview-total-string", ALMANAC_PREVIEW, put("total", value=SECRET),
         at("total"), None, ("total", X)),
    case("almanac-preview-currency-number", ALMANAC_PREVIEW, put("currency", value=840),
         at("currency"), "USD", ("currency", X)),
    case("almanac-preview-redirect-string", ALMANAC_PREVIEW,
         put("redirect_to_checkout", value="yes"), at("hostedCheckoutRequired"), False,
         ("redirect_to_checkout", X)),
    case("almanac-preview-line-not-an-object", ALMANAC_PREVIEW,
         put("line_items", 0, value=SECRET), lambda p: len(p["lines"]), 0,
         ("line_items[]", X)),
    # Autoposting status: every field optional; nothing in it identifies the account.
    case("autoposting-plan-number", S, put("plan", value=4),
         lambda a: (a["subscription"]["planId"], a["currentPlan"]), (None, None), ("plan", X)),
    case("autoposting-plan-name-number", S, put("planName", value=4), at("currentPlan", "planId"),
         "plan_pro", ("planName", X)),
    case("autoposting-billing-cycle-number", S, put("billingCycle", value=30),
         at("subscription", "billingCycle"), None, ("billingCycle", X)),
    case("autoposting-billing-cycle-unknown", S, put("billingCycle", value="fortnightly"),
         at("subscription", "billingCycle"), "fortnightly", ("billingCycle", U)),
    case("autoposting-status-number", S, put("status", value=3),
         lambda a: (a["subscription"]["status"], a["subscription"]["statusRaw"]),
         ("OTHER", None), ("status", X)),
    case("autoposting-status-unknown", S, put("status", value="paused"),
         lambda a: (a["subscription"]["status"], a["subscription"]["statusRaw"]),
         ("OTHER", "paused"), ("status", U)),
    case("autoposting-is-trialing-string", S,
         lambda d: (d.pop("status"), d.update(isTrialing="yes")),
         at("subscription", "status"), "OTHER", ("isTrialing", X)),
    case("autoposting-period-end-garbage", S, put("currentPeriodEnd", value=SECRET),
         at("subscription", "currentPeriodEnd"), None, ("currentPeriodEnd", X)),
    case("autoposting-trial-end-number", S, put("trialEnd", value=1719792000),
         at("subscription", "trialEnd"), None, ("trialEnd", X)),
    case("autoposting-cancelled-at-garbage-still-cancels", S,
         lambda d: (d.pop("status"), d.update(cancelledAt=SECRET)),
         lambda a: (a["subscription"]["status"], a["subscription"]["cancelledAt"]),
         ("CANCELED", None), ("cancelledAt", X)),
    case("autoposting-suspended-at-number-still-suspends", S,
         put("suspendedAt", value=1719792000),
         lambda a: (a["subscription"]["status"], a["subscription"]["suspendedAt"]),
         ("SUSPENDED", None), ("suspendedAt", X)),
    case("autoposting-pending-plan-number", S, put("pendingPlan", value=9),
         at("subscription", "pendingPlanId"), None, ("pendingPlan", X)),
    case("autoposting-pending-change-garbage", S, put("pendingChangeDate", value=SECRET),
         at("subscription", "pendingChangeAt"), None, ("pendingChangeDate", X)),
    case("autoposting-account-limit-string", S, put("accountLimit", value="10"), meter_ids,
         ["credits", "ai_tokens"], ("accountLimit", X)),
    case("autoposting-account-limit-below-minus-one", S, put("accountLimit", value=-2),
         meter_ids, ["credits", "ai_tokens"], ("accountLimit", X)),
    case("autoposting-accounts-used-missing", S, delete("accountsUsed"), meter_ids,
         ["credits", "ai_tokens"], ("accountsUsed", M)),
    case("autoposting-accounts-used-bool", S, put("accountsUsed", value=True), meter_ids,
         ["credits", "ai_tokens"], ("accountsUsed", X)),
    case("autoposting-status-extra-keys-are-ignored", S, extra_keys(()),
         lambda a: (a["subscription"]["status"], meter("social_accounts", "used")(a)),
         ("ACTIVE", 3.0), None),
    # Autoposting credits and tokens: a meter each. Without what identifies it, usageMeters is
    # null with an error; the account stands.
    case("autoposting-credits-balance-missing", CREDITS, delete("balance"),
         lambda a: (a["__typename"], a["usageMeters"]), ("BillingAccount", None), None,
         errors=True),
    case("autoposting-credits-allocation-string", CREDITS,
         put("monthlyAllocation", value=SECRET), meter("credits", "granted"), None,
         ("monthlyAllocation", X)),
    case("autoposting-credits-used-bool", CREDITS, put("used", value=False),
         meter("credits", "used"), 50.0, ("used", X)),
    case("autoposting-credits-reset-garbage", CREDITS, put("resetAt", value=SECRET),
         meter("credits", "resetsAt"), None, ("resetAt", X)),
    case("autoposting-tokens-total-missing", TOKENS, delete("total"),
         lambda a: (a["__typename"], a["usageMeters"]), ("BillingAccount", None), None,
         errors=True),
    case("autoposting-tokens-total-fraction", TOKENS, put("total", value=1.5),
         lambda a: (a["__typename"], a["usageMeters"]), ("BillingAccount", None), None,
         errors=True),
    # Autoposting profile: the organization identifies the account whose ids are asked for.
    case("autoposting-profile-org-missing", PROFILE,
         lambda d: (d.pop("orgId"), d.pop("id")), failed("orgId is missing"), FAILED, None),
    case("autoposting-profile-org-number", PROFILE, put("orgId", value=5),
         failed("orgId must be a string"), FAILED, None),
    case("autoposting-profile-name-number", PROFILE, put("name", value=5), at("accountId"),
         "org-pro-demo", ("name", X)),
    # Autoposting checkout: the URL is the session; without a session id it stands, with the
    # one its URL carries (the sandbox's carries one), else null.
    case("autoposting-checkout-url-missing", AUTOPOSTING_CHECKOUT, delete("checkoutUrl"),
         failed("checkoutUrl is missing"), FAILED, None),
    case("autoposting-checkout-session-id-missing", AUTOPOSTING_CHECKOUT, delete("sessionId"),
         session_from_url, ("CheckoutSession", True), ("sessionId", M)),
    case("autoposting-checkout-session-id-number", AUTOPOSTING_CHECKOUT,
         put("sessionId", value=7), session_from_url, ("CheckoutSession", True),
         ("sessionId", X)),
    case("autoposting-checkout-session-id-and-url-id-missing", AUTOPOSTING_CHECKOUT,
         lambda d: (d.pop("sessionId"), d.update(checkoutUrl="https://pay.example.com/p/1")),
         lambda c: (c["__typename"], c["sessionId"]), ("CheckoutSession", None),
         ("sessionId", M)),
]  # fmt: skip


# --- the app in process --------------------------------------------------------------------------


async def real_answer(operation: Operation) -> Body:
    """What the sandbox answers `operation`'s upstream request, unchanged (asked of a sandbox
    of its own, so the test's sandbox counts only the gateway's calls)."""
    apps = {Provider.ALMANAC: create_almanac_app, Provider.AUTOPOSTING: create_autoposting_app}
    credential = {
        Provider.ALMANAC: ALMANAC_OWNER_TOKEN,
        Provider.AUTOPOSTING: AUTOPOSTING_PRO_KEY,
    }[operation.provider]
    transport = httpx.ASGITransport(app=apps[operation.provider](SandboxState()))
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream.test") as client:
        response = await client.request(
            operation.method,
            operation.path,
            params={"period": "30d"} if operation.path == "/usage/tokens" else None,
            json=operation.upstream_body,
            headers={"authorization": f"Bearer {credential}"},
        )
    response.raise_for_status()
    body: Body = response.json()
    return body


async def answer_changed(state: SandboxState, operation: Operation, change: Change) -> None:
    """Make the sandbox answer `operation`'s upstream request with its real body, changed."""
    body = await real_answer(operation)
    change(body["data"] if operation.provider in ENVELOPED else body)
    provider = operation.provider.value
    state.add_fault(
        provider, Fault(status=200, body=body), method=operation.method, path=operation.path
    )


async def run(client: httpx.AsyncClient, operation: Operation) -> httpx.Response:
    return await client.post(
        "/graphql",
        json={"query": operation.document, "variables": dict(operation.variables)},
        headers=KEY,
    )


async def drift_samples(client: httpx.AsyncClient) -> dict[tuple[str, str, str, str], float]:
    text = (await client.get("/metrics", headers=KEY)).text
    assert SECRET not in text
    return {
        (s.labels["provider"], s.labels["endpoint"], s.labels["field"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == DRIFT_METRIC
    }


def drift_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.contract"]


def endpoint_of(operation: Operation) -> str:
    client = AlmanacClient if operation.provider is Provider.ALMANAC else AutopostingClient
    templates = [endpoint.template for endpoint in client.endpoints]
    for template in templates:
        pattern = "[^/]+".join(re.escape(part) for part in template.split("{id}"))
        if re.fullmatch(pattern, operation.path):
            return template
    raise AssertionError(operation.path)


# --- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize("row", CASES)
async def test_each_drifted_field_degrades_or_fails_its_object_and_is_counted_and_logged_once(
    state: SandboxState, caplog: pytest.LogCaptureFixture, row: Case
) -> None:
    caplog.set_level(logging.INFO)
    await answer_changed(state, row.operation, row.change)

    async with client_of(state) as client:  # a new app: a new once-per-process log
        response = await run(client, row.operation)
        samples = await drift_samples(client)

    assert response.status_code == 200, response.text
    body = response.json()
    assert ("errors" in body) is row.errors, body.get("errors")
    assert SECRET not in response.text
    result = body["data"][row.operation.result]
    assert row.read(result) == row.expected, result

    provider = row.operation.provider.value
    if row.drift is None:
        assert samples == {}
        assert drift_warnings(caplog) == []
    else:
        field, kind = row.drift
        assert samples == {(provider, endpoint_of(row.operation), field, kind): 1.0}
        [warning] = drift_warnings(caplog)
        assert warning.levelno == logging.WARNING
        assert field in warning.getMessage()
        assert endpoint_of(row.operation) in warning.getMessage()
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert all(SECRET not in str(value) for value in record.__dict__.values())


# --- counting ------------------------------------------------------------------------------------


async def test_the_same_drift_is_counted_at_every_answer_and_logged_once_per_process(
    state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await answer_changed(state, ALMANAC_ACCOUNT, put("plans", 1, "price", value=SECRET))

    async with client_of(state) as client:
        for _ in range(3):
            assert (await run(client, ALMANAC_ACCOUNT)).json()["data"]["billingAccount"]
        samples = await drift_samples(client)

    endpoint = "/v1/organizations/{id}/billing"
    assert samples == {("almanac", endpoint, "plans[].price", "malformed"): 3.0}
    assert state.count("almanac", "GET", ALMANAC_BILLING) == 3
    assert len(drift_warnings(caplog)) == 1


async def test_an_answer_shared_by_concurrent_requests_is_normalized_and_counted_once(
    state: SandboxState,
) -> None:
    body = await real_answer(ALMANAC_ACCOUNT)
    body["manage"]["reason"] = "banana"
    # Slow enough that the requests overlap and share one upstream GET (coalescing), and none
    # started ahead for later requests.
    state.add_fault("almanac", Fault(delay=0.3, status=200, body=body), path=ALMANAC_BILLING)

    async with client_of(state, GATEWAY_COALESCE_AHEAD="0") as client:
        responses = await asyncio.gather(*(run(client, ALMANAC_ACCOUNT) for _ in range(5)))
        samples = await drift_samples(client)

    reasons = {r.json()["data"]["billingAccount"]["manage"]["reasonRaw"] for r in responses}
    assert reasons == {"banana"}
    assert state.count("almanac", "GET", ALMANAC_BILLING) == 1
    endpoint = "/v1/organizations/{id}/billing"
    assert samples == {("almanac", endpoint, "manage.reason", "unknown_value"): 1.0}


# --- the tables themselves -----------------------------------------------------------------------


def test_every_contract_table_names_an_endpoint_its_client_declares() -> None:
    declared = {
        Provider.ALMANAC: {e.template for e in AlmanacClient.endpoints},
        Provider.AUTOPOSTING: {e.template for e in AutopostingClient.endpoints},
    }
    for contract in CONTRACTS:
        assert contract.endpoint in declared[contract.provider], contract.endpoint
    assert len({(c.provider, c.endpoint) for c in CONTRACTS}) == len(CONTRACTS)


def _readme_drift_rows() -> dict[str, tuple[set[str], set[str]]]:
    """The README's table of fields per answer: endpoint -> (fields that fail, that degrade)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| provider | answer | fails the object")
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        [endpoint] = re.findall(r"`([^`]+)`", cells[1])
        fails, degrades = (set(re.findall(r"`([^`]+)`", cell)) for cell in cells[2:4])
        rows[f"{cells[0]} {endpoint}"] = (fails, degrades)
    return rows


def _table_fields(contract: Contract) -> tuple[set[str], set[str]]:
    # List elements (`plans[]`) are named in prose: what happens to an element that fails.
    fields = {f: r for f, r in contract.rules.items() if not f.endswith("[]")}
    return (
        {f for f, rule in fields.items() if rule.identifies},
        {f for f, rule in fields.items() if not rule.identifies},
    )


def test_the_readme_lists_every_field_of_every_answer_as_its_contract_table_decides() -> None:
    rows = _readme_drift_rows()
    expected = {
        f"{contract.provider.label} {contract.endpoint}": _table_fields(contract)
        for contract in CONTRACTS
    }
    assert rows == expected
