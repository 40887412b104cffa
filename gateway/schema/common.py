"""What the schema's object types share: money, the provider's raw JSON behind its permission,
and the global ids of an account's objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON

from gateway import models
from gateway.context import Info
from gateway.keys import Permission
from gateway.provider import Provider
from gateway.schema.ids import global_id
from gateway.sources import AccountRef, AccountSource

RAW_DESCRIPTION = (
    "The provider's own JSON for this object, unchanged: an escape hatch for what the schema "
    "does not model. Its shape is the provider's and may change without notice. It carries "
    "provider fields such as customer ids: null, with a NOT_ALLOWED error, for a gateway key "
    "without the raw:read permission."
)


def json_value(value: Any) -> JSON:
    return value  # type: ignore[no-any-return]


def raw_json(info: Info, provider: Provider, value: Any) -> JSON:
    """`value`, the provider's own JSON, if the caller's gateway key may read it."""
    info.context.permit(Permission.RAW_READ, provider)
    return json_value(value)


def account_source(info: Info, ref: AccountRef) -> AccountSource:
    return info.context.loaders.source(ref.provider)


async def account_id_of(info: Info, ref: AccountRef) -> str:
    return await account_source(info, ref).account_id(ref)


def account_scoped_id(
    type_name: str, *parts: Callable[[Any], str]
) -> Callable[[Any, Info], Awaitable[strawberry.ID]]:
    """The resolver of the global id of an object of one account: its type, provider, the
    account's id (which may need a read: Autoposting's comes with the key's profile) and
    `parts` of the object itself."""

    async def resolve(root: Any, info: Info) -> strawberry.ID:
        account = await account_id_of(info, root.ref)
        local = (part(root) for part in parts)
        return strawberry.ID(global_id(type_name, root.ref.provider, account, *local))

    return resolve


@strawberry.type(description="An exact amount of money in one currency.")
class Money:
    amount: Decimal = strawberry.field(description="The amount, exact, as a decimal string.")
    currency: str = strawberry.field(description="ISO 4217 currency code, e.g. USD.")


def money(value: models.Money | None) -> Money | None:
    return Money(amount=value.amount, currency=value.currency) if value else None
