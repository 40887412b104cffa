"""The billing query through the schema, against the sandbox upstreams in process."""

from __future__ import annotations

import base64

import pytest

from gateway.sandbox import (
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
)
from tests.support import Gateway, billing_account_query, billing_accounts_query, make_settings

ACCOUNT_FIELDS = """
    __typename
    ... on BillingAccount {
      id provider accountId
      currentPlan { id planId name price { amount currency } interval intervalRaw current }
      plans { planId name current group features { featureId included } }
      subscription { status statusRaw trialEnd currentPeriodEnd pendingPlanId suspendedAt }
      manage { allowed reason reasonRaw }
      usageMeters {
        id featureId used granted remaining unlimited overageAllowed usedFraction resetsAt
      }
    }
    ... on Error { code message errorProvider: provider }
    ... on InvalidInputError { field }
    ... on ProviderError { retryable upstreamStatus retryAfterSeconds }
"""
ONE_ACCOUNT = billing_account_query(ACCOUNT_FIELDS)
MANY_ACCOUNTS = billing_accounts_query(ACCOUNT_FIELDS)
ALMANAC_BILLING = "/v1/organizations/{}/billing"


async def test_an_almanac_organization_comes_with_plans_usage_and_manage_from_one_call(
    gateway: Gateway, state: SandboxState
) -> None:
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_acme"})

    account = data["billingAccount"]
    assert account["__typename"] == "BillingAccount"
    assert account["provider"] == "ALMANAC"
    assert account["accountId"] == "org_acme"
    padded = account["id"] + "=" * (-len(account["id"]) % 4)
    assert base64.urlsafe_b64decode(padded) == b"BillingAccount:almanac:org_acme"
    assert account["currentPlan"]["planId"] == "pro"
    assert account["currentPlan"]["price"] == {"amount": "29", "currency": "USD"}
    assert account["currentPlan"]["interval"] == "MONTH"
    assert [plan["planId"] for plan in account["plans"] if plan["current"]] == ["pro"]
    assert account["subscription"] is None
    assert account["manage"] == {"allowed": True, "reason": "PERMISSION", "reasonRaw": "permission"}
    meters = {meter["featureId"]: meter for meter in account["usageMeters"]}
    assert meters["pages"]["usedFraction"] == pytest.approx(0.42)
    assert meters["editors"]["unlimited"] is True
    assert meters["editors"]["granted"] is None
    assert meters["editors"]["usedFraction"] is None
    assert meters["storage_gb"]["usedFraction"] > 1
    assert meters["storage_gb"]["overageAllowed"] is True
    assert state.count("almanac") == 1


async def test_aliases_and_fragments_asking_for_one_organization_make_one_upstream_call(
    gateway: Gateway, state: SandboxState
) -> None:
    query = """
      fragment Plans on BillingAccount { plans { planId } currentPlan { name } }
      {
        a: billingAccount(provider: ALMANAC, accountId: "org_acme") { ...Plans }
        b: billingAccount(provider: ALMANAC, accountId: "org_acme") {
          ... on BillingAccount { usageMeters { featureId } manage { allowed } raw }
        }
        c: billingAccounts(accounts: [{provider: ALMANAC, accountId: "org_acme"}]) { ...Plans }
      }
    """
    data = await gateway.execute(query)

    assert data["a"]["currentPlan"]["name"] == "Pro"
    assert data["b"]["raw"]["organization_id"] == "org_acme"
    assert state.count("almanac", "GET", ALMANAC_BILLING.format("org_acme")) == 1
    assert state.count() == 1


async def test_five_organizations_and_the_autoposting_account_are_fetched_once_each_concurrently(
    gateway: Gateway, state: SandboxState
) -> None:
    organizations = ["org_acme", "org_globex", "org_initech", "org_umbrella", "org_hooli"]
    for provider in ("almanac", "autoposting"):
        state.add_fault(provider, Fault(delay=0.05))
    accounts = [{"provider": "ALMANAC", "accountId": org} for org in organizations]
    accounts.append({"provider": "AUTOPOSTING"})

    data = await gateway.execute(MANY_ACCOUNTS, {"accounts": accounts})

    items = data["billingAccounts"]
    assert [item["__typename"] for item in items] == ["BillingAccount"] * 6
    assert [item["accountId"] for item in items] == [*organizations, "org-pro-demo"]
    for org in organizations:
        assert state.count("almanac", "GET", ALMANAC_BILLING.format(org)) == 1
    for path in ("/billing/status", "/billing/credit-summary", "/usage/tokens", "/auth/profile"):
        assert state.count("autoposting", "GET", path) == 1, path
    assert state.count() == 9
    # The five organizations and the Autoposting status went out together, not one by one.
    assert gateway.in_flight.peak >= 6


