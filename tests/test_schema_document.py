"""The schema as codegen tools and GraphiQL see it: committed SDL, descriptions, error mapping."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import get_args

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLUnionType,
)

import gateway.errors
from gateway.__main__ import main
from gateway.errors import CheckoutLimit, CheckoutLimitReached, GatewayError, GatewayUnavailable
from gateway.schema import build_schema, schema_sdl
from gateway.schema.errors import (
    CHECKOUT_ERROR_TYPES,
    ERROR_TYPES,
    CheckoutErrorType,
    CheckoutLimitError,
    ErrorType,
    GatewayUnavailableError,
    to_checkout_error,
    to_graphql_error,
)
from gateway.schema.operations import (
    BillingAccountResult,
    CheckoutPreviewResult,
    StartCheckoutPayload,
)

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "billing-gateway export-schema --output schema.graphql"


def test_the_committed_schema_graphql_matches_the_code() -> None:
    committed = (ROOT / "schema.graphql").read_text(encoding="utf-8")

    assert committed == schema_sdl(), f"schema.graphql is stale: regenerate it with `{REGENERATE}`"


def test_export_schema_prints_the_sdl_or_writes_it_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export-schema"]) == 0
    assert capsys.readouterr().out == schema_sdl()

    target = tmp_path / "schema.graphql"
    assert main(["export-schema", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == schema_sdl()


def test_every_type_field_argument_and_enum_value_has_a_description() -> None:
    schema = build_schema()._schema
    missing: list[str] = []
    for name, graphql_type in schema.type_map.items():
        if name.startswith("__") or name in {"String", "Boolean", "Int", "Float", "ID"}:
            continue
        if not graphql_type.description:
            missing.append(name)
        if isinstance(graphql_type, GraphQLObjectType | GraphQLInterfaceType):
            for field_name, field in graphql_type.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                missing.extend(
                    f"{name}.{field_name}({arg_name})"
                    for arg_name, arg in field.args.items()
                    if not arg.description
                )
        elif isinstance(graphql_type, GraphQLInputObjectType):
            missing.extend(
                f"{name}.{field_name}"
                for field_name, field in graphql_type.fields.items()
                if not field.description
            )
        elif isinstance(graphql_type, GraphQLEnumType):
            missing.extend(
                f"{name}.{value_name}"
                for value_name, value in graphql_type.values.items()
                if not value.description
            )

    assert missing == []


def _gateway_errors() -> list[type[GatewayError]]:
    return [
        cls
        for _, cls in inspect.getmembers(gateway.errors, inspect.isclass)
        if issubclass(cls, GatewayError) and cls is not GatewayError
    ]


@pytest.mark.parametrize("error_class", _gateway_errors(), ids=lambda cls: cls.__name__)
def test_every_exception_class_maps_to_a_graphql_error_type(
    error_class: type[GatewayError],
) -> None:
    # Every leaf of the tree is expected; none is left to become an INTERNAL top-level error.
    from gateway.provider import Provider

    if issubclass(error_class, CheckoutLimitReached):  # a checkout's own: StartCheckoutPayload
        exc: GatewayError = error_class(
            "safe message",
            limit=CheckoutLimit.CALLER_RATE,
            retry_after=1,
            provider=Provider.ALMANAC,
        )
        error: ErrorType | CheckoutErrorType = to_checkout_error(exc)
        assert isinstance(error, CheckoutLimitError)
    elif issubclass(error_class, GatewayUnavailable):  # the gateway's own outage: a checkout's
        exc = error_class("safe message", provider=Provider.ALMANAC)
        error = to_checkout_error(exc)
        assert isinstance(error, GatewayUnavailableError)
    else:
        exc = error_class("safe message", provider=Provider.ALMANAC)
        error = to_graphql_error(exc)
        assert isinstance(error, ErrorType)
    assert error.code.name == exc.code.name
    assert error.message == "safe message"


def test_every_result_union_holds_every_graphql_error_type() -> None:
    schema = build_schema()._schema
    error_types = {typ.__name__ for _, typ in ERROR_TYPES}
    for union in (BillingAccountResult, StartCheckoutPayload, CheckoutPreviewResult):
        name = get_args(union)[1].graphql_name  # Annotated[Union[...], strawberry.union(...)]
        graphql_union = schema.type_map[name]
        assert isinstance(graphql_union, GraphQLUnionType)
        assert error_types <= {member.name for member in graphql_union.types}, name
    payload = schema.type_map["StartCheckoutPayload"]
    assert isinstance(payload, GraphQLUnionType)
    assert {typ.__name__ for _, typ in CHECKOUT_ERROR_TYPES} <= {t.name for t in payload.types}
