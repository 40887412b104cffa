"""GraphQL object types of the unified billing domain.

Objects hold the domain model and the account they belong to; everything else they reach through
`info.context`, so a field's upstream call happens only when that field is selected.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON

from gateway import models
from gateway.context import Info
from gateway.loaders import AccountRef, AccountSource
from gateway.schema.enums import (
    IntervalEnum,
    ManageReasonEnum,
    ProviderEnum,
    SubscriptionStatusEnum,
    from_domain,
)
from gateway.schema.ids import global_id

RAW_DESCRIPTION = (
    "The provider's own JSON for this object, unchanged: an escape hatch for what the schema "
    "does not model. Its shape is the provider's and may change without notice."
)


def _json(value: Any) -> JSON:
    return value  # type: ignore[no-any-return]


def _source(info: Info, ref: AccountRef) -> AccountSource:
    return info.context.loaders.source(ref.provider)


async def _account_id(info: Info, ref: AccountRef) -> str:
    return await _source(info, ref).account_id(ref)


@strawberry.type(description="An exact amount of money in one currency.")
class Money:
    amount: Decimal = strawberry.field(description="The amount, exact, as a decimal string.")
    currency: str = strawberry.field(description="ISO 4217 currency code, e.g. USD.")


@strawberry.type(description="A feature a plan includes.")
class PlanFeature:
    feature_id: str = strawberry.field(description="The provider's id of the feature.")
    included: float | None = strawberry.field(
        description="How much of it the plan includes; null when unlimited or not said."
    )


@strawberry.type(description="A plan of a provider's catalog, as offered to one account.")
class Plan:
    model: strawberry.Private[models.Plan]
    ref: strawberry.Private[AccountRef]

    @strawberry.field(description="Globally unique id of this plan for this account.")
    async def id(self, info: Info) -> strawberry.ID:
        account = await _account_id(info, self.ref)
        return strawberry.ID(global_id("Plan", self.ref.provider, account, self.model.plan_id))

    @strawberry.field(description="The provider the plan belongs to.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.model.provider)

    @strawberry.field(description="The provider's own id of the plan, as `startCheckout` takes it.")
    def plan_id(self) -> strawberry.ID:
        return strawberry.ID(self.model.plan_id)

    @strawberry.field(description="The plan's display name.")
    def name(self) -> str:
        return self.model.name

    @strawberry.field(description="The price per interval; null when the provider gives none.")
    def price(self) -> Money | None:
        price = self.model.price
        return Money(amount=price.amount, currency=price.currency) if price else None

    @strawberry.field(description="How often the plan bills; null when the provider does not say.")
    def interval(self) -> IntervalEnum | None:
        interval = self.model.interval
        return from_domain(IntervalEnum, interval) if interval else None

    @strawberry.field(description="The billing interval exactly as the provider wrote it.")
    def interval_raw(self) -> str | None:
        return self.model.interval_raw

    @strawberry.field(description="The provider's grouping of the plan (e.g. a plan family).")
    def group(self) -> str | None:
        return self.model.group

    @strawberry.field(description="Features the plan includes, with included amounts.")
    def features(self) -> list[PlanFeature]:
        return [
            PlanFeature(feature_id=f.feature_id, included=f.included) for f in self.model.features
        ]

    @strawberry.field(description="Whether this is the account's current plan.")
    def current(self) -> bool:
        return self.model.current

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self) -> JSON:
        return _json(self.model.raw)


@strawberry.type(description="How much of one metered feature an account has used.")
class UsageMeter:
    model: strawberry.Private[models.UsageMeter]
    ref: strawberry.Private[AccountRef]

    @strawberry.field(description="Globally unique id of this meter for this account.")
    async def id(self, info: Info) -> strawberry.ID:
        account = await _account_id(info, self.ref)
        return strawberry.ID(
            global_id("UsageMeter", self.ref.provider, account, self.model.feature_id)
        )

    @strawberry.field(description="The provider the meter belongs to.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.model.provider)

    @strawberry.field(
        description="The metered feature: the provider's feature id for Almanac; `credits`, "
        "`social_accounts` or `ai_tokens` for Autoposting."
    )
    def feature_id(self) -> str:
        return self.model.feature_id

    @strawberry.field(description="How much has been used in the current period.")
    def used(self) -> float:
        return self.model.used

    @strawberry.field(description="How much the plan grants; null when unlimited or not said.")
    def granted(self) -> float | None:
        return self.model.granted

    @strawberry.field(description="How much is left; null when unlimited or not said.")
    def remaining(self) -> float | None:
        return self.model.remaining

    @strawberry.field(description="Whether the feature is unlimited.")
    def unlimited(self) -> bool:
        return self.model.unlimited

    @strawberry.field(description="Whether use beyond the grant is allowed (and billed).")
    def overage_allowed(self) -> bool:
        return self.model.overage_allowed

    @strawberry.field(description="When the meter resets; null when it does not or is not said.")
    def resets_at(self) -> datetime | None:
        return self.model.resets_at

    @strawberry.field(
        description="`used / granted` (above 1 when over the limit); null when unlimited or "
        "nothing is granted."
    )
    def used_fraction(self) -> float | None:
        return self.model.used_fraction

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self) -> JSON:
        return _json(self.model.raw)


@strawberry.type(description="The state of an account's subscription, as the provider reports it.")
class SubscriptionState:
    model: strawberry.Private[models.Subscription]
    ref: strawberry.Private[AccountRef]

    @strawberry.field(description="Globally unique id of this account's subscription.")
    async def id(self, info: Info) -> strawberry.ID:
        account = await _account_id(info, self.ref)
        return strawberry.ID(global_id("SubscriptionState", self.ref.provider, account))

    @strawberry.field(description="The provider of the subscription.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.model.provider)

    @strawberry.field(description="The normalized status.")
    def status(self) -> SubscriptionStatusEnum:
        return from_domain(SubscriptionStatusEnum, self.model.status)

    @strawberry.field(description="The status exactly as the provider wrote it.")
    def status_raw(self) -> str | None:
        return self.model.status_raw

    @strawberry.field(description="The provider's id of the subscribed plan.")
    def plan_id(self) -> strawberry.ID | None:
        plan_id = self.model.plan_id
        return strawberry.ID(plan_id) if plan_id else None

    @strawberry.field(description="The billing cycle as the provider writes it, e.g. monthly.")
    def billing_cycle(self) -> str | None:
        return self.model.billing_cycle

    @strawberry.field(description="Start of the current billing period.")
    def current_period_start(self) -> datetime | None:
        return self.model.current_period_start

    @strawberry.field(description="End of the current billing period.")
    def current_period_end(self) -> datetime | None:
        return self.model.current_period_end

    @strawberry.field(description="End of the trial, when trialing.")
    def trial_end(self) -> datetime | None:
        return self.model.trial_end

    @strawberry.field(description="When the subscription was canceled.")
    def cancelled_at(self) -> datetime | None:
        return self.model.cancelled_at

    @strawberry.field(description="When the provider suspended the account.")
    def suspended_at(self) -> datetime | None:
        return self.model.suspended_at

    @strawberry.field(description="The plan the subscription will change to, if one is pending.")
    def pending_plan_id(self) -> strawberry.ID | None:
        pending = self.model.pending_plan_id
        return strawberry.ID(pending) if pending else None

    @strawberry.field(description="When the pending plan change takes effect.")
    def pending_change_at(self) -> datetime | None:
        return self.model.pending_change_at

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self) -> JSON:
        return _json(self.model.raw)


@strawberry.type(description="Whether the caller may manage the account's billing, and why.")
class BillingPermission:
    allowed: bool = strawberry.field(description="Whether the caller may start a checkout.")
    reason: ManageReasonEnum | None = strawberry.field(
        description="The provider's reason for the decision."
    )
    reason_raw: str | None = strawberry.field(
        description="The reason exactly as the provider wrote it."
    )


@strawberry.type(description="One account of one provider: plans, subscription and usage.")
class BillingAccount:
    ref: strawberry.Private[AccountRef]

    @strawberry.field(description="Globally unique id of the account.")
    async def id(self, info: Info) -> strawberry.ID:
        account = await _account_id(info, self.ref)
        return strawberry.ID(global_id("BillingAccount", self.ref.provider, account))

    @strawberry.field(description="The provider of the account.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.ref.provider)

    @strawberry.field(
        description="The provider's own id: the Almanac organization id, or the organization "
        "behind the Autoposting API key."
    )
    async def account_id(self, info: Info) -> strawberry.ID:
        return strawberry.ID(await _account_id(info, self.ref))

    @strawberry.field(
        description="The plan catalog offered to the account, the current plan marked. For "
        "Autoposting, the configured catalog plus the current plan."
    )
    async def plans(self, info: Info) -> list[Plan]:
        plans = await _source(info, self.ref).plans(self.ref)
        return [Plan(model=plan, ref=self.ref) for plan in plans]

    @strawberry.field(description="The current plan; null when the provider marks none.")
    async def current_plan(self, info: Info) -> Plan | None:
        plans = await _source(info, self.ref).plans(self.ref)
        current = next((plan for plan in plans if plan.current), None)
        return Plan(model=current, ref=self.ref) if current else None

    @strawberry.field(
        description="The subscription state; null where the provider reports none (Almanac)."
    )
    async def subscription(self, info: Info) -> SubscriptionState | None:
        subscription = await _source(info, self.ref).subscription(self.ref)
        return SubscriptionState(model=subscription, ref=self.ref) if subscription else None

    @strawberry.field(
        description="Whether the caller may manage billing; null where the provider does not "
        "say (Autoposting)."
    )
    async def manage(self, info: Info) -> BillingPermission | None:
        manage = await _source(info, self.ref).manage(self.ref)
        if manage is None:
            return None
        reason = from_domain(ManageReasonEnum, manage.reason) if manage.reason else None
        return BillingPermission(
            allowed=manage.allowed, reason=reason, reason_raw=manage.reason_raw
        )

    @strawberry.field(
        description="Usage meters. Almanac's come with the billing state; Autoposting's from "
        "credits, the social-account limit and AI tokens (fetched only when selected). Null, "
        "with an error carrying `extensions.code`, when they could not be fetched."
    )
    async def usage_meters(self, info: Info) -> list[UsageMeter] | None:
        meters = await _source(info, self.ref).usage_meters(self.ref)
        return [UsageMeter(model=meter, ref=self.ref) for meter in meters]

    @strawberry.field(description=RAW_DESCRIPTION)
    async def raw(self, info: Info) -> JSON:
        return _json(await _source(info, self.ref).raw(self.ref))


@strawberry.type(description="A hosted checkout to send the customer to.")
class CheckoutSession:
    model: strawberry.Private[models.CheckoutSession]
    ref: strawberry.Private[AccountRef]

    @strawberry.field(
        description="Globally unique id: from the provider's session id, or from the URL when "
        "the provider gives no session id."
    )
    def id(self) -> strawberry.ID:
        # No account in it: reading the Autoposting organization could fail after the checkout
        # was created, and the session must never be lost to that.
        local = self.model.session_id or self.model.url
        return strawberry.ID(global_id("CheckoutSession", self.ref.provider, local))

    @strawberry.field(description="The provider the checkout was started at.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.model.provider)

    @strawberry.field(
        description="The account the checkout is for. For Autoposting it is read from the API "
        "key's profile: null, with an error in `errors`, if that read fails; the session stands."
    )
    async def account_id(self, info: Info) -> strawberry.ID | None:
        return strawberry.ID(await _account_id(info, self.ref))

    @strawberry.field(description="The plan being bought.")
    def plan_id(self) -> strawberry.ID:
        return strawberry.ID(self.model.plan_id)

    @strawberry.field(description="The hosted checkout page to redirect the customer to.")
    def url(self) -> str:
        return self.model.url

    @strawberry.field(
        description="The provider's checkout session id: Autoposting's `sessionId`, or for "
        "Almanac the session id carried in the checkout URL when it carries one; never invented."
    )
    def session_id(self) -> str | None:
        return self.model.session_id

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self) -> JSON:
        return _json(self.model.raw)


def _money(value: models.Money | None) -> Money | None:
    return Money(amount=value.amount, currency=value.currency) if value else None


@strawberry.type(description="One line of a plan change's price.")
class CheckoutPreviewLine:
    model: strawberry.Private[models.PreviewLine]

    @strawberry.field(description="What the line charges or credits for.")
    def name(self) -> str | None:
        return self.model.name

    @strawberry.field(description="A longer explanation of the line, when the provider gives one.")
    def description(self) -> str | None:
        return self.model.description

    @strawberry.field(description="How many units the line counts.")
    def quantity(self) -> float | None:
        return self.model.quantity

    @strawberry.field(description="The line's amount before taxes and discounts.")
    def subtotal(self) -> Money | None:
        return _money(self.model.subtotal)

    @strawberry.field(description="The line's amount to pay.")
    def total(self) -> Money | None:
        return _money(self.model.total)


@strawberry.type(description="What a plan change will cost, before any checkout is started.")
class CheckoutPreview:
    model: strawberry.Private[models.CheckoutPreview]

    @strawberry.field(description="Globally unique id of this preview (account and plan).")
    def id(self) -> strawberry.ID:
        model = self.model
        return strawberry.ID(
            global_id("CheckoutPreview", model.provider, model.account_id, model.plan_id)
        )

    @strawberry.field(description="The provider that priced the change.")
    def provider(self) -> ProviderEnum:
        return from_domain(ProviderEnum, self.model.provider)

    @strawberry.field(description="The account the change is for.")
    def account_id(self) -> strawberry.ID:
        return strawberry.ID(self.model.account_id)

    @strawberry.field(description="The plan the account would change to.")
    def plan_id(self) -> strawberry.ID:
        return strawberry.ID(self.model.plan_id)

    @strawberry.field(
        description="ISO 4217 currency of every amount: the provider's, or the configured one."
    )
    def currency(self) -> str:
        return self.model.currency

    @strawberry.field(description="The charges and credits of the change.")
    def line_items(self) -> list[CheckoutPreviewLine]:
        return [CheckoutPreviewLine(model=line) for line in self.model.lines]

    @strawberry.field(description="The sum before taxes and discounts.")
    def subtotal(self) -> Money | None:
        return _money(self.model.subtotal)

    @strawberry.field(description="The amount to pay.")
    def total(self) -> Money | None:
        return _money(self.model.total)

    @strawberry.field(
        description="Whether the change needs the hosted checkout (`startCheckout`) to be paid."
    )
    def hosted_checkout_required(self) -> bool:
        return self.model.hosted_checkout_required

    @strawberry.field(description="The provider's kind of checkout, as it names it.")
    def checkout_type(self) -> str | None:
        return self.model.checkout_type

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self) -> JSON:
        return _json(self.model.raw)
