"""The library internals the gateway leans on, each checked where an upgrade would move it.

pyproject.toml caps strawberry-graphql below its next minor version; before raising
a cap, these tests say whether what the code relies on is still there.
"""

from __future__ import annotations

import httptools
import strawberry
from graphql import GraphQLSchema, parse
from strawberry.extensions import ParserCache
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext


@strawberry.type
class _Query:
    @strawberry.field
    def seen(self, info: strawberry.Info) -> str:
        # gateway/schema/selection.py reads graphql-core's resolve info behind Strawberry's.
        raw = info._raw_info
        assert isinstance(raw.fragments, dict)
        return ",".join(node.name.value for node in raw.field_nodes)


def test_strawberry_info_carries_field_nodes_and_fragments_in_raw_info() -> None:
    result = strawberry.Schema(query=_Query).execute_sync("{ seen }")

    assert result.errors is None
    assert result.data == {"seen": "seen"}


def test_a_strawberry_schema_holds_its_graphql_core_schema_as_schema() -> None:
    # gateway/schema/__init__.py: TextKeyedValidationCache validates against it.
    assert isinstance(strawberry.Schema(query=_Query)._schema, GraphQLSchema)


def test_strawberry_validate_document_takes_schema_document_and_rules() -> None:
    schema = strawberry.Schema(query=_Query)._schema

    assert validate_document(schema, parse("{ seen }"), ()) == []
    assert validate_document(schema, parse("{ nope }"), ()) == []  # no rules, no errors


def test_the_execution_context_carries_parse_options_and_graphql_document() -> None:
    # gateway/schema/__init__.py: ReportingParserCache's on_parse reads and sets these.
    assert {"parse_options", "graphql_document"} <= set(ExecutionContext.__dataclass_fields__)
    assert issubclass(ParserCache, object)


def test_httptools_tells_keep_alive_at_the_head_and_forgets_it_once_the_answer_is_whole() -> None:
    # gateway/upstreams/transport.py asks at on_headers_complete, where the answer is right.
    seen: list[bool] = []

    class Answer:
        def on_headers_complete(self) -> None:
            seen.append(parser.should_keep_alive())

    parser = httptools.HttpResponseParser(Answer())
    parser.feed_data(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")

    assert seen == [True]
    assert parser.should_keep_alive() is False
