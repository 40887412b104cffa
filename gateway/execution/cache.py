"""The plan cache: operations that have run `threshold` times get a compiled plan.

An operation is known by its parsed document: the parser cache hands out one document per text
(as the validation cache keys by the text), so the operation node of a request names its text and
operation. It is counted each time it runs (after validation: only valid documents are counted or
compiled); at `threshold` runs it is compiled, once per combination of the values of the variables
its `@skip`/`@include` directives read (at most `MAX_VARIANTS`). A document the compiler does not
handle is remembered as such and keeps today's executor.

Bounded, so that a caller sending endless distinct documents cannot grow it without end: at most
`max_entries` compiled documents, `max_steps` planned fields and `max_text` characters of document
text across them (a plan keeps its document's syntax tree alive), the least recently used first
out; documents not yet hot are counted through weak references, at most `4 x max_entries` of them.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from graphql import FragmentDefinitionNode, GraphQLSchema, OperationDefinitionNode
from graphql.execution.values import VariableValues
from graphql.pyutils import Undefined

from gateway.execution.plan import (
    OperationPlan,
    Unsupported,
    collection_variables,
    compile_operation,
)

DEFAULT_THRESHOLD = 3
DEFAULT_MAX_ENTRIES = 256
# What a planned field and a character of text cost in memory: BENCHMARKS.md, "What a caller can
# make plans cost".
MAX_CACHED_STEPS = 20_000
MAX_CACHED_TEXT = 128 * 1024
# Plans of one document, one per combination of its `@skip`/`@include` variables' values.
MAX_VARIANTS = 8


class PlanEntry:
    """One hot operation: its plans by the values of its `@skip`/`@include` variables."""

    __slots__ = (
        "directive_variables",
        "fragments",
        "operation",
        "steps",
        "text",
        "unsupported",
        "variants",
    )

    def __init__(
        self, operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
    ) -> None:
        self.operation = operation
        self.fragments = dict(fragments)
        self.directive_variables = collection_variables(operation, fragments)
        self.variants: dict[tuple[Any, ...], OperationPlan] = {}
        self.unsupported = False
        self.steps = 0
        self.text = len(operation.loc.source.body) if operation.loc else 0


class PlanCache:
    """Compiled plans of the operations run on one schema (see the module docstring)."""

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_steps: int = MAX_CACHED_STEPS,
        max_text: int = MAX_CACHED_TEXT,
    ) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self.max_steps = max_steps
        self.max_text = max_text
        self.runs: OrderedDict[int, tuple[weakref.ref[OperationDefinitionNode], int]] = (
            OrderedDict()
        )
        self.entries: OrderedDict[int, PlanEntry] = OrderedDict()
        self.steps = 0
        self.text = 0
        # What the cache did, for tests and the benchmark: runs planned, compilations, refusals.
        self.planned = 0
        self.compiled = 0
        self.refused = 0

    def hot(
        self, operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
    ) -> PlanEntry | None:
        """Count a run of the operation; its entry once it has run `threshold` times."""
        key = id(operation)
        entry = self.entries.get(key)
        if entry is not None and entry.operation is operation:
            self.entries.move_to_end(key)
            return None if entry.unsupported else entry
        counted = self.runs.pop(key, None)
        runs = counted[1] + 1 if counted is not None and counted[0]() is operation else 1
        if runs < self.threshold:
            self.runs[key] = (weakref.ref(operation), runs)
            while len(self.runs) > 4 * self.max_entries:
                self.runs.popitem(last=False)
            return None
        entry = self.entries[key] = PlanEntry(operation, fragments)
        self.text += entry.text
        self._trim()
        return entry

    def plan(
        self,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variable_values: VariableValues,
    ) -> OperationPlan | None:
        """The operation's plan for this request's variables; None to run it as today."""
        entry = self.hot(operation, fragments)
        if entry is None:
            return None
        coerced = variable_values.coerced
        signature = tuple(coerced.get(name, Undefined) for name in entry.directive_variables)
        plan = entry.variants.get(signature)
        if plan is None:
            plan = self._compile(schema, entry, signature, variable_values)
        if plan is not None:
            self.planned += 1
        return plan

    def _compile(
        self,
        schema: GraphQLSchema,
        entry: PlanEntry,
        signature: tuple[Any, ...],
        variable_values: VariableValues,
    ) -> OperationPlan | None:
        if not all(isinstance(value, bool) for value in signature):
            return None  # graphql-core reports the directive's error
        if len(entry.variants) >= MAX_VARIANTS:
            return None
        try:
            plan = compile_operation(schema, entry.operation, entry.fragments, variable_values)
        except Unsupported:
            self.refused += 1
            entry.unsupported = True
            return None
        self.compiled += 1
        entry.variants[signature] = plan
        entry.steps += plan.size
        self.steps += plan.size
        self._trim()
        return plan

    def _trim(self) -> None:
        """Evict the least recently used entries beyond the bounds (the newest always stays)."""
        while len(self.entries) > 1 and (
            len(self.entries) > self.max_entries
            or self.steps > self.max_steps
            or self.text > self.max_text
        ):
            _, entry = self.entries.popitem(last=False)
            self.steps -= entry.steps
            self.text -= entry.text

    def __len__(self) -> int:
        return len(self.entries)
