"""GraphQL types of an account's billing: plans, usage meters, subscription, permission,
freshness and the account itself.

Objects hold the domain model and the account they belong to; everything else they reach through
`info.context`, so a field's upstream call happens only when that field is selected. Fields that
copy the model are plain attributes set by `of`; fields that may need a read are resolvers.
"""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from gateway import models
from gateway.context import Info
from gateway.keys import Permission
from gateway.schema.common import (
    RAW_DESCRIPTION,
    Money,
    account_id_of,
    account_scoped_id,
    account_source,
    json_value,
    money,
    raw_json,
)
from gateway.schema.enums import (
    ErrorCodeEnum,
    IntervalEnum,
    ManageReasonEnum,
    ProviderEnum,
    SubscriptionStatusEnum,
    from_domain,
)
from gateway.sources import AccountRef, AccountSource


@strawberry.type(description="A feature a plan includes.")
class PlanFeature:
    feature_id: str = strawberry.field(description="The provider's id of the feature.")
    included: float | None = strawberry.field(
        description="How much of it the plan includes; null when unlimited or not said."
    )


def _features(root: Plan) -> list[PlanFeature]:
    return [PlanFeature(feature_id=f.feature_id, included=f.included) for f in root.model.features]


@strawberry.type(description="A plan of a provider's catalog, as offered to one account.")
class Plan:
    # Fields that only copy the model are plain attributes, set by `of`: Strawberry resolves
    # those without calling a resolver, several times cheaper per field (BENCHMARKS.md).
    model: strawberry.Private[models.Plan]
    ref: strawberry.Private[AccountRef]

    id: strawberry.ID = strawberry.field(
        resolver=account_scoped_id("Plan", lambda plan: plan.model.plan_id),
        description="Globally unique id of this plan for this account.",
    )

    provider: ProviderEnum = strawberry.field(description="The provider the plan belongs to.")
    plan_id: strawberry.ID = strawberry.field(
        description="The provider's own id of the plan, as `startCheckout` takes it."
    )
    name: str = strawberry.field(description="The plan's display name.")
    price: Money | None = strawberry.field(
        description="The price per interval; null when the provider gives none."
    )
    interval: IntervalEnum | None = strawberry.field(
        description="How often the plan bills; null when the provider does not say."
    )
    interval_raw: str | None = strawberry.field(
        description="The billing interval exactly as the provider wrote it."
    )
    group: str | None = strawberry.field(
        description="The provider's grouping of the plan (e.g. a plan family)."
    )

    features: list[PlanFeature] = strawberry.field(
        resolver=_features, description="Features the plan includes, with included amounts."
    )

    current: bool = strawberry.field(description="Whether this is the account's current plan.")

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self, info: Info) -> JSON | None:
        return raw_json(info, self.ref.provider, self.model.raw)

    @classmethod
    def of(cls, model: models.Plan, ref: AccountRef) -> Plan:
        """The GraphQL plan of `model`, for the account of `ref`."""
        interval = model.interval
        return cls(
            model=model,
            ref=ref,
            provider=from_domain(ProviderEnum, model.provider),
            plan_id=strawberry.ID(model.plan_id),
            name=model.name,
            price=money(model.price),
            interval=from_domain(IntervalEnum, interval) if interval else None,
            interval_raw=model.interval_raw,
            group=model.group,
            current=model.current,
        )


