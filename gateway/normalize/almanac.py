"""Almanac V1 JSON -> models: billing state, checkout and preview."""

from __future__ import annotations

from gateway.models import (
    AlmanacBilling,
    CheckoutPreview,
    CheckoutSession,
    ManagePermission,
    ManageReason,
    Plan,
    PlanFeature,
    PreviewLine,
    UsageMeter,
)
from gateway.normalize.fields import (
    ALMANAC,
    Json,
    as_object,
    enum_key,
    money,
    optional_bool,
    optional_list,
    optional_number,
    optional_str,
    optional_timestamp,
    parse_interval,
    require_bool,
    require_http_url,
    require_list,
    require_number,
    require_object,
    require_str,
    session_id_from_url,
)


def almanac_billing(payload: object, *, currency: str) -> AlmanacBilling:
    """One organization's HostedBillingState: plan catalog, usage meters and manage permission."""
    body = as_object(payload, ALMANAC, "payload")
    plans = require_list(body, "plans", ALMANAC)
    usage = optional_list(body, "usage", ALMANAC)
    return AlmanacBilling(
        organization_id=require_str(body, "organization_id", ALMANAC),
        plans=tuple(_almanac_plan(plan, f"plans[{i}]", currency) for i, plan in enumerate(plans)),
        usage=tuple(_almanac_meter(meter, f"usage[{i}]") for i, meter in enumerate(usage)),
        manage=_almanac_manage(require_object(body, "manage", ALMANAC)),
        raw=body,
    )


def _almanac_plan(value: object, at: str, currency: str) -> Plan:
    plan = as_object(value, ALMANAC, at)
    interval_raw = optional_str(plan, "interval", ALMANAC, at)
    features = optional_list(plan, "features", ALMANAC, at)
    return Plan(
        provider=ALMANAC,
        plan_id=require_str(plan, "plan_id", ALMANAC, at),
        name=require_str(plan, "name", ALMANAC, at),
        price=money(optional_number(plan, "price", ALMANAC, at), currency),
        interval=parse_interval(interval_raw),
        interval_raw=interval_raw,
        group=optional_str(plan, "group", ALMANAC, at),
        features=tuple(
            _almanac_feature(feature, f"{at}.features[{i}]") for i, feature in enumerate(features)
        ),
        current=optional_bool(plan, "current", ALMANAC, at),
        raw=plan,
    )


def _almanac_feature(value: object, at: str) -> PlanFeature:
    feature = as_object(value, ALMANAC, at)
    included = optional_number(feature, "included", ALMANAC, at)
    return PlanFeature(
        feature_id=require_str(feature, "feature_id", ALMANAC, at),
        included=None if included is None else float(included),
    )


def _almanac_meter(value: object, at: str) -> UsageMeter:
    """A usage meter; when unlimited, granted and remaining carry no meaning and are not read."""
    meter = as_object(value, ALMANAC, at)
    unlimited = optional_bool(meter, "unlimited", ALMANAC, at)
    granted = None if unlimited else float(require_number(meter, "granted", ALMANAC, at))
    remaining = None if unlimited else float(require_number(meter, "remaining", ALMANAC, at))
    return UsageMeter(
        provider=ALMANAC,
        feature_id=require_str(meter, "feature_id", ALMANAC, at),
        used=float(require_number(meter, "usage", ALMANAC, at)),
        granted=granted,
        remaining=remaining,
        unlimited=unlimited,
        overage_allowed=optional_bool(meter, "overage_allowed", ALMANAC, at),
        resets_at=optional_timestamp(meter, "next_reset_at", ALMANAC, at),
        raw=meter,
    )


def _almanac_manage(manage: Json) -> ManagePermission:
    reason_raw = require_str(manage, "reason", ALMANAC, "manage")
    return ManagePermission(
        allowed=require_bool(manage, "allowed", ALMANAC, "manage"),
        reason=_manage_reason(reason_raw),
        reason_raw=reason_raw,
    )


def _manage_reason(raw: str) -> ManageReason:
    try:
        return ManageReason(enum_key(raw))
    except ValueError:
        return ManageReason.OTHER


def almanac_checkout(payload: object, *, organization_id: str, plan_id: str) -> CheckoutSession:
    """A hosted checkout from `{url}`; the session id only when the URL carries one."""
    body = as_object(payload, ALMANAC, "payload")
    url = require_http_url(body, "url", ALMANAC)
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
    body = as_object(payload, ALMANAC, "payload")
    currency = (optional_str(body, "currency", ALMANAC) or currency).upper()
    lines = optional_list(body, "line_items", ALMANAC)
    return CheckoutPreview(
        provider=ALMANAC,
        account_id=organization_id,
        plan_id=require_str(body, "plan_id", ALMANAC),
        currency=currency,
        lines=tuple(
            _preview_line(line, f"line_items[{i}]", currency) for i, line in enumerate(lines)
        ),
        subtotal=money(optional_number(body, "subtotal", ALMANAC), currency),
        total=money(optional_number(body, "total", ALMANAC), currency),
        hosted_checkout_required=optional_bool(body, "redirect_to_checkout", ALMANAC),
        checkout_type=optional_str(body, "checkout_type", ALMANAC),
        raw=body,
    )


def _preview_line(value: object, at: str, currency: str) -> PreviewLine:
    line = as_object(value, ALMANAC, at)
    quantity = optional_number(line, "quantity", ALMANAC, at)
    return PreviewLine(
        name=optional_str(line, "name", ALMANAC, at),
        description=optional_str(line, "description", ALMANAC, at),
        quantity=None if quantity is None else float(quantity),
        subtotal=money(optional_number(line, "subtotal", ALMANAC, at), currency),
        total=money(optional_number(line, "total", ALMANAC, at), currency),
    )
