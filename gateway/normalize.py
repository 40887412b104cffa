"""Pure functions from decoded upstream JSON to the domain models: no I/O.

Lenient in what they accept: unknown fields are ignored, a missing or null optional field becomes
None or its default, an unknown enum-like string becomes `OTHER` with the raw string kept. A payload
that breaks the contract (not an object, a required field missing, a field of the wrong type, a
boolean where a number belongs) raises `UpstreamBadResponse`, whose message names the field and
never echoes an upstream value. Autoposting functions take the envelope's `data`, already unwrapped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlsplit

from gateway.errors import UpstreamBadResponse
from gateway.models import (
    AlmanacBilling,
    AutopostingProfile,
    AutopostingStatus,
    CheckoutPreview,
    CheckoutSession,
    Interval,
    ManagePermission,
    ManageReason,
    Money,
    Plan,
    PlanFeature,
    PreviewLine,
    Subscription,
    SubscriptionStatus,
    UsageMeter,
)
from gateway.provider import Provider

__all__ = [
    "almanac_billing",
    "almanac_checkout",
    "autoposting_checkout",
    "autoposting_credits_meter",
    "autoposting_plans",
    "autoposting_profile",
    "autoposting_status",
    "autoposting_tokens_meter",
    "parse_datetime",
    "parse_interval",
    "parse_unix_timestamp",
    "same_plan_id",
    "session_id_from_url",
]

Json = Mapping[str, Any]
ALMANAC = Provider.ALMANAC
AUTOPOSTING = Provider.AUTOPOSTING

# 1e11 s is the year 5138 and 1e11 ms is March 1973: no real reset time is ambiguous.
_MILLISECONDS_ABOVE = 1e11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_INTERVAL_ALIASES: dict[Interval, tuple[str, ...]] = {
    Interval.DAY: ("day", "daily"),
    Interval.WEEK: ("week", "weekly"),
    Interval.MONTH: ("month", "monthly", "mo"),
    Interval.QUARTER: ("quarter", "quarterly"),
    Interval.YEAR: ("year", "yearly", "annual", "annually", "yr"),
    Interval.ONE_TIME: ("one_time", "once", "lifetime"),  # "one-time" normalizes to "one_time"
}
_INTERVALS = {
    alias: interval for interval, aliases in _INTERVAL_ALIASES.items() for alias in aliases
}

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

_SESSION_ID_SEGMENT = re.compile(r"cs_[A-Za-z0-9_]+")  # Stripe: cs_test_..., cs_live_...
_SESSION_ID_VALUE = re.compile(r"[A-Za-z0-9_-]+")  # rejects templates like {CHECKOUT_SESSION_ID}
_SESSION_ID_PARAMS = ("session_id", "sessionId", "checkout_session_id")


# Public parsers without a provider: they raise ValueError and callers convert it.


def parse_unix_timestamp(value: float | int | None) -> datetime | None:
    """A UTC datetime from Unix seconds or milliseconds (values above 1e11 are milliseconds)."""
    if value is None:
        return None
    if not _is_number(value) or value < 0:
        raise ValueError("a Unix timestamp must be a finite, non-negative number")
    try:
        if value > _MILLISECONDS_ABOVE:
            return _EPOCH + timedelta(milliseconds=value)
        return _EPOCH + timedelta(seconds=value)
    except OverflowError:
        raise ValueError("a Unix timestamp is out of range") from None


def parse_interval(raw: str | None) -> Interval | None:
    """A billing interval from its many spellings; unknown ones are OTHER, None or blank None."""
    if raw is None or not raw.strip():
        return None
    return _INTERVALS.get(_enum_key(raw), Interval.OTHER)


def parse_datetime(value: object) -> datetime | None:
    """A UTC datetime from an ISO 8601 string ("Z" and fractions accepted, naive taken as UTC)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a date-time must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 date-time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def same_plan_id(a: str, b: str) -> bool:
    """Whether two plan ids name one plan, ignoring case and a leading "plan_" (pro == plan_pro)."""
    return _bare_plan_id(a) == _bare_plan_id(b)