@strawberry.type(description="How much of one metered feature an account has used.")
class UsageMeter:
    # Plain attributes, set by `of` (see `Plan`).
    model: strawberry.Private[models.UsageMeter]
    ref: strawberry.Private[AccountRef]

    id: strawberry.ID = strawberry.field(
        resolver=account_scoped_id("UsageMeter", lambda meter: meter.model.feature_id),
        description="Globally unique id of this meter for this account.",
    )

    provider: ProviderEnum = strawberry.field(description="The provider the meter belongs to.")
    feature_id: str = strawberry.field(
        description="The metered feature: the provider's feature id for Almanac; `credits`, "
        "`social_accounts` or `ai_tokens` for Autoposting."
    )
    used: float = strawberry.field(description="How much has been used in the current period.")
    granted: float | None = strawberry.field(
        description="How much the plan grants; null when unlimited or not said."
    )
    remaining: float | None = strawberry.field(
        description="How much is left; null when unlimited or not said."
    )
    unlimited: bool = strawberry.field(description="Whether the feature is unlimited.")
    overage_allowed: bool = strawberry.field(
        description="Whether use beyond the grant is allowed (and billed)."
    )
    resets_at: datetime | None = strawberry.field(
        description="When the meter resets; null when it does not or is not said."
    )
    used_fraction: float | None = strawberry.field(
        description="`used / granted` (above 1 when over the limit); null when unlimited or "
        "nothing is granted."
    )

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self, info: Info) -> JSON | None:
        return raw_json(info, self.ref.provider, self.model.raw)

    @classmethod
    def of(cls, model: models.UsageMeter, ref: AccountRef) -> UsageMeter:
        """The GraphQL meter of `model`, for the account of `ref`."""
        return cls(
            model=model,
            ref=ref,
            provider=from_domain(ProviderEnum, model.provider),
            feature_id=model.feature_id,
            used=model.used,
            granted=model.granted,
            remaining=model.remaining,
            unlimited=model.unlimited,
            overage_allowed=model.overage_allowed,
            resets_at=model.resets_at,
            used_fraction=model.used_fraction,
        )


@strawberry.type(description="The state of an account's subscription, as the provider reports it.")
class SubscriptionState:
    # Plain attributes, set by `of` (see `Plan`).
    model: strawberry.Private[models.Subscription]
    ref: strawberry.Private[AccountRef]

    id: strawberry.ID = strawberry.field(
        resolver=account_scoped_id("SubscriptionState"),
        description="Globally unique id of this account's subscription.",
    )

    provider: ProviderEnum = strawberry.field(description="The provider of the subscription.")
    status: SubscriptionStatusEnum = strawberry.field(description="The normalized status.")
    status_raw: str | None = strawberry.field(
        description="The status exactly as the provider wrote it."
    )
    plan_id: strawberry.ID | None = strawberry.field(
        description="The provider's id of the subscribed plan."
    )
    billing_cycle: str | None = strawberry.field(
        description="The billing cycle as the provider writes it, e.g. monthly."
    )
    current_period_start: datetime | None = strawberry.field(
        description="Start of the current billing period."
    )
    current_period_end: datetime | None = strawberry.field(
        description="End of the current billing period."
    )
    trial_end: datetime | None = strawberry.field(description="End of the trial, when trialing.")
    cancelled_at: datetime | None = strawberry.field(
        description="When the subscription was canceled."
    )
    suspended_at: datetime | None = strawberry.field(
        description="When the provider suspended the account."
    )
    pending_plan_id: strawberry.ID | None = strawberry.field(
        description="The plan the subscription will change to, if one is pending."
    )
    pending_change_at: datetime | None = strawberry.field(
        description="When the pending plan change takes effect."
    )

    @strawberry.field(description=RAW_DESCRIPTION)
    def raw(self, info: Info) -> JSON | None:
        return raw_json(info, self.ref.provider, self.model.raw)

    @classmethod
    def of(cls, model: models.Subscription, ref: AccountRef) -> SubscriptionState:
        """The GraphQL subscription state of `model`, for the account of `ref`."""
        plan_id = model.plan_id
        pending = model.pending_plan_id
        return cls(
            model=model,
            ref=ref,
            provider=from_domain(ProviderEnum, model.provider),
            status=from_domain(SubscriptionStatusEnum, model.status),
            status_raw=model.status_raw,
            plan_id=strawberry.ID(plan_id) if plan_id else None,
            billing_cycle=model.billing_cycle,
            current_period_start=model.current_period_start,
            current_period_end=model.current_period_end,
            trial_end=model.trial_end,
            cancelled_at=model.cancelled_at,
            suspended_at=model.suspended_at,
            pending_plan_id=strawberry.ID(pending) if pending else None,
            pending_change_at=model.pending_change_at,
        )


@strawberry.type(description="Whether the caller may manage the account's billing, and why.")
class BillingPermission:
    allowed: bool = strawberry.field(description="Whether the caller may start a checkout.")
    reason: ManageReasonEnum | None = strawberry.field(
        description="The provider's reason for the decision."
    )
    reason_raw: str | None = strawberry.field(
        description="The reason exactly as the provider wrote it."
    )