@pytest.mark.parametrize(
    ("selection", "paths"),
    [
        ("__typename", ["/billing/status"]),
        ("... on BillingAccount { plans { name } }", ["/billing/status"]),
        ("... on BillingAccount { accountId }", ["/billing/status", "/auth/profile"]),
        (
            "... on BillingAccount { usageMeters { featureId } }",
            ["/billing/status", "/billing/credit-summary", "/usage/tokens"],
        ),
        ("... on BillingAccount { plans { id } }", ["/billing/status", "/auth/profile"]),
    ],
    ids=["typename", "plans", "account-id", "usage-meters", "plan-ids"],
)
async def test_autoposting_fetches_only_the_resources_the_selected_fields_need(
    gateway: Gateway, state: SandboxState, selection: str, paths: list[str]
) -> None:
    await gateway.execute("{ billingAccount(provider: AUTOPOSTING) { " + selection + " } }")

    assert sorted(call.path for call in state.calls("autoposting")) == sorted(paths)


@pytest.mark.parametrize(
    ("key", "current", "status"),
    [
        (None, "plan_pro", "ACTIVE"),  # the status says "pro"; the catalog says "plan_pro"
        (AUTOPOSTING_TRIAL_KEY, "plan_pro", "TRIALING"),
        (AUTOPOSTING_SUSPENDED_KEY, None, "SUSPENDED"),
    ],
    ids=["pro", "trial", "suspended"],
)
async def test_the_autoposting_current_plan_matches_the_catalog_under_either_id_form(
    gateway: Gateway, key: str | None, current: str | None, status: str
) -> None:
    headers = {"x-autoposting-api-key": key} if key else {}
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING"}, headers=headers)

    account = data["billingAccount"]
    current_ids = [plan["planId"] for plan in account["plans"] if plan["current"]]
    if current is not None:
        assert current_ids == [current]
        assert account["currentPlan"]["planId"] == current
    assert account["subscription"]["status"] == status
    assert account["manage"] is None


async def test_autoposting_meters_come_from_credits_the_account_limit_and_ai_tokens(
    gateway: Gateway,
) -> None:
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING"})

    meters = {m["featureId"]: m for m in data["billingAccount"]["usageMeters"]}
    assert set(meters) == {"credits", "social_accounts", "ai_tokens"}
    assert meters["credits"]["granted"] == 500
    assert meters["credits"]["remaining"] == 450
    assert meters["social_accounts"]["granted"] == 10
    assert meters["social_accounts"]["used"] == 3
    assert meters["ai_tokens"]["used"] == 482000
    assert meters["ai_tokens"]["granted"] is None


