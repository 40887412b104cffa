"""The unified billing domain: frozen, slotted dataclasses that both providers normalize into.

`raw` fields keep a reference to the upstream JSON object a model came from (no copy), for the
GraphQL `raw` escape hatch; they take no part in equality.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.errors import UpstreamError
from gateway.provider import Provider

Raw = Mapping[str, Any]


class Interval(enum.Enum):
    """How often a plan bills."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    ONE_TIME = "one_time"
    OTHER = "other"


class SubscriptionStatus(enum.Enum):
    """A subscription's state, normalized across providers."""

    ACTIVE = "active"
    TRIALING = "trialing"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    SUSPENDED = "suspended"
    NONE = "none"
    OTHER = "other"


class ManageReason(enum.Enum):
    """Why the caller may or may not manage billing (Almanac `manage.reason`)."""

    PERMISSION = "permission"
    NOT_ALLOWED = "not_allowed"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency."""

    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class PlanFeature:
    """A feature a plan includes, with the amount included when the provider says."""

    feature_id: str
    included: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan of a provider's catalog, as offered to one account."""

    provider: Provider
    plan_id: str
    name: str
    price: Money | None
    interval: Interval | None
    interval_raw: str | None
    group: str | None
    features: tuple[PlanFeature, ...]
    current: bool
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UsageMeter:
    """How much of one metered feature an account has used."""

    provider: Provider
    feature_id: str
    used: float
    granted: float | None
    remaining: float | None
    unlimited: bool
    overage_allowed: bool
    resets_at: datetime | None
    raw: Raw = field(compare=False, repr=False)

    @property
    def used_fraction(self) -> float | None:
        """Used over granted; None when unlimited or when nothing is granted."""
        if self.unlimited or not self.granted:
            return None
        return self.used / self.granted


@dataclass(frozen=True, slots=True)
class Subscription:
    """The state of an account's subscription, where the provider reports one."""

    provider: Provider
    status: SubscriptionStatus
    status_raw: str | None
    plan_id: str | None
    billing_cycle: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancelled_at: datetime | None
    suspended_at: datetime | None
    pending_plan_id: str | None
    pending_change_at: datetime | None
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ManagePermission:
    """Whether the caller may manage the account's billing, and why (not)."""

    allowed: bool
    reason: ManageReason | None
    reason_raw: str | None


@dataclass(frozen=True, slots=True)
class AlmanacBilling:
    """One Almanac organization's billing state (one upstream call gives all of it)."""

    organization_id: str
    plans: tuple[Plan, ...]
    usage: tuple[UsageMeter, ...]
    manage: ManagePermission | None  # None: Almanac's answer did not say (contract drift)
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AutopostingStatus:
    """The Autoposting organization's current plan, subscription and account limit."""

    plan_id: str | None
    plan_name: str | None
    subscription: Subscription
    accounts_meter: UsageMeter | None
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AutopostingProfile:
    """The identity behind an Autoposting API key."""

    organization_id: str
    name: str | None
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A hosted checkout the customer is sent to."""

    provider: Provider
    account_id: str | None
    plan_id: str
    url: str
    session_id: str | None
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AutopostingBilling:
    """The Autoposting organization's status with the configured plan catalog applied to it."""

    status: AutopostingStatus
    plans: tuple[Plan, ...]


@dataclass(frozen=True, slots=True)
class PreviewLine:
    """One line of a plan change's price preview."""

    name: str | None
    description: str | None
    quantity: float | None
    subtotal: Money | None
    total: Money | None


@dataclass(frozen=True, slots=True)
class CheckoutPreview:
    """What a plan change will cost, before any checkout is started."""

    provider: Provider
    account_id: str
    plan_id: str
    currency: str
    lines: tuple[PreviewLine, ...]
    subtotal: Money | None
    total: Money | None
    hosted_checkout_required: bool
    checkout_type: str | None
    raw: Raw = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Freshness:
    """When an answer was fetched from its provider, and the failure it stands in for when it is
    the last good answer served instead of a failed read (stale-if-error); None: a live read."""

    fetched_at: datetime
    failure: UpstreamError | None = field(default=None, compare=False)

    @property
    def stale(self) -> bool:
        """Whether the answer stands in for a failed read."""
        return self.failure is not None

    def older(self, other: Freshness) -> Freshness:
        """The staler of the two: the one standing in for a failure, else the one fetched first."""
        if self.stale != other.stale:
            return self if self.stale else other
        return self if self.fetched_at <= other.fetched_at else other
