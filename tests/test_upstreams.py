"""The upstream clients: exact requests, error mapping, the retry contract and secrets.

Every test talks HTTP through an injected `httpx.MockTransport` and sleeps through a recording fake,
so nothing leaves the process and no retry really waits.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.credentials import Credential
from gateway.errors import (
    BillingSuspended,
    ErrorCode,
    GatewayError,
    UpstreamBadResponse,
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
from gateway.provider import Provider
from gateway.settings import UpstreamSettings
from gateway.upstreams import AlmanacClient, AutopostingClient, UpstreamClient
from gateway.upstreams.mapping import parse_retry_after
from tests.support import http_date

ALMANAC = Provider.ALMANAC
AUTOPOSTING = Provider.AUTOPOSTING
PROVIDERS = [pytest.param(ALMANAC, id="almanac"), pytest.param(AUTOPOSTING, id="autoposting")]

ALMANAC_URL = "https://almanac.test"
AUTOPOSTING_URL = "https://autoposting.test/api-proxy"
BASE_URLS = {ALMANAC: ALMANAC_URL, AUTOPOSTING: AUTOPOSTING_URL}

TOKEN = "tok-SECRET-3f9c1e"
CREDENTIAL = Credential(TOKEN)
ORG = "org_1"
# Planted in every upstream error body: it must never reach an error message or a log line.
BODY_SECRET = "UPSTREAM-BODY-TEXT-7f3a"

Json = dict[str, Any]
Reply = Callable[[httpx.Request], httpx.Response] | type[Exception]


# --- fakes ---------------------------------------------------------------------------------------


def answer(
    status: int = 200, body: object = None, *, headers: dict[str, str] | None = None
) -> Reply:
    """A JSON answer (a fresh `httpx.Response` per call)."""
    return lambda request: httpx.Response(status, json=body, headers=headers)


def raw(
    status: int,
    content: bytes = b"",
    *,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An answer with exactly this body and content type (none when `content_type` is None)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["content-type"] = content_type
    return lambda request: httpx.Response(status, content=content, headers=all_headers)


class FakeUpstream:
    """A `MockTransport` handler: answers with `replies` in turn, repeating the last one.

    An exception class as a reply is raised (instantiated with the request), as httpx would.
    """

    def __init__(self, *replies: Reply) -> None:
        self.replies = replies or (answer(200, {}),)
        self.requests: list[httpx.Request] = []
        self.raised: list[Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, type):
            exc = reply("simulated failure", request=request)
            self.raised.append(exc)
            raise exc
        return reply(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1, f"expected one request, got {len(self.requests)}"
        return self.requests[0]


@dataclass
class RecordingSleep:
    """Stands in for `asyncio.sleep`: records each delay and returns at once."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@dataclass
class Harness:
    client: UpstreamClient
    upstream: FakeUpstream
    sleep: RecordingSleep


Connect = Callable[..., Harness]


def upstream_settings(provider: Provider, **overrides: Any) -> UpstreamSettings:
    values: dict[str, Any] = {
        "provider": provider,
        "base_url": BASE_URLS[provider],
        "credential": None,
        "currency": "USD",
        "connect_timeout": 1.5,
        "read_timeout": 7.0,
        "get_retries": 2,
        "retry_backoff": 0.2,
        "retry_after_cap": 5.0,
    }
    values.update(overrides)
    return UpstreamSettings(**values)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds a client of `provider` over a `FakeUpstream` answering with `replies`."""
    clients: list[UpstreamClient] = []

    def make(provider: Provider, *replies: Reply, **overrides: Any) -> Harness:
        upstream = FakeUpstream(*replies)
        sleep = RecordingSleep()
        client_class = AlmanacClient if provider is ALMANAC else AutopostingClient
        client = client_class(
            upstream_settings(provider, **overrides),
            transport=httpx.MockTransport(upstream),
            sleep=sleep,
        )
        clients.append(client)
        return Harness(client, upstream, sleep)

    yield make
    for client in clients:
        await client.aclose()


def ok_body(provider: Provider, data: object) -> object:
    """A successful answer carrying `data`, in the provider's own shape."""
    return data if provider is ALMANAC else {"success": True, "data": data}


def error_body(provider: Provider, code: object = "request_failed") -> Json:
    """An error answer in the provider's own shape, with text that must never be passed on."""
    if provider is ALMANAC:
        return {"detail": BODY_SECRET}
    return {"success": False, "error": code, "message": BODY_SECRET}


