"""Bad input over HTTP against the real app: every refusal is a clear JSON error, never a 500, and
no upstream is called.

The app runs in process with its lifespan, under `httpx.ASGITransport`, with the sandbox upstreams
in process as its transports; `SandboxState` counts every upstream call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from strawberry.schema.schema import validate_document

import gateway.schema as gateway_schema
from gateway.__main__ import DEMO_API_KEY, _demo_banner
from gateway.http.guard import ApiKeys
from gateway.keys import plain_keys
from gateway.provider import Provider
from gateway.sandbox import SandboxState
from gateway.schema import DOCUMENT_CACHE_SIZE, TextKeyedValidationCache, build_schema
from gateway.settings import DEFAULT_MAX_BODY_BYTES
from tests.support import (
    BILLING_ACCOUNT,
    CANCEL_URL,
    FOUR_LEVELS,
    START_CHECKOUT,
    SUCCESS_URL,
    TEST_API_KEY,
    ExplodingTransport,
    client_of,
    make_settings,
    sandbox_transports,
    serve,
)

GRAPHQL = "/graphql"
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
ALLOWED_ORIGIN = "https://app.example.com"

ALIASES_31 = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"
TOKENS_2100 = "{ " + "__typename " * 2100 + "}"
INTROSPECTION = "{ __schema { queryType { name } } }"
NO_SERVICE_CREDENTIALS = {"GATEWAY_ALMANAC_TOKEN": "", "GATEWAY_AUTOPOSTING_API_KEY": ""}


def assert_json_refusal(
    response: httpx.Response, status: int, code: str, message: str
) -> dict[str, Any]:
    """A refusal in the GraphQL shape: exactly one error, with the code and a clear message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    errors: list[dict[str, Any]] = response.json()["errors"]
    [error] = errors
    assert error["extensions"]["code"] == code, error
    assert message.lower() in error["message"].lower(), error
    return error


# --- the bad-input table -------------------------------------------------------------------------


async def _endless_chunks(sent: list[int]) -> AsyncIterator[bytes]:
    """A chunked body (no Content-Length) that would never end; `sent` counts what was read."""
    yield b'{"query": "{ __typename }", "variables": {"pad": "'
    while True:
        sent.append(4096)
        yield b"x" * 4096


def checkout(**fields: str) -> dict[str, Any]:
    return {"json": {"query": START_CHECKOUT, "variables": {"input": fields}}}


def account(**variables: Any) -> dict[str, Any]:
    return {"json": {"query": BILLING_ACCOUNT, "variables": variables}}


def raw(content: bytes | str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": content_type}}


TYPENAME = {"json": {"query": "{ __typename }"}}
GET_MUTATION = {
    "params": {
        "query": 'mutation { startCheckout(input: {provider: AUTOPOSTING, planId: "plan_pro"}) '
        "{ __typename } }"
    }
}


@dataclass(frozen=True)
class Row:
    """One bad request and how it must be refused.

    `field`: the refusal is a typed error in `data[field]` of a 200; else a top-level error.
    """

    request: dict[str, Any]
    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=lambda: dict(KEY))
    method: str = "POST"
    environ: Mapping[str, str] = field(default_factory=dict)
    field: str | None = None


