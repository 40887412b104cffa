"""Query limits, checked before execution in time proportional to the document's size: depth,
aliases, the fields a document expands to (fragments included) and the pairs of fields
graphql-core's validation must compare; then, with the request's variables, the accounts the
operation reads and its estimated cost.

Strawberry's QueryDepthLimiter and MaxAliasesLimiter are not used: they walk a fragment's body
again at every spread of it, so a document whose fragments each spread the next one twice costs
them time doubling with each fragment (24 fragments, 1 KB: minutes, with the event loop held).
Here each fragment is walked once, in dependency order, and a spread adds its fragment's totals:
the totals may be astronomically large, the work is a visit of each selection written (twice for
a fragment's) and, per spread, a merge of its fragment's response names. A fragment cycle adds
nothing (graphql-core's NoFragmentCyclesRule reports it).

The merge pairs bound graphql-core's OverlappingFieldsCanBeMergedRule, which compares every pair of
same-named fields and of fragments spread in a selection: quadratic, so it runs only on a document
within the limits.

The cost is "accounts requested x fields selected per account": a field counts 1 plus the cost of
its selection, times the length of its list of accounts (`billingAccounts(accounts:)`, given
inline or as a variable, every entry counted, duplicates included); every other field, and so
`billingAccount`, counts once per occurrence, alias and fragment spread. Without such a list the
cost is the number of fields. The accounts are counted the same way. The part that depends on no
variable is computed once per document; a request only puts its lists' lengths in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    ValueNode,
    VariableNode,
    get_named_type,
)

# Fields that read accounts: (parent type, field) -> the list argument with one account per entry,
# or None for one account. A test fails when the schema gains a list argument it does not name.
ACCOUNT_FIELDS: Mapping[tuple[str, str], str | None] = {
    ("Query", "billingAccount"): None,
    ("Query", "billingAccounts"): "accounts",
    ("Query", "checkoutPreview"): None,
    ("Mutation", "startCheckout"): None,
}

# A cost: monomial (the names of the list variables multiplied, sorted) -> coefficient. Lists only
# at the root make it linear in the variables; the form does not depend on that.
Cost = dict[tuple[str, ...], int]
ONE: Mapping[tuple[str, ...], int] = {(): 1}


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The limits a document and its operation are held to (README, "Security")."""

    max_depth: int
    max_aliases: int
    max_accounts: int
    max_fields: int
    max_merge_pairs: int
    max_cost: int


@dataclass(slots=True)
class Extent:
    """What a selection set expands to, fragments included."""

    fields: int = 0
    aliases: int = 0
    # As QueryDepthLimiter counted it: a leaf is 0, a field with a selection 1 + its deepest
    # child; an introspection field (`__schema`, `__type`) counts 0 (MaxIntrospectionDepthRule
    # bounds those).
    depth: int = 0
    cost: Cost = field(default_factory=dict)
    # The accounts it reads, every entry of a list counted (a form like `cost`).
    accounts: Cost = field(default_factory=dict)
    # Its response level, inline fragments and spreads flattened: response name -> [fields
    # answering it, the fields below them, the sum of the squares of those].
    names: dict[str, list[int]] = field(default_factory=dict)
    # Fragments spread at its response level.
    spreads: set[str] = field(default_factory=set)

    def add(self, other: Extent) -> None:
        """Add `other`, a selection at this response level (an inline fragment or a spread)."""
        self.fields += other.fields
        self.aliases += other.aliases
        self.depth = max(self.depth, other.depth)
        _add(self.cost, other.cost)
        _add(self.accounts, other.accounts)
        names = self.names
        for name, (count, below, squares) in other.names.items():
            totals = names.get(name)
            if totals is None:
                names[name] = [count, below, squares]
            else:
                totals[0] += count
                totals[1] += below
                totals[2] += squares

    def merge_pairs(self) -> int:
        """A bound on the comparisons graphql-core's OverlappingFieldsCanBeMergedRule makes at
        this response level: each pair of fields with one response name (1, plus at most the
        product of the fields below them), and each pair of fragments spread here."""
        pairs = len(self.spreads) * (len(self.spreads) - 1) // 2
        for count, below, squares in self.names.values():
            if count > 1:
                pairs += count * (count - 1) // 2 + (below * below - squares) // 2
        return pairs


