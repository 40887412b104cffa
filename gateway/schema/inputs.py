"""Input types built straight from graphql-core's coerced values.

Strawberry converts an input argument field by field (`convert_argument`), resolving each field's
type annotation again on every request: for `startCheckout`'s input about a tenth of the
mutation's CPU, and as much again for each entry of `billingAccounts(accounts:)`
(BENCHMARKS.md). An input whose fields are all leaves (scalars, enums, and nullable ones of
those) needs none of it: graphql-core has already coerced each value (an enum to its member), and
Strawberry's conversion returns a leaf's value as it is. `leaf_input` gives such a type a
`from_input` (Strawberry's hook for inputs that build their own value) doing just that: the
keyword arguments by field name, None for an absent field without a default, as Strawberry's
conversion would. tests/test_inputs.py compares the two on every input type of the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any, TypeVar

from strawberry.schema.types.scalar import DEFAULT_SCALAR_REGISTRY
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.scalar import ScalarDefinition, ScalarWrapper

InputType = TypeVar("InputType", bound=type)


def is_leaf(type_: StrawberryType | type) -> bool:
    """Whether Strawberry hands a value of `type_` to a resolver as graphql-core gave it."""
    if isinstance(type_, StrawberryMaybe | StrawberryList):
        return False
    if isinstance(type_, StrawberryOptional):
        return is_leaf(type_.of_type)
    return (
        type_ in DEFAULT_SCALAR_REGISTRY
        or isinstance(type_, ScalarDefinition | ScalarWrapper | StrawberryEnumDefinition)
        or has_enum_definition(type_)
    )


def leaf_input(cls: InputType) -> InputType:
    """Give the Strawberry input type `cls`, whose fields must all be leaves, a `from_input`
    that builds it without Strawberry's per-field conversion (TypeError here if one is not)."""
    definition: StrawberryObjectDefinition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    absent: dict[str, None] = {}
    for field in definition.fields:
        type_ = field.resolve_type(type_definition=definition)
        if not is_leaf(type_):
            raise TypeError(f"{cls.__name__}.{field.python_name} is not a leaf: {type_!r}")
        if field.default_value is MISSING and field.default_factory is MISSING:
            absent[field.python_name] = None
    # (GraphQL name, Python name) of each field, by the schema's name converter: on first use.
    names: list[tuple[str, str]] = []

    def build(type_: type, value: Mapping[str, Any], context: InputContext) -> object:
        if not names:
            names.extend(
                (context.config.name_converter.from_field(field), field.python_name)
                for field in definition.fields
            )
        kwargs: dict[str, object] = dict(absent)
        for graphql_name, python_name in names:
            if graphql_name in value:
                kwargs[python_name] = value[graphql_name]
        return type_(**kwargs)

    definition.from_input = build
    return cls
