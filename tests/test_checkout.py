"""`startCheckout` through the schema, against the sandbox upstreams in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.sandbox import (
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_SUSPENDED_KEY,
    Fault,
    SandboxState,
)
from tests.support import (
    AUTOPOSTING_CHECKOUT,
    CANCEL_URL,
    START_CHECKOUT,
    SUCCESS_URL,
    Gateway,
    make_settings,
    start_checkout,
)

ALMANAC_CHECKOUT = "/v1/organizations/{}/billing/checkout"
# The session with the fields START_CHECKOUT selects only when asked.
WITH_ACCOUNT_ID_AND_RAW = {"withAccountId": True, "withRaw": True}


async def test_an_almanac_checkout_sends_only_its_listed_fields_and_finds_the_session_id(
    gateway: Gateway, state: SandboxState
) -> None:
    fields = {
        "provider": "ALMANAC",
        "accountId": "org_acme",
        "planId": "team",
        "successUrl": SUCCESS_URL,
        "cancelUrl": CANCEL_URL,
    }
    data = await gateway.execute(START_CHECKOUT, {"input": fields, **WITH_ACCOUNT_ID_AND_RAW})

    session = data["startCheckout"]

    assert session["__typename"] == "CheckoutSession"
    assert session["provider"] == "ALMANAC"
    assert session["accountId"] == "org_acme"
    assert session["sessionId"].startswith("cs_test_")
    assert session["sessionId"] in session["url"]
    [call] = state.calls("almanac", "POST", ALMANAC_CHECKOUT.format("org_acme"))
    assert call.body == {"plan_id": "team", "success_url": SUCCESS_URL}
    [created] = state.checkouts
    assert created.session_id == session["sessionId"]


async def test_an_almanac_checkout_url_without_a_session_id_gives_a_null_session_id(
    gateway: Gateway,
) -> None:
    session = await start_checkout(
        gateway, provider="ALMANAC", accountId="org_globex", planId="pro"
    )

    assert session["__typename"] == "CheckoutSession"
    assert session["sessionId"] is None
    assert session["url"].startswith("http")
    assert session["id"]


async def test_an_almanac_checkout_without_a_success_url_sends_plan_id_alone(
    gateway: Gateway, state: SandboxState
) -> None:
    await start_checkout(gateway, provider="ALMANAC", accountId="org_acme", planId="pro")

    [call] = state.calls("almanac", "POST")
    assert call.body == {"plan_id": "pro"}


async def test_an_autoposting_checkout_sends_all_three_fields_and_returns_its_session_id(
    gateway: Gateway, state: SandboxState
) -> None:
    variables = {"input": AUTOPOSTING_CHECKOUT, **WITH_ACCOUNT_ID_AND_RAW}
    data = await gateway.execute(START_CHECKOUT, variables)

    session = data["startCheckout"]
    assert session["__typename"] == "CheckoutSession"
    assert session["sessionId"].startswith("cs_")
    assert session["accountId"] == "org-pro-demo"
    assert session["raw"]["sessionId"] == session["sessionId"]
    [call] = state.calls("autoposting", "POST", "/billing/checkout")
    assert call.body == {"planId": "plan_pro", "successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL}
    assert len(state.checkouts) == 1


async def test_configured_default_redirect_urls_fill_in_omitted_ones(state: SandboxState) -> None:
    gateway = Gateway(
        settings=make_settings(
            GATEWAY_DEFAULT_SUCCESS_URL=SUCCESS_URL, GATEWAY_DEFAULT_CANCEL_URL=CANCEL_URL
        ),
        state=state,
    )
    try:
        session = await start_checkout(gateway, provider="AUTOPOSTING", planId="plan_pro")
    finally:
        await gateway.aclose()

    assert session["__typename"] == "CheckoutSession"
    [call] = state.calls("autoposting", "POST")
    assert call.body == {"planId": "plan_pro", "successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL}


async def test_a_checkout_for_a_suspended_account_is_a_billing_suspended_error(
    gateway: Gateway,
) -> None:
    error = await start_checkout(
        gateway,
        {"x-autoposting-api-key": AUTOPOSTING_SUSPENDED_KEY},
        **AUTOPOSTING_CHECKOUT,
    )

    assert error["__typename"] == "BillingSuspendedError"
    assert error["code"] == "BILLING_SUSPENDED"
    assert error["provider"] == "AUTOPOSTING"


async def test_a_checkout_without_manage_permission_is_a_not_allowed_error(
    gateway: Gateway, state: SandboxState
) -> None:
    error = await start_checkout(
        gateway,
        {"x-almanac-token": ALMANAC_VIEWER_TOKEN},
        provider="ALMANAC",
        accountId="org_acme",
        planId="pro",
    )

    assert error["__typename"] == "NotAllowedError"
    assert error["code"] == "NOT_ALLOWED"
    assert state.checkouts == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "ALMANAC", "planId": "pro"}, "accountId"),
        ({"provider": "ALMANAC", "accountId": "org_acme", "planId": ""}, "planId"),
        ({"provider": "ALMANAC", "accountId": "org_acme", "planId": "p\n"}, "planId"),
        (
            {"provider": "ALMANAC", "accountId": "org_acme", "planId": "pro", "successUrl": "/ok"},
            "successUrl",
        ),
        (
            {
                "provider": "ALMANAC",
                "accountId": "org_acme",
                "planId": "pro",
                "cancelUrl": "javascript:alert(1)",
            },
            "cancelUrl",
        ),
        (
            {"provider": "AUTOPOSTING", "planId": "pro", "successUrl": "ftp://x.example/ok"},
            "successUrl",
        ),
        (
            {
                "provider": "AUTOPOSTING",
                "planId": "plan_gold",
                "successUrl": SUCCESS_URL,
                "cancelUrl": CANCEL_URL,
            },
            "planId",
        ),
        ({"provider": "AUTOPOSTING", "planId": "plan_pro", "successUrl": SUCCESS_URL}, "cancelUrl"),
        ({"provider": "AUTOPOSTING", "planId": "plan_pro", "cancelUrl": CANCEL_URL}, "successUrl"),
    ],
    ids=[
        "almanac-without-account",
        "empty-plan",
        "plan-with-newline",
        "relative-success-url",
        "javascript-cancel-url",
        "ftp-success-url",
        "plan-outside-the-catalog",
        "autoposting-without-cancel-url",
        "autoposting-without-success-url",
    ],
)
async def test_invalid_checkout_input_is_refused_before_any_upstream_call(
    gateway: Gateway, state: SandboxState, fields: dict[str, str], field: str
) -> None:
    error = await start_checkout(gateway, **fields)

    assert error["__typename"] == "InvalidInputError"
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == field
    assert state.count() == 0


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=502), Fault(status=429, headers={"Retry-After": "1"})],
    ids=["503", "502", "429"],
)
async def test_a_failed_checkout_post_is_never_retried(state: SandboxState, fault: Fault) -> None:
    gateway = Gateway(settings=make_settings(GATEWAY_GET_RETRIES="3"), state=state)
    state.add_fault("autoposting", fault, method="POST")
    try:
        error = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT)
    finally:
        await gateway.aclose()

    assert error["__typename"] == "ProviderError"
    assert error["retryable"] is True
    assert state.count("autoposting", "POST") == 1


async def test_an_autoposting_checkout_for_another_organization_is_refused_before_posting(
    gateway: Gateway, state: SandboxState
) -> None:
    error = await start_checkout(gateway, **AUTOPOSTING_CHECKOUT, accountId="org-someone-else")

    assert error["__typename"] == "InvalidInputError"
    assert error["field"] == "accountId"
    assert state.count("autoposting", "POST") == 0


# --- redirect allowlist --------------------------------------------------------------------------

REDIRECT_HOSTS = "app.example.com,*.example.org"


@pytest.fixture
async def allowlisted(state: SandboxState) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings=make_settings(GATEWAY_REDIRECT_HOSTS=REDIRECT_HOSTS), state=state)
    yield gateway
    await gateway.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/billing/success",
        "https://APP.Example.COM/billing/success",
        "http://app.example.com/billing/success",
        "https://app.example.com:8443/billing/success",
        "https://app.example.com./billing/success",
        "https://pay.example.org/success",
        "https://a.b.example.org/success",
        "https://xn--bcher-kva.example.org/success",
        "https://someone@app.example.com/billing/success",
    ],
    ids=[
        "listed-host",
        "uppercase-host",
        "plain-http",
        "with-a-port",
        "trailing-dot",
        "wildcard-subdomain",
        "wildcard-deeper-subdomain",
        "punycode-subdomain",
        "userinfo-before-a-listed-host",
    ],
)
async def test_a_redirect_url_on_an_allowed_host_is_sent_as_given(
    allowlisted: Gateway, state: SandboxState, url: str
) -> None:
    session = await start_checkout(
        allowlisted, provider="AUTOPOSTING", planId="plan_pro", successUrl=url, cancelUrl=CANCEL_URL
    )

    assert session["__typename"] == "CheckoutSession"
    [call] = state.calls("autoposting", "POST")
    assert call.body["successUrl"] == url


REFUSED_REDIRECTS = [
    pytest.param("https://example.org/success", "successUrl", id="bare-domain-of-a-wildcard"),
    pytest.param("https://evil.com/success", "successUrl", id="other-host"),
    pytest.param("https://evilexample.org/success", "successUrl", id="same-suffix-no-dot"),
    pytest.param("https://app.example.com.evil.com/", "successUrl", id="listed-host-as-prefix"),
    pytest.param("https://app.example.com@evil.com/", "successUrl", id="userinfo-trick"),
    pytest.param("https://evil.com\\@app.example.com/", "successUrl", id="backslash-trick"),
    pytest.param("https://evil.com\t@app.example.com/", "successUrl", id="tab-trick"),
    pytest.param("https://app.example.com%2eevil.com/", "successUrl", id="percent-encoded-dot"),
    pytest.param("https://bücher.example.org/", "successUrl", id="unicode-idn"),
    pytest.param("https://\u0430pp.example.com/", "successUrl", id="cyrillic-homograph"),
    pytest.param("https://app.example.com:99999/", "successUrl", id="port-out-of-range"),
    pytest.param("https://app.example.com:https/", "successUrl", id="port-not-a-number"),
    pytest.param("https://[::1]/success", "successUrl", id="ipv6-literal"),
    pytest.param("//app.example.com/success", "successUrl", id="scheme-relative"),
    pytest.param("https:app.example.com/success", "successUrl", id="no-authority"),
    pytest.param("javascript://app.example.com/%0aalert(1)", "successUrl", id="javascript"),
    pytest.param("https://evil.com/cancel", "cancelUrl", id="cancel-url-too"),
]


@pytest.mark.parametrize(("url", "field"), REFUSED_REDIRECTS)
async def test_a_redirect_url_off_the_allowlist_is_refused_before_any_upstream_call(
    allowlisted: Gateway, state: SandboxState, url: str, field: str
) -> None:
    urls = {"successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL, field: url}
    # An accountId would make the gateway read the key's profile: the URL is checked first.
    error = await start_checkout(
        allowlisted, provider="AUTOPOSTING", accountId="org-pro-demo", planId="plan_pro", **urls
    )

    assert error["__typename"] == "InvalidInputError"
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == field
    assert url not in error["message"]
    assert "evil" not in error["message"]
    assert state.count() == 0


async def test_an_almanac_cancel_url_off_the_allowlist_is_refused_though_never_sent(
    gateway: Gateway, state: SandboxState
) -> None:
    error = await start_checkout(
        gateway,
        provider="ALMANAC",
        accountId="org_acme",
        planId="pro",
        cancelUrl="https://evil.com/cancel",
    )

    assert error["__typename"] == "InvalidInputError"
    assert error["field"] == "cancelUrl"
    assert state.count() == 0


@pytest.mark.parametrize(
    ("environ", "fields", "field"),
    [
        (
            {"GATEWAY_DEFAULT_SUCCESS_URL": "https://other.example.net/s"},
            {"cancelUrl": CANCEL_URL},
            "successUrl",
        ),
        (
            {"GATEWAY_DEFAULT_CANCEL_URL": "https://other.example.net/c"},
            {"successUrl": SUCCESS_URL},
            "cancelUrl",
        ),
        (
            {"GATEWAY_REDIRECT_HOSTS": ""},
            {"successUrl": SUCCESS_URL, "cancelUrl": CANCEL_URL},
            "successUrl",
        ),
        (
            {
                "GATEWAY_REDIRECT_HOSTS": "",
                "GATEWAY_DEFAULT_SUCCESS_URL": "https://pay.example.net/s",
                "GATEWAY_DEFAULT_CANCEL_URL": "https://pay.example.net/c",
            },
            {"successUrl": SUCCESS_URL},
            "successUrl",
        ),
    ],
    ids=[
        "default-success-url-off-the-list",
        "default-cancel-url-off-the-list",
        "empty-allowlist-allows-nothing",
        "allowlist-defaults-to-the-default-urls-hosts",
    ],
)
async def test_redirect_urls_are_judged_against_the_configured_allowlist(
    state: SandboxState, environ: dict[str, str], fields: dict[str, str], field: str
) -> None:
    gateway = Gateway(settings=make_settings(**environ), state=state)
    try:
        error = await start_checkout(gateway, provider="AUTOPOSTING", planId="plan_pro", **fields)
    finally:
        await gateway.aclose()

    assert error["__typename"] == "InvalidInputError"
    assert error["field"] == field
    assert state.count() == 0


async def test_default_urls_on_their_own_hosts_are_allowed_when_no_allowlist_is_configured(
    state: SandboxState,
) -> None:
    gateway = Gateway(
        settings=make_settings(
            GATEWAY_REDIRECT_HOSTS="",
            GATEWAY_DEFAULT_SUCCESS_URL="https://pay.example.net/s",
            GATEWAY_DEFAULT_CANCEL_URL="https://pay.example.net/c",
        ),
        state=state,
    )
    try:
        session = await start_checkout(gateway, provider="AUTOPOSTING", planId="plan_pro")
    finally:
        await gateway.aclose()

    assert session["__typename"] == "CheckoutSession"
    assert state.count("autoposting", "POST") == 1


async def test_a_created_checkout_is_returned_even_when_the_account_cannot_be_read_after(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(status=503), path="/auth/profile")

    variables = {"input": AUTOPOSTING_CHECKOUT, **WITH_ACCOUNT_ID_AND_RAW}
    result = await gateway.execute(START_CHECKOUT, variables, expect_errors=True)

    session = result.data["startCheckout"]
    assert session["__typename"] == "CheckoutSession"
    assert session["sessionId"].startswith("cs_")
    assert session["id"]
    assert session["accountId"] is None
    [error] = result.errors
    assert error.path == ["startCheckout", "accountId"]
    assert error.extensions["code"] == "UPSTREAM_UNAVAILABLE"
    assert len(state.checkouts) == 1
