"""Operation plans: a validated operation compiled, once, for the schema it runs on.

A plan holds what graphql-core's executor works out again for every field of every request: the
fields of each selection set after fragments, type conditions and `@skip`/`@include` (collected by
graphql-core's own `collect_fields`, so with its exact rules), each field's definition, resolver,
response key and nodes, and how its value is completed (non-null, lists, leaf serialization,
objects, and a sub-plan per possible type of a union or interface). `PlannedExecutor` runs it.

What the compiler does not handle raises `Unsupported`, and that document keeps today's executor:
subscriptions, introspection (`__schema`, `__type`), operation directives, fragment variables,
`@defer`/`@stream`, and a plan of more than `MAX_PLAN_STEPS` fields (an abstract type compiles its
selection once per possible type).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLAbstractType,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues
from graphql.language import Visitor
from graphql.type.scalars import serialize_boolean, serialize_id, serialize_string

# Fields of one plan, counted across every possible type of its abstract fields: a larger plan
# is not compiled (the query limits bound documents to a few hundred fields; this bounds what a
# union of many types could multiply them into).
MAX_PLAN_STEPS = 5000

# Strawberry's graphql-core field extensions name the field's definition under this key.
STRAWBERRY_DEFINITION = "strawberry-definition"
# The name of the resolver Strawberry gives a field that only reads an attribute and takes
# neither info nor arguments (`GraphQLCoreConverter.from_resolver`).
STRAWBERRY_BASIC_RESOLVER = "_get_basic_result"
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
DIRECTIVES_OF_COLLECTION = frozenset({"skip", "include"})

# How a field gets its value.
TYPENAME = 0  # `__typename`: the parent type's name, no resolver
BASIC = 1  # Strawberry's attribute read: the resolver is called without info
RESOLVER = 2  # any other resolver: called with graphql-core's resolve info and the arguments

# How a value is completed.
NON_NULL = 0
LIST = 1
LEAF = 2
OBJECT = 3
ABSTRACT = 4


class Unsupported(Exception):
    """A document the compiler does not handle; today's executor runs it."""


class Completion:
    """How the value of one field (or list item) of one type is completed.

    `items` (LIST): the selection of each item when an item is an object without `is_type_of`
    (nullable or not), so that a present item is completed by running it directly.
    """

    __slots__ = (
        "abstract",
        "by_type",
        "coerce",
        "inner",
        "is_type_of",
        "items",
        "kind",
        "message",
        "object_type",
        "selection",
        "text_only",
        "type",
    )

    def __init__(self, kind: int, type_: GraphQLOutputType) -> None:
        self.kind = kind
        self.type = type_
        self.inner: Completion | None = None  # NON_NULL, LIST: the wrapped type's
        self.message = ""  # NON_NULL, LIST: the error graphql-core raises
        self.coerce: Callable[[Any], Any] | None = None  # LEAF
        # LEAF: a `str` (or a `bool`) is returned as it is, as the scalar's coercion would.
        self.text_only: type | None = None
        self.object_type: GraphQLObjectType | None = None  # OBJECT
        self.is_type_of: Callable[..., Any] | None = None  # OBJECT
        self.selection: Selection | None = None  # OBJECT
        self.abstract: GraphQLAbstractType | None = None  # ABSTRACT
        self.by_type: dict[str, Completion] = {}  # ABSTRACT: runtime type name -> OBJECT
        self.items: Selection | None = None  # LIST


class Step:
    """One field of a selection set: what graphql-core's `execute_field` works out.

    `attr` is the attribute a Strawberry field without resolver reads (with Strawberry's default
    resolver, `getattr`): the plan reads it directly. A value of type `leaf` (a `str` for a
    String or ID, a `bool` for a Boolean) is its own completion, as is None for a nullable field.
    """

    __slots__ = (
        "attr",
        "completion",
        "details",
        "field_def",
        "has_args",
        "key",
        "kind",
        "leaf",
        "name",
        "node",
        "nodes",
        "nullable",
        "parent_type",
        "resolve",
        "return_type",
        "typename",
    )

    def __init__(
        self,
        key: str,
        details: list[FieldDetails],
        field_def: GraphQLField,
        parent_type: GraphQLObjectType,
        kind: int,
        resolve: Callable[..., Any],
        completion: Completion,
    ) -> None:
        self.key = key
        self.details = details
        self.nodes: list[FieldNode] = [detail.node for detail in details]
        self.node = self.nodes[0]
        self.name = self.node.name.value
        self.field_def = field_def
        self.parent_type = parent_type
        self.return_type = field_def.type
        self.kind = kind
        self.resolve = resolve
        self.has_args = bool(field_def.args or self.node.arguments)
        self.typename = parent_type.name
        self.completion = completion
        self.attr = _attribute(field_def) if kind == BASIC else None
        self.nullable = completion.kind != NON_NULL
        leaf = completion if self.nullable else completion.inner
        self.leaf = leaf.text_only if leaf is not None and leaf.kind == LEAF else None