@strawberry.type(
    description="When an account's data was fetched from its provider, and whether it is the last "
    "good answer standing in for a read that failed (stale-if-error, when the gateway is "
    "configured for it)."
)
class Freshness:
    fetched_at: datetime = strawberry.field(
        description="When the gateway fetched the data from the provider: now, or within the "
        "gateway's cache time, for a live read; the time of the last good read for stale data. "
        "For several parts (an Autoposting account's status, profile and meters): the stalest."
    )
    stale: bool = strawberry.field(
        description="True when the provider failed just now and the account shows its last good "
        "answer instead; usage meters are then null with that failure's error, unless the "
        "gateway serves them stale too."
    )
    reason: ErrorCodeEnum | None = strawberry.field(
        description="Why the data is stale: the code of the failed read (UPSTREAM_TIMEOUT, "
        "UPSTREAM_UNREACHABLE or UPSTREAM_UNAVAILABLE); null when it is live."
    )

    @classmethod
    def of(cls, model: models.Freshness) -> Freshness:
        """The GraphQL freshness of `model`."""
        failure = model.failure
        return cls(
            fetched_at=model.fetched_at,
            stale=model.stale,
            reason=from_domain(ErrorCodeEnum, failure.code) if failure is not None else None,
        )


async def _account_own_id(root: BillingAccount, info: Info) -> strawberry.ID:
    return strawberry.ID(await account_id_of(info, root.ref))


@strawberry.type(description="One account of one provider: plans, subscription and usage.")
class BillingAccount:
    # The primary resource is loaded before the account is made (`of`): the fields it answers
    # are plain attributes, set from it, not async resolvers that would each wait on a loader
    # already done (several times cheaper per field; BENCHMARKS.md). Fields that may need
    # another upstream call (ids, usage meters) stay resolvers.
    ref: strawberry.Private[AccountRef]

    id: strawberry.ID = strawberry.field(
        resolver=account_scoped_id("BillingAccount"),
        description="Globally unique id of the account.",
    )
    provider: ProviderEnum = strawberry.field(description="The provider of the account.")

    account_id: strawberry.ID = strawberry.field(
        resolver=_account_own_id,
        description="The provider's own id: the Almanac organization id, or the organization "
        "behind the Autoposting API key.",
    )
    plans: list[Plan] = strawberry.field(
        description="The plan catalog offered to the account, the current plan marked. For "
        "Autoposting, the configured catalog plus the current plan."
    )
    current_plan: Plan | None = strawberry.field(
        description="The current plan; null when the provider marks none."
    )
    subscription: SubscriptionState | None = strawberry.field(
        description="The subscription state; null where the provider reports none (Almanac)."
    )
    manage: BillingPermission | None = strawberry.field(
        description="Whether the caller may manage billing; null where the provider does not "
        "say (Autoposting)."
    )
    freshness: Freshness = strawberry.field(
        description="When this account's data was fetched, and whether it is stale: the last "
        "good answer, shown because the provider is down or failing."
    )

    @classmethod
    async def of(cls, ref: AccountRef, source: AccountSource) -> BillingAccount:
        """The account of `ref`, whose primary resource `source` has loaded."""
        plans = [Plan.of(plan, ref) for plan in await source.plans(ref)]
        subscription = await source.subscription(ref)
        manage = await source.manage(ref)
        freshness = Freshness.of(await source.freshness(ref))
        reason = from_domain(ManageReasonEnum, manage.reason) if manage and manage.reason else None
        return cls(
            ref=ref,
            provider=from_domain(ProviderEnum, ref.provider),
            plans=plans,
            current_plan=next((plan for plan in plans if plan.current), None),
            subscription=SubscriptionState.of(subscription, ref) if subscription else None,
            manage=BillingPermission(
                allowed=manage.allowed, reason=reason, reason_raw=manage.reason_raw
            )
            if manage
            else None,
            freshness=freshness,
        )

    @strawberry.field(
        description="Usage meters. Almanac's come with the billing state; Autoposting's from "
        "credits, the social-account limit and AI tokens (fetched only when selected). Null, "
        "with an error carrying `extensions.code`, when they could not be fetched."
    )
    async def usage_meters(self, info: Info) -> list[UsageMeter] | None:
        meters = await account_source(info, self.ref).usage_meters(self.ref)
        return [UsageMeter.of(meter, self.ref) for meter in meters]

    @strawberry.field(description=RAW_DESCRIPTION)
    async def raw(self, info: Info) -> JSON | None:
        info.context.permit(Permission.RAW_READ, self.ref.provider)
        return json_value(await account_source(info, self.ref).raw(self.ref))
