"""One home for each error code and refusal: `ErrorCode`, the GraphQL enum mirroring it, the
gateway's own outage as a typed error, and one 401 for every endpoint that needs a key."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import gateway.errors
from gateway.checkout.redis_store import RedisIdempotencyStore, open_redis
from gateway.errors import EDGE_CODES, ErrorCode, GatewayError
from gateway.sandbox import SandboxState
from gateway.schema.enums import ErrorCodeEnum, from_domain
from tests.support import AUTOPOSTING_CHECKOUT, Gateway, client_of, make_settings

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
# Where codes are declared: the enum and its GraphQL mirror. The sandbox plays the upstreams.
DECLARING = {PACKAGE / "errors.py", PACKAGE / "schema" / "enums.py"}
CODES = {code.value for code in ErrorCode}
START_CHECKOUT = """
mutation($input: StartCheckoutInput!) {
  startCheckout(input: $input) {
    __typename
    ... on Error { code message provider }
    ... on GatewayUnavailableError { retryable retryAfterSeconds }
  }
}
"""


def _code_strings(path: Path) -> list[str]:
    """String literals of `path` that are an error code, outside `__all__`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exported = {
        id(constant)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for constant in ast.walk(node.value)
    }
    return [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in CODES and id(node) not in exported
    ]


def test_no_module_spells_an_error_code_as_a_string_of_its_own() -> None:
    modules = sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if path not in DECLARING and "sandbox" not in path.relative_to(PACKAGE).parts
    )

    assert [found for path in modules for found in _code_strings(path)] == []


def test_the_graphql_error_code_enum_is_every_code_but_the_edge_refusals() -> None:
    # Each code's name is its value (ErrorCode).
    assert {member.name for member in ErrorCodeEnum} == {
        code.name for code in ErrorCode if code not in EDGE_CODES
    }


def _exception_classes() -> list[type[GatewayError]]:
    return [
        cls
        for _, cls in inspect.getmembers(gateway.errors, inspect.isclass)
        if issubclass(cls, GatewayError)
    ]


@pytest.mark.parametrize("error_class", _exception_classes(), ids=lambda cls: cls.__name__)
def test_every_exception_code_is_a_value_of_the_graphql_enum(
    error_class: type[GatewayError],
) -> None:
    assert error_class.code not in EDGE_CODES
    assert from_domain(ErrorCodeEnum, error_class.code).name == error_class.code.name


async def test_with_the_idempotency_store_down_a_checkout_is_the_gateways_own_retryable_error(
    state: SandboxState,
) -> None:
    settings = make_settings()
    # Nothing listens on port 1: every Redis command fails at once, as with Redis down.
    redis = open_redis("redis://127.0.0.1:1/0", connect_timeout=0.5)
    store = RedisIdempotencyStore(redis, settings.idempotency_ttl)
    gateway = Gateway(settings=settings, state=state, idempotency=store)
    try:
        data = await gateway.execute(
            START_CHECKOUT, {"input": {**AUTOPOSTING_CHECKOUT, "idempotencyKey": "order-1"}}
        )
    finally:
        await gateway.aclose()
        await redis.aclose()

    payload = data["startCheckout"]
    assert payload["__typename"] == "GatewayUnavailableError"
    assert payload["code"] == "GATEWAY_UNAVAILABLE"
    assert payload["provider"] == "AUTOPOSTING"
    assert payload["retryable"] is True
    assert payload["retryAfterSeconds"] is None
    assert "idempotency store" in payload["message"]
    assert state.count() == 0  # not the checkout, not even the profile check


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Bearer wrong-key", id="a-wrong-key"),
        pytest.param("Basic dXNlcjpwYXNz", id="another-scheme"),
        pytest.param("", id="an-empty-header"),
    ],
)
async def test_graphql_and_metrics_refuse_a_missing_or_wrong_key_with_the_same_401(
    state: SandboxState, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    async with client_of(state) as client:
        graphql = await client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
        metrics = await client.get("/metrics", headers=headers)

    for refusal in (graphql, metrics):
        assert refusal.status_code == 401
        assert refusal.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert metrics.json() == graphql.json()
    assert metrics.headers["www-authenticate"] == graphql.headers["www-authenticate"]
    assert metrics.headers["www-authenticate"] == (
        "Bearer" if authorization is None else 'Bearer error="invalid_token"'
    )
