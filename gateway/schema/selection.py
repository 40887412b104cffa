"""What a resolver's selection will read, so the loads it needs can start together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionNode,
)

from gateway.context import Info
from gateway.sources import Need

# GraphQL field names (anywhere below an account) -> the parts of the account they read.
FIELD_NEEDS: dict[str, Need] = {
    "id": Need.ACCOUNT_ID,
    "accountId": Need.ACCOUNT_ID,
    "usageMeters": Need.USAGE,
}


def _names(
    selections: Iterable[SelectionNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: set[str],
) -> Iterator[str]:
    for selection in selections:
        if isinstance(selection, FieldNode):
            yield selection.name.value
            if selection.selection_set is not None:
                yield from _names(selection.selection_set.selections, fragments, seen)
        elif isinstance(selection, InlineFragmentNode):
            yield from _names(selection.selection_set.selections, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:  # validation refuses cycles; be sure
                seen.add(name)
                yield from _names(fragment.selection_set.selections, fragments, seen)


def selection_needs(info: Info) -> Need:
    """The parts of an account that the fields selected below this resolver will read.

    Fragments and inline fragments are walked too; a name counts wherever it appears, so this may
    start a load that a type condition then skips, never miss one that is needed. The walk reads
    graphql-core's syntax tree directly: Strawberry's `info.selected_fields` builds a converted
    copy of the whole selection first, which cost more than the rest of the resolver.
    """
    raw = info._raw_info
    subselections: list[SelectionNode] = [
        selection
        for node in raw.field_nodes
        if node.selection_set is not None
        for selection in node.selection_set.selections
    ]
    names = set(_names(subselections, raw.fragments, set()))
    needs = Need.NONE
    for name, need in FIELD_NEEDS.items():  # a Flag's "|" costs a few µs: once per need
        if name in names:
            needs |= need
    return needs