@dataclass(frozen=True, slots=True)
class OperationMeasure:
    """One operation's extent, and the list length of each variable left unset."""

    node: OperationDefinitionNode
    extent: Extent
    default_lengths: Mapping[str, int]

    @property
    def name(self) -> str:
        return self.node.name.value if self.node.name else "anonymous"

    def cost(self, variables: Mapping[str, Any] | None) -> int:
        """The estimated cost with the request's variables (each list counted at its length)."""
        return self._evaluate(self.extent.cost, variables or {})

    def accounts(self, variables: Mapping[str, Any] | None) -> int:
        """The accounts it reads with the request's variables, duplicates included."""
        return self._evaluate(self.extent.accounts, variables or {})

    def _evaluate(self, form: Cost, variables: Mapping[str, Any]) -> int:
        total = 0
        for monomial, coefficient in form.items():
            for name in monomial:
                coefficient *= (
                    _length(variables[name])
                    if name in variables
                    else self.default_lengths.get(name, 0)
                )
            total += coefficient
        return total


@dataclass(frozen=True, slots=True)
class DocumentMeasure:
    """Every operation's measure; the document's merge comparisons (`Extent.merge_pairs`, over
    every response level); `visits` counts the selections walked, the work done."""

    operations: tuple[OperationMeasure, ...]
    merge_pairs: int
    visits: int

    @property
    def fields(self) -> int:
        return sum(operation.extent.fields for operation in self.operations)

    @property
    def aliases(self) -> int:
        return sum(operation.extent.aliases for operation in self.operations)

    def operation(self, name: str | None) -> OperationMeasure | None:
        """The operation a request runs: the one named, or the only one."""
        if name is None:
            return self.operations[0] if len(self.operations) == 1 else None
        return next(
            (op for op in self.operations if op.node.name and op.node.name.value == name), None
        )


def measure_document(schema: GraphQLSchema, document: DocumentNode) -> DocumentMeasure:
    """Measure `document`: each fragment and operation walked once, in linear time."""
    return _Measurer(schema, document).measure()


def limit_errors(measure: DocumentMeasure, limits: QueryLimits) -> list[GraphQLError]:
    """The errors of a document over its depth, alias, field or merge-pair limit."""
    errors = [
        GraphQLError(
            f"'{operation.name}' exceeds maximum operation depth of {limits.max_depth}: "
            f"its depth is {operation.extent.depth}.",
            operation.node,
        )
        for operation in measure.operations
        if operation.extent.depth > limits.max_depth
    ]
    if measure.aliases > limits.max_aliases:
        errors.append(
            GraphQLError(f"{measure.aliases} aliases found. Allowed: {limits.max_aliases}")
        )
    if measure.fields > limits.max_fields:
        errors.append(
            GraphQLError(
                f"The document expands to {measure.fields} fields, fragments included; "
                f"the maximum is {limits.max_fields}."
            )
        )
    if measure.merge_pairs > limits.max_merge_pairs:
        errors.append(
            GraphQLError(
                f"Validating the document would compare {measure.merge_pairs} pairs of fields "
                "sharing a response name, or of fragments spread together; the maximum is "
                f"{limits.max_merge_pairs}. Select each field once per selection."
            )
        )
    return errors


