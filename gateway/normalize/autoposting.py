"""Autoposting JSON (the envelope's `data`) -> models: status, catalog, meters, checkout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.models import (
    AutopostingProfile,
    AutopostingStatus,
    CheckoutSession,
    Plan,
    PlanFeature,
    Subscription,
    SubscriptionStatus,
    UsageMeter,
)
from gateway.normalize.fields import (
    AUTOPOSTING,
    Json,
    as_object,
    bad,
    enum_key,
    money,
    optional_bool,
    optional_datetime,
    optional_list,
    optional_number,
    optional_str,
    parse_interval,
    require_http_url,
    require_number,
    require_str,
    same_plan_id,
)

_STATUSES: dict[str, SubscriptionStatus] = {
    "active": SubscriptionStatus.ACTIVE,
    "trialing": SubscriptionStatus.TRIALING,
    "trial": SubscriptionStatus.TRIALING,
    "past_due": SubscriptionStatus.PAST_DUE,
    "pastdue": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
    "cancelled": SubscriptionStatus.CANCELED,
    "suspended": SubscriptionStatus.SUSPENDED,
    "none": SubscriptionStatus.NONE,
    "free": SubscriptionStatus.NONE,
}


def autoposting_status(payload: object) -> AutopostingStatus:
    """The organization's BillingStatus, every field optional (the SDK types are the only source).

    Subscription status, first rule that applies:

    1. `suspendedAt` set: SUSPENDED, whatever `status` says (suspension blocks billing calls).
    2. `status` a non-blank string, case-insensitive, "-" and " " read as "_": active -> ACTIVE;
       trialing, trial -> TRIALING; past_due, pastdue, unpaid -> PAST_DUE; canceled, cancelled ->
       CANCELED; suspended -> SUSPENDED; none, free -> NONE (no paid subscription); anything else,
       including the ambiguous "inactive" and "expired", -> OTHER. A known status wins over
       `isTrialing` and `cancelledAt`: they only fill in when `status` is missing.
    3. `status` missing, null or blank: `isTrialing` true -> TRIALING; else `cancelledAt` set ->
       CANCELED; else OTHER (unknown: a plan alone does not prove an active subscription).

    `status_raw` is `status` exactly as sent (None when missing).
    """
    body = as_object(payload, AUTOPOSTING, "data")
    plan_id = optional_str(body, "plan", AUTOPOSTING) or None
    status_raw = optional_str(body, "status", AUTOPOSTING)
    suspended_at = optional_datetime(body, "suspendedAt", AUTOPOSTING)
    cancelled_at = optional_datetime(body, "cancelledAt", AUTOPOSTING)
    status = _subscription_status(
        status_raw,
        suspended=suspended_at is not None,
        trialing=optional_bool(body, "isTrialing", AUTOPOSTING),
        cancelled=cancelled_at is not None,
    )
    subscription = Subscription(
        provider=AUTOPOSTING,
        status=status,
        status_raw=status_raw,
        plan_id=plan_id,
        billing_cycle=optional_str(body, "billingCycle", AUTOPOSTING),
        current_period_start=optional_datetime(body, "currentPeriodStart", AUTOPOSTING),
        current_period_end=optional_datetime(body, "currentPeriodEnd", AUTOPOSTING),
        trial_end=optional_datetime(body, "trialEnd", AUTOPOSTING),
        cancelled_at=cancelled_at,
        suspended_at=suspended_at,
        pending_plan_id=optional_str(body, "pendingPlan", AUTOPOSTING) or None,
        pending_change_at=optional_datetime(body, "pendingChangeDate", AUTOPOSTING),
        raw=body,
    )
    return AutopostingStatus(
        plan_id=plan_id,
        plan_name=optional_str(body, "planName", AUTOPOSTING),
        subscription=subscription,
        accounts_meter=_accounts_meter(body),
        raw=body,
    )


def _subscription_status(
    raw: str | None, *, suspended: bool, trialing: bool, cancelled: bool
) -> SubscriptionStatus:
    if suspended:
        return SubscriptionStatus.SUSPENDED
    if raw is not None and raw.strip():
        return _STATUSES.get(enum_key(raw), SubscriptionStatus.OTHER)
    if trialing:
        return SubscriptionStatus.TRIALING
    if cancelled:
        return SubscriptionStatus.CANCELED
    return SubscriptionStatus.OTHER


def _accounts_meter(body: Json) -> UsageMeter | None:
    """Social accounts: `accountLimit` -1 is unlimited; no meter when the limit is missing."""
    limit = optional_number(body, "accountLimit", AUTOPOSTING)
    if limit is None:
        return None
    unlimited = limit == -1
    if limit < 0 and not unlimited:
        raise bad(AUTOPOSTING, "accountLimit", "must be -1 or not negative")
    used = float(optional_number(body, "accountsUsed", AUTOPOSTING) or 0)
    return UsageMeter(
        provider=AUTOPOSTING,
        feature_id="social_accounts",
        used=used,
        granted=None if unlimited else float(limit),
        remaining=None if unlimited else max(limit - used, 0.0),
        unlimited=unlimited,
        overage_allowed=False,
        resets_at=None,
        raw=body,
    )


def autoposting_plans(
    catalog: Sequence[Mapping[str, Any]], status: AutopostingStatus, *, currency: str
) -> tuple[Plan, ...]:
    """The configured catalog as plans, the status's plan marked current (appended if missing).

    An entry whose id equals the status plan exactly is preferred; otherwise the first entry that
    `same_plan_id` matches. Entries were validated at start-up, so they are read as trusted.
    """
    current = _current_index(catalog, status.plan_id)
    plans = [
        _catalog_plan(entry, currency, current=i == current) for i, entry in enumerate(catalog)
    ]
    if status.plan_id is not None and current is None:
        plans.append(_status_plan(status, status.plan_id))
    return tuple(plans)


def _current_index(catalog: Sequence[Json], plan_id: str | None) -> int | None:
    if plan_id is None:
        return None
    ids = [str(entry["id"]) for entry in catalog]
    if plan_id in ids:
        return ids.index(plan_id)
    return next((i for i, entry_id in enumerate(ids) if same_plan_id(entry_id, plan_id)), None)


def _catalog_plan(entry: Json, currency: str, *, current: bool) -> Plan:
    interval_raw = entry.get("interval")
    return Plan(
        provider=AUTOPOSTING,
        plan_id=entry["id"],
        name=entry["name"],
        price=money(entry.get("price"), entry.get("currency") or currency),
        interval=parse_interval(interval_raw),
        interval_raw=interval_raw,
        group=entry.get("group"),
        features=tuple(
            PlanFeature(
                feature_id=feature["id"],
                included=None if feature.get("included") is None else float(feature["included"]),
            )
            for feature in entry.get("features") or ()
        ),
        current=current,
        raw=entry,
    )


def _status_plan(status: AutopostingStatus, plan_id: str) -> Plan:
    billing_cycle = status.subscription.billing_cycle
    return Plan(
        provider=AUTOPOSTING,
        plan_id=plan_id,
        name=status.plan_name or plan_id,
        price=None,
        interval=parse_interval(billing_cycle),
        interval_raw=billing_cycle,
        group=None,
        features=(),
        current=True,
        raw=status.raw,
    )


def autoposting_credits_meter(payload: object) -> UsageMeter:
    """The credit meter from /billing/credit-summary or either shape of /billing/credits.

    `balance` is required everywhere and is always `remaining` (credits can be bought on top of
    the allocation, so used may exceed granted). `granted` is `monthlyAllocation` when sent, else
    None (SDK shape, whose balance is in cents). `used` is, first that applies: `used`;
    `monthlyAllocation - balance`, not below 0; the sum of `recentUsage[].amount`; 0.
    Spending stops at a zero balance (402), so overage is never allowed.
    """
    body = as_object(payload, AUTOPOSTING, "data")
    balance = float(require_number(body, "balance", AUTOPOSTING))
    allocation = optional_number(body, "monthlyAllocation", AUTOPOSTING)
    used = optional_number(body, "used", AUTOPOSTING)
    if used is None:
        used = max(allocation - balance, 0.0) if allocation is not None else _recent_usage(body)
    return UsageMeter(
        provider=AUTOPOSTING,
        feature_id="credits",
        used=float(used),
        granted=None if allocation is None else float(allocation),
        remaining=balance,
        unlimited=False,
        overage_allowed=False,
        resets_at=optional_datetime(body, "resetAt", AUTOPOSTING),
        raw=body,
    )


def _recent_usage(body: Json) -> float:
    total = 0.0
    for i, value in enumerate(optional_list(body, "recentUsage", AUTOPOSTING)):
        entry = as_object(value, AUTOPOSTING, f"recentUsage[{i}]")
        total += optional_number(entry, "amount", AUTOPOSTING, f"recentUsage[{i}]") or 0
    return total


def autoposting_tokens_meter(payload: object) -> UsageMeter:
    """AI tokens used over the period /usage/tokens was asked for; no grant, no reset."""
    body = as_object(payload, AUTOPOSTING, "data")
    total = require_number(body, "total", AUTOPOSTING)
    if not float(total).is_integer():
        raise bad(AUTOPOSTING, "total", "must be an integer")
    return UsageMeter(
        provider=AUTOPOSTING,
        feature_id="ai_tokens",
        used=float(total),
        granted=None,
        remaining=None,
        unlimited=False,
        overage_allowed=False,
        resets_at=None,
        raw=body,
    )


def autoposting_profile(payload: object) -> AutopostingProfile:
    """The organization behind the API key: `orgId`, falling back to `id`."""
    body = as_object(payload, AUTOPOSTING, "data")
    org_id = optional_str(body, "orgId", AUTOPOSTING) or optional_str(body, "id", AUTOPOSTING)
    if not org_id:
        raise bad(AUTOPOSTING, "orgId", "is missing")
    return AutopostingProfile(
        organization_id=org_id, name=optional_str(body, "name", AUTOPOSTING), raw=body
    )


def autoposting_checkout(payload: object, *, plan_id: str) -> CheckoutSession:
    """A hosted checkout from `{checkoutUrl, sessionId}`; Autoposting names no account."""
    body = as_object(payload, AUTOPOSTING, "data")
    url = require_http_url(body, "checkoutUrl", AUTOPOSTING)
    session_id = require_str(body, "sessionId", AUTOPOSTING)
    if not session_id:
        raise bad(AUTOPOSTING, "sessionId", "must not be empty")
    return CheckoutSession(
        provider=AUTOPOSTING,
        account_id=None,
        plan_id=plan_id,
        url=url,
        session_id=session_id,
        raw=body,
    )