ROWS = [
    pytest.param(
        Row(raw(b'{"query": "{ billingAccount('), 400, "INVALID_QUERY",
            "Unable to parse request body as JSON"),
        id="malformed-json",
    ),
    pytest.param(
        Row(raw(b'"{ __typename }"'), 400, "INVALID_QUERY", "must be a JSON object"),
        id="json-but-not-an-object",
    ),
    pytest.param(
        Row(raw(b"\xff\xfe{}"), 400, "INVALID_QUERY", "Unable to parse request body as JSON"),
        id="body-not-utf8",
    ),
    pytest.param(
        Row({"json": [TYPENAME["json"]]}, 400, "INVALID_QUERY", "Batching is not enabled"),
        id="batch",
    ),
    pytest.param(
        Row({"json": {"query": ""}}, 400, "INVALID_QUERY", "No GraphQL query found"),
        id="empty-query",
    ),
    pytest.param(
        Row(raw(json.dumps(TYPENAME["json"]), "text/plain"), 415, "INVALID_QUERY",
            "Content-Type: application/json (got text/plain)"),
        id="text-plain",
    ),
    pytest.param(
        Row({"data": TYPENAME["json"]}, 415, "INVALID_QUERY",
            "(got application/x-www-form-urlencoded)"),
        id="form-urlencoded",
    ),
    pytest.param(
        Row({"files": {"query": b"{ __typename }"}}, 415, "INVALID_QUERY",
            "(got multipart/form-data)"),
        id="multipart-form",
    ),
    pytest.param(
        Row({"content": json.dumps(TYPENAME["json"])}, 415, "INVALID_QUERY",
            "(got no content type)"),
        id="no-content-type",
    ),
    pytest.param(
        Row(GET_MUTATION, 400, "INVALID_QUERY", "mutations are not allowed when using GET",
            method="GET"),
        id="get-mutation",
    ),
    pytest.param(
        Row({"params": {"query": "{ __typename }", "variables": "{nope"}}, 400, "INVALID_QUERY",
            "Unable to parse", method="GET"),
        id="get-malformed-variables",
    ),
    pytest.param(
        Row(TYPENAME, 405, "INVALID_QUERY", "GET and POST, not PUT", method="PUT"),
        id="put",
    ),
    pytest.param(
        Row({"json": {"query": "{ __typename }", "variables": {"pad": "x" * 70_000}}}, 413,
            "INVALID_QUERY", f"larger than the gateway accepts ({DEFAULT_MAX_BODY_BYTES} bytes)"),
        id="oversized-content-length",
    ),
    pytest.param(
        Row({"content": "chunked"}, 413, "INVALID_QUERY", "larger than the gateway accepts"),
        id="oversized-chunked",
    ),
    pytest.param(
        Row({"json": {"query": FOUR_LEVELS}}, 200, "INVALID_QUERY",
            "exceeds maximum operation depth of 2", environ={"GATEWAY_MAX_QUERY_DEPTH": "2"}),
        id="deep-query",
    ),
    pytest.param(
        Row({"json": {"query": "{ __typename"}}, 200, "INVALID_QUERY", "Syntax Error"),
        id="syntax-error",
    ),
    pytest.param(
        Row({"json": {"query": ALIASES_31}}, 200, "INVALID_QUERY", "31 aliases found. Allowed: 30"),
        id="alias-heavy",
    ),
    pytest.param(
        Row({"json": {"query": TOKENS_2100}}, 200, "INVALID_QUERY",
            "Document contains more than 2000 tokens"),
        id="too-many-tokens",
    ),
    pytest.param(
        Row({"json": {"query": INTROSPECTION}}, 200, "INVALID_QUERY",
            "introspection has been disabled", environ={"GATEWAY_INTROSPECTION": "false"}),
        id="introspection-disabled",
    ),
    pytest.param(
        Row(account(provider=5, id="org_acme"), 200, "INVALID_QUERY",
            "Variable '$provider' has invalid value"),
        id="variable-of-wrong-type",
    ),
    pytest.param(
        Row(account(id="org_acme"), 200, "INVALID_QUERY", "Variable '$provider'"),
        id="missing-required-variable",
    ),
    pytest.param(
        Row(checkout(provider="AUTOPOSTING", planId="plan_pro", successUrl="not a url",
                     cancelUrl=CANCEL_URL),
            200, "INVALID_INPUT", "successUrl must be an absolute http(s) URL",
            field="startCheckout"),
        id="non-url-redirect",
    ),
    pytest.param(
        Row(checkout(provider="AUTOPOSTING", planId="plan_pro",
                     successUrl="https://evil.example.net/phish", cancelUrl=CANCEL_URL),
            200, "INVALID_INPUT", "successUrl must be on a host the gateway may redirect to",
            field="startCheckout"),
        id="foreign-host-redirect",
    ),
    pytest.param(
        Row(checkout(provider="AUTOPOSTING", planId="plan_nope", successUrl=SUCCESS_URL,
                     cancelUrl=CANCEL_URL),
            200, "INVALID_INPUT", "planId is not a plan", field="startCheckout"),
        id="unknown-plan",
    ),
    pytest.param(
        Row(account(provider="ALMANAC", id="org_acme"), 200, "UNAUTHENTICATED",
            "send the x-almanac-token header",
            environ=NO_SERVICE_CREDENTIALS, field="billingAccount"),
        id="missing-credentials",
    ),
    pytest.param(
        Row(TYPENAME, 401, "UNAUTHENTICATED", "The gateway key is not valid",
            headers={"authorization": "Bearer not-the-key"}),
        id="wrong-gateway-key",
    ),
    pytest.param(
        Row(TYPENAME, 401, "UNAUTHENTICATED", "The gateway key is not valid",
            headers={"authorization": f"Bearer {TEST_API_KEY}x"}),
        id="key-with-a-suffix",
    ),
    pytest.param(
        Row(TYPENAME, 401, "UNAUTHENTICATED", "The gateway key is not valid",
            headers={"authorization": f"Bearer {TEST_API_KEY[:-1]}"}),
        id="key-sharing-a-prefix",
    ),
    pytest.param(
        Row(TYPENAME, 401, "UNAUTHENTICATED", "The gateway key is not valid",
            headers={"authorization": f"Basic {TEST_API_KEY}"}),
        id="key-with-another-scheme",
    ),
    pytest.param(
        Row(TYPENAME, 401, "UNAUTHENTICATED", "A gateway key is required", headers={}),
        id="no-gateway-key",
    ),
    pytest.param(
        Row({"params": {"query": "{ __typename }"}}, 401, "UNAUTHENTICATED",
            "A gateway key is required", headers={}, method="GET"),
        id="get-without-gateway-key",
    ),
    pytest.param(
        Row({"json": {"query": "{ __typename }", "variables": {"pad": "x" * 70_000}}}, 401,
            "UNAUTHENTICATED", "A gateway key is required", headers={}),
        id="no-gateway-key-before-the-body-is-read",
    ),
    pytest.param(
        Row({"headers": {"accept": "text/html"}}, 404, "NOT_FOUND", "GraphiQL is not enabled",
            method="GET", environ={"GATEWAY_GRAPHIQL": "false"}, headers={}),
        id="graphiql-disabled",
    ),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS)
