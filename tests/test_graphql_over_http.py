"""The GraphQL-over-HTTP spec: content negotiation and the status codes of each media type.

A client whose Accept prefers `application/graphql-response+json` gets that media type and its
status codes (200 when execution happened, 4xx for request errors, which have no `data` entry);
any other client gets `application/json` and a 200 for every GraphQL error, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.http.negotiation import preferred_media_type
from gateway.provider import Provider
from gateway.sandbox import SandboxState
from tests.support import (
    BILLING_ACCOUNT,
    FOUR_LEVELS,
    TEST_API_KEY,
    ExplodingTransport,
    client_of,
    make_settings,
    sandbox_transports,
    serve,
)

GRAPHQL = "/graphql"
NEW = "application/graphql-response+json"
LEGACY = "application/json"
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
MUTATION_BY_GET = (
    'mutation { startCheckout(input: {provider: AUTOPOSTING, planId: "plan_pro"}) { __typename } }'
)


@dataclass(frozen=True)
class Row:
    """One request, and its status and error code under each media type (None: no error)."""

    request: dict[str, Any]
    new_status: int
    legacy_status: int
    code: str | None
    method: str = "POST"
    environ: dict[str, str] = field(default_factory=dict)


def body(query: str, **extra: Any) -> dict[str, Any]:
    return {"json": {"query": query, **extra}}


# The spec's status table, row by row, for what this gateway implements.
ROWS = [
    pytest.param(Row(body("{ __typename }"), 200, 200, None), id="success"),
    pytest.param(
        Row({"params": {"query": "{ __typename }"}}, 200, 200, None, method="GET"),
        id="success-by-get",
    ),
    pytest.param(Row(body("{ __typename"), 400, 200, "INVALID_QUERY"), id="document-parse-error"),
    pytest.param(
        Row(body("{ noSuchField }"), 400, 200, "INVALID_QUERY"), id="document-validation-error"
    ),
    pytest.param(
        Row(body(FOUR_LEVELS), 400, 200, "INVALID_QUERY", environ={"GATEWAY_MAX_QUERY_DEPTH": "2"}),
        id="query-limit-validation-error",
    ),
    pytest.param(
        Row(
            body(BILLING_ACCOUNT, variables={"provider": 5, "id": "org_acme"}),
            400,
            200,
            "INVALID_QUERY",
        ),
        id="variable-coercion-error",
    ),
    pytest.param(
        Row(body(BILLING_ACCOUNT, variables={"id": "org_acme"}), 400, 200, "INVALID_QUERY"),
        id="missing-required-variable",
    ),
    pytest.param(
        Row(
            {"content": b'{"query": ', "headers": {"content-type": LEGACY}},
            400,
            400,
            "INVALID_QUERY",
        ),
        id="json-parse-error",
    ),
    pytest.param(Row(body(""), 400, 400, "INVALID_QUERY"), id="no-query"),
    pytest.param(
        Row(
            body("query A { __typename } query B { __typename }", operationName="C"),
            400,
            400,
            "INVALID_QUERY",
        ),
        id="unknown-operation-name",
    ),
    pytest.param(
        Row({"params": {"query": MUTATION_BY_GET}}, 405, 400, "INVALID_QUERY", method="GET"),
        id="mutation-by-get",
    ),
]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("accept", [NEW, LEGACY])
async def test_each_row_of_the_status_table_under_each_media_type(
    state: SandboxState, row: Row, accept: str
) -> None:
    headers = {**KEY, "accept": accept, **row.request.get("headers", {})}
    request = {name: value for name, value in row.request.items() if name != "headers"}
    async with client_of(state, **row.environ) as client:
        response = await client.request(row.method, GRAPHQL, headers=headers, **request)

    expected = row.new_status if accept == NEW else row.legacy_status
    assert response.status_code == expected, response.text
    assert response.headers["content-type"] == accept
    assert "accept" in response.headers["vary"].lower()
    payload = response.json()
    if row.code is None:
        assert "errors" not in payload
        assert payload["data"] == {"__typename": "Query"}
        return
    assert [error["extensions"]["code"] for error in payload["errors"]] == [row.code]
    if accept == NEW:
        # A request error, not an execution: no `data` entry.
        assert "data" not in payload
    if response.status_code == 405:
        assert response.headers["allow"] == "POST"
    assert state.count() == 0


@pytest.mark.parametrize("accept", [NEW, LEGACY])
async def test_a_field_error_during_execution_is_a_200_with_data(
    state: SandboxState, accept: str
) -> None:
    transports = {**sandbox_transports(state), Provider.ALMANAC: ExplodingTransport()}
    async with serve(make_settings(), transports) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": BILLING_ACCOUNT, "variables": {"provider": "ALMANAC", "id": "org_acme"}},
            headers={**KEY, "accept": accept},
        )

    assert response.status_code == 200
    assert response.headers["content-type"] == accept
    payload = response.json()
    assert "data" in payload
    assert [error["extensions"]["code"] for error in payload["errors"]] == ["INTERNAL"]


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        pytest.param(NEW, 401, NEW, id="new"),
        pytest.param(LEGACY, 401, LEGACY, id="legacy"),
        pytest.param("text/plain", 401, LEGACY, id="neither-key-checked-first"),
    ],
)
async def test_refusals_before_graphql_use_the_negotiated_media_type(
    state: SandboxState, accept: str, status: int, content_type: str
) -> None:
    async with client_of(state) as client:
        unauthenticated = await client.post(
            GRAPHQL, json={"query": "{ __typename }"}, headers={"accept": accept}
        )

    assert unauthenticated.status_code == status
    assert unauthenticated.headers["content-type"] == content_type


async def test_an_accept_without_a_json_media_type_is_refused_with_406(
    state: SandboxState,
) -> None:
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL, json={"query": "{ __typename }"}, headers={**KEY, "accept": "text/html"}
        )

    assert response.status_code == 406
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "NOT_ACCEPTABLE"
    assert NEW in error["message"]
    assert state.count() == 0


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, LEGACY, id="none"),
        pytest.param("", LEGACY, id="empty"),
        pytest.param("*/*", LEGACY, id="anything"),
        pytest.param("application/*", LEGACY, id="any-application"),
        pytest.param(LEGACY, LEGACY, id="legacy"),
        pytest.param(NEW, NEW, id="new"),
        pytest.param(f"{NEW}, {LEGACY};q=0.9", NEW, id="recommended-by-the-spec"),
        pytest.param(f"{LEGACY}, {NEW}", NEW, id="both-equal-new-named"),
        pytest.param(f"{LEGACY}, {NEW};q=0.5", LEGACY, id="legacy-preferred"),
        pytest.param(f"{NEW};charset=utf-8, */*;q=0.1", NEW, id="parameters"),
        pytest.param("APPLICATION/GRAPHQL-RESPONSE+JSON", NEW, id="case-insensitive"),
        pytest.param(f"{NEW};q=0, */*", LEGACY, id="new-refused"),
        pytest.param("text/html,application/xhtml+xml,*/*;q=0.8", LEGACY, id="browser"),
        pytest.param("text/plain", None, id="neither"),
        pytest.param(f"{NEW};q=0, {LEGACY};q=0", None, id="both-refused"),
        pytest.param(f"{NEW};q=bad", None, id="malformed-quality"),
    ],
)
def test_the_preferred_media_type_of_an_accept_header(
    accept: str | None, expected: str | None
) -> None:
    assert preferred_media_type(accept) == expected