def session_id_from_url(url: str) -> str | None:
    """The checkout session id a URL carries, or None: never invented.

    A path segment shaped like a Stripe id (`cs_...`) wins; then a `session_id`, `sessionId` or
    `checkout_session_id` query parameter. The fragment is never read.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    for segment in parts.path.split("/"):
        if _SESSION_ID_SEGMENT.fullmatch(segment):
            return segment
    params = parse_qsl(parts.query)
    for name in _SESSION_ID_PARAMS:
        for key, value in params:
            if key == name and _SESSION_ID_VALUE.fullmatch(value):
                return value
    return None


# Almanac


def almanac_billing(payload: object, *, currency: str) -> AlmanacBilling:
    """One organization's HostedBillingState: plan catalog, usage meters and manage permission."""
    body = _object(payload, ALMANAC, "payload")
    plans = _require_list(body, "plans", ALMANAC)
    usage = _optional_list(body, "usage", ALMANAC)
    return AlmanacBilling(
        organization_id=_require_str(body, "organization_id", ALMANAC),
        plans=tuple(_almanac_plan(plan, f"plans[{i}]", currency) for i, plan in enumerate(plans)),
        usage=tuple(_almanac_meter(meter, f"usage[{i}]") for i, meter in enumerate(usage)),
        manage=_almanac_manage(_require_object(body, "manage", ALMANAC)),
        raw=body,
    )


def _almanac_plan(value: object, at: str, currency: str) -> Plan:
    plan = _object(value, ALMANAC, at)
    interval_raw = _optional_str(plan, "interval", ALMANAC, at)
    features = _optional_list(plan, "features", ALMANAC, at)
    return Plan(
        provider=ALMANAC,
        plan_id=_require_str(plan, "plan_id", ALMANAC, at),
        name=_require_str(plan, "name", ALMANAC, at),
        price=_money(_optional_number(plan, "price", ALMANAC, at), currency),
        interval=parse_interval(interval_raw),
        interval_raw=interval_raw,
        group=_optional_str(plan, "group", ALMANAC, at),
        features=tuple(
            _almanac_feature(feature, f"{at}.features[{i}]") for i, feature in enumerate(features)
        ),
        current=_optional_bool(plan, "current", ALMANAC, at),
        raw=plan,
    )


def _almanac_feature(value: object, at: str) -> PlanFeature:
    feature = _object(value, ALMANAC, at)
    included = _optional_number(feature, "included", ALMANAC, at)
    return PlanFeature(
        feature_id=_require_str(feature, "feature_id", ALMANAC, at),
        included=None if included is None else float(included),
    )


def _almanac_meter(value: object, at: str) -> UsageMeter:
    """A usage meter; when unlimited, granted and remaining carry no meaning and are not read."""
    meter = _object(value, ALMANAC, at)
    unlimited = _optional_bool(meter, "unlimited", ALMANAC, at)
    granted = None if unlimited else float(_require_number(meter, "granted", ALMANAC, at))
    remaining = None if unlimited else float(_require_number(meter, "remaining", ALMANAC, at))
    return UsageMeter(
        provider=ALMANAC,
        feature_id=_require_str(meter, "feature_id", ALMANAC, at),
        used=float(_require_number(meter, "usage", ALMANAC, at)),
        granted=granted,
        remaining=remaining,
        unlimited=unlimited,
        overage_allowed=_optional_bool(meter, "overage_allowed", ALMANAC, at),
        resets_at=_optional_timestamp(meter, "next_reset_at", ALMANAC, at),
        raw=meter,
    )


def _almanac_manage(manage: Json) -> ManagePermission:
    reason_raw = _require_str(manage, "reason", ALMANAC, "manage")
    return ManagePermission(
        allowed=_require_bool(manage, "allowed", ALMANAC, "manage"),
        reason=_manage_reason(reason_raw),
        reason_raw=reason_raw,
    )


def _manage_reason(raw: str) -> ManageReason:
    try:
        return ManageReason(_enum_key(raw))
    except ValueError:
        return ManageReason.OTHER


def almanac_checkout(payload: object, *, organization_id: str, plan_id: str) -> CheckoutSession:
    """A hosted checkout from `{url}`; the session id only when the URL carries one."""
    body = _object(payload, ALMANAC, "payload")
    url = _require_http_url(body, "url", ALMANAC)
    return CheckoutSession(
        provider=ALMANAC,
        account_id=organization_id,
        plan_id=plan_id,
        url=url,
        session_id=session_id_from_url(url),
        raw=body,
    )


def almanac_preview(payload: object, *, organization_id: str, currency: str) -> CheckoutPreview:
    """HostedBillingPreview: line items and totals of a plan change; the configured currency
    where Almanac names none."""
    body = _object(payload, ALMANAC, "payload")
    currency = (_optional_str(body, "currency", ALMANAC) or currency).upper()
    lines = _optional_list(body, "line_items", ALMANAC)
    return CheckoutPreview(
        provider=ALMANAC,
        account_id=organization_id,
        plan_id=_require_str(body, "plan_id", ALMANAC),
        currency=currency,
        lines=tuple(
            _preview_line(line, f"line_items[{i}]", currency) for i, line in enumerate(lines)
        ),
        subtotal=_money(_optional_number(body, "subtotal", ALMANAC), currency),
        total=_money(_optional_number(body, "total", ALMANAC), currency),
        hosted_checkout_required=_optional_bool(body, "redirect_to_checkout", ALMANAC),
        checkout_type=_optional_str(body, "checkout_type", ALMANAC),
        raw=body,
    )


