"""The GraphQL schema: Strawberry types over the loaders, assembled with its extensions."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import ClassVar

import strawberry
from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.printer import print_schema
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

from gateway.execution import PlanCache, planned_executor
from gateway.schema.errors import ErrorFormatting, GatewayErrorHandler
from gateway.schema.limits import (
    DocumentMeasure,
    QueryLimits,
    QueryLimitsRule,
    limits_rule,
    request_errors,
)
from gateway.schema.operations import Mutation, Query
from gateway.settings import (
    DEFAULT_COMPILE_THRESHOLD,
    DEFAULT_MAX_ACCOUNTS_PER_REQUEST,
    DEFAULT_MAX_ALIASES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_MERGE_PAIRS,
    DEFAULT_MAX_QUERY_COST,
    DEFAULT_MAX_QUERY_DEPTH,
    DEFAULT_MAX_TOKENS,
    DEFAULT_PLAN_CACHE_SIZE,
    Settings,
)

logger = logging.getLogger("gateway.graphql")

# Bounded caches: a client that sends endless distinct documents cannot grow memory without end.
DOCUMENT_CACHE_SIZE = 512
# Tokens of all the documents the parser cache keeps: a hundred of the largest documents the token
# limit allows (what a token costs in memory: docs/performance.md).
DOCUMENT_CACHE_TOKENS = 100_000


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, logging GraphQL errors at DEBUG instead of ERROR.

    Expected failures are part of the result and client errors are the client's; every
    unexpected exception is logged at ERROR, with its traceback, by `ErrorFormatting`.
    `plans` holds the compiled plans of its hot operations (None: compiled execution is off).
    """

    plans: PlanCache | None = None

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            logger.debug("GraphQL error at %s: %s", error.path, error.message)


def build_schema(
    settings: Settings | None = None, *, more: Iterable[Callable[[], SchemaExtension]] = ()
) -> GatewaySchema:
    """The gateway's schema with its query limits, caches and error handling, plus `more`
    extensions (the app's tracing).

    Without `settings` (`export-schema`, schema tests): the default limits, introspection on.
    """
    limits = QueryLimits(
        max_depth=settings.max_query_depth if settings else DEFAULT_MAX_QUERY_DEPTH,
        max_aliases=settings.max_aliases if settings else DEFAULT_MAX_ALIASES,
        max_accounts=(
            settings.max_accounts_per_request if settings else DEFAULT_MAX_ACCOUNTS_PER_REQUEST
        ),
        max_fields=settings.max_fields if settings else DEFAULT_MAX_FIELDS,
        max_merge_pairs=settings.max_merge_pairs if settings else DEFAULT_MAX_MERGE_PAIRS,
        max_cost=settings.max_query_cost if settings else DEFAULT_MAX_QUERY_COST,
    )
    max_tokens = settings.max_tokens if settings else DEFAULT_MAX_TOKENS
    # Factories, as Strawberry asks: a fresh extension per operation; the parser and validation
    # caches live at module level, shared by every operation.
    extensions: list[Callable[[], SchemaExtension]] = [
        ErrorFormatting,
        partial(ReportingParserCache, maxsize=DOCUMENT_CACHE_SIZE),
        partial(TextKeyedValidationCache, maxsize=DOCUMENT_CACHE_SIZE),
        # Made once here, for every operation: ValidationCache keys its entries by rule classes.
        partial(AddValidationRules, [limits_rule(limits)]),
        partial(MaxTokensLimiter, max_token_count=max_tokens),
    ]
    if settings is not None and not settings.introspection:
        extensions.append(DisableIntrospection)
    extensions.extend(more)
    # Compiled plans for hot operations (gateway/execution/), unless switched off; an operation
    # run with resolver middleware (tracing's spans) keeps Strawberry's executor.
    plans = None
    if settings is None or settings.compiled_execution:
        plans = PlanCache(
            threshold=settings.compile_threshold if settings else DEFAULT_COMPILE_THRESHOLD,
            max_entries=settings.plan_cache_size if settings else DEFAULT_PLAN_CACHE_SIZE,
        )
    schema = GatewaySchema(
        query=Query,
        mutation=Mutation,
        exception_handlers=[GatewayErrorHandler()],
        extensions=extensions,
        execution_context_class=planned_executor(plans) if plans is not None else None,
    )
    schema.plans = plans
    return schema


