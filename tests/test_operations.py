"""The operations in tests/operations/, which many tests send, are valid against the schema."""

from __future__ import annotations

import pytest
from graphql import OperationDefinitionNode, parse, validate

from gateway.schema import build_schema
from tests.support import OPERATIONS, operation


@pytest.mark.parametrize("name", sorted(path.stem for path in OPERATIONS.glob("*.graphql")))
def test_each_shared_operation_is_one_named_operation_valid_against_the_schema(name: str) -> None:
    document = parse(operation(name))

    errors = validate(build_schema()._schema, document)

    assert [error.message for error in errors] == []
    [definition] = document.definitions
    assert isinstance(definition, OperationDefinitionNode)
    assert definition.name is not None