class Selection:
    """The fields of one selection set for one object type, in response order."""

    __slots__ = ("steps", "type", "type_name")

    def __init__(self, type_: GraphQLObjectType, steps: tuple[Step, ...]) -> None:
        self.type = type_
        self.type_name = type_.name
        self.steps = steps


class OperationPlan:
    """One operation compiled for one set of `@skip`/`@include` variable values."""

    __slots__ = ("operation", "root", "serial", "size")

    def __init__(self, operation: OperationDefinitionNode, root: Selection, size: int) -> None:
        self.operation = operation
        self.root = root
        self.serial = operation.operation is OperationType.MUTATION
        self.size = size


def collection_variables(
    operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """The variables that `@skip(if:)` and `@include(if:)` read: what field collection depends
    on, so that a plan is compiled per combination of their values."""
    names: dict[str, None] = {}

    class Directives(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: object) -> None:
            if node.name.value in DIRECTIVES_OF_COLLECTION:
                for argument in node.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names[argument.value.name.value] = None

    for definition in (operation, *fragments.values()):
        visit(definition, Directives())
    return tuple(names)


def compile_operation(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variable_values: VariableValues,
) -> OperationPlan:
    """The plan of a validated `operation` (with its document's `fragments`), for the
    `@skip`/`@include` values of `variable_values` (a request's coerced variables);
    `Unsupported` if it has none."""
    return _Compiler(schema, fragments, variable_values).operation(operation)


class _Compiler:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variable_values: VariableValues,
    ) -> None:
        self.schema = schema
        self.variable_values = variable_values
        self.fragments: dict[str, FragmentDetails] = {}
        for name, definition in fragments.items():
            if definition.variable_definitions:
                raise Unsupported("fragment variables")
            self.fragments[name] = FragmentDetails(definition, None)
        self.size = 0
        self.operation_node: OperationDefinitionNode | None = None

    def operation(self, operation: OperationDefinitionNode) -> OperationPlan:
        if operation.operation is OperationType.SUBSCRIPTION:
            raise Unsupported("a subscription")
        if operation.directives:
            raise Unsupported("operation directives")
        root_type = self.schema.get_root_type(operation.operation)
        if root_type is None:
            raise Unsupported(f"no {operation.operation.value} type")
        self.operation_node = operation
        grouped, deferred, _ = collect_fields(
            self.schema, self.fragments, self.variable_values, root_type, operation
        )
        if deferred:
            raise Unsupported("@defer")
        root = self.selection(root_type, grouped)
        return OperationPlan(operation, root, self.size)

    def selection(self, parent_type: GraphQLObjectType, grouped: GroupedFieldSet) -> Selection:
        steps: list[Step] = []
        for key, details in grouped.items():
            node = details[0].node
            name = node.name.value
            if name in INTROSPECTION_FIELDS:
                raise Unsupported("introspection")
            field_def = self.schema.get_field(parent_type, name)
            if field_def is None:
                continue  # graphql-core leaves such a key out of the response
            if any(d.defer_usage or d.fragment_variable_values for d in details):
                raise Unsupported("@defer or fragment variables")
            if any(_streamed(d.node) for d in details):
                raise Unsupported("@stream")
            self.size += 1
            if self.size > MAX_PLAN_STEPS:
                raise Unsupported(f"more than {MAX_PLAN_STEPS} fields")
            resolve = field_def.resolve
            if name == "__typename":
                kind = TYPENAME
            elif resolve is None:
                raise Unsupported(f"{parent_type.name}.{name} has no resolver")
            elif _basic(field_def, resolve):
                kind = BASIC
            else:
                kind = RESOLVER
            completion = self.completion(field_def.type, details, parent_type, name)
            steps.append(
                Step(
                    key,
                    details,
                    field_def,
                    parent_type,
                    kind,
                    resolve or _no_resolver,
                    completion,
                )
            )
        return Selection(parent_type, tuple(steps))

    def completion(
        self,
        type_: GraphQLOutputType,
        details: list[FieldDetails],
        parent_type: GraphQLObjectType,
        field_name: str,
    ) -> Completion:
        if is_non_null_type(type_):
            assert isinstance(type_, GraphQLNonNull)
            completion = Completion(NON_NULL, type_)
            completion.inner = self.completion(type_.of_type, details, parent_type, field_name)
            completion.message = (
                f"Cannot return null for non-nullable field {parent_type}.{field_name}."
            )
            return completion
        if is_list_type(type_):
            assert isinstance(type_, GraphQLList)
            completion = Completion(LIST, type_)
            completion.inner = self.completion(type_.of_type, details, parent_type, field_name)
            completion.message = (
                f"Expected Iterable, but did not find one for field '{parent_type}.{field_name}'."
            )
            item = completion.inner
            if item.kind == NON_NULL:
                assert item.inner is not None
                item = item.inner
            if item.kind == OBJECT and item.is_type_of is None:
                completion.items = item.selection
            return completion
        if is_leaf_type(type_):
            assert isinstance(type_, GraphQLLeafType)
            completion = Completion(LEAF, type_)
            completion.coerce = type_.coerce_output_value
            completion.text_only = _identity_type(type_.coerce_output_value)
            return completion
        if is_abstract_type(type_):
            assert isinstance(type_, GraphQLInterfaceType | GraphQLUnionType)
            completion = Completion(ABSTRACT, type_)
            completion.abstract = type_
            completion.by_type = {
                possible.name: self.object_completion(possible, details)
                for possible in self.schema.get_possible_types(type_)
            }
            return completion
        if is_object_type(type_):
            assert isinstance(type_, GraphQLObjectType)
            return self.object_completion(type_, details)
        raise Unsupported(f"the output type {type_}")

    def object_completion(
        self, object_type: GraphQLObjectType, details: list[FieldDetails]
    ) -> Completion:
        assert self.operation_node is not None
        completion = Completion(OBJECT, object_type)
        completion.object_type = object_type
        completion.is_type_of = object_type.is_type_of
        grouped, deferred, _ = collect_subfields(
            self.schema,
            self.fragments,
            self.variable_values,
            self.operation_node,
            object_type,
            details,
        )
        if deferred:
            raise Unsupported("@defer")
        completion.selection = self.selection(object_type, grouped)
        return completion


