"""The GraphQL schema: Strawberry types over the loaders, assembled with its extensions."""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.printer import print_schema

from gateway.schema.errors import ErrorFormatting, GatewayErrorHandler
from gateway.schema.operations import Mutation, Query

# Bounded caches: a client that sends endless distinct documents cannot grow memory without end.
DOCUMENT_CACHE_SIZE = 512
MAX_QUERY_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000


def build_schema() -> strawberry.Schema:
    """The gateway's schema with its query limits, caches and error handling."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        exception_handlers=[GatewayErrorHandler()],
        extensions=[
            # Factories, as Strawberry asks: a fresh extension per operation; the parser and
            # validation caches live at module level, shared by every operation.
            ErrorFormatting,
            partial(ParserCache, maxsize=DOCUMENT_CACHE_SIZE),
            partial(ValidationCache, maxsize=DOCUMENT_CACHE_SIZE),
            partial(QueryDepthLimiter, max_depth=MAX_QUERY_DEPTH),
            partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
            partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        ],
    )


def schema_sdl(schema: strawberry.Schema | None = None) -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return print_schema(schema or build_schema()) + "\n"


__all__ = ["build_schema", "schema_sdl"]