def request_errors(
    measure: DocumentMeasure,
    limits: QueryLimits,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> list[GraphQLError]:
    """The errors of an operation that, with these variables, reads more accounts than allowed
    or has an estimated cost over budget."""
    operation = measure.operation(operation_name)
    if operation is None:
        return []
    errors = []
    accounts = operation.accounts(variables)
    if accounts > limits.max_accounts:
        errors.append(
            GraphQLError(
                f"'{operation.name}' asks for {accounts} accounts (every entry counted, "
                f"duplicates included); a request may ask for at most {limits.max_accounts}.",
                operation.node,
            )
        )
    cost = operation.cost(variables)
    if cost > limits.max_cost:
        errors.append(
            GraphQLError(
                f"The estimated cost of '{operation.name}' is {cost} (accounts requested x "
                f"fields selected per account, every list entry counted); the budget is "
                f"{limits.max_cost}.",
                operation.node,
            )
        )
    return errors


class QueryLimitsRule(ValidationRule):
    """A validation rule reporting a document over its limits; `limits_rule` makes one per set of
    limits. Made once per schema, so that the validation cache, keyed by rule classes, hits.

    The gateway's validation cache runs it before every other rule, and those only on a document
    within its limits (see the module's docstring).
    """

    limits: ClassVar[QueryLimits]

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        errors, _ = self.check(context.schema, context.document)
        for error in errors:
            context.report_error(error)

    @classmethod
    def check(
        cls, schema: GraphQLSchema, document: DocumentNode
    ) -> tuple[list[GraphQLError], DocumentMeasure]:
        """The document's limit errors and its measure, kept for `request_errors`."""
        measure = measure_document(schema, document)
        return limit_errors(measure, cls.limits), measure


def limits_rule(limits: QueryLimits) -> type[QueryLimitsRule]:
    """A `QueryLimitsRule` for `limits`."""
    return type("QueryLimitsRule", (QueryLimitsRule,), {"limits": limits})


class _Measurer:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode) -> None:
        self.schema = schema
        self.document = document
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                # The first of duplicates (UniqueFragmentNamesRule reports the others).
                self.fragments.setdefault(definition.name.value, definition)
        self.extents: dict[str, Extent] = {}
        self.visits = 0
        self.merge_pairs = 0

    def measure(self) -> DocumentMeasure:
        for name in self._dependency_order():
            fragment = self.fragments[name]
            self.extents[name] = self._level(
                fragment.selection_set, self._type(fragment.type_condition.name.value)
            )
        operations = tuple(
            OperationMeasure(
                node=definition,
                extent=self._level(
                    definition.selection_set, self.schema.get_root_type(definition.operation)
                ),
                default_lengths={
                    variable.variable.name.value: _literal_length(variable.default_value)
                    for variable in definition.variable_definitions or ()
                },
            )
            for definition in self.document.definitions
            if isinstance(definition, OperationDefinitionNode)
        )
        return DocumentMeasure(
            operations=operations, merge_pairs=self.merge_pairs, visits=self.visits
        )

    def _dependency_order(self) -> list[str]:
        """Fragment names, each after the fragments it spreads (a spread closing a cycle is
        ignored), without recursion: a long chain of fragments cannot exhaust the stack."""
        spreads = {
            name: list(self._spreads(node.selection_set)) for name, node in self.fragments.items()
        }
        order: list[str] = []
        state: dict[str, bool] = {}  # False: being ordered, True: ordered
        for root in self.fragments:
            if root in state:
                continue
            state[root] = False
            stack = [(root, iter(spreads[root]))]
            while stack:
                name, pending = stack[-1]
                child = next(pending, None)
                if child is None:
                    stack.pop()
                    state[name] = True
                    order.append(name)
                elif child in self.fragments and child not in state:
                    state[child] = False
                    stack.append((child, iter(spreads[child])))
        return order

    def _spreads(self, selection_set: SelectionSetNode) -> Iterable[str]:
        stack = [selection_set]
        while stack:
            for selection in stack.pop().selections:
                self.visits += 1
                if isinstance(selection, FragmentSpreadNode):
                    yield selection.name.value
                elif (
                    isinstance(selection, FieldNode | InlineFragmentNode)
                    and selection.selection_set is not None
                ):
                    stack.append(selection.selection_set)

    def _level(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> Extent:
        """The extent of a response level (an operation's, a fragment's or a field's selection),
        its merge comparisons counted."""
        extent = self._extent(selection_set, parent)
        self.merge_pairs += extent.merge_pairs()
        return extent

    def _extent(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> Extent:
        # Recursion follows the nesting of one definition, which the parser bounds (200 levels).
        extent = Extent()
        for selection in selection_set.selections:
            self.visits += 1
            if isinstance(selection, FieldNode):
                self._field(selection, parent, extent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inline = self._extent(
                    selection.selection_set,
                    parent if condition is None else self._type(condition.name.value),
                )
                extent.add(inline)
                extent.spreads |= inline.spreads
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                extent.spreads.add(name)
                # Unknown, or closing a cycle: nothing (both are reported by graphql-core).
                spread = self.extents.get(name)
                if spread is not None:
                    extent.add(spread)
        return extent

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None, into: Extent) -> None:
        """Add the field `node` of `parent` to the response level `into`."""
        name = node.name.value
        fields = aliases = depth = 0
        cost: Cost = dict(ONE)
        if node.selection_set is not None:
            child = self._level(node.selection_set, self._field_type(parent, name))
            fields, aliases, depth = child.fields, child.aliases, child.depth
            _add(cost, child.cost)
            # No field below an account reads another: none of the gateway's types has one.
            _add(into.accounts, child.accounts)
            if not name.startswith("__"):
                into.depth = max(into.depth, 1 + depth)
        into.fields += 1 + fields
        into.aliases += (node.alias is not None) + aliases
        reads, multiplier = self._accounts(node, parent)
        _add(into.cost, _times(cost, multiplier))
        if reads:
            _add(into.accounts, _times(dict(ONE), multiplier))
        response = node.alias.value if node.alias else name
        totals = into.names.get(response)
        if totals is None:
            into.names[response] = [1, fields, fields * fields]
        else:
            totals[0] += 1
            totals[1] += fields
            totals[2] += fields * fields

    def _accounts(self, node: FieldNode, parent: GraphQLNamedType | None) -> tuple[bool, int | str]:
        """Whether the field reads accounts, and how many times its selection is answered: a
        list argument's length (a variable's name when it is given as one), else 1."""
        key = (parent.name if parent is not None else "", node.name.value)
        if key not in ACCOUNT_FIELDS:
            return False, 1
        argument = ACCOUNT_FIELDS[key]
        if argument is None:
            return True, 1
        for given in node.arguments or ():
            if given.name.value == argument:
                value = given.value
                if isinstance(value, VariableNode):
                    return True, value.name.value
                return True, _literal_length(value)
        return True, 0

    def _type(self, name: str) -> GraphQLNamedType | None:
        return self.schema.get_type(name)

    def _field_type(self, parent: GraphQLNamedType | None, name: str) -> GraphQLNamedType | None:
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
            if definition is not None:
                named: GraphQLNamedType = get_named_type(definition.type)
                return named
        return None


def _add(into: Cost, other: Mapping[tuple[str, ...], int]) -> None:
    for monomial, coefficient in other.items():
        into[monomial] = into.get(monomial, 0) + coefficient


def _times(cost: Cost, multiplier: int | str) -> Cost:
    if isinstance(multiplier, str):
        return {tuple(sorted((*monomial, multiplier))): c for monomial, c in cost.items()}
    if multiplier == 1:
        return cost
    return {monomial: c * multiplier for monomial, c in cost.items()}


def _literal_length(value: ValueNode | None) -> int:
    """Entries of a list given inline: a single value is a list of one (input coercion), null or
    nothing none. An entry given as a variable is one entry."""
    if value is None or isinstance(value, NullValueNode):
        return 0
    if isinstance(value, ListValueNode):
        return len(value.values)
    return 1


def _length(value: object) -> int:
    """Entries of a list given as a variable's JSON value (coerced as `_literal_length` says)."""
    if value is None:
        return 0
    if isinstance(value, list):
        return len(value)
    return 1


__all__ = [
    "ACCOUNT_FIELDS",
    "DocumentMeasure",
    "QueryLimits",
    "QueryLimitsRule",
    "limit_errors",
    "limits_rule",
    "measure_document",
    "request_errors",
]