async def get_billing(client: UpstreamClient) -> object:
    """The billing GET of either provider."""
    if isinstance(client, AlmanacClient):
        return await client.get_billing_state(ORG, credential=CREDENTIAL)
    assert isinstance(client, AutopostingClient)
    return await client.get_billing_status(credential=CREDENTIAL)


async def post_checkout(client: UpstreamClient) -> object:
    """The checkout POST of either provider."""
    if isinstance(client, AlmanacClient):
        return await client.create_checkout(
            ORG, plan_id="pro", success_url="https://app.test/ok", credential=CREDENTIAL
        )
    assert isinstance(client, AutopostingClient)
    return await client.create_checkout(
        plan_id="plan_pro",
        success_url="https://app.test/ok",
        cancel_url="https://app.test/cancel",
        credential=CREDENTIAL,
    )


def sent_json(request: httpx.Request) -> object:
    assert request.headers["content-type"] == "application/json"
    return json.loads(request.content)


def assert_safe(error: BaseException) -> None:
    """An error shows neither the credential nor an upstream body's text."""
    for text in (str(error), repr(error), getattr(error, "message", "")):
        assert TOKEN not in text
        assert BODY_SECRET not in text


# --- exact requests ------------------------------------------------------------------------------


async def test_almanac_billing_state_is_one_authenticated_json_get_on_the_base_url(
    connect: Connect,
) -> None:
    plans = {"organization_id": ORG, "plans": [], "manage": {"allowed": True}}
    h = connect(ALMANAC, answer(200, plans), credential=Credential("configured-token"))

    assert await h.client.get_billing_state(ORG, credential=CREDENTIAL) == plans  # type: ignore[attr-defined]

    request = h.upstream.request
    assert request.method == "GET"
    assert str(request.url) == f"{ALMANAC_URL}/v1/organizations/org_1/billing"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.content == b""


async def test_a_cookie_an_upstream_sets_is_never_sent_again_not_even_with_the_same_credential(
    connect: Connect,
) -> None:
    # One client serves every caller: a cookie kept from one credential's answer would reach
    # requests made with another's.
    h = connect(ALMANAC, answer(200, {}, headers={"set-cookie": "session=abc; Path=/"}))

    await h.client.get_billing_state(ORG, credential=CREDENTIAL)  # type: ignore[attr-defined]
    await h.client.get_billing_state(ORG, credential=Credential("other"))  # type: ignore[attr-defined]

    assert [r.headers.get("cookie") for r in h.upstream.requests] == [None, None]
    assert h.upstream.requests[1].headers["user-agent"].startswith("billing-gateway/")


async def test_every_call_carries_the_connect_and_read_timeouts_of_the_settings(
    connect: Connect,
) -> None:
    h = connect(ALMANAC, answer(200, {}), connect_timeout=1.5, read_timeout=7.0)

    await get_billing(h.client)

    timeout = h.upstream.request.extensions["timeout"]
    assert (timeout["connect"], timeout["read"]) == (1.5, 7.0)


@pytest.mark.parametrize(
    ("organization_id", "segment"),
    [
        pytest.param("a/b", b"a%2Fb", id="slash"),
        pytest.param("a b", b"a%20b", id="space"),
        pytest.param("a?b=c", b"a%3Fb%3Dc", id="question-mark"),
        pytest.param("a#b", b"a%23b", id="hash"),
        pytest.param("%41", b"%2541", id="percent"),
        pytest.param("../admin", b"..%2Fadmin", id="dot-dot-slash"),
        pytest.param("org_1", b"org_1", id="plain"),
    ],
)
async def test_almanac_organization_id_is_percent_encoded_into_one_path_segment(
    connect: Connect, organization_id: str, segment: bytes
) -> None:
    h = connect(ALMANAC, answer(200, {}))

    await h.client.get_billing_state(organization_id, credential=CREDENTIAL)  # type: ignore[attr-defined]

    url = h.upstream.request.url
    assert url.raw_path == b"/v1/organizations/" + segment + b"/billing"
    assert url.query == b""


@pytest.mark.parametrize("organization_id", ["..", "."])
async def test_almanac_organization_id_made_of_dots_stays_in_its_own_path_segment(
    connect: Connect, organization_id: str
) -> None:
    h = connect(ALMANAC, answer(200, {}))

    with contextlib.suppress(GatewayError):  # refusing the id is as good as encoding it
        await h.client.get_billing_state(organization_id, credential=CREDENTIAL)  # type: ignore[attr-defined]

    for request in h.upstream.requests:
        segments = request.url.raw_path.split(b"/")
        assert segments[:3] == [b"", b"v1", b"organizations"]
        assert len(segments) == 5
        assert segments[4] == b"billing"