async def test_each_bad_request_is_refused_with_a_clear_json_error_before_any_upstream_call(
    state: SandboxState, row: Row
) -> None:
    request = dict(row.request)
    sent: list[int] = []
    if request.get("content") == "chunked":
        request["content"] = _endless_chunks(sent)
        request["headers"] = {"content-type": "application/json"}
    headers = {**row.headers, **request.pop("headers", {})}

    async with client_of(state, **row.environ) as client:
        response = await client.request(row.method, GRAPHQL, headers=headers, **request)

    assert response.status_code != 500
    assert response.status_code == row.status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if row.field is None:
        # Validation may report a fault once per field it concerns: all with the one code.
        codes = {error["extensions"]["code"] for error in body["errors"]}
        assert len(codes) == 1, body
        code, message = codes.pop(), body["errors"][0]["message"]
    else:
        assert "errors" not in body, body
        error = body["data"][row.field]
        code, message = error["code"], error["message"]
        assert error["__typename"] in ("InvalidInputError", "NotAllowedError"), error
    assert code == row.code, body
    assert row.message.lower() in message.lower(), body
    assert state.count() == 0
    assert state.checkouts == []
    if row.status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if sent:
        # The endless body was cut off at the limit, not read to its end.
        assert sum(sent) <= DEFAULT_MAX_BODY_BYTES + 4096


# --- access control ------------------------------------------------------------------------------


async def test_a_request_with_the_gateway_key_reaches_the_upstream(state: SandboxState) -> None:
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": BILLING_ACCOUNT, "variables": {"provider": "ALMANAC", "id": "org_acme"}},
            headers=KEY,
        )

    assert response.status_code == 200, response.text
    account = response.json()["data"]["billingAccount"]
    assert account["__typename"] == "BillingAccount"
    assert account["accountId"] == "org_acme"
    assert state.count("almanac") == 1
    # The gateway key is the caller's to the gateway: it never goes upstream.
    [call] = state.calls("almanac")
    assert TEST_API_KEY not in json.dumps(call.headers)


async def test_a_query_over_get_with_the_gateway_key_is_answered(state: SandboxState) -> None:
    async with client_of(state) as client:
        response = await client.get(GRAPHQL, params={"query": "{ __typename }"}, headers=KEY)

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_every_configured_gateway_key_is_accepted(state: SandboxState) -> None:
    async with client_of(state, GATEWAY_API_KEYS="old-key,new-key") as client:
        for key in ("old-key", "new-key"):
            response = await client.post(
                GRAPHQL,
                json={"query": "{ __typename }"},
                headers={"authorization": f"bearer {key}"},
            )
            assert response.status_code == 200, response.text


