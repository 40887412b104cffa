"""GraphQL types of checkouts: the session `startCheckout` returns and the price
`checkoutPreview` gives."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from gateway import models
from gateway.context import Info
from gateway.schema.common import RAW_DESCRIPTION, Money, account_id_of, money, raw_json
from gateway.schema.enums import ProviderEnum, from_domain
from gateway.schema.ids import global_id
from gateway.sources import AccountRef


async def _session_account_id(root: CheckoutSession, info: Info) -> strawberry.ID | None:
    return strawberry.ID(await account_id_of(info, root.ref))


@strawberry.type(description="A hosted checkout to send the customer to.")
class CheckoutSession:
    # Plain attributes, set by `of` (see `Plan`); the account id may need a read.
    model: strawberry.Private[models.CheckoutSession]
    ref: strawberry.Private[AccountRef]

    id: strawberry.ID = strawberry.field(
        description="Globally unique id: from the provider's session id, or from the URL when "
        "the provider gives no session id."
    )
    provider: ProviderEnum = strawberry.field(
        description="The provider the checkout was started at."
    )

    account_id: strawberry.ID | None = strawberry.field(
        resolver=_session_account_id,
        description="The account the checkout is for. For Autoposting it is read from the API "
        "key's profile: null, with an error in `errors`, if that read fails; the session stands.",
    )

    plan_id: strawberry.ID = strawberry.field(description="The plan being bought.")
    url: str = strawberry.field(description="The hosted checkout page to redirect the customer to.")
    session_id: str | None = strawberry.field(
        description="The provider's checkout session id: Autoposting's `sessionId`, or for "
        "Almanac the session id carried in the checkout URL when it carries one; never invented."
    )

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self, info: Info) -> JSON | None:
        return raw_json(info, self.model.provider, self.model.raw)

    @classmethod
    def of(cls, model: models.CheckoutSession, ref: AccountRef) -> CheckoutSession:
        """The GraphQL session of `model`, started for the account of `ref`."""
        # No account in the id: reading the Autoposting organization could fail after the
        # checkout was created, and the session must never be lost to that.
        local = model.session_id or model.url
        return cls(
            model=model,
            ref=ref,
            id=strawberry.ID(global_id("CheckoutSession", ref.provider, local)),
            provider=from_domain(ProviderEnum, model.provider),
            plan_id=strawberry.ID(model.plan_id),
            url=model.url,
            session_id=model.session_id,
        )


@strawberry.type(description="One line of a plan change's price.")
class CheckoutPreviewLine:
    name: str | None = strawberry.field(description="What the line charges or credits for.")
    description: str | None = strawberry.field(
        description="A longer explanation of the line, when the provider gives one."
    )
    quantity: float | None = strawberry.field(description="How many units the line counts.")
    subtotal: Money | None = strawberry.field(
        description="The line's amount before taxes and discounts."
    )
    total: Money | None = strawberry.field(description="The line's amount to pay.")

    @classmethod
    def of(cls, model: models.PreviewLine) -> CheckoutPreviewLine:
        """The GraphQL line of `model`."""
        return cls(
            name=model.name,
            description=model.description,
            quantity=model.quantity,
            subtotal=money(model.subtotal),
            total=money(model.total),
        )


@strawberry.type(description="What a plan change will cost, before any checkout is started.")
class CheckoutPreview:
    # Plain attributes, set by `of` (see `Plan`).
    model: strawberry.Private[models.CheckoutPreview]

    id: strawberry.ID = strawberry.field(
        description="Globally unique id of this preview (account and plan)."
    )
    provider: ProviderEnum = strawberry.field(description="The provider that priced the change.")
    account_id: strawberry.ID = strawberry.field(description="The account the change is for.")
    plan_id: strawberry.ID = strawberry.field(description="The plan the account would change to.")
    currency: str = strawberry.field(
        description="ISO 4217 currency of every amount: the provider's, or the configured one."
    )
    line_items: list[CheckoutPreviewLine] = strawberry.field(
        description="The charges and credits of the change."
    )
    subtotal: Money | None = strawberry.field(description="The sum before taxes and discounts.")
    total: Money | None = strawberry.field(description="The amount to pay.")
    hosted_checkout_required: bool = strawberry.field(
        description="Whether the change needs the hosted checkout (`startCheckout`) to be paid."
    )
    checkout_type: str | None = strawberry.field(
        description="The provider's kind of checkout, as it names it."
    )

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self, info: Info) -> JSON | None:
        return raw_json(info, self.model.provider, self.model.raw)

    @classmethod
    def of(cls, model: models.CheckoutPreview) -> CheckoutPreview:
        """The GraphQL preview of `model`."""
        return cls(
            model=model,
            id=strawberry.ID(
                global_id("CheckoutPreview", model.provider, model.account_id, model.plan_id)
            ),
            provider=from_domain(ProviderEnum, model.provider),
            account_id=strawberry.ID(model.account_id),
            plan_id=strawberry.ID(model.plan_id),
            currency=model.currency,
            line_items=[CheckoutPreviewLine.of(line) for line in model.lines],
            subtotal=money(model.subtotal),
            total=money(model.total),
            hosted_checkout_required=model.hosted_checkout_required,
            checkout_type=model.checkout_type,
        )