@pytest.mark.parametrize(
    ("success_url", "body"),
    [
        pytest.param(None, {"plan_id": "pro"}, id="without-success-url"),
        pytest.param(
            "https://app.test/ok?x=1",
            {"plan_id": "pro", "success_url": "https://app.test/ok?x=1"},
            id="with-success-url",
        ),
    ],
)
async def test_almanac_checkout_posts_only_the_fields_almanac_accepts(
    connect: Connect, success_url: str | None, body: Json
) -> None:
    h = connect(ALMANAC, answer(200, {"url": "https://pay.test/c/1"}))

    result = await h.client.create_checkout(  # type: ignore[attr-defined]
        ORG, plan_id="pro", success_url=success_url, credential=CREDENTIAL
    )

    assert result == {"url": "https://pay.test/c/1"}
    request = h.upstream.request
    assert request.method == "POST"
    assert str(request.url) == f"{ALMANAC_URL}/v1/organizations/org_1/billing/checkout"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent_json(request) == body


async def test_almanac_preview_posts_only_the_plan_id(connect: Connect) -> None:
    h = connect(ALMANAC, answer(200, {"plan_id": "pro", "line_items": []}))

    await h.client.preview_checkout("a/b", plan_id="pro", credential=CREDENTIAL)  # type: ignore[attr-defined]

    request = h.upstream.request
    assert request.method == "POST"
    assert request.url.raw_path == b"/v1/organizations/a%2Fb/billing/preview"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent_json(request) == {"plan_id": "pro"}


AUTOPOSTING_GETS: list[Any] = [
    pytest.param(
        lambda c: c.get_billing_status(credential=CREDENTIAL),
        "/api-proxy/billing/status",
        b"",
        id="billing-status",
    ),
    pytest.param(
        lambda c: c.get_credit_summary(credential=CREDENTIAL),
        "/api-proxy/billing/credit-summary",
        b"",
        id="credit-summary",
    ),
    pytest.param(
        lambda c: c.get_token_usage(period="30d", credential=CREDENTIAL),
        "/api-proxy/usage/tokens",
        b"period=30d",
        id="token-usage",
    ),
    pytest.param(
        lambda c: c.get_profile(credential=CREDENTIAL),
        "/api-proxy/auth/profile",
        b"",
        id="profile",
    ),
]


@pytest.mark.parametrize(("call", "path", "query"), AUTOPOSTING_GETS)
async def test_autoposting_gets_keep_the_base_url_path_prefix_and_send_the_bearer_token(
    connect: Connect,
    call: Callable[[AutopostingClient], Awaitable[object]],
    path: str,
    query: bytes,
) -> None:
    h = connect(AUTOPOSTING, answer(200, {"success": True, "data": {"ok": 1}}))

    assert await call(h.client) == {"ok": 1}  # type: ignore[arg-type]

    request = h.upstream.request
    assert request.method == "GET"
    assert request.url.host == "autoposting.test"
    assert request.url.path == path
    assert request.url.query == query
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"


async def test_the_readiness_probe_is_a_get_without_any_authorization(connect: Connect) -> None:
    h = connect(AUTOPOSTING, answer(200, {"success": True}))

    assert await h.client.probe("/health", time_limit=1.0) == 200

    request = h.upstream.request
    assert str(request.url) == f"{AUTOPOSTING_URL}/health"
    assert "authorization" not in request.headers
    assert "x-api-key" not in request.headers
    assert request.headers["accept"] == "application/json"


async def test_autoposting_checkout_posts_exactly_plan_success_and_cancel_urls(
    connect: Connect,
) -> None:
    data = {"checkoutUrl": "https://pay.test/c/1", "sessionId": "cs_1"}
    h = connect(AUTOPOSTING, answer(200, {"success": True, "data": data}))

    assert await post_checkout(h.client) == data

    request = h.upstream.request
    assert request.method == "POST"
    assert str(request.url) == f"{AUTOPOSTING_URL}/billing/checkout"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent_json(request) == {
        "planId": "plan_pro",
        "successUrl": "https://app.test/ok",
        "cancelUrl": "https://app.test/cancel",
    }


