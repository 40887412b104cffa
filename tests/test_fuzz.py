"""A property-based fuzz of the GraphQL endpoint: operations generated from the schema itself.

Valid documents (hypothesis-graphql's positive mode) and invalid ones (negative mode) go through
the whole app over HTTP, against the sandbox upstreams in process. None may answer a 500, and no
error may be an unmasked or unexpected one: every error carries a code, and none is INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_graphql import Mode, from_schema

from gateway.app import create_app
from gateway.provider import Provider
from gateway.sandbox import SandboxState, create_almanac_app, create_autoposting_app
from gateway.schema import schema_sdl
from tests.servers import ServerThread
from tests.support import TEST_API_KEY, make_settings

# Run by `make test`, left out of `make test-fast`.
pytestmark = pytest.mark.slow

SCHEMA = schema_sdl()
CODES = {
    "INVALID_INPUT", "IDEMPOTENCY_CONFLICT", "UNAUTHENTICATED", "NOT_ALLOWED",
    "BILLING_SUSPENDED", "NOT_FOUND", "UPSTREAM_REJECTED", "RATE_LIMITED",
    "UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "UPSTREAM_UNREACHABLE", "UPSTREAM_BAD_RESPONSE",
    "INVALID_QUERY",
}  # fmt: skip
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    state = SandboxState()
    transports: dict[Provider, httpx.AsyncBaseTransport] = {
        Provider.ALMANAC: httpx.ASGITransport(app=create_almanac_app(state)),
        Provider.AUTOPOSTING: httpx.ASGITransport(app=create_autoposting_app(state)),
    }
    settings = make_settings(GATEWAY_MAX_ACCOUNTS_PER_REQUEST="5")
    with (
        ServerThread(lambda _url: create_app(settings, transports=transports)) as server,
        httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {TEST_API_KEY}"}
        ) as http,
    ):
        yield http


def assert_handled(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body: Any = response.json()
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code in CODES, error
        assert "Traceback" not in error["message"]


@FUZZ
@given(operation=from_schema(SCHEMA, allow_x00=False))
def test_a_generated_valid_operation_never_gets_a_500_or_an_unexpected_error(
    client: httpx.Client, operation: str
) -> None:
    assert_handled(client.post("/graphql", json={"query": operation}))


@FUZZ
@given(operation=from_schema(SCHEMA, mode=Mode.NEGATIVE, allow_x00=False))
def test_a_generated_invalid_operation_is_refused_with_a_clear_error(
    client: httpx.Client, operation: str
) -> None:
    response = client.post("/graphql", json={"query": operation})

    assert_handled(response)
    assert response.json().get("errors")