async def test_an_unlimited_social_account_limit_has_no_used_fraction(gateway: Gateway) -> None:
    headers = {"x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY}
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING"}, headers=headers)

    meters = {m["featureId"]: m for m in data["billingAccount"]["usageMeters"]}
    assert meters["social_accounts"]["unlimited"] is True
    assert meters["social_accounts"]["usedFraction"] is None


async def test_an_unknown_organization_is_a_not_found_provider_error(gateway: Gateway) -> None:
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_nobody"})

    error = data["billingAccount"]
    assert error["__typename"] == "ProviderError"
    assert error["code"] == "NOT_FOUND"
    assert error["errorProvider"] == "ALMANAC"
    assert error["upstreamStatus"] == 404
    assert error["retryable"] is False


async def test_a_failing_provider_never_blanks_the_other_providers_data(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("almanac", Fault(status=500, body={"detail": "database on fire"}))
    accounts = [{"provider": "ALMANAC", "accountId": "org_acme"}, {"provider": "AUTOPOSTING"}]

    data = await gateway.execute(MANY_ACCOUNTS, {"accounts": accounts})

    almanac, autoposting = data["billingAccounts"]
    assert almanac["__typename"] == "ProviderError"
    assert almanac["code"] == "UPSTREAM_UNAVAILABLE"
    assert almanac["retryable"] is True
    assert "fire" not in almanac["message"]
    assert autoposting["__typename"] == "BillingAccount"
    assert autoposting["currentPlan"]["planId"] == "plan_pro"
    assert len(autoposting["usageMeters"]) == 3


async def test_a_failing_usage_resource_nulls_only_the_meters_with_an_error_code(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=503), path="/usage/tokens")
    query = """{ billingAccount(provider: AUTOPOSTING) {
      ... on BillingAccount { currentPlan { name } usageMeters { featureId } } } }"""

    result = await gateway.execute(query, expect_errors=True)

    assert result.data["billingAccount"]["currentPlan"]["name"] == "Pro"
    assert result.data["billingAccount"]["usageMeters"] is None
    [error] = result.errors
    assert error.path == ["billingAccount", "usageMeters"]
    assert error.extensions == {
        "code": "UPSTREAM_UNAVAILABLE",
        "provider": "AUTOPOSTING",
        "retryable": True,
    }


async def test_a_request_with_no_credential_is_not_allowed_and_calls_no_upstream(
    state: SandboxState,
) -> None:
    gateway = Gateway(
        settings=make_settings(GATEWAY_ALMANAC_TOKEN="", GATEWAY_AUTOPOSTING_API_KEY=""),
        state=state,
    )
    try:
        data = await gateway.execute(ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_acme"})
    finally:
        await gateway.aclose()

    error = data["billingAccount"]
    assert error["__typename"] == "NotAllowedError"
    assert error["code"] == "UNAUTHENTICATED"
    assert "x-almanac-token" in error["message"]
    assert state.count() == 0


async def test_a_rejected_credential_is_a_not_allowed_error(gateway: Gateway) -> None:
    headers = {"x-autoposting-api-key": "sk-social-unknown"}
    data = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING"}, headers=headers)

    assert data["billingAccount"]["__typename"] == "NotAllowedError"
    assert data["billingAccount"]["code"] == "UNAUTHENTICATED"


async def test_a_callers_own_credential_goes_to_its_provider_only(
    gateway: Gateway, state: SandboxState
) -> None:
    headers = {"x-almanac-token": ALMANAC_VIEWER_TOKEN}
    accounts = [{"provider": "ALMANAC", "accountId": "org_acme"}, {"provider": "AUTOPOSTING"}]

    data = await gateway.execute(MANY_ACCOUNTS, {"accounts": accounts}, headers=headers)

    assert data["billingAccounts"][0]["manage"]["allowed"] is False
    [almanac_call] = state.calls("almanac")
    assert almanac_call.headers["authorization"] == f"Bearer {ALMANAC_VIEWER_TOKEN}"
    for call in state.calls("autoposting"):
        assert ALMANAC_VIEWER_TOKEN not in str(call.headers)


async def test_each_request_has_its_own_loaders_and_fetches_afresh(
    gateway: Gateway, state: SandboxState
) -> None:
    for _ in range(2):
        await gateway.execute(ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_acme"})

    assert state.count("almanac") == 2


async def test_more_accounts_than_the_limit_are_refused_before_any_upstream_call(
    state: SandboxState,
) -> None:
    gateway = Gateway(settings=make_settings(GATEWAY_MAX_ACCOUNTS_PER_REQUEST="2"), state=state)
    accounts = [{"provider": "ALMANAC", "accountId": f"org_{n}"} for n in range(3)]
    try:
        data = await gateway.execute(MANY_ACCOUNTS, {"accounts": accounts})
    finally:
        await gateway.aclose()

    assert [item["__typename"] for item in data["billingAccounts"]].count("InvalidInputError") == 1
    assert state.count() == 2


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"provider": "ALMANAC"}, "accountId"),
        ({"provider": "ALMANAC", "id": ""}, "accountId"),
        ({"provider": "ALMANAC", "id": "org acme"}, "accountId"),
        ({"provider": "ALMANAC", "id": "x" * 200}, "accountId"),
    ],
    ids=["missing", "empty", "space", "too-long"],
)
async def test_a_bad_account_id_is_invalid_input_and_calls_no_upstream(
    gateway: Gateway, state: SandboxState, variables: dict[str, str], field: str
) -> None:
    data = await gateway.execute(ONE_ACCOUNT, variables)

    assert data["billingAccount"]["__typename"] == "InvalidInputError"
    assert data["billingAccount"]["field"] == field
    assert state.count() == 0


async def test_an_autoposting_account_id_must_be_the_api_keys_organization(
    gateway: Gateway,
) -> None:
    mine = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING", "id": "org-pro-demo"})
    other = await gateway.execute(ONE_ACCOUNT, {"provider": "AUTOPOSTING", "id": "org-other"})

    assert mine["billingAccount"]["__typename"] == "BillingAccount"
    assert other["billingAccount"]["__typename"] == "InvalidInputError"
    assert other["billingAccount"]["field"] == "accountId"


async def test_an_upstream_answer_that_breaks_the_contract_is_a_bad_response_error(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault(
        "almanac", Fault(status=200, body="<html>login</html>", content_type="text/html")
    )

    data = await gateway.execute(ONE_ACCOUNT, {"provider": "ALMANAC", "id": "org_acme"})

    assert data["billingAccount"]["code"] == "UPSTREAM_BAD_RESPONSE"
    assert "HTML" in data["billingAccount"]["message"]


async def test_autoposting_parts_a_query_selects_are_fetched_together_with_its_status(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(delay=0.05))
    query = """{ billingAccount(provider: AUTOPOSTING) {
      ... on BillingAccount { accountId usageMeters { featureId } } } }"""

    data = await gateway.execute(query)

    assert data["billingAccount"]["accountId"] == "org-pro-demo"
    assert state.count("autoposting") == 4
    # Status, profile, credits and tokens in one round trip, not status first and then the rest.
    assert gateway.in_flight.peak == 4


async def test_a_failing_autoposting_profile_fails_only_that_account_when_its_ids_are_asked(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=503), path="/auth/profile")
    accounts = [{"provider": "ALMANAC", "accountId": "org_acme"}, {"provider": "AUTOPOSTING"}]

    data = await gateway.execute(MANY_ACCOUNTS, {"accounts": accounts})

    almanac, autoposting = data["billingAccounts"]
    assert almanac["__typename"] == "BillingAccount"
    assert almanac["currentPlan"]["planId"] == "pro"
    assert autoposting["__typename"] == "ProviderError"
    assert autoposting["code"] == "UPSTREAM_UNAVAILABLE"