# --- the Autoposting envelope --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"plan": "pro"}, id="object"),
        pytest.param([1, 2], id="list"),
        pytest.param(0, id="zero"),
        pytest.param(None, id="null"),
    ],
)
async def test_autoposting_envelope_is_unwrapped_to_its_data(
    connect: Connect, data: object
) -> None:
    h = connect(AUTOPOSTING, answer(200, {"success": True, "data": data}))

    assert await get_billing(h.client) == data


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"plan": "pro"}, id="no-envelope"),
        pytest.param([{"plan": "pro"}], id="list"),
        pytest.param("ok", id="string"),
        pytest.param({"success": "true", "data": {}}, id="success-is-a-string"),
        pytest.param({"success": 1, "data": {}}, id="success-is-a-number"),
        pytest.param({"success": None, "data": {}}, id="success-is-null"),
        pytest.param(
            {"success": False, "error": "oops", "message": BODY_SECRET}, id="success-false"
        ),
    ],
)
async def test_autoposting_answer_outside_the_envelope_is_a_bad_response(
    connect: Connect, body: object
) -> None:
    h = connect(AUTOPOSTING, answer(200, body))

    with pytest.raises(UpstreamBadResponse) as caught:
        await get_billing(h.client)

    assert caught.value.provider is AUTOPOSTING
    assert caught.value.status == 200
    assert caught.value.code is ErrorCode.UPSTREAM_BAD_RESPONSE
    assert h.upstream.calls == 1
    assert_safe(caught.value)


# --- statuses -> exceptions ----------------------------------------------------------------------

STATUS_TABLE = [
    pytest.param(401, UpstreamUnauthorized, ErrorCode.UNAUTHENTICATED, id="401"),
    pytest.param(403, UpstreamForbidden, ErrorCode.NOT_ALLOWED, id="403"),
    pytest.param(404, UpstreamNotFound, ErrorCode.NOT_FOUND, id="404"),
    pytest.param(400, UpstreamRejected, ErrorCode.UPSTREAM_REJECTED, id="400"),
    pytest.param(402, UpstreamRejected, ErrorCode.UPSTREAM_REJECTED, id="402"),
    pytest.param(409, UpstreamRejected, ErrorCode.UPSTREAM_REJECTED, id="409"),
    pytest.param(422, UpstreamRejected, ErrorCode.UPSTREAM_REJECTED, id="422"),
    pytest.param(429, UpstreamRateLimited, ErrorCode.RATE_LIMITED, id="429"),
    pytest.param(500, UpstreamUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, id="500"),
    pytest.param(502, UpstreamUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, id="502"),
    pytest.param(503, UpstreamUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, id="503"),
    pytest.param(504, UpstreamUnavailable, ErrorCode.UPSTREAM_UNAVAILABLE, id="504"),
]


@pytest.mark.parametrize(("status", "error_class", "code"), STATUS_TABLE)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_error_status_maps_to_its_exception_class_and_code(
    connect: Connect,
    provider: Provider,
    status: int,
    error_class: type[UpstreamError],
    code: ErrorCode,
) -> None:
    h = connect(provider, answer(status, error_body(provider)), get_retries=0)

    with pytest.raises(UpstreamError) as caught:
        await get_billing(h.client)

    error = caught.value
    assert type(error) is error_class
    assert error.code is code
    assert error.provider is provider
    assert error.status == status
    # Almanac's error bodies carry no machine code; Autoposting's `error` is one.
    assert error.upstream_code == (None if provider is ALMANAC else "request_failed")
    assert error.retry_after is None
    assert provider.label in error.message
    assert_safe(error)


