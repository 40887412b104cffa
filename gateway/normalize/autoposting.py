"""Autoposting JSON (the envelope's `data`) -> models: status, catalog, meters, checkout.

The tables below are the gateway's reading of Autoposting's answers, one row per field it reads
(`/work/shared/upstreams/autoposting.openapi.yaml`). Most shapes come from the SDK's types, not a
documented contract, and the docs and the SDK disagree on some: `/billing/status` promises no
field at all, so its absences are normal and only malformed values are drift. A field that
`identifies` its object fails it when missing or malformed; any other field `degrades` to what
its row says, counted as drift. The status answer is the account: nothing in it identifies it
(the profile does), so every field of it degrades. The credits and tokens answers are one meter
each: a failure there fails `usageMeters` (null with an error), never the account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.models import (
    AutopostingProfile,
    AutopostingStatus,
    CheckoutSession,
    Interval,
    Plan,
    PlanFeature,
    Subscription,
    SubscriptionStatus,
    UsageMeter,
)
from gateway.normalize.drift import DriftRecorder
from gateway.normalize.fields import (
    AUTOPOSTING,
    Contract,
    Json,
    Reader,
    degrades,
    enum_key,
    identifies,
    money,
    parse_interval,
    read_answer,
    same_plan_id,
    session_id_from_url,
)

BILLING_STATUS = Contract(
    AUTOPOSTING,
    "/billing/status",
    {
        "plan": degrades("null (no plan is current)"),
        "planName": degrades("null (the plan id names an appended current plan)"),
        "billingCycle": degrades("null (an unknown one is OTHER in an appended plan)"),
        "status": degrades("read from isTrialing and cancelledAt (an unknown one is OTHER)"),
        "isTrialing": degrades("false"),
        "currentPeriodStart": degrades("null"),
        "currentPeriodEnd": degrades("null"),
        "trialEnd": degrades("null"),
        "cancelledAt": degrades("null (still read as cancelled)"),
        "suspendedAt": degrades("null (still read as suspended)"),
        "pendingPlan": degrades("null"),
        "pendingChangeDate": degrades("null"),
        "accountLimit": degrades("no social_accounts meter"),
        # The meter's used amount: required once accountLimit is sent.
        "accountsUsed": degrades("no social_accounts meter", required=True),
    },
)
CREDIT_SUMMARY = Contract(
    AUTOPOSTING,
    "/billing/credit-summary",
    {
        "balance": identifies(),
        "monthlyAllocation": degrades("null"),
        "used": degrades("derived from monthlyAllocation and balance, or recentUsage"),
        "resetAt": degrades("null"),
        "recentUsage": degrades("empty"),
        "recentUsage[]": degrades("dropped"),
        "recentUsage[].amount": degrades("0"),
    },
)
TOKEN_USAGE = Contract(AUTOPOSTING, "/usage/tokens", {"total": identifies()})
PROFILE = Contract(
    AUTOPOSTING,
    "/auth/profile",
    {
        # orgId, falling back to id when absent or empty; malformed, either fails.
        "orgId": identifies(required=False),
        "id": identifies(required=False),
        "name": degrades("null"),
    },
)
CHECKOUT = Contract(
    AUTOPOSTING,
    "/billing/checkout",
    {
        "checkoutUrl": identifies(),
        "sessionId": degrades("the session id the URL carries, else null", required=True),
    },
)
CONTRACTS = (BILLING_STATUS, CREDIT_SUMMARY, TOKEN_USAGE, PROFILE, CHECKOUT)

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


def autoposting_status(payload: object, *, drift: DriftRecorder) -> AutopostingStatus:
    """The organization's BillingStatus, every field optional (the SDK types are the only source).

    Subscription status, first rule that applies:

    1. `suspendedAt` set: SUSPENDED, whatever `status` says (suspension blocks billing calls).
       Set means anything but null, "" or false: a value that is not a date-time still says so.
    2. `status` a non-blank string, case-insensitive, "-" and " " read as "_": active -> ACTIVE;
       trialing, trial -> TRIALING; past_due, pastdue, unpaid -> PAST_DUE; canceled, cancelled ->
       CANCELED; suspended -> SUSPENDED; none, free -> NONE (no paid subscription); anything else,
       including the ambiguous "inactive" and "expired", -> OTHER (an unknown value). A known
       status wins over `isTrialing` and `cancelledAt`: they only fill in when `status` is missing.
    3. `status` missing, null, blank or not a string: `isTrialing` true -> TRIALING; else
       `cancelledAt` set (as `suspendedAt` above) -> CANCELED; else OTHER (unknown: a plan alone
       does not prove an active subscription).

    `status_raw` is `status` exactly as sent (None when missing or not a string).
    """
    return read_answer(BILLING_STATUS, payload, drift, _status, name="data")


def _status(body: Reader) -> AutopostingStatus:
    plan_id = body.text("plan") or None
    status_raw = body.text("status")
    if status_raw is not None and status_raw.strip() and enum_key(status_raw) not in _STATUSES:
        body.unknown_value("status")
    billing_cycle = body.text("billingCycle")
    if parse_interval(billing_cycle) is Interval.OTHER:
        body.unknown_value("billingCycle")
    status = _subscription_status(
        status_raw,
        suspended=body.present("suspendedAt"),
        trialing=body.flag("isTrialing"),
        cancelled=body.present("cancelledAt"),
    )
    subscription = Subscription(
        provider=AUTOPOSTING,
        status=status,
        status_raw=status_raw,
        plan_id=plan_id,
        billing_cycle=billing_cycle,
        current_period_start=body.iso_datetime("currentPeriodStart"),
        current_period_end=body.iso_datetime("currentPeriodEnd"),
        trial_end=body.iso_datetime("trialEnd"),
        cancelled_at=body.iso_datetime("cancelledAt"),
        suspended_at=body.iso_datetime("suspendedAt"),
        pending_plan_id=body.text("pendingPlan") or None,
        pending_change_at=body.iso_datetime("pendingChangeDate"),
        raw=body.raw,
    )
    return AutopostingStatus(
        plan_id=plan_id,
        plan_name=body.text("planName"),
        subscription=subscription,
        accounts_meter=_accounts_meter(body),
        raw=body.raw,
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


def _accounts_meter(body: Reader) -> UsageMeter | None:
    """Social accounts: `accountLimit` -1 is unlimited. No meter when the limit is missing, or
    when the limit or the number used is unusable (counted)."""
    limit = body.number("accountLimit")
    if limit is None:
        return None
    unlimited = limit == -1
    if limit < 0 and not unlimited:
        body.malformed("accountLimit")
        return None
    used = body.number("accountsUsed")
    if used is None:
        return None
    return UsageMeter(
        provider=AUTOPOSTING,
        feature_id="social_accounts",
        used=float(used),
        granted=None if unlimited else float(limit),
        remaining=None if unlimited else max(limit - used, 0.0),
        unlimited=unlimited,
        overage_allowed=False,
        resets_at=None,
        raw=body.raw,
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


def autoposting_credits_meter(payload: object, *, drift: DriftRecorder) -> UsageMeter:
    """The credit meter from /billing/credit-summary or either shape of /billing/credits.

    `balance` identifies the meter and is always `remaining` (credits can be bought on top of
    the allocation, so used may exceed granted). `granted` is `monthlyAllocation` when sent, else
    None (SDK shape, whose balance is in cents). `used` is, first that applies: `used`;
    `monthlyAllocation - balance`, not below 0; the sum of `recentUsage[].amount`; 0.
    Spending stops at a zero balance (402), so overage is never allowed.
    """
    return read_answer(CREDIT_SUMMARY, payload, drift, _credits_meter, name="data")


def _credits_meter(body: Reader) -> UsageMeter:
    balance = float(body.key_number("balance"))
    allocation = body.number("monthlyAllocation")
    used = body.number("used")
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
        resets_at=body.iso_datetime("resetAt"),
        raw=body.raw,
    )


def _recent_usage(body: Reader) -> float:
    return float(sum(body.elements("recentUsage", lambda entry: entry.number("amount") or 0)))


def autoposting_tokens_meter(payload: object, *, drift: DriftRecorder) -> UsageMeter:
    """AI tokens used over the period /usage/tokens was asked for; no grant, no reset."""
    return read_answer(TOKEN_USAGE, payload, drift, _tokens_meter, name="data")


def _tokens_meter(body: Reader) -> UsageMeter:
    total = body.key_number("total")
    if not float(total).is_integer():
        body.reject("total", "must be an integer")
    return UsageMeter(
        provider=AUTOPOSTING,
        feature_id="ai_tokens",
        used=float(total),
        granted=None,
        remaining=None,
        unlimited=False,
        overage_allowed=False,
        resets_at=None,
        raw=body.raw,
    )


def autoposting_profile(payload: object, *, drift: DriftRecorder) -> AutopostingProfile:
    """The organization behind the API key: `orgId`, falling back to `id`."""
    return read_answer(PROFILE, payload, drift, _profile, name="data")


def _profile(body: Reader) -> AutopostingProfile:
    # A malformed orgId fails rather than falling back: with a session, `id` is the user's.
    org_id = body.key_str_or_none("orgId") or body.key_str_or_none("id")
    if not org_id:
        body.reject("orgId", "is missing")
    return AutopostingProfile(organization_id=org_id, name=body.text("name"), raw=body.raw)


def autoposting_checkout(payload: object, *, plan_id: str, drift: DriftRecorder) -> CheckoutSession:
    """A hosted checkout from `{checkoutUrl, sessionId}`; Autoposting names no account.

    The checkout exists once Autoposting answered, so only its URL is required: without a usable
    `sessionId` the session id is the one the URL carries, else None (never invented).
    """
    return read_answer(CHECKOUT, payload, drift, lambda body: _checkout(body, plan_id), name="data")


def _checkout(body: Reader, plan_id: str) -> CheckoutSession:
    url = body.key_url("checkoutUrl")
    session_id = body.text("sessionId")
    if session_id == "":
        body.malformed("sessionId")
    return CheckoutSession(
        provider=AUTOPOSTING,
        account_id=None,
        plan_id=plan_id,
        url=url,
        session_id=session_id or session_id_from_url(url),
        raw=body.raw,
    )
