"""The GraphQL schema: Strawberry types over the loaders, assembled with its extensions."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import ClassVar

import strawberry
from graphql import GraphQLError, GraphQLSchema
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
from strawberry.schema.schema import validate_document
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
        partial(TextKeyedValidationCache, maxsize=DOCUMENT_CACHE_SIZE),
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


class TextKeyedValidationCache(ValidationCache):
    """ValidationCache keyed by the operation's text instead of its syntax tree.

    Strawberry's cache is an lru_cache over the DocumentNode, and graphql-core hashes a node by
    walking its whole tree: every lookup of a cached document paid a deep hash, 25-30 us for the
    benchmark's documents, 2% of a one-account query (BENCHMARKS.md). The text names the same
    document (the parser is deterministic, and ParserCache keys by it too), so it keys the same
    results. Entries are shared by every operation of the process, least recently used first out
    beyond `maxsize`.
    """

    # (schema id, text, rules) -> (the schema, its errors): the entry holds the schema, so that
    # its id cannot name another schema while the entry is kept.
    _entries: ClassVar[
        OrderedDict[tuple[int, str, tuple[object, ...]], tuple[GraphQLSchema, list[GraphQLError]]]
    ] = OrderedDict()

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.maxsize = maxsize

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.query is None or document is None:
            yield from super().on_validate()
            return
        schema = context.schema._schema
        rules = tuple(context.validation_rules)
        key = (id(schema), context.query, rules)
        entries = self._entries
        entry = entries.get(key)
        if entry is None or entry[0] is not schema:
            entry = entries[key] = (schema, validate_document(schema, document, rules))
            while len(entries) > self.maxsize:
                entries.popitem(last=False)
        else:
            entries.move_to_end(key)
        context.pre_execution_errors = entry[1]
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


__all__ = ["TextKeyedValidationCache", "build_schema", "schema_sdl"]
