"""What a resolver's selection will read, so the loads it needs can start together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gateway.context import Info
from gateway.loaders import Need

# GraphQL field names (anywhere below an account) -> the parts of the account they read.
FIELD_NEEDS: dict[str, Need] = {
    "id": Need.ACCOUNT_ID,
    "accountId": Need.ACCOUNT_ID,
    "usageMeters": Need.USAGE,
}


def _names(selections: Iterable[Any]) -> Iterator[str]:
    for selection in selections:
        name = getattr(selection, "name", None)
        if name is not None:
            yield name
        yield from _names(getattr(selection, "selections", ()))


def selection_needs(info: Info) -> Need:
    """The parts of an account that the fields selected below this resolver will read.

    Fragments and inline fragments are walked too; a name counts wherever it appears, so this may
    start a load that a type condition then skips, never miss one that is needed.
    """
    needs = Need.NONE
    for name in _names(info.selected_fields):
        needs |= FIELD_NEEDS.get(name, Need.NONE)
    return needs
