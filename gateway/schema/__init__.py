"""The GraphQL schema: Strawberry types over the loaders, assembled with its extensions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from functools import partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.printer import print_schema
from strawberry.types import ExecutionContext

from gateway.schema.errors import ErrorFormatting, GatewayErrorHandler
from gateway.schema.operations import Mutation, Query
from gateway.settings import (
    DEFAULT_MAX_ALIASES,
    DEFAULT_MAX_QUERY_DEPTH,
    DEFAULT_MAX_TOKENS,
    Settings,
)

logger = logging.getLogger("gateway.graphql")

# Bounded caches: a client that sends endless distinct documents cannot grow memory without end.
DOCUMENT_CACHE_SIZE = 512


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, logging GraphQL errors at DEBUG instead of ERROR.

    Expected failures are part of the result and client errors are the client's; every
    unexpected exception is logged at ERROR, with its traceback, by `ErrorFormatting`.
    """

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            logger.debug("GraphQL error at %s: %s", error.path, error.message)


def build_schema(
    settings: Settings | None = None, *, more: Iterable[Callable[[], SchemaExtension]] = ()
) -> strawberry.Schema:
    """The gateway's schema with its query limits, caches and error handling, plus `more`
    extensions (the app's tracing).

    Without `settings` (`export-schema`, schema tests): the default limits, introspection on.
    """
    max_depth = settings.max_query_depth if settings else DEFAULT_MAX_QUERY_DEPTH
    max_aliases = settings.max_aliases if settings else DEFAULT_MAX_ALIASES
    max_tokens = settings.max_tokens if settings else DEFAULT_MAX_TOKENS
    # Factories, as Strawberry asks: a fresh extension per operation; the parser and validation
    # caches live at module level, shared by every operation.
    extensions: list[Callable[[], SchemaExtension]] = [
        ErrorFormatting,
        partial(ReportingParserCache, maxsize=DOCUMENT_CACHE_SIZE),
        partial(ValidationCache, maxsize=DOCUMENT_CACHE_SIZE),
        _validation_limits(max_depth=max_depth, max_aliases=max_aliases),
        partial(MaxTokensLimiter, max_token_count=max_tokens),
    ]
    if settings is not None and not settings.introspection:
        extensions.append(DisableIntrospection)
    extensions.extend(more)
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        exception_handlers=[GatewayErrorHandler()],
        extensions=extensions,
    )


class ReportingParserCache(ParserCache):
    """ParserCache, leaving a document it cannot parse to Strawberry's own parse step.

    ParserCache parses while its hook is entered, outside the parse step's error handling (as of
    Strawberry 0.341): a syntax error, or MaxTokensLimiter's, would escape every extension and
    reach the caller without `extensions.code`. Strawberry's parse step parses such a document
    again and reports its error like any other, so that `ErrorFormatting` sees it.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            context.graphql_document = None
        yield


def _validation_limits(*, max_depth: int, max_aliases: int) -> Callable[[], SchemaExtension]:
    """QueryDepthLimiter and MaxAliasesLimiter, as one factory that reuses their rules.

    Each instance of those extensions makes new validation rule classes, and ValidationCache keys
    its entries by the rule classes: instances made per operation would never hit the cache. The
    rules are made once here, for every operation.
    """
    rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    return partial(AddValidationRules, rules)


def schema_sdl(schema: strawberry.Schema | None = None) -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return print_schema(schema or build_schema()) + "\n"


__all__ = ["build_schema", "schema_sdl"]