async def test_without_configured_keys_no_gateway_key_is_asked_for(state: SandboxState) -> None:
    async with client_of(state, GATEWAY_API_KEYS="", **NO_SERVICE_CREDENTIALS) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": BILLING_ACCOUNT, "variables": {"provider": "ALMANAC", "id": "org_acme"}},
            headers={"x-almanac-token": "alm_owner_demo"},
        )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["billingAccount"]["__typename"] == "BillingAccount"
    assert state.count("almanac") == 1


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        pytest.param("Bearer right-key", True, id="the-key"),
        pytest.param("bearer   right-key  ", True, id="scheme-case-and-spaces"),
        pytest.param("Bearer other-key", True, id="another-configured-key"),
        pytest.param("Bearer right-ke", False, id="a-prefix"),
        pytest.param("Bearer right-key2", False, id="a-longer-key"),
        pytest.param("Bearer RIGHT-KEY", False, id="other-case"),
        pytest.param("Bearer ", False, id="empty"),
        pytest.param("right-key", False, id="no-scheme"),
        pytest.param("Token right-key", False, id="another-scheme"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_api_keys_accept_exactly_a_configured_bearer_key(
    authorization: str | None, accepted: bool
) -> None:
    keys = ApiKeys(plain_keys(["right-key", "other-key"], variable="GATEWAY_API_KEYS"))

    assert (keys.match(authorization) is not None) is accepted


async def test_the_health_check_needs_no_gateway_key(state: SandboxState) -> None:
    async with client_of(state) as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- GraphiQL ------------------------------------------------------------------------------------


async def test_the_graphiql_page_is_served_without_a_gateway_key(state: SandboxState) -> None:
    headers = json.dumps({"Authorization": "Bearer <key>"})
    async with client_of(state) as client:
        response = await client.get(
            GRAPHQL,
            params={"q": "{ __typename }", "headers": headers},
            headers={"accept": "text/html"},
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()
    assert state.count() == 0


def test_the_demo_banner_links_to_graphiql_with_the_demo_key_in_the_authorization_header() -> None:
    banner = _demo_banner("http://127.0.0.1:8000", "http://almanac", "http://autoposting")

    [link] = [word for word in banner.split() if word.startswith("http://127.0.0.1:8000/graphql?")]
    # The GraphiQL page reads its parameters with URLSearchParams: spaces encoded as %20, never "+".
    assert "+" not in link
    parameters = parse_qs(urlsplit(link).query)
    assert json.loads(parameters["headers"][0]) == {"Authorization": f"Bearer {DEMO_API_KEY}"}
    assert parameters["q"][0].startswith("query Billing")
    assert f"-H 'authorization: Bearer {DEMO_API_KEY}'" in banner


async def test_without_graphiql_a_browser_gets_a_json_404_and_queries_still_work(
    state: SandboxState,
) -> None:
    async with client_of(state, GATEWAY_GRAPHIQL="false") as client:
        page = await client.get(GRAPHQL, headers={**KEY, "accept": "text/html"})
        query = await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=KEY)

    assert_json_refusal(page, 404, "NOT_FOUND", "GraphiQL is not enabled")
    assert query.status_code == 200
    assert query.json() == {"data": {"__typename": "Query"}}


async def test_introspection_is_answered_when_enabled(state: SandboxState) -> None:
    async with client_of(state) as client:
        response = await client.post(GRAPHQL, json={"query": INTROSPECTION}, headers=KEY)

    assert response.status_code == 200
    assert response.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_typename_is_answered_when_introspection_is_disabled(state: SandboxState) -> None:
    async with client_of(state, GATEWAY_INTROSPECTION="false") as client:
        response = await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=KEY)

    assert response.json() == {"data": {"__typename": "Query"}}


# --- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("padding", "status"), [(0, 200), (1, 413)])
async def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(
    state: SandboxState, padding: int, status: int
) -> None:
    body = b'{"query": "{ __typename }"}'
    body = body[:-1] + b" " * (200 - len(body) + padding) + b"}"

    async with client_of(state, GATEWAY_MAX_BODY_BYTES="200") as client:
        response = await client.post(
            GRAPHQL, content=body, headers={**KEY, "content-type": "application/json"}
        )

    assert len(body) == 200 + padding
    assert response.status_code == status, response.text


async def test_a_chunked_body_within_the_limit_is_accepted(state: SandboxState) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": '
        yield b'"{ __typename }"}'

    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL, content=chunks(), headers={**KEY, "content-type": "application/json"}
        )

    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_query_within_the_configured_depth_is_answered(state: SandboxState) -> None:
    async with client_of(state, GATEWAY_MAX_QUERY_DEPTH="3") as client:
        response = await client.post(GRAPHQL, json={"query": FOUR_LEVELS}, headers=KEY)

    assert response.status_code == 200
    assert "errors" not in response.json(), response.text


def test_a_repeated_document_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # QueryDepthLimiter and MaxAliasesLimiter made per operation would key every validation
    # anew; build_schema shares their rules so that the validation cache hits.
    validated: list[object] = []

    def counting(*args: object) -> object:
        validated.append(args[1])
        return real(*args)  # type: ignore[arg-type]

    real = validate_document  # what gateway.schema calls, replaced below
    monkeypatch.setattr(gateway_schema, "validate_document", counting)
    schema = build_schema(make_settings())
    document = "{ repeated: __typename }"

    for _ in range(3):
        assert schema.execute_sync(document).errors is None

    assert len(validated) == 1