@pytest.mark.parametrize(
    ("provider", "reply", "error_class", "code", "upstream_code"),
    [
        pytest.param(
            AUTOPOSTING,
            answer(403, error_body(AUTOPOSTING, "billing_suspended")),
            BillingSuspended,
            ErrorCode.BILLING_SUSPENDED,
            "billing_suspended",
            id="autoposting-403-billing-suspended",
        ),
        pytest.param(
            AUTOPOSTING,
            answer(402, error_body(AUTOPOSTING, "insufficient_credits")),
            UpstreamRejected,
            ErrorCode.UPSTREAM_REJECTED,
            "insufficient_credits",
            id="autoposting-402-insufficient-credits",
        ),
        pytest.param(
            AUTOPOSTING,
            answer(400, error_body(AUTOPOSTING, "x" * 65)),
            UpstreamRejected,
            ErrorCode.UPSTREAM_REJECTED,
            None,
            id="autoposting-error-too-long-is-no-code",
        ),
        pytest.param(
            AUTOPOSTING,
            answer(400, error_body(AUTOPOSTING, f"Plan not found {BODY_SECRET}")),
            UpstreamRejected,
            ErrorCode.UPSTREAM_REJECTED,
            None,
            id="autoposting-error-with-spaces-is-no-code",
        ),
        pytest.param(
            AUTOPOSTING,
            answer(403, error_body(AUTOPOSTING, 42)),
            UpstreamForbidden,
            ErrorCode.NOT_ALLOWED,
            None,
            id="autoposting-error-not-a-string-is-no-code",
        ),
        pytest.param(
            AUTOPOSTING,
            raw(401, BODY_SECRET.encode(), content_type="text/plain"),
            UpstreamUnauthorized,
            ErrorCode.UNAUTHENTICATED,
            None,
            id="autoposting-401-plain-text",
        ),
        pytest.param(
            AUTOPOSTING,
            raw(500, b'{"success": false, "err', content_type="application/json"),
            UpstreamUnavailable,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            None,
            id="autoposting-500-truncated-json",
        ),
        pytest.param(
            ALMANAC,
            answer(403, {"error": "billing_suspended", "detail": BODY_SECRET}),
            UpstreamForbidden,
            ErrorCode.NOT_ALLOWED,
            None,
            id="almanac-403-error-field-is-not-read",
        ),
        pytest.param(
            ALMANAC,
            answer(422, {"detail": [{"loc": ["body", "x"], "msg": BODY_SECRET, "type": "extra"}]}),
            UpstreamRejected,
            ErrorCode.UPSTREAM_REJECTED,
            None,
            id="almanac-422-fastapi-validation",
        ),
        pytest.param(
            ALMANAC,
            raw(404, f"<h1>{BODY_SECRET}</h1>".encode(), content_type="text/html"),
            UpstreamNotFound,
            ErrorCode.NOT_FOUND,
            None,
            id="almanac-404-html",
        ),
    ],
)
async def test_error_body_refines_the_exception_only_through_a_safe_upstream_code(
    connect: Connect,
    provider: Provider,
    reply: Reply,
    error_class: type[UpstreamError],
    code: ErrorCode,
    upstream_code: str | None,
) -> None:
    h = connect(provider, reply, get_retries=0)

    with pytest.raises(UpstreamError) as caught:
        await get_billing(h.client)

    assert type(caught.value) is error_class
    assert caught.value.code is code
    assert caught.value.upstream_code == upstream_code
    assert_safe(caught.value)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(lambda: "7", 7.0, id="seconds"),
        pytest.param(lambda: http_date(120), 120.0, id="http-date"),
        pytest.param(lambda: None, None, id="absent"),
        pytest.param(lambda: "later", None, id="garbage"),
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limited_error_carries_the_retry_after_of_the_answer(
    connect: Connect,
    provider: Provider,
    retry_after: Callable[[], str | None],
    expected: float | None,
) -> None:
    value = retry_after()
    headers = {} if value is None else {"retry-after": value}
    h = connect(provider, answer(429, error_body(provider), headers=headers), get_retries=0)

    with pytest.raises(UpstreamRateLimited) as caught:
        await get_billing(h.client)

    if expected is None:
        assert caught.value.retry_after is None
    else:
        # An HTTP date has one-second resolution and the clock moves on while the test runs.
        assert caught.value.retry_after == pytest.approx(expected, abs=2.0)


async def test_rate_limited_answer_with_an_unparseable_retry_after_is_still_rate_limited(
    connect: Connect,
) -> None:
    h = connect(
        AUTOPOSTING,
        answer(429, error_body(AUTOPOSTING), headers={"retry-after": "\u00b2".encode("latin-1")}),  # type: ignore[dict-item]
        get_retries=0,
    )

    with pytest.raises(UpstreamRateLimited) as caught:
        await get_billing(h.client)

    assert caught.value.retry_after is None


# --- transport errors -> exceptions --------------------------------------------------------------

TRANSPORT_TABLE = [
    pytest.param(httpx.ConnectError, UpstreamUnreachable, id="ConnectError"),
    pytest.param(httpx.ConnectTimeout, UpstreamTimeout, id="ConnectTimeout"),
    pytest.param(httpx.ReadTimeout, UpstreamTimeout, id="ReadTimeout"),
    pytest.param(httpx.WriteTimeout, UpstreamTimeout, id="WriteTimeout"),
    pytest.param(httpx.PoolTimeout, UpstreamTimeout, id="PoolTimeout"),
    pytest.param(httpx.RemoteProtocolError, UpstreamUnreachable, id="RemoteProtocolError"),
    pytest.param(httpx.ReadError, UpstreamUnreachable, id="ReadError"),
    pytest.param(httpx.WriteError, UpstreamUnreachable, id="WriteError"),
    pytest.param(httpx.DecodingError, UpstreamBadResponse, id="DecodingError"),
]