def _preview_line(value: object, at: str, currency: str) -> PreviewLine:
    line = _object(value, ALMANAC, at)
    quantity = _optional_number(line, "quantity", ALMANAC, at)
    return PreviewLine(
        name=_optional_str(line, "name", ALMANAC, at),
        description=_optional_str(line, "description", ALMANAC, at),
        quantity=None if quantity is None else float(quantity),
        subtotal=_money(_optional_number(line, "subtotal", ALMANAC, at), currency),
        total=_money(_optional_number(line, "total", ALMANAC, at), currency),
    )


# Autoposting


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
    body = _object(payload, AUTOPOSTING, "data")
    plan_id = _optional_str(body, "plan", AUTOPOSTING) or None
    status_raw = _optional_str(body, "status", AUTOPOSTING)
    suspended_at = _optional_datetime(body, "suspendedAt", AUTOPOSTING)
    cancelled_at = _optional_datetime(body, "cancelledAt", AUTOPOSTING)
    status = _subscription_status(
        status_raw,
        suspended=suspended_at is not None,
        trialing=_optional_bool(body, "isTrialing", AUTOPOSTING),
        cancelled=cancelled_at is not None,
    )
    subscription = Subscription(
        provider=AUTOPOSTING,
        status=status,
        status_raw=status_raw,
        plan_id=plan_id,
        billing_cycle=_optional_str(body, "billingCycle", AUTOPOSTING),
        current_period_start=_optional_datetime(body, "currentPeriodStart", AUTOPOSTING),
        current_period_end=_optional_datetime(body, "currentPeriodEnd", AUTOPOSTING),
        trial_end=_optional_datetime(body, "trialEnd", AUTOPOSTING),
        cancelled_at=cancelled_at,
        suspended_at=suspended_at,
        pending_plan_id=_optional_str(body, "pendingPlan", AUTOPOSTING) or None,
        pending_change_at=_optional_datetime(body, "pendingChangeDate", AUTOPOSTING),
        raw=body,
    )
    return AutopostingStatus(
        plan_id=plan_id,
        plan_name=_optional_str(body, "planName", AUTOPOSTING),
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
        return _STATUSES.get(_enum_key(raw), SubscriptionStatus.OTHER)
    if trialing:
        return SubscriptionStatus.TRIALING
    if cancelled:
        return SubscriptionStatus.CANCELED
    return SubscriptionStatus.OTHER


def _accounts_meter(body: Json) -> UsageMeter | None:
    """Social accounts: `accountLimit` -1 is unlimited; no meter when the limit is missing."""
    limit = _optional_number(body, "accountLimit", AUTOPOSTING)
    if limit is None:
        return None
    unlimited = limit == -1
    if limit < 0 and not unlimited:
        raise _bad(AUTOPOSTING, "accountLimit", "must be -1 or not negative")
    used = float(_optional_number(body, "accountsUsed", AUTOPOSTING) or 0)
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
        price=_money(entry.get("price"), entry.get("currency") or currency),
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
    body = _object(payload, AUTOPOSTING, "data")
    balance = float(_require_number(body, "balance", AUTOPOSTING))
    allocation = _optional_number(body, "monthlyAllocation", AUTOPOSTING)
    used = _optional_number(body, "used", AUTOPOSTING)
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
        resets_at=_optional_datetime(body, "resetAt", AUTOPOSTING),
        raw=body,
    )


def _recent_usage(body: Json) -> float:
    total = 0.0
    for i, value in enumerate(_optional_list(body, "recentUsage", AUTOPOSTING)):
        entry = _object(value, AUTOPOSTING, f"recentUsage[{i}]")
        total += _optional_number(entry, "amount", AUTOPOSTING, f"recentUsage[{i}]") or 0
    return total