def test_the_validation_cache_keys_by_text_and_keeps_each_documents_own_errors() -> None:
    schema = build_schema(make_settings())
    good, bad = "{ textKeyed: __typename }", "{ textKeyedNoSuchField }"

    for _ in range(2):
        assert schema.execute_sync(good).errors is None
        errors = schema.execute_sync(bad).errors
        assert errors
        assert "textKeyedNoSuchField" in errors[0].message


def test_the_validation_cache_is_bounded() -> None:
    schema = build_schema(make_settings())
    for n in range(DOCUMENT_CACHE_SIZE + 5):
        assert schema.execute_sync(f"{{ bounded{n}: __typename }}").errors is None

    assert len(TextKeyedValidationCache._entries) <= DOCUMENT_CACHE_SIZE


# --- CORS ----------------------------------------------------------------------------------------


def preflight(origin: str, headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    }


async def test_a_preflight_from_an_allowed_origin_is_allowed_with_the_api_headers(
    state: SandboxState,
) -> None:
    requested = "authorization, content-type, x-almanac-token, x-autoposting-api-key, x-request-id"
    async with client_of(state, GATEWAY_CORS_ORIGINS=ALLOWED_ORIGIN) as client:
        response = await client.options(GRAPHQL, headers=preflight(ALLOWED_ORIGIN, requested))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in requested.split(",")} <= {h.lower() for h in allowed}
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    assert state.count() == 0


async def test_a_preflight_from_another_origin_is_refused_with_a_json_error(
    state: SandboxState,
) -> None:
    async with client_of(state, GATEWAY_CORS_ORIGINS=ALLOWED_ORIGIN) as client:
        response = await client.options(GRAPHQL, headers=preflight("https://evil.example.net"))

    assert_json_refusal(response, 400, "NOT_ALLOWED", "Disallowed CORS origin")
    assert "access-control-allow-origin" not in response.headers
    assert state.count() == 0


async def test_responses_to_an_allowed_origin_carry_cors_headers_refusals_included(
    state: SandboxState,
) -> None:
    origin = {"origin": ALLOWED_ORIGIN}
    async with client_of(state, GATEWAY_CORS_ORIGINS=ALLOWED_ORIGIN) as client:
        answered = await client.post(
            GRAPHQL, json={"query": "{ __typename }"}, headers={**KEY, **origin}
        )
        refused = await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=origin)
        foreign = await client.post(
            GRAPHQL,
            json={"query": "{ __typename }"},
            headers={**KEY, "origin": "https://evil.example.net"},
        )

    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "access-control-allow-origin" not in foreign.headers


async def test_without_configured_origins_there_are_no_cors_headers(
    state: SandboxState,
) -> None:
    async with client_of(state) as client:
        options = await client.options(GRAPHQL, headers=preflight(ALLOWED_ORIGIN))
        post = await client.post(
            GRAPHQL, json={"query": "{ __typename }"}, headers={**KEY, "origin": ALLOWED_ORIGIN}
        )

    assert_json_refusal(options, 405, "INVALID_QUERY", "GET and POST")
    assert post.status_code == 200
    for response in (options, post):
        assert not [h for h in response.headers if h.startswith("access-control-")]


# --- masking -------------------------------------------------------------------------------------


async def test_an_unexpected_exception_is_masked_in_the_body_and_detailed_in_the_log(
    state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    transports = {**sandbox_transports(state), Provider.ALMANAC: ExplodingTransport()}
    async with serve(make_settings(), transports) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": BILLING_ACCOUNT, "variables": {"provider": "ALMANAC", "id": "org_acme"}},
            headers=KEY,
        )

    assert response.status_code == 200
    [error] = response.json()["errors"]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL"}
    assert "kaboom" not in response.text
    assert "RuntimeError" not in response.text
    logged = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    assert "RuntimeError" in logged
    assert "kaboom: internal detail 7f3a" in caplog.text


async def test_a_failure_outside_graphql_is_a_json_500_without_detail(
    state: SandboxState,
) -> None:
    # Served without the lifespan's state, the endpoint cannot reach its clients: a bug.
    async with serve(
        make_settings(), sandbox_transports(state), raise_app_exceptions=False, lifespan=False
    ) as client:
        response = await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=KEY)

    error = assert_json_refusal(response, 500, "INTERNAL", "Unexpected error.")
    assert error["message"] == "Unexpected error."
    assert "clients" not in response.text