@pytest.mark.parametrize(("exc_class", "error_class"), TRANSPORT_TABLE)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_transport_error_maps_to_its_exception_class_chained_to_the_httpx_error(
    connect: Connect,
    provider: Provider,
    exc_class: type[httpx.HTTPError],
    error_class: type[UpstreamError],
) -> None:
    h = connect(provider, exc_class, get_retries=0)

    with pytest.raises(UpstreamError) as caught:
        await get_billing(h.client)

    error = caught.value
    assert type(error) is error_class
    assert error.code is error_class.code
    assert error.provider is provider
    assert error.status is None
    assert error.__cause__ is h.upstream.raised[-1]
    assert isinstance(error.__cause__, exc_class)
    assert_safe(error)


# --- 2xx and 3xx answers that break the contract -------------------------------------------------

BAD_ANSWERS = [
    pytest.param(
        200,
        raw(200, b"<!doctype html><html>dashboard</html>", content_type="text/html; charset=utf-8"),
        "HTML where JSON was expected; check the configured base URL",
        id="html",
    ),
    pytest.param(
        200,
        raw(200, b'{"success": true, "da', content_type="application/json"),
        "malformed JSON",
        id="truncated-json",
    ),
    pytest.param(
        200, raw(200, b'{"success": true, "data": {}}'), "without a JSON body", id="no-content-type"
    ),
    pytest.param(200, raw(200, b"ok", content_type="text/plain"), "without a JSON body", id="text"),
    pytest.param(204, raw(204), "without a JSON body", id="204-no-content"),
    pytest.param(301, raw(301, headers={"location": "https://x.test/"}), "base URL", id="301"),
    pytest.param(302, raw(302, headers={"location": "/login"}), "base URL", id="302"),
    pytest.param(
        307,
        raw(307, b"{}", content_type="application/json", headers={"location": "/v2"}),
        "base URL",
        id="307-json",
    ),
    pytest.param(308, raw(308, headers={"location": "https://x.test/"}), "base URL", id="308"),
    pytest.param(304, raw(304), "redirect", id="304-without-location"),
]


@pytest.mark.parametrize(("status", "reply", "says"), BAD_ANSWERS)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_answer_that_is_not_json_is_a_bad_response_and_not_retried(
    connect: Connect, provider: Provider, status: int, reply: Reply, says: str
) -> None:
    h = connect(provider, reply, answer(200, ok_body(provider, {})))

    with pytest.raises(UpstreamBadResponse) as caught:
        await get_billing(h.client)

    error = caught.value
    assert error.code is ErrorCode.UPSTREAM_BAD_RESPONSE
    assert error.provider is provider
    assert error.status == status
    assert says in error.message
    assert "dashboard" not in error.message
    assert h.upstream.calls == 1
    assert h.sleep.delays == []


async def test_redirect_is_not_followed(connect: Connect) -> None:
    h = connect(ALMANAC, raw(302, headers={"location": f"{ALMANAC_URL}/login"}), answer(200, {}))

    with pytest.raises(UpstreamBadResponse) as caught:
        await get_billing(h.client)

    assert caught.value.status == 302
    assert h.upstream.calls == 1


# --- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_get_answered_503_then_200_returns_the_data_after_exactly_two_calls(
    connect: Connect, provider: Provider
) -> None:
    h = connect(
        provider,
        answer(503, error_body(provider)),
        answer(200, ok_body(provider, {"plan": "pro"})),
    )

    assert await get_billing(h.client) == {"plan": "pro"}

    assert h.upstream.calls == 2
    assert len(h.sleep.delays) == 1


RETRIED = [
    pytest.param(answer(502, {}), UpstreamUnavailable, id="502"),
    pytest.param(answer(503, {}), UpstreamUnavailable, id="503"),
    pytest.param(answer(504, {}), UpstreamUnavailable, id="504"),
    pytest.param(answer(429, {}), UpstreamRateLimited, id="429"),
    pytest.param(
        answer(429, {}, headers={"retry-after": "1"}), UpstreamRateLimited, id="429-retry-after"
    ),
    pytest.param(
        raw(502, b"<html>Bad gateway</html>", content_type="text/html"),
        UpstreamUnavailable,
        id="502-html",
    ),
    pytest.param(httpx.ConnectError, UpstreamUnreachable, id="ConnectError"),
    pytest.param(httpx.ConnectTimeout, UpstreamTimeout, id="ConnectTimeout"),
    pytest.param(httpx.ReadTimeout, UpstreamTimeout, id="ReadTimeout"),
    pytest.param(httpx.PoolTimeout, UpstreamTimeout, id="PoolTimeout"),
    pytest.param(httpx.RemoteProtocolError, UpstreamUnreachable, id="RemoteProtocolError"),
    pytest.param(httpx.ReadError, UpstreamUnreachable, id="ReadError"),
]