def autoposting_tokens_meter(payload: object) -> UsageMeter:
    """AI tokens used over the period /usage/tokens was asked for; no grant, no reset."""
    body = _object(payload, AUTOPOSTING, "data")
    total = _require_number(body, "total", AUTOPOSTING)
    if not float(total).is_integer():
        raise _bad(AUTOPOSTING, "total", "must be an integer")
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
    body = _object(payload, AUTOPOSTING, "data")
    org_id = _optional_str(body, "orgId", AUTOPOSTING) or _optional_str(body, "id", AUTOPOSTING)
    if not org_id:
        raise _bad(AUTOPOSTING, "orgId", "is missing")
    return AutopostingProfile(
        organization_id=org_id, name=_optional_str(body, "name", AUTOPOSTING), raw=body
    )


def autoposting_checkout(payload: object, *, plan_id: str) -> CheckoutSession:
    """A hosted checkout from `{checkoutUrl, sessionId}`; Autoposting names no account."""
    body = _object(payload, AUTOPOSTING, "data")
    url = _require_http_url(body, "checkoutUrl", AUTOPOSTING)
    session_id = _require_str(body, "sessionId", AUTOPOSTING)
    if not session_id:
        raise _bad(AUTOPOSTING, "sessionId", "must not be empty")
    return CheckoutSession(
        provider=AUTOPOSTING,
        account_id=None,
        plan_id=plan_id,
        url=url,
        session_id=session_id,
        raw=body,
    )


# Shared helpers: `at` is the path of the object read from, for messages only.


def _bad(provider: Provider, field: str, problem: str) -> UpstreamBadResponse:
    return UpstreamBadResponse(f"{provider.label} response: {field} {problem}", provider=provider)


def _path(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _wrong(obj: Json, key: str, provider: Provider, at: str, expected: str) -> UpstreamBadResponse:
    problem = f"must be {expected}" if key in obj else "is missing"
    return _bad(provider, _path(at, key), problem)


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _enum_key(raw: str) -> str:
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def _bare_plan_id(plan_id: str) -> str:
    return plan_id.strip().casefold().removeprefix("plan_")


def _money(amount: object, currency: str) -> Money | None:
    # str() first: Decimal(29.99) would carry the float's binary error into the amount.
    return None if amount is None else Money(Decimal(str(amount)), currency)


def _object(value: object, provider: Provider, field: str) -> Json:
    if not isinstance(value, Mapping):
        raise _bad(provider, field, "must be an object")
    return value


def _require_object(obj: Json, key: str, provider: Provider, at: str = "") -> Json:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise _wrong(obj, key, provider, at, "an object")
    return value


def _require_list(obj: Json, key: str, provider: Provider, at: str = "") -> Sequence[object]:
    value = obj.get(key)
    if not isinstance(value, list | tuple):
        raise _wrong(obj, key, provider, at, "a list")
    return value


def _optional_list(obj: Json, key: str, provider: Provider, at: str = "") -> Sequence[object]:
    return () if obj.get(key) is None else _require_list(obj, key, provider, at)


def _require_str(obj: Json, key: str, provider: Provider, at: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _wrong(obj, key, provider, at, "a string")
    return value


def _optional_str(obj: Json, key: str, provider: Provider, at: str = "") -> str | None:
    return None if obj.get(key) is None else _require_str(obj, key, provider, at)


def _require_number(obj: Json, key: str, provider: Provider, at: str = "") -> int | float:
    value = obj.get(key)
    if not _is_number(value):
        raise _wrong(obj, key, provider, at, "a number")
    return value


def _optional_number(obj: Json, key: str, provider: Provider, at: str = "") -> int | float | None:
    return None if obj.get(key) is None else _require_number(obj, key, provider, at)


def _require_bool(obj: Json, key: str, provider: Provider, at: str = "") -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _wrong(obj, key, provider, at, "a boolean")
    return value


def _optional_bool(obj: Json, key: str, provider: Provider, at: str = "") -> bool:
    return obj.get(key) is not None and _require_bool(obj, key, provider, at)


def _optional_datetime(obj: Json, key: str, provider: Provider, at: str = "") -> datetime | None:
    try:
        return parse_datetime(obj.get(key))
    except ValueError as exc:
        raise _bad(provider, _path(at, key), "must be an ISO 8601 date-time") from exc


def _optional_timestamp(obj: Json, key: str, provider: Provider, at: str = "") -> datetime | None:
    try:
        return parse_unix_timestamp(_optional_number(obj, key, provider, at))
    except ValueError as exc:
        raise _bad(provider, _path(at, key), "must be a Unix timestamp") from exc


def _require_http_url(obj: Json, key: str, provider: Provider) -> str:
    url = _require_str(obj, key, provider)
    if not _is_http_url(url):
        raise _bad(provider, key, "must be an absolute http(s) URL")
    return url


def _is_http_url(url: str) -> bool:
    if not url.isprintable() or any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(host)
