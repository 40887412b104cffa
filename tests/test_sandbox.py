"""The sandbox upstreams enforce both contracts, record every call and inject faults."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gateway.sandbox import (
    ALMANAC_ORGANIZATION_IDS,
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PLAN_IDS,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
    SandboxThread,
    create_almanac_app,
    create_autoposting_app,
    start_sandbox,
)

OWNER = {"Authorization": f"Bearer {ALMANAC_OWNER_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {ALMANAC_VIEWER_TOKEN}"}
PRO = {"Authorization": f"Bearer {AUTOPOSTING_PRO_KEY}"}
TRIAL = {"x-api-key": AUTOPOSTING_TRIAL_KEY}
SUSPENDED = {"x-api-key": AUTOPOSTING_SUSPENDED_KEY}
CHECKOUT = {
    "planId": "plan_pro",
    "successUrl": "https://app.example/ok",
    "cancelUrl": "https://app.example/cancel",
}
UNAUTHORIZED = {"success": False, "error": "unauthorized", "message": "Missing or invalid API key."}


def billing(organization_id: str, suffix: str = "") -> str:
    return f"/v1/organizations/{organization_id}/billing{suffix}"


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
async def almanac(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_almanac_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://almanac.test") as client:
        yield client


@pytest.fixture
async def autoposting(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_autoposting_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://autoposting.test") as client:
        yield client


@pytest.fixture(scope="module")
def sandbox_thread() -> Iterator[SandboxThread]:
    with SandboxThread() as sandbox:
        yield sandbox


@pytest.fixture
def threaded(sandbox_thread: SandboxThread) -> Iterator[SandboxThread]:
    sandbox_thread.state.reset()
    yield sandbox_thread
    sandbox_thread.state.reset()


# --- Almanac: auth and billing state ---


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "x"}])
async def test_almanac_rejects_a_missing_or_unknown_token_with_401(
    almanac: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await almanac.get(billing("org_acme"), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


async def test_almanac_billing_state_has_exactly_the_openapi_fields(
    almanac: httpx.AsyncClient,
) -> None:
    body = (await almanac.get(billing("org_acme"), headers=OWNER)).json()
    assert set(body) == {"organization_id", "manage", "plans", "usage"}
    assert body["organization_id"] == "org_acme"
    plan_fields = {"plan_id", "name", "price", "interval", "group", "current", "features"}
    assert all(set(plan) == plan_fields for plan in body["plans"])
    assert all(set(f) == {"feature_id", "included"} for p in body["plans"] for f in p["features"])
    usage_fields = {"feature_id", "usage", "granted", "remaining", "unlimited"}
    usage_fields |= {"overage_allowed", "next_reset_at"}
    assert all(set(meter) == usage_fields for meter in body["usage"])


async def test_almanac_serves_the_same_plan_catalog_to_every_organization(
    almanac: httpx.AsyncClient,
) -> None:
    catalogs = set()
    for organization_id in ALMANAC_ORGANIZATION_IDS:
        plans = (await almanac.get(billing(organization_id), headers=OWNER)).json()["plans"]
        catalogs.add(tuple((p["plan_id"], p["price"], p["interval"], p["group"]) for p in plans))
    assert catalogs == {
        (
            ("free", 0, "month", None),
            ("pro", 29, "month", None),
            ("pro_yearly", 290, "year", "pro"),
            ("team", 99, "month", None),
            ("enterprise", None, None, "sales"),
        )
    }


@pytest.mark.parametrize(
    ("organization_id", "current"),
    [
        ("org_acme", "pro"),
        ("org_globex", "free"),
        ("org_initech", "team"),
        ("org_umbrella", "pro_yearly"),
        ("org_hooli", "enterprise"),
        ("org_stark", "free"),
    ],
)
async def test_almanac_marks_exactly_one_current_plan_per_organization(
    almanac: httpx.AsyncClient, organization_id: str, current: str
) -> None:
    plans = (await almanac.get(billing(organization_id), headers=OWNER)).json()["plans"]
    assert [plan["plan_id"] for plan in plans if plan["current"]] == [current]


async def test_almanac_acme_has_a_normal_an_unlimited_and_an_over_limit_meter(
    almanac: httpx.AsyncClient,
) -> None:
    usage = (await almanac.get(billing("org_acme"), headers=OWNER)).json()["usage"]
    meters = {meter["feature_id"]: meter for meter in usage}
    assert meters["pages"] | {"next_reset_at": None} == {
        "feature_id": "pages",
        "usage": 420,
        "granted": 1000,
        "remaining": 580,
        "unlimited": False,
        "overage_allowed": False,
        "next_reset_at": None,
    }
    assert meters["editors"]["unlimited"] is True
    storage = meters["storage_gb"]
    assert (storage["usage"], storage["granted"], storage["remaining"]) == (12, 10, 0)
    assert storage["overage_allowed"] is True


async def test_almanac_reset_times_come_in_seconds_milliseconds_and_null(
    almanac: httpx.AsyncClient,
) -> None:
    usage = (await almanac.get(billing("org_acme"), headers=OWNER)).json()["usage"]
    resets = {meter["feature_id"]: meter["next_reset_at"] for meter in usage}
    assert resets["pages"] < 10**11 < resets["storage_gb"]
    assert resets["editors"] is None


@pytest.mark.parametrize(
    ("headers", "organization_id", "manage"),
    [
        (OWNER, "org_acme", {"allowed": True, "reason": "permission"}),
        (VIEWER, "org_acme", {"allowed": False, "reason": "permission"}),
        (OWNER, "org_umbrella", {"allowed": False, "reason": "not_allowed"}),
        (VIEWER, "org_umbrella", {"allowed": False, "reason": "not_allowed"}),
    ],
)
async def test_almanac_manage_depends_on_the_token_and_the_organization(
    almanac: httpx.AsyncClient,
    headers: dict[str, str],
    organization_id: str,
    manage: dict[str, Any],
) -> None:
    body = (await almanac.get(billing(organization_id), headers=headers)).json()
    assert body["manage"] == manage


async def test_almanac_answers_404_for_an_unknown_organization(almanac: httpx.AsyncClient) -> None:
    response = await almanac.get(billing("org_nope"), headers=OWNER)
    assert response.status_code == 404
    assert response.json() == {"detail": "Organization not found"}


# --- Almanac: checkout and preview ---


async def test_almanac_checkout_returns_a_hosted_page_on_the_sandbox_with_a_session_id(
    almanac: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"plan_id": "team", "success_url": "https://app.example/done"}
    response = await almanac.post(billing("org_acme", "/checkout"), headers=OWNER, json=body)
    assert response.status_code == 200
    url = response.json()["url"]
    assert re.fullmatch(r"http://almanac\.test/hosted/checkout/cs_test_[0-9a-f]+", url)
    [checkout] = state.checkouts
    assert (checkout.provider, checkout.account_id, checkout.plan_id) == (
        "almanac",
        "org_acme",
        "team",
    )
    assert checkout.session_id == url.rsplit("/", 1)[1]
    page = await almanac.get(url)
    assert page.status_code == 200
    assert "Sandbox checkout" in page.text


async def test_almanac_globex_checkout_url_carries_no_session_id(
    almanac: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"plan_id": "pro", "success_url": None}
    response = await almanac.post(billing("org_globex", "/checkout"), headers=OWNER, json=body)
    url = response.json()["url"]
    assert url.startswith("http://almanac.test/hosted/pay?ref=")
    assert "cs_" not in url
    assert state.checkouts[0].session_id is None
    assert "Sandbox checkout" in (await almanac.get(url)).text


async def test_almanac_rejects_an_unknown_checkout_body_field_with_422(
    almanac: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"plan_id": "pro", "cancel_url": "https://app.example/no"}
    response = await almanac.post(billing("org_acme", "/checkout"), headers=OWNER, json=body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "extra_forbidden",
                "loc": ["body", "cancel_url"],
                "msg": "Extra inputs are not permitted",
                "input": "https://app.example/no",
            }
        ]
    }
    assert state.checkouts == []


@pytest.mark.parametrize(
    ("content", "error_type", "loc"),
    [
        (b'{"success_url": "https://app.example"}', "missing", ["body", "plan_id"]),
        (b'{"plan_id": 7}', "string_type", ["body", "plan_id"]),
        (b'{"plan_id": "pro", "success_url": 1}', "string_type", ["body", "success_url"]),
        (b"plan_id=pro", "json_invalid", ["body", 0]),
        (b'["pro"]', "model_attributes_type", ["body"]),
        (b"", "missing", ["body"]),
    ],
)
async def test_almanac_rejects_a_malformed_checkout_body_with_422(
    almanac: httpx.AsyncClient, content: bytes, error_type: str, loc: list[Any]
) -> None:
    headers = OWNER | {"content-type": "application/json"}
    response = await almanac.post(
        billing("org_acme", "/checkout"), headers=headers, content=content
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == (error_type, loc)


async def test_almanac_rejects_an_unknown_plan_with_400(almanac: httpx.AsyncClient) -> None:
    body = {"plan_id": "platinum"}
    response = await almanac.post(billing("org_acme", "/checkout"), headers=OWNER, json=body)
    assert response.status_code == 400
    assert response.json() == {"detail": "Unknown plan"}


async def test_almanac_forbids_a_viewer_checkout_with_403(
    almanac: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"plan_id": "pro"}
    response = await almanac.post(billing("org_acme", "/checkout"), headers=VIEWER, json=body)
    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to manage billing"}
    assert state.checkouts == []


async def test_almanac_forbids_any_checkout_for_umbrella(almanac: httpx.AsyncClient) -> None:
    body = {"plan_id": "pro"}
    response = await almanac.post(billing("org_umbrella", "/checkout"), headers=OWNER, json=body)
    assert response.status_code == 403


async def test_almanac_previews_a_paid_plan_with_line_items(almanac: httpx.AsyncClient) -> None:
    response = await almanac.post(
        billing("org_globex", "/preview"), headers=OWNER, json={"plan_id": "pro"}
    )
    assert response.status_code == 200
    preview = response.json()
    assert set(preview) == {
        "plan_id",
        "checkout_type",
        "currency",
        "line_items",
        "subtotal",
        "total",
        "redirect_to_checkout",
    }
    assert (preview["plan_id"], preview["currency"], preview["total"]) == ("pro", "USD", 29)
    assert preview["redirect_to_checkout"] is True
    [line] = preview["line_items"]
    assert set(line) == {"name", "description", "quantity", "subtotal", "total"}


async def test_almanac_preview_of_the_free_plan_needs_no_checkout(
    almanac: httpx.AsyncClient,
) -> None:
    response = await almanac.post(
        billing("org_acme", "/preview"), headers=OWNER, json={"plan_id": "free"}
    )
    assert response.json()["redirect_to_checkout"] is False


async def test_almanac_preview_body_is_strict_too(almanac: httpx.AsyncClient) -> None:
    body = {"plan_id": "pro", "success_url": "https://app.example"}
    response = await almanac.post(billing("org_acme", "/preview"), headers=OWNER, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "success_url"]


# --- Autoposting ---


async def test_autoposting_health_needs_no_key(autoposting: httpx.AsyncClient) -> None:
    response = await autoposting.get("/health")
    assert (response.status_code, response.json()) == (200, {"success": True})


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "sk-social-nope"}, {"Authorization": "Bearer x"}]
)
async def test_autoposting_rejects_a_missing_or_unknown_key_with_401_envelope(
    autoposting: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await autoposting.get("/billing/status", headers=headers)
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


@pytest.mark.parametrize(
    ("headers", "org_id"),
    [(PRO, "org-pro-demo"), (TRIAL, "org-trial-demo"), (SUSPENDED, "org-suspended-demo")],
)
async def test_autoposting_profile_names_the_organization_of_the_key(
    autoposting: httpx.AsyncClient, headers: dict[str, str], org_id: str
) -> None:
    response = await autoposting.get("/auth/profile", headers=headers)
    assert response.json() == {
        "success": True,
        "data": {
            "id": org_id,
            "orgId": org_id,
            "name": "API Key",
            "email": "",
            "authType": "api_key",
        },
    }


async def test_autoposting_billing_status_differs_per_key(autoposting: httpx.AsyncClient) -> None:
    pro = (await autoposting.get("/billing/status", headers=PRO)).json()["data"]
    trial = (await autoposting.get("/billing/status", headers=TRIAL)).json()["data"]
    suspended = (await autoposting.get("/billing/status", headers=SUSPENDED)).json()["data"]
    assert (pro["plan"], pro["status"], pro["isTrialing"], pro["accountLimit"]) == (
        "pro",
        "active",
        False,
        10,
    )
    assert (pro["accountsUsed"], pro["creditBalance"]) == (3, 450)
    assert (trial["plan"], trial["status"], trial["isTrialing"]) == ("plan_pro", "trialing", True)
    assert (trial["accountLimit"], trial["pendingPlan"]) == (-1, None)
    assert trial["trialEnd"]
    assert (suspended["status"], suspended["pendingPlan"]) == ("past_due", "plan_starter")
    assert suspended["suspendedAt"]
    assert suspended["pendingChangeDate"]
    assert suspended["accountsUsed"] > suspended["accountLimit"] == 5


async def test_autoposting_credit_summary_has_the_documented_fields(
    autoposting: httpx.AsyncClient,
) -> None:
    data = (await autoposting.get("/billing/credit-summary", headers=PRO)).json()["data"]
    assert (data["balance"], data["monthlyAllocation"], data["used"]) == (450, 500, 50)
    assert set(data) == {"balance", "monthlyAllocation", "used", "breakdown", "resetAt"}


async def test_autoposting_credits_come_in_the_documentation_and_the_sdk_shape(
    autoposting: httpx.AsyncClient,
) -> None:
    documented = (await autoposting.get("/billing/credits", headers=PRO)).json()["data"]
    sdk = (await autoposting.get("/billing/credits", headers=TRIAL)).json()["data"]
    assert set(documented) == {"balance", "monthlyAllocation", "resetAt"}
    assert set(sdk) == {"balance", "balanceFormatted", "recentUsage", "totalSpent30d"}


async def test_autoposting_usage_summary_comes_in_the_documentation_and_the_sdk_shape(
    autoposting: httpx.AsyncClient,
) -> None:
    documented = (await autoposting.get("/usage/summary", headers=PRO)).json()["data"]
    sdk = (await autoposting.get("/usage/summary", headers=TRIAL)).json()["data"]
    assert {"period", "posts", "credits", "aiTokens"} <= set(documented)
    assert {"range", "posts", "agents", "ai", "trend"} <= set(sdk)


async def test_autoposting_token_usage_defaults_to_30_days_and_scales_by_period(
    autoposting: httpx.AsyncClient,
) -> None:
    usage = {}
    for query in ("", "?period=7d", "?period=90d"):
        response = await autoposting.get(f"/usage/tokens{query}", headers=PRO)
        usage[query] = response.json()["data"]
    default, week, quarter = usage[""], usage["?period=7d"], usage["?period=90d"]
    assert (default["period"], default["total"]) == ("30d", 482000)
    assert week["total"] < default["total"] < quarter["total"]
    for data in usage.values():
        assert sum(data["breakdown"].values()) == data["total"]
        assert sum(day["tokens"] for day in data["dailyUsage"]) == data["total"]
    assert len(week["dailyUsage"]) == 7


async def test_autoposting_rejects_an_unknown_token_period_with_400(
    autoposting: httpx.AsyncClient,
) -> None:
    response = await autoposting.get("/usage/tokens?period=1y", headers=PRO)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


async def test_autoposting_checkout_returns_a_session_on_the_sandbox(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    response = await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    session_id = body["data"]["sessionId"]
    assert re.fullmatch(r"cs_[0-9a-f]+", session_id)
    assert body["data"]["checkoutUrl"] == f"http://autoposting.test/hosted/checkout/{session_id}"
    [checkout] = state.checkouts
    assert (checkout.account_id, checkout.plan_id, checkout.session_id) == (
        "org-pro-demo",
        "plan_pro",
        session_id,
    )
    assert "Sandbox checkout" in (await autoposting.get(body["data"]["checkoutUrl"])).text


@pytest.mark.parametrize("plan_id", [*AUTOPOSTING_PLAN_IDS, "starter", "pro", "business"])
async def test_autoposting_checkout_accepts_both_plan_id_forms(
    autoposting: httpx.AsyncClient, plan_id: str
) -> None:
    response = await autoposting.post(
        "/billing/checkout", headers=TRIAL, json=CHECKOUT | {"planId": plan_id}
    )
    assert response.status_code == 200


async def test_autoposting_checkout_ignores_unknown_body_fields(
    autoposting: httpx.AsyncClient,
) -> None:
    response = await autoposting.post(
        "/billing/checkout", headers=PRO, json=CHECKOUT | {"coupon": "X"}
    )
    assert response.status_code == 200


async def test_autoposting_checkout_names_the_missing_fields_in_a_400(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"planId": "plan_pro", "successUrl": ""}
    response = await autoposting.post("/billing/checkout", headers=PRO, json=body)
    assert response.status_code == 400
    envelope = response.json()
    assert (envelope["success"], envelope["error"]) == (False, "bad_request")
    assert "successUrl" in envelope["message"]
    assert "cancelUrl" in envelope["message"]
    assert "planId" not in envelope["message"]
    assert state.checkouts == []


async def test_autoposting_checkout_rejects_an_unknown_plan_as_invalid_plan(
    autoposting: httpx.AsyncClient,
) -> None:
    response = await autoposting.post(
        "/billing/checkout", headers=PRO, json=CHECKOUT | {"planId": "plan_x"}
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_plan")


async def test_autoposting_checkout_of_a_suspended_account_is_403_billing_suspended(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    response = await autoposting.post("/billing/checkout", headers=SUSPENDED, json=CHECKOUT)
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": "billing_suspended",
        "message": "Subscription expired, cancelled, or past due.",
    }
    assert state.checkouts == []


async def test_autoposting_answers_an_unknown_path_with_a_404_envelope(
    autoposting: httpx.AsyncClient,
) -> None:
    response = await autoposting.get("/billing/plans", headers=PRO)
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert response.json()["error"] == "not_found"


# --- Request log ---


async def test_every_request_is_recorded_before_auth_even_when_it_fails(
    almanac: httpx.AsyncClient, autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    await almanac.post(
        billing("org_acme", "/checkout"), headers={"X-Trace": "t1"}, json={"plan_id": "pro"}
    )
    await autoposting.get("/usage/tokens", params={"period": "7d"}, headers=PRO)
    [failed] = state.calls(provider="almanac")
    assert (failed.method, failed.path, failed.body) == (
        "POST",
        billing("org_acme", "/checkout"),
        {"plan_id": "pro"},
    )
    assert failed.headers["x-trace"] == "t1"
    [tokens] = state.calls("autoposting", "GET", "/usage/tokens")
    assert tokens.query == "period=7d"
    assert tokens.body is None
    assert tokens.headers["authorization"] == f"Bearer {AUTOPOSTING_PRO_KEY}"


async def test_calls_filter_by_provider_method_and_exact_path(
    almanac: httpx.AsyncClient, state: SandboxState
) -> None:
    await almanac.get(billing("org_acme"), headers=OWNER)
    await almanac.get(billing("org_globex"), headers=OWNER)
    await almanac.post(billing("org_acme", "/checkout"), headers=OWNER, json={"plan_id": "pro"})
    assert state.count() == 3
    assert state.count(provider="autoposting") == 0
    assert state.count(method="get") == 2
    assert state.count(path=billing("org_acme")) == 1
    assert state.count("almanac", "POST", billing("org_acme", "/checkout")) == 1


async def test_reset_forgets_calls_checkouts_and_faults(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=500))
    await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    state.reset()
    await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    assert state.count() == 1
    assert len(state.checkouts) == 1


# --- Faults ---


async def test_a_status_fault_answers_instead_of_the_handler_and_still_records_the_call(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    body = {"success": False, "error": "rate_limited", "message": "Slow down."}
    fault = Fault(status=429, body=body, headers={"Retry-After": "3"})
    state.add_fault("autoposting", fault, method="POST", path="/billing/checkout", times=1)
    limited = await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    assert (limited.status_code, limited.json(), limited.headers["retry-after"]) == (429, body, "3")
    assert state.checkouts == []
    created = await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    assert created.status_code == 200
    assert state.count("autoposting", "POST", "/billing/checkout") == 2
    assert len(state.checkouts) == 1


@pytest.mark.parametrize(
    ("fault", "content"),
    [
        (Fault(status=200, body=b'{"organization_id": "org_'), b'{"organization_id": "org_'),
        (
            Fault(status=200, body="<html>dashboard</html>", content_type="text/html"),
            b"<html>dashboard</html>",
        ),
        (Fault(status=503), b""),
    ],
)
async def test_a_status_fault_sends_its_body_as_given(
    almanac: httpx.AsyncClient, state: SandboxState, fault: Fault, content: bytes
) -> None:
    state.add_fault("almanac", fault)
    response = await almanac.get(billing("org_acme"), headers=OWNER)
    assert (response.status_code, response.content) == (fault.status, content)
    assert response.headers["content-type"] == fault.content_type


async def test_faults_match_on_provider_method_and_path_prefix(
    almanac: httpx.AsyncClient, autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    state.add_fault("almanac", Fault(status=502), method="POST", path_prefix="/v1/organizations/")
    assert (await almanac.get(billing("org_acme"), headers=OWNER)).status_code == 200
    assert (
        await autoposting.post("/billing/checkout", headers=PRO, json=CHECKOUT)
    ).status_code == 200
    body = {"plan_id": "pro"}
    assert (
        await almanac.post(billing("org_hooli", "/preview"), headers=OWNER, json=body)
    ).status_code == 502
    assert (
        await almanac.post(billing("org_hooli", "/preview"), headers=OWNER, json=body)
    ).status_code == 502
    state.clear_faults()
    assert (
        await almanac.post(billing("org_hooli", "/preview"), headers=OWNER, json=body)
    ).status_code == 200


async def test_a_delay_fault_waits_then_runs_the_real_handler(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(delay=0.2), path="/health", times=1)
    started = time.perf_counter()
    response = await autoposting.get("/health")
    assert time.perf_counter() - started >= 0.2
    assert response.json() == {"success": True}


async def test_a_drop_fault_without_a_server_raises_connection_reset(
    autoposting: httpx.AsyncClient, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(drop=True), times=1)
    with pytest.raises(ConnectionResetError):
        await autoposting.get("/health")


def test_a_fault_must_apply_at_least_once(state: SandboxState) -> None:
    with pytest.raises(ValueError, match="times"):
        state.add_fault("almanac", Fault(status=500), times=0)


# --- Servers on loopback ---


async def test_start_sandbox_serves_both_apps_over_loopback_on_free_ports() -> None:
    async with start_sandbox() as sandbox, httpx.AsyncClient() as client:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sandbox.almanac_url)
        assert sandbox.almanac_url != sandbox.autoposting_url
        state = await client.get(f"{sandbox.almanac_url}{billing('org_acme')}", headers=OWNER)
        health = await client.get(f"{sandbox.autoposting_url}/health")
    assert state.json()["organization_id"] == "org_acme"
    assert health.json() == {"success": True}
    assert sandbox.state.count() == 2


async def test_a_drop_fault_closes_the_connection_without_a_response_over_loopback(
    uvicorn_errors: list[logging.LogRecord],
) -> None:
    async with start_sandbox() as sandbox, httpx.AsyncClient() as client:
        sandbox.state.add_fault("almanac", Fault(drop=True), path_prefix="/v1/", times=1)
        url = f"{sandbox.almanac_url}{billing('org_acme', '/checkout')}"
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(url, headers=OWNER, json={"plan_id": "pro"})
        retried = await client.post(url, headers=OWNER, json={"plan_id": "pro"})
    assert retried.status_code == 200
    assert sandbox.state.count("almanac", "POST") == 2
    assert len(sandbox.state.checkouts) == 1
    assert uvicorn_errors == []  # no "Exception in ASGI application", no 500 fallback


def test_sandbox_thread_serves_a_sync_client_and_shares_its_state(threaded: SandboxThread) -> None:
    with httpx.Client() as client:
        response = client.post(
            f"{threaded.autoposting_url}/billing/checkout", headers=PRO, json=CHECKOUT
        )
    checkout_url = response.json()["data"]["checkoutUrl"]
    assert checkout_url.startswith(f"{threaded.autoposting_url}/hosted/checkout/cs_")
    assert threaded.state.count("autoposting", "POST", "/billing/checkout") == 1
    assert [c.session_id for c in threaded.state.checkouts] == [
        response.json()["data"]["sessionId"]
    ]
    assert "Sandbox checkout" in httpx.get(checkout_url).text


def test_sandbox_thread_applies_faults_added_from_the_test_thread(threaded: SandboxThread) -> None:
    threaded.state.add_fault("almanac", Fault(drop=True), times=1)
    with httpx.Client() as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get(f"{threaded.almanac_url}{billing('org_acme')}", headers=OWNER)
        assert (
            client.get(f"{threaded.almanac_url}{billing('org_acme')}", headers=OWNER).status_code
            == 200
        )


def test_sandbox_thread_has_no_urls_until_it_runs() -> None:
    sandbox = SandboxThread()
    with pytest.raises(RuntimeError, match="not running"):
        _ = sandbox.almanac_url