@pytest.mark.parametrize("get_retries", [0, 1, 3])
@pytest.mark.parametrize(("reply", "error_class"), RETRIED)
async def test_get_is_retried_get_retries_times_then_raises_the_last_error(
    connect: Connect, reply: Reply, error_class: type[UpstreamError], get_retries: int
) -> None:
    h = connect(AUTOPOSTING, reply, get_retries=get_retries)

    with pytest.raises(error_class):
        await get_billing(h.client)

    assert h.upstream.calls == 1 + get_retries
    assert len(h.sleep.delays) == get_retries


async def test_get_raises_the_error_of_the_last_attempt(connect: Connect) -> None:
    h = connect(ALMANAC, answer(503, {}), httpx.ConnectError, answer(504, {}), get_retries=2)

    with pytest.raises(UpstreamUnavailable) as caught:
        await get_billing(h.client)

    assert caught.value.status == 504
    assert h.upstream.calls == 3


NOT_RETRIED = [
    pytest.param(500, UpstreamUnavailable, id="500"),
    pytest.param(400, UpstreamRejected, id="400"),
    pytest.param(401, UpstreamUnauthorized, id="401"),
    pytest.param(403, UpstreamForbidden, id="403"),
    pytest.param(404, UpstreamNotFound, id="404"),
    pytest.param(409, UpstreamRejected, id="409"),
    pytest.param(422, UpstreamRejected, id="422"),
]


@pytest.mark.parametrize(("status", "error_class"), NOT_RETRIED)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_get_answered_a_status_that_will_not_change_is_not_retried(
    connect: Connect, provider: Provider, status: int, error_class: type[UpstreamError]
) -> None:
    h = connect(provider, answer(status, error_body(provider)), answer(200, ok_body(provider, {})))

    with pytest.raises(error_class):
        await get_billing(h.client)

    assert h.upstream.calls == 1
    assert h.sleep.delays == []


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        pytest.param("3", 3.0, id="below-cap"),
        pytest.param("5", 5.0, id="at-cap"),
        pytest.param("0", 0.0, id="zero"),
    ],
)
async def test_retry_after_within_the_cap_is_slept_exactly(
    connect: Connect, retry_after: str, delay: float
) -> None:
    h = connect(
        AUTOPOSTING,
        answer(429, error_body(AUTOPOSTING), headers={"retry-after": retry_after}),
        answer(200, {"success": True, "data": "ok"}),
        retry_after_cap=5.0,
    )

    assert await get_billing(h.client) == "ok"

    assert h.sleep.delays == [delay]
    assert h.upstream.calls == 2


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(lambda: "6", 6.0, id="seconds"),
        pytest.param(lambda: "3600", 3600.0, id="an-hour"),
        pytest.param(lambda: http_date(600), 600.0, id="http-date"),
    ],
)
async def test_retry_after_beyond_the_cap_is_not_slept_but_returned_in_the_error(
    connect: Connect, retry_after: Callable[[], str], expected: float
) -> None:
    h = connect(
        ALMANAC,
        answer(429, error_body(ALMANAC), headers={"retry-after": retry_after()}),
        answer(200, {}),
        retry_after_cap=5.0,
        get_retries=3,
    )

    with pytest.raises(UpstreamRateLimited) as caught:
        await get_billing(h.client)

    assert caught.value.retry_after == pytest.approx(expected, abs=2.0)
    assert h.upstream.calls == 1
    assert h.sleep.delays == []


async def test_backoff_delays_grow_and_stay_within_half_to_full_base_times_two_to_the_attempt(
    connect: Connect,
) -> None:
    base = 0.4
    for _ in range(20):  # the jitter is random: look at several runs
        h = connect(ALMANAC, answer(503, {}), get_retries=5, retry_backoff=base)

        with pytest.raises(UpstreamUnavailable):
            await get_billing(h.client)

        delays = h.sleep.delays
        assert len(delays) == 5
        for attempt, delay in enumerate(delays):
            assert 0.5 * base * 2**attempt <= delay <= base * 2**attempt
        assert delays == sorted(delays)
        assert len(set(delays)) == len(delays)


POST_FAILURES = [
    pytest.param(answer(503, {}), UpstreamUnavailable, id="503"),
    pytest.param(answer(502, {}), UpstreamUnavailable, id="502"),
    pytest.param(answer(504, {}), UpstreamUnavailable, id="504"),
    pytest.param(answer(429, {}, headers={"retry-after": "1"}), UpstreamRateLimited, id="429"),
    pytest.param(httpx.ReadTimeout, UpstreamTimeout, id="ReadTimeout"),
    pytest.param(httpx.ConnectError, UpstreamUnreachable, id="ConnectError"),
    pytest.param(httpx.RemoteProtocolError, UpstreamUnreachable, id="RemoteProtocolError"),
]


