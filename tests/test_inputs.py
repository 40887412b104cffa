"""Input types built by `leaf_input` are the same values Strawberry's own conversion builds."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from graphql import GraphQLInputObjectType
from strawberry.types.arguments import InputContext, convert_argument

from gateway.schema import build_schema
from gateway.schema.enums import ProviderEnum
from gateway.schema.inputs import leaf_input

SCHEMA = build_schema()


def input_types() -> list[type]:
    found = []
    for named in SCHEMA._schema.type_map.values():
        if isinstance(named, GraphQLInputObjectType):
            definition = named.extensions["strawberry-definition"]
            found.append(definition.origin)
    return found


def strawberrys_own(cls: type, value: dict[str, Any]) -> object:
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    own, definition.from_input = definition.from_input, None
    try:
        return convert_argument(value, cls, SCHEMA.schema_converter.scalar_registry, SCHEMA.config)
    finally:
        definition.from_input = own


def values(cls: type) -> list[dict[str, Any]]:
    """Every field given, only the required ones, and every nullable one an explicit null."""
    named = SCHEMA._schema.type_map[cls.__strawberry_definition__.name]  # type: ignore[attr-defined]
    assert isinstance(named, GraphQLInputObjectType)
    every: dict[str, Any] = {}
    required: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    for name, field in named.fields.items():
        sample = ProviderEnum.ALMANAC if "provider" in name.lower() else f"{name}-value"
        every[name] = sample
        if field.type.__class__.__name__ == "GraphQLNonNull":
            required[name] = sample
            nulls[name] = sample
        else:
            nulls[name] = None
    return [every, required, nulls]


def test_every_input_type_of_the_schema_builds_itself_from_leaves() -> None:
    types = input_types()

    assert {cls.__name__ for cls in types} >= {
        "AccountInput",
        "StartCheckoutInput",
        "CheckoutPreviewInput",
    }
    for cls in types:
        assert cls.__strawberry_definition__.from_input is not None, cls  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", input_types(), ids=lambda cls: cls.__name__)
def test_a_leaf_input_is_the_value_strawberrys_conversion_builds(cls: type) -> None:
    for value in values(cls):
        context = InputContext(
            info=None,
            config=SCHEMA.config,
            scalar_registry=SCHEMA.schema_converter.scalar_registry,
            path=(),
        )
        ours = cls.__strawberry_definition__.from_input(cls, value, context)  # type: ignore[attr-defined]
        assert ours == strawberrys_own(cls, value), value
        assert type(ours) is cls


def test_an_input_with_a_field_that_is_not_a_leaf_is_refused() -> None:
    @strawberry.input
    class Inner:
        name: str

    @strawberry.input
    class Outer:
        inner: Inner

    with pytest.raises(TypeError, match=r"Outer\.inner is not a leaf"):
        leaf_input(Outer)