def _basic(field_def: GraphQLField, resolve: Callable[..., Any]) -> bool:
    """Whether Strawberry resolves the field by reading an attribute, ignoring the info."""
    definition = (field_def.extensions or {}).get(STRAWBERRY_DEFINITION)
    return (
        definition is not None
        and getattr(definition, "is_basic_field", False) is True
        and getattr(resolve, "__name__", None) == STRAWBERRY_BASIC_RESOLVER
        and not field_def.args
    )


def _attribute(field_def: GraphQLField) -> str | None:
    """The attribute a Strawberry field without resolver reads with `getattr`, if it does."""
    definition = (field_def.extensions or {}).get(STRAWBERRY_DEFINITION)
    if getattr(definition, "default_resolver", None) is not getattr:
        return None
    name = getattr(definition, "python_name", None)
    return name if isinstance(name, str) else None


def _streamed(node: FieldNode) -> bool:
    return any(directive.name.value == "stream" for directive in node.directives or ())


# graphql-core's output coercions that return a value of this type unchanged.
_IDENTITY: Mapping[Callable[[Any], Any], type] = {
    serialize_string: str,
    serialize_id: str,
    serialize_boolean: bool,
}


def _identity_type(coerce: Callable[[Any], Any]) -> type | None:
    return _IDENTITY.get(coerce)


def _no_resolver(*_: object, **__: object) -> None:  # pragma: no cover - never called
    raise AssertionError("a plan step without a resolver")