@pytest.mark.parametrize(("reply", "error_class"), POST_FAILURES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_post_is_never_retried(
    connect: Connect, provider: Provider, reply: Reply, error_class: type[UpstreamError]
) -> None:
    h = connect(provider, reply, answer(200, ok_body(provider, {})), get_retries=5)

    with pytest.raises(error_class):
        await post_checkout(h.client)

    assert h.upstream.calls == 1
    assert h.sleep.delays == []


@pytest.mark.parametrize(
    "exc_class", [httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError]
)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_post_whose_answer_was_lost_says_it_was_not_retried(
    connect: Connect, provider: Provider, exc_class: type[httpx.HTTPError]
) -> None:
    h = connect(provider, exc_class)

    with pytest.raises(UpstreamError) as caught:
        await post_checkout(h.client)

    assert "not retried" in caught.value.message


@pytest.mark.parametrize("status", [502, 503, 504, 429])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_post_answered_a_retryable_status_says_it_was_not_retried(
    connect: Connect, provider: Provider, status: int
) -> None:
    h = connect(provider, answer(status, error_body(provider)))

    with pytest.raises(UpstreamError) as caught:
        await post_checkout(h.client)

    assert "not retried" in caught.value.message


async def test_get_message_does_not_claim_the_request_was_not_retried(connect: Connect) -> None:
    h = connect(ALMANAC, httpx.ReadTimeout, get_retries=0)

    with pytest.raises(UpstreamTimeout) as caught:
        await get_billing(h.client)

    assert "not retried" not in caught.value.message


# --- secrets -------------------------------------------------------------------------------------

FAILURES = [
    pytest.param(answer(401, None), id="401-no-body"),
    pytest.param(
        lambda request: httpx.Response(401, json={"detail": request.headers["authorization"]}),
        id="401-echoing-the-token",
    ),
    pytest.param(
        answer(403, {"success": False, "error": "billing_suspended", "message": BODY_SECRET}),
        id="403",
    ),
    pytest.param(answer(429, {"detail": BODY_SECRET}, headers={"retry-after": "1"}), id="429"),
    pytest.param(answer(503, {"detail": BODY_SECRET}), id="503"),
    pytest.param(
        raw(200, f"<html>{BODY_SECRET}</html>".encode(), content_type="text/html"), id="html"
    ),
    pytest.param(raw(302, headers={"location": f"https://x.test/?token={TOKEN}"}), id="redirect"),
    pytest.param(httpx.ConnectError, id="ConnectError"),
    pytest.param(httpx.ReadTimeout, id="ReadTimeout"),
]


@pytest.mark.parametrize(
    "call", [pytest.param(get_billing, id="get"), pytest.param(post_checkout, id="post")]
)
@pytest.mark.parametrize("reply", FAILURES)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_failing_call_never_logs_or_shows_the_token(
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    provider: Provider,
    reply: Reply,
    call: Callable[[UpstreamClient], Awaitable[object]],
) -> None:
    caplog.set_level(logging.DEBUG)
    h = connect(provider, reply)

    with pytest.raises(UpstreamError) as caught:
        await call(h.client)

    assert caplog.records, "the failure should be logged"
    for record in caplog.records:
        logged = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert TOKEN not in logged
        assert BODY_SECRET not in logged
    assert TOKEN not in caplog.text
    error: BaseException | None = caught.value
    while error is not None:  # the whole chain, as a traceback would show it
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        error = error.__cause__
    assert_safe(caught.value)


# --- parse_retry_after ---------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="seconds-with-spaces"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("120", 120.0, id="two-minutes"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param(None, None, id="none"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-1", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param(email.utils.formatdate(NOW + 90, usegmt=True), 90.0, id="http-date-future"),
        pytest.param(email.utils.formatdate(NOW - 90, usegmt=True), 0.0, id="http-date-past"),
        pytest.param("Sat, 01 Jan 2000 00:00:00 GMT", 0.0, id="http-date-long-past"),
        pytest.param(
            "\u00b2",
            None,
            id="superscript-two",
        ),
    ],
)
def test_parse_retry_after_reads_seconds_or_an_http_date(
    value: str | None, expected: float | None
) -> None:
    assert parse_retry_after(value, now=NOW) == expected