class ReportingParserCache(ParserCache):
    """ParserCache bounded by the size of what it keeps, leaving a document it cannot parse to
    Strawberry's own parse step.

    Strawberry's cache is an lru_cache of `maxsize` documents, whatever their size, and a syntax
    tree keeps its tokens and nodes (docs/performance.md): documents at the token limit would hold
    hundreds of megabytes. Here the documents kept hold at most `max_tokens` tokens in all,
    least recently used first out (and at most `maxsize` documents).

    ParserCache parses while its hook is entered, outside the parse step's error handling (as of
    Strawberry 0.341): a syntax error, or MaxTokensLimiter's, would escape every extension and
    reach the caller without `extensions.code`. Strawberry's parse step parses such a document
    again and reports its error like any other, so that `ErrorFormatting` sees it.
    """

    # (text, parse options) -> (the document, its tokens), shared by every operation.
    _entries: ClassVar[OrderedDict[tuple[str, tuple[object, ...]], tuple[DocumentNode, int]]] = (
        OrderedDict()
    )
    _tokens: ClassVar[int] = 0

    def __init__(self, maxsize: int, max_tokens: int = DOCUMENT_CACHE_TOKENS) -> None:
        super().__init__(maxsize=maxsize)
        self.maxsize = maxsize
        self.max_tokens = max_tokens

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.parse(context.query, context.parse_options)
        except GraphQLError:
            context.graphql_document = None
        yield

    def parse(self, text: str | None, options: Mapping[str, object]) -> DocumentNode:
        """The document of `text`, from the cache or parsed (and kept)."""
        if text is None:
            raise GraphQLError("No query.")
        cls = type(self)
        key = (text, tuple(sorted(options.items())))
        entries = cls._entries
        entry = entries.get(key)
        if entry is not None:
            entries.move_to_end(key)
            return entry[0]
        document = parse(text, **options)  # type: ignore[arg-type]
        tokens = _token_count(document)
        entries[key] = (document, tokens)
        cls._tokens += tokens
        while entries and (cls._tokens > self.max_tokens or len(entries) > self.maxsize):
            _, (_, dropped) = entries.popitem(last=False)
            cls._tokens -= dropped
        return document


def _token_count(document: DocumentNode) -> int:
    """The tokens a parsed document keeps (its location's linked list of tokens)."""
    count = 0
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        count += 1
        token = token.next
    return count


class TextKeyedValidationCache(ValidationCache):
    """ValidationCache keyed by the operation's text instead of its syntax tree, checking the
    query limits first and the operation's cost with each request's variables.

    Strawberry's cache is an lru_cache over the DocumentNode, and graphql-core hashes a node by
    walking its whole tree: every lookup of a cached document paid a deep hash (its cost:
    docs/performance.md). The text names the same
    document (the parser is deterministic, and ParserCache keys by it too), so it keys the same
    results. Entries are shared by every operation of the process, least recently used first out
    beyond `maxsize`. An entry keeps the document's measure (gateway/schema/limits.py), so that a
    request only puts its variables into the cost.
    """

    # (schema id, text, rules) -> (the schema, its errors, its limits and measure): the entry holds
    # the schema, so that its id cannot name another schema while the entry is kept.
    _entries: ClassVar[OrderedDict[tuple[int, str, tuple[object, ...]], _Entry]] = OrderedDict()

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.maxsize = maxsize

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is None:
            yield from super().on_validate()
            return
        schema = context.schema._schema
        rules = tuple(context.validation_rules)
        if context.query is None:
            entry = (schema, *_validate(schema, document, rules))
        else:
            key = (id(schema), context.query, rules)
            entries = self._entries
            cached = entries.get(key)
            if cached is None or cached[0] is not schema:
                entry = entries[key] = (schema, *_validate(schema, document, rules))
                while len(entries) > self.maxsize:
                    entries.popitem(last=False)
            else:
                entry = cached
                entries.move_to_end(key)
        _, errors, checked = entry
        if not errors and checked is not None:
            # The one part that depends on the request: its variables' list lengths.
            limits, measure = checked
            errors = request_errors(measure, limits, context.operation_name, context.variables)
        context.pre_execution_errors = errors
        yield


_Checked = tuple[QueryLimits, DocumentMeasure]
_Entry = tuple[GraphQLSchema, list[GraphQLError], _Checked | None]


def _validate(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> tuple[list[GraphQLError], _Checked | None]:
    """The document's errors, the query limits checked first, in linear time; graphql-core's
    rules (some quadratic in the fields of a selection set, OverlappingFieldsCanBeMergedRule)
    run only on a document within them. With the limits, their measure for the cost check."""
    checked: _Checked | None = None
    others: list[type[ASTValidationRule]] = []
    for rule in rules:
        if issubclass(rule, QueryLimitsRule):
            errors, measure = rule.check(schema, document)
            if errors:
                return errors, None
            checked = (rule.limits, measure)
        else:
            others.append(rule)
    return validate_document(schema, document, tuple(others)), checked


def schema_sdl(schema: strawberry.Schema | None = None) -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return print_schema(schema or build_schema()) + "\n"


__all__ = ["TextKeyedValidationCache", "build_schema", "schema_sdl"]
