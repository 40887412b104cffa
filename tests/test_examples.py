"""The example operations (README, GraphiQL's tabs, docs/codegen/) are ones a client should copy:
valid against the schema, and keyable by a normalized cache (Apollo, urql's Graphcache, Relay)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import (
    FieldNode,
    GraphQLObjectType,
    TypeInfo,
    Visitor,
    get_named_type,
    parse,
    validate,
    visit,
)
from graphql.utilities import TypeInfoVisitor

from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.schema import build_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = build_schema()._schema


def _examples() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```graphql\n(.*?)```", readme, re.S)
    examples = {f"README block {i + 1}": block for i, block in enumerate(blocks)}
    examples["EXAMPLE_QUERY"] = EXAMPLE_QUERY
    examples["EXAMPLE_MUTATION"] = EXAMPLE_MUTATION
    for path in sorted((ROOT / "docs" / "codegen" / "operations").glob("*.graphql")):
        examples[f"docs/codegen/{path.name}"] = path.read_text(encoding="utf-8")
    return examples


EXAMPLES = _examples()


class _ObjectsWithoutId(Visitor):
    """Collects each object selection of a type with an `id` field that does not select it."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.missing: list[str] = []

    def enter_field(self, node: FieldNode, *_: object) -> None:
        field = self.type_info.get_field_def()
        if field is None or node.selection_set is None:
            return
        named = get_named_type(field.type)
        if isinstance(named, GraphQLObjectType) and "id" in named.fields:
            selected = {
                s.name.value for s in node.selection_set.selections if isinstance(s, FieldNode)
            }
            if "id" not in selected:
                self.missing.append(f"{node.name.value}: {named.name}")


def test_there_are_examples_to_check() -> None:
    assert len([name for name in EXAMPLES if name.startswith("README")]) >= 3


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_operation_is_valid_against_the_schema(name: str) -> None:
    assert validate(SCHEMA, parse(EXAMPLES[name])) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_an_example_selects_id_on_every_object_that_has_one(name: str) -> None:
    type_info = TypeInfo(SCHEMA)
    visitor = _ObjectsWithoutId(type_info)
    visit(parse(EXAMPLES[name]), TypeInfoVisitor(type_info, visitor))

    assert visitor.missing == []
