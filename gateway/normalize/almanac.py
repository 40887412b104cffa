"""Almanac V1 JSON -> models: billing state, checkout and preview.

The three tables below are the gateway's reading of Almanac's contract, one row per field it reads
(`/work/shared/upstreams/almanac.openapi.yaml`; `required` there is what Almanac promises today).
A field that `identifies` its object fails it when missing or malformed; any other field
`degrades` to what its row says, counted as drift. A plan, a meter or a feature that fails is
dropped from its list: one plan Almanac changed beats a blank billing page for every
organization, and an element without its id cannot be shown, bought or keyed anyway. Except the
plan marked current: dropped, `currentPlan` would read null as if the organization had no plan,
and a caller could offer it the wrong checkout; the account fails instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.models import (
    AlmanacBilling,
    CheckoutPreview,
    CheckoutSession,
    Interval,
    ManagePermission,
    ManageReason,
    Plan,
    PlanFeature,
    PreviewLine,
    UsageMeter,
)
from gateway.normalize.drift import DriftRecorder
from gateway.normalize.fields import (
    ALMANAC,
    Contract,
    Reader,
    as_float,
    degrades,
    enum_key,
    identifies,
    money,
    parse_interval,
    read_answer,
    session_id_from_url,
)

BILLING_STATE = Contract(
    ALMANAC,
    "/v1/organizations/{id}/billing",
    {
        "organization_id": identifies(),
        "plans": identifies(),
        "plans[]": degrades("dropped (the account fails if the plan is marked current)"),
        "plans[].plan_id": identifies(),
        "plans[].name": identifies(),
        "plans[].price": degrades("null"),
        "plans[].interval": degrades("null (an unknown one is OTHER)"),
        "plans[].group": degrades("null"),
        "plans[].current": degrades("false"),
        "plans[].features": degrades("empty"),
        "plans[].features[]": degrades("dropped"),
        "plans[].features[].feature_id": identifies(),
        "plans[].features[].included": degrades("null"),
        "usage": degrades("empty"),
        "usage[]": degrades("dropped"),
        "usage[].feature_id": identifies(),
        "usage[].usage": identifies(),
        "usage[].granted": degrades("null", required=True),
        "usage[].remaining": degrades("null", required=True),
        "usage[].unlimited": degrades("false"),
        "usage[].overage_allowed": degrades("false"),
        "usage[].next_reset_at": degrades("null"),
        "manage": degrades("null", required=True),
        "manage.allowed": identifies(),
        "manage.reason": degrades("null (an unknown one is OTHER)", required=True),
    },
)
CHECKOUT = Contract(
    ALMANAC,
    "/v1/organizations/{id}/billing/checkout",
    {"url": identifies()},
)
PREVIEW = Contract(
    ALMANAC,
    "/v1/organizations/{id}/billing/preview",
    {
        "plan_id": identifies(),
        "currency": degrades("the configured currency"),
        "line_items": degrades("empty"),
        "line_items[]": degrades("dropped"),
        "line_items[].name": degrades("null"),
        "line_items[].description": degrades("null"),
        "line_items[].quantity": degrades("null"),
        "line_items[].subtotal": degrades("null"),
        "line_items[].total": degrades("null"),
        "subtotal": degrades("null"),
        "total": degrades("null"),
        "redirect_to_checkout": degrades("false"),
        "checkout_type": degrades("null"),
    },
)
CONTRACTS = (BILLING_STATE, CHECKOUT, PREVIEW)


def almanac_billing(payload: object, *, currency: str, drift: DriftRecorder) -> AlmanacBilling:
    """One organization's HostedBillingState: plan catalog, usage meters and manage permission."""

    def read(body: Reader) -> AlmanacBilling:
        return AlmanacBilling(
            organization_id=body.key_str("organization_id"),
            plans=body.elements("plans", lambda plan: _plan(plan, currency), vital=_is_current),
            usage=body.elements("usage", _meter),
            manage=body.nested("manage", _manage),
            raw=body.raw,
        )

    return read_answer(BILLING_STATE, payload, drift, read)


def _is_current(plan: Mapping[str, Any]) -> bool:
    return plan.get("current") is True


def _plan(plan: Reader, currency: str) -> Plan:
    plan_id = plan.key_str("plan_id")
    name = plan.key_str("name")
    interval_raw = plan.text("interval")
    interval = parse_interval(interval_raw)
    if interval is Interval.OTHER:
        plan.unknown_value("interval")
    return Plan(
        provider=ALMANAC,
        plan_id=plan_id,
        name=name,
        price=money(plan.number("price"), currency),
        interval=interval,
        interval_raw=interval_raw,
        group=plan.text("group"),
        features=plan.elements("features", _feature),
        current=plan.flag("current"),
        raw=plan.raw,
    )


def _feature(feature: Reader) -> PlanFeature:
    return PlanFeature(
        feature_id=feature.key_str("feature_id"),
        included=as_float(feature.number("included")),
    )


def _meter(meter: Reader) -> UsageMeter:
    """A usage meter; when unlimited, granted and remaining carry no meaning and are not read."""
    feature_id = meter.key_str("feature_id")
    used = float(meter.key_number("usage"))
    unlimited = meter.flag("unlimited")
    return UsageMeter(
        provider=ALMANAC,
        feature_id=feature_id,
        used=used,
        granted=None if unlimited else as_float(meter.number("granted")),
        remaining=None if unlimited else as_float(meter.number("remaining")),
        unlimited=unlimited,
        overage_allowed=meter.flag("overage_allowed"),
        resets_at=meter.unix_timestamp("next_reset_at"),
        raw=meter.raw,
    )


def _manage(manage: Reader) -> ManagePermission:
    allowed = manage.key_bool("allowed")
    reason_raw = manage.text("reason")
    reason = None if reason_raw is None else _manage_reason(reason_raw)
    if reason is ManageReason.OTHER:
        manage.unknown_value("reason")
    return ManagePermission(allowed=allowed, reason=reason, reason_raw=reason_raw)


def _manage_reason(raw: str) -> ManageReason:
    try:
        return ManageReason(enum_key(raw))
    except ValueError:
        return ManageReason.OTHER


def almanac_checkout(
    payload: object, *, organization_id: str, plan_id: str, drift: DriftRecorder
) -> CheckoutSession:
    """A hosted checkout from `{url}`; the session id only when the URL carries one."""

    def read(body: Reader) -> CheckoutSession:
        url = body.key_url("url")
        return CheckoutSession(
            provider=ALMANAC,
            account_id=organization_id,
            plan_id=plan_id,
            url=url,
            session_id=session_id_from_url(url),
            raw=body.raw,
        )

    return read_answer(CHECKOUT, payload, drift, read)


def almanac_preview(
    payload: object, *, organization_id: str, currency: str, drift: DriftRecorder
) -> CheckoutPreview:
    """HostedBillingPreview: line items and totals of a plan change; the configured currency
    where Almanac names none."""

    def read(body: Reader) -> CheckoutPreview:
        plan_id = body.key_str("plan_id")
        in_currency = (body.text("currency") or currency).upper()
        return CheckoutPreview(
            provider=ALMANAC,
            account_id=organization_id,
            plan_id=plan_id,
            currency=in_currency,
            lines=body.elements("line_items", lambda line: _preview_line(line, in_currency)),
            subtotal=money(body.number("subtotal"), in_currency),
            total=money(body.number("total"), in_currency),
            hosted_checkout_required=body.flag("redirect_to_checkout"),
            checkout_type=body.text("checkout_type"),
            raw=body.raw,
        )

    return read_answer(PREVIEW, payload, drift, read)


def _preview_line(line: Reader, currency: str) -> PreviewLine:
    return PreviewLine(
        name=line.text("name"),
        description=line.text("description"),
        quantity=as_float(line.number("quantity")),
        subtotal=money(line.number("subtotal"), currency),
        total=money(line.number("total"), currency),
    )
