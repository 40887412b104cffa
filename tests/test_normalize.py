from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import UpstreamBadResponse
from gateway.models import (
    AlmanacBilling,
    AutopostingStatus,
    Interval,
    ManageReason,
    Money,
    SubscriptionStatus,
)
from gateway.normalize import (
    Drift,
    DriftKind,
    almanac_billing,
    almanac_checkout,
    autoposting_checkout,
    autoposting_credits_meter,
    autoposting_plans,
    autoposting_profile,
    autoposting_status,
    autoposting_tokens_meter,
    parse_datetime,
    parse_interval,
    parse_unix_timestamp,
    same_plan_id,
    session_id_from_url,
)
from gateway.normalize.fields import Contract, Reader, degrades, identifies, read_answer
from gateway.provider import Provider

Json = dict[str, Any]
Mutation = Callable[[Json], object]

SECRET = "UPSTREAM-VALUE-7f3a"  # planted in bad payloads: must never reach an error message
RESET = datetime(2024, 7, 1, tzinfo=UTC)
RESET_SECONDS = 1719792000


def almanac_state() -> Json:
    return {
        "organization_id": "org_1",
        "manage": {"allowed": True, "reason": "permission"},
        "plans": [
            {
                "plan_id": "free",
                "name": "Free",
                "price": None,
                "interval": None,
                "group": "base",
                "features": [{"feature_id": "pages", "included": 10}],
                "current": False,
            },
            {
                "plan_id": "pro",
                "name": "Pro",
                "price": 29.99,
                "interval": "month",
                "group": "base",
                "features": [
                    {"feature_id": "pages", "included": None},
                    {"feature_id": "seats", "included": 5},
                ],
                "current": True,
            },
        ],
        "usage": [
            {
                "feature_id": "pages",
                "usage": 25,
                "granted": 100,
                "remaining": 75,
                "unlimited": False,
                "overage_allowed": False,
                "next_reset_at": RESET_SECONDS,
            },
            {
                "feature_id": "seats",
                "usage": 3,
                "granted": 0,
                "remaining": 0,
                "unlimited": True,
                "next_reset_at": None,
            },
        ],
    }


def autoposting_status_data() -> Json:
    return {
        "plan": "pro",
        "planName": "Pro",
        "billingCycle": "monthly",
        "status": "active",
        "currentPeriodStart": "2024-06-01T00:00:00.000Z",
        "currentPeriodEnd": "2024-07-01T00:00:00.000Z",
        "trialEnd": None,
        "isTrialing": False,
        "cancelledAt": None,
        "suspendedAt": None,
        "pendingPlan": None,
        "pendingChangeDate": None,
        "dodoCustomerId": "cus_123",
        "setupFeeVerified": True,
        "accountLimit": 10,
        "accountsUsed": 3,
        "creditBalance": 500,
        "costMultiplier": 1.5,
    }


def no_drift(drift: Drift) -> None:
    """The recorder of reads expected to be clean: any drift fails the test."""
    raise AssertionError(f"unexpected contract drift: {drift}")


class Drifts(list[Drift]):
    """A recorder that keeps what it is given (`drift=drifts.append`)."""

    def seen(self) -> list[tuple[str, DriftKind]]:
        return [(drift.field, drift.kind) for drift in self]


MISSING, MALFORMED, UNKNOWN = DriftKind.MISSING, DriftKind.MALFORMED, DriftKind.UNKNOWN_VALUE


def almanac(mutate: Mutation | None = None) -> Json:
    state = almanac_state()
    if mutate is not None:
        mutate(state)
    return state


def assert_bad_response(error: pytest.ExceptionInfo[UpstreamBadResponse], field: str) -> None:
    assert field in error.value.message
    assert SECRET not in error.value.message


# Timestamps, intervals and date-times


@pytest.mark.parametrize(
    "value",
    [RESET_SECONDS, float(RESET_SECONDS), RESET_SECONDS * 1000, RESET_SECONDS * 1000.0],
    ids=["int-seconds", "float-seconds", "int-milliseconds", "float-milliseconds"],
)
def test_next_reset_at_in_milliseconds_and_seconds_give_the_same_datetime(value: float) -> None:
    assert parse_unix_timestamp(value) == RESET
    meter = almanac_billing(
        almanac(lambda s: s["usage"][0].update(next_reset_at=value)), currency="USD", drift=no_drift
    ).usage[0]
    assert meter.resets_at == RESET


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1e11, datetime(5138, 11, 16, 9, 46, 40, tzinfo=UTC)),
        (1e11 + 1, datetime(1973, 3, 3, 9, 46, 40, 1000, tzinfo=UTC)),
        (1719792000123, datetime(2024, 7, 1, 0, 0, 0, 123000, tzinfo=UTC)),
        (None, None),
    ],
    ids=["epoch", "1e11-is-still-seconds", "above-1e11-is-milliseconds", "millis-kept", "none"],
)
def test_unix_timestamps_are_read_as_utc_with_the_unit_told_by_size(
    value: float | None, expected: datetime | None
) -> None:
    parsed = parse_unix_timestamp(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [-1, math.nan, math.inf, -math.inf, True, 1e300, "1719792000"],
    ids=["negative", "nan", "inf", "minus-inf", "bool", "out-of-range", "string"],
)
def test_values_that_are_not_unix_timestamps_raise_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="Unix timestamp"):
        parse_unix_timestamp(value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("day", Interval.DAY),
        ("daily", Interval.DAY),
        ("week", Interval.WEEK),
        ("weekly", Interval.WEEK),
        ("month", Interval.MONTH),
        ("monthly", Interval.MONTH),
        ("mo", Interval.MONTH),
        ("quarter", Interval.QUARTER),
        ("quarterly", Interval.QUARTER),
        ("year", Interval.YEAR),
        ("yearly", Interval.YEAR),
        ("annual", Interval.YEAR),
        ("annually", Interval.YEAR),
        ("yr", Interval.YEAR),
        ("one_time", Interval.ONE_TIME),
        ("one-time", Interval.ONE_TIME),
        ("once", Interval.ONE_TIME),
        ("lifetime", Interval.ONE_TIME),
        ("Monthly", Interval.MONTH),
        ("  YEARLY ", Interval.YEAR),
        ("One-Time", Interval.ONE_TIME),
        ("fortnightly", Interval.OTHER),
        ("every 3 months", Interval.OTHER),
        (None, None),
        ("", None),
        ("   ", None),
    ],
    ids=lambda v: v.name if isinstance(v, Interval) else repr(v),
)
def test_every_interval_alias_maps_to_its_interval(
    raw: str | None, expected: Interval | None
) -> None:
    assert parse_interval(raw) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-01T00:00:00.000Z", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01T00:00:00Z", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01T12:30:00.123456Z", datetime(2024, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)),
        ("2024-06-01T00:00:00", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01T02:00:00+02:00", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
    ids=["z-millis", "z", "z-micros", "naive-is-utc", "offset", "date-only", "none", "empty"],
)
def test_iso_8601_date_times_are_read_as_utc(value: object, expected: datetime | None) -> None:
    parsed = parse_datetime(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [1719792000, True, ["2024-06-01"], "yesterday", "2024-13-01T00:00:00Z", " "],
    ids=["number", "bool", "list", "words", "month-13", "blank"],
)
def test_values_that_are_not_iso_8601_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_datetime(value)


# Almanac billing state


def test_almanac_billing_state_normalizes_plans_meters_and_permission() -> None:
    billing = almanac_billing(almanac(), currency="USD", drift=no_drift)

    assert billing.organization_id == "org_1"
    free, pro = billing.plans
    assert (free.plan_id, free.name, free.price, free.interval, free.current) == (
        "free",
        "Free",
        None,
        None,
        False,
    )
    assert pro.provider is Provider.ALMANAC
    assert pro.price == Money(Decimal("29.99"), "USD")
    assert (pro.interval, pro.interval_raw, pro.group, pro.current) == (
        Interval.MONTH,
        "month",
        "base",
        True,
    )
    assert [(f.feature_id, f.included) for f in pro.features] == [("pages", None), ("seats", 5.0)]
    pages, seats = billing.usage
    assert (pages.feature_id, pages.used, pages.granted, pages.remaining) == ("pages", 25, 100, 75)
    assert pages.resets_at == RESET
    assert seats.resets_at is None
    assert billing.manage is not None
    assert billing.manage.allowed is True
    assert billing.manage.reason is ManageReason.PERMISSION


def test_raw_fields_reference_the_upstream_objects() -> None:
    state = almanac()
    billing = almanac_billing(state, currency="USD", drift=no_drift)
    assert billing.raw is state
    assert billing.plans[1].raw is state["plans"][1]
    assert billing.usage[0].raw is state["usage"][0]


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (29.99, Decimal("29.99")),
        (0.1, Decimal("0.1")),
        (29, Decimal("29")),
        (0, Decimal("0")),
        (None, None),
    ],
    ids=["29.99", "0.1", "int", "zero", "null"],
)
def test_plan_prices_become_exact_decimals(price: float | None, expected: Decimal | None) -> None:
    billing = almanac_billing(
        almanac(lambda s: s["plans"][1].update(price=price)), currency="EUR", drift=no_drift
    )
    money = billing.plans[1].price
    assert (money.amount if money else None) == expected
    if money is not None:
        assert money.currency == "EUR"
        assert str(money.amount) == str(expected)


def test_unlimited_meter_has_no_granted_or_remaining_even_when_sent() -> None:
    seats = almanac_billing(almanac(), currency="USD", drift=no_drift).usage[1]
    assert seats.unlimited is True
    assert (seats.granted, seats.remaining, seats.used_fraction) == (None, None, None)
    assert seats.used == 3


def test_unlimited_meter_needs_no_granted_or_remaining() -> None:
    def drop(state: Json) -> None:
        del state["usage"][1]["granted"], state["usage"][1]["remaining"]

    seats = almanac_billing(almanac(drop), currency="USD", drift=no_drift).usage[1]
    assert (seats.granted, seats.remaining) == (None, None)


@pytest.mark.parametrize(
    ("meter", "fraction"),
    [
        ({"usage": 25, "granted": 100, "remaining": 75}, 0.25),
        ({"usage": 150, "granted": 100, "remaining": 0, "overage_allowed": True}, 1.5),
        ({"usage": 0, "granted": 100, "remaining": 100}, 0.0),
        ({"usage": 5, "granted": 0, "remaining": 0}, None),
        ({"usage": 5, "granted": 100, "remaining": 95, "unlimited": True}, None),
    ],
    ids=["quarter-used", "over-the-limit", "nothing-used", "nothing-granted", "unlimited"],
)
def test_used_fraction_is_used_over_granted(meter: Json, fraction: float | None) -> None:
    state = almanac(lambda s: s["usage"][0].update(meter))
    assert almanac_billing(state, currency="USD", drift=no_drift).usage[0].used_fraction == fraction


def test_over_limit_meter_keeps_usage_above_the_grant() -> None:
    update = {"usage": 150, "granted": 100, "remaining": 0, "overage_allowed": True}
    meter = almanac_billing(
        almanac(lambda s: s["usage"][0].update(update)), currency="USD", drift=no_drift
    ).usage[0]
    assert (meter.used, meter.granted, meter.remaining, meter.overage_allowed) == (
        150,
        100,
        0,
        True,
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("permission", ManageReason.PERMISSION),
        ("not_allowed", ManageReason.NOT_ALLOWED),
        ("Not-Allowed", ManageReason.NOT_ALLOWED),
        ("billing_owner_only", ManageReason.OTHER),
        ("", ManageReason.OTHER),
    ],
    ids=["permission", "not-allowed", "spelled-loosely", "unknown", "empty"],
)
def test_manage_reasons_map_to_the_enum_and_keep_the_raw_string(
    reason: str, expected: ManageReason
) -> None:
    state = almanac(lambda s: s["manage"].update(allowed=False, reason=reason))
    drifts = Drifts()
    manage = almanac_billing(state, currency="USD", drift=drifts.append).manage
    assert manage is not None
    assert (manage.allowed, manage.reason, manage.reason_raw) == (False, expected, reason)
    unknown = [("manage.reason", UNKNOWN)] if expected is ManageReason.OTHER else []
    assert drifts.seen() == unknown


def test_missing_optional_fields_get_defaults() -> None:
    state = {
        "organization_id": "org_1",
        "manage": {"allowed": True, "reason": "permission"},
        "plans": [{"plan_id": "pro", "name": "Pro"}],
    }
    billing = almanac_billing(state, currency="USD", drift=no_drift)
    assert billing.usage == ()
    plan = billing.plans[0]
    assert (plan.price, plan.interval, plan.interval_raw, plan.group, plan.features) == (
        None,
        None,
        None,
        None,
        (),
    )
    assert plan.current is False

    state["usage"] = [{"feature_id": "pages", "usage": 1, "granted": 2, "remaining": 1}]
    meter = almanac_billing(state, currency="USD", drift=no_drift).usage[0]
    assert (meter.unlimited, meter.overage_allowed, meter.resets_at) == (False, False, None)


def test_null_optional_fields_read_as_missing() -> None:
    def nulls(state: Json) -> None:
        state["usage"] = None
        state["plans"][1].update(features=None, current=None, group=None, interval=None)

    billing = almanac_billing(almanac(nulls), currency="USD", drift=no_drift)
    assert billing.usage == ()
    plan = billing.plans[1]
    assert (plan.features, plan.current, plan.group, plan.interval) == ((), False, None, None)


def test_unknown_extra_fields_are_ignored() -> None:
    def add_extras(state: Json) -> None:
        state["billing_email"] = "x@example.com"
        state["manage"]["scope"] = "owner"
        state["plans"][1]["trial_days"] = 14
        state["plans"][1]["features"][0]["unit"] = "page"
        state["usage"][0]["soft_limit"] = 80

    assert almanac_billing(almanac(add_extras), currency="USD", drift=no_drift) == almanac_billing(
        almanac(), currency="USD", drift=no_drift
    )


def _set(path: tuple[Any, ...], value: object) -> Mutation:
    def mutate(state: Json) -> None:
        target: Any = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutation:
    def mutate(state: Json) -> None:
        target: Any = state
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


# What identifies the billing state, the current plan (plans[1]) or gives them meaning: the
# account fails, naming the field. (The same fields of another plan drop that plan: below.)
ALMANAC_VIOLATIONS: list[tuple[str, Mutation, str]] = [
    ("organization-id-missing", _delete(("organization_id",)), "organization_id is missing"),
    ("organization-id-number", _set(("organization_id",), 42), "organization_id must be a string"),
    ("plans-missing", _delete(("plans",)), "plans is missing"),
    ("plans-object", _set(("plans",), {"plan_id": SECRET}), "plans must be a list"),
    ("plans-null", _set(("plans",), None), "plans must be a list"),
    ("plan-id-missing", _delete(("plans", 1, "plan_id")), "plans[1].plan_id is missing"),
    ("plan-id-number", _set(("plans", 1, "plan_id"), 7), "plans[1].plan_id must be a string"),
    ("plan-name-missing", _delete(("plans", 1, "name")), "plans[1].name is missing"),
    ("plan-name-null", _set(("plans", 1, "name"), None), "plans[1].name must be a string"),
]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [pytest.param(mutate, field, id=case_id) for case_id, mutate, field in ALMANAC_VIOLATIONS],
)
def test_almanac_contract_violations_raise_bad_response(mutate: Mutation, field: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        almanac_billing(almanac(mutate), currency="USD", drift=no_drift)
    assert error.value.provider is Provider.ALMANAC
    assert_bad_response(error, field)


Read = Callable[[AlmanacBilling], object]


def _plan(index: int, attribute: str) -> Read:
    return lambda billing: getattr(billing.plans[index], attribute)


def _meter(index: int, attribute: str) -> Read:
    return lambda billing: getattr(billing.usage[index], attribute)


def _manage(billing: AlmanacBilling) -> object:
    manage = billing.manage
    return None if manage is None else (manage.allowed, manage.reason, manage.reason_raw)


def _plan_ids(billing: AlmanacBilling) -> object:
    return [plan.plan_id for plan in billing.plans]


def _feature_ids(billing: AlmanacBilling) -> object:
    return [feature.feature_id for feature in billing.plans[1].features]


def _meter_ids(billing: AlmanacBilling) -> object:
    return [meter.feature_id for meter in billing.usage]


# Once contract violations that failed the account: now the field degrades (or its plan, feature
# or meter is dropped) and one drift says which field and how.
ALMANAC_TOLERATED: list[tuple[str, Mutation, str, DriftKind, Read, object]] = [
    ("manage-missing", _delete(("manage",)), "manage", MISSING, _manage, None),
    ("manage-string", _set(("manage",), SECRET), "manage", MALFORMED, _manage, None),
    ("allowed-missing", _delete(("manage", "allowed")), "manage.allowed", MISSING, _manage, None),
    (
        "allowed-string",
        _set(("manage", "allowed"), "yes"),
        "manage.allowed",
        MALFORMED,
        _manage,
        None,
    ),
    (
        "reason-missing",
        _delete(("manage", "reason")),
        "manage.reason",
        MISSING,
        _manage,
        (True, None, None),
    ),
    (
        "reason-number",
        _set(("manage", "reason"), 1),
        "manage.reason",
        MALFORMED,
        _manage,
        (True, None, None),
    ),
    ("plan-string", _set(("plans", 0), SECRET), "plans[]", MALFORMED, _plan_ids, ["pro"]),
    (
        "other-plan-id-missing",
        _delete(("plans", 0, "plan_id")),
        "plans[].plan_id",
        MISSING,
        _plan_ids,
        ["pro"],
    ),
    (
        "other-plan-name-number",
        _set(("plans", 0, "name"), 3),
        "plans[].name",
        MALFORMED,
        _plan_ids,
        ["pro"],
    ),
    (
        "price-string",
        _set(("plans", 1, "price"), SECRET),
        "plans[].price",
        MALFORMED,
        _plan(1, "price"),
        None,
    ),
    (
        "price-bool",
        _set(("plans", 1, "price"), True),
        "plans[].price",
        MALFORMED,
        _plan(1, "price"),
        None,
    ),
    (
        "price-nan",
        _set(("plans", 1, "price"), math.nan),
        "plans[].price",
        MALFORMED,
        _plan(1, "price"),
        None,
    ),
    (
        "interval-number",
        _set(("plans", 1, "interval"), 30),
        "plans[].interval",
        MALFORMED,
        lambda billing: (billing.plans[1].interval, billing.plans[1].interval_raw),
        (None, None),
    ),
    (
        "interval-unknown",
        _set(("plans", 1, "interval"), "fortnightly"),
        "plans[].interval",
        UNKNOWN,
        lambda billing: (billing.plans[1].interval, billing.plans[1].interval_raw),
        (Interval.OTHER, "fortnightly"),
    ),
    (
        "group-list",
        _set(("plans", 1, "group"), [SECRET]),
        "plans[].group",
        MALFORMED,
        _plan(1, "group"),
        None,
    ),
    (
        "current-string",
        _set(("plans", 1, "current"), "true"),
        "plans[].current",
        MALFORMED,
        _plan(1, "current"),
        False,
    ),
    (
        "features-string",
        _set(("plans", 1, "features"), SECRET),
        "plans[].features",
        MALFORMED,
        _plan(1, "features"),
        (),
    ),
    (
        "feature-id-missing",
        _delete(("plans", 1, "features", 1, "feature_id")),
        "plans[].features[].feature_id",
        MISSING,
        _feature_ids,
        ["pages"],
    ),
    (
        "feature-included-string",
        _set(("plans", 1, "features", 1, "included"), "5"),
        "plans[].features[].included",
        MALFORMED,
        lambda billing: billing.plans[1].features[1].included,
        None,
    ),
    ("usage-string", _set(("usage",), SECRET), "usage", MALFORMED, _meter_ids, []),
    ("meter-string", _set(("usage", 0), SECRET), "usage[]", MALFORMED, _meter_ids, ["seats"]),
    (
        "meter-feature-missing",
        _delete(("usage", 0, "feature_id")),
        "usage[].feature_id",
        MISSING,
        _meter_ids,
        ["seats"],
    ),
    (
        "meter-usage-missing",
        _delete(("usage", 0, "usage")),
        "usage[].usage",
        MISSING,
        _meter_ids,
        ["seats"],
    ),
    (
        "meter-usage-string",
        _set(("usage", 0, "usage"), SECRET),
        "usage[].usage",
        MALFORMED,
        _meter_ids,
        ["seats"],
    ),
    (
        "meter-usage-bool",
        _set(("usage", 0, "usage"), True),
        "usage[].usage",
        MALFORMED,
        _meter_ids,
        ["seats"],
    ),
    (
        "meter-granted-missing",
        _delete(("usage", 0, "granted")),
        "usage[].granted",
        MISSING,
        lambda billing: (billing.usage[0].granted, billing.usage[0].used_fraction),
        (None, None),
    ),
    (
        "meter-remaining-null",
        _set(("usage", 0, "remaining"), None),
        "usage[].remaining",
        MALFORMED,
        _meter(0, "remaining"),
        None,
    ),
    (
        "meter-unlimited-int",
        _set(("usage", 0, "unlimited"), 1),
        "usage[].unlimited",
        MALFORMED,
        lambda billing: (billing.usage[0].unlimited, billing.usage[0].granted),
        (False, 100.0),
    ),
    (
        "meter-overage-string",
        _set(("usage", 0, "overage_allowed"), "no"),
        "usage[].overage_allowed",
        MALFORMED,
        _meter(0, "overage_allowed"),
        False,
    ),
    (
        "reset-string",
        _set(("usage", 0, "next_reset_at"), SECRET),
        "usage[].next_reset_at",
        MALFORMED,
        _meter(0, "resets_at"),
        None,
    ),
    (
        "reset-negative",
        _set(("usage", 0, "next_reset_at"), -5),
        "usage[].next_reset_at",
        MALFORMED,
        _meter(0, "resets_at"),
        None,
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "kind", "read", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in ALMANAC_TOLERATED],
)
def test_almanac_descriptive_violations_degrade_with_one_drift_naming_the_field(
    mutate: Mutation, field: str, kind: DriftKind, read: Read, expected: object
) -> None:
    drifts = Drifts()
    billing = almanac_billing(almanac(mutate), currency="USD", drift=drifts.append)
    assert read(billing) == expected
    assert drifts.seen() == [(field, kind)]
    assert {(d.provider, d.endpoint) for d in drifts} == {
        (Provider.ALMANAC, "/v1/organizations/{id}/billing")
    }
    assert all(SECRET not in repr(drift) for drift in drifts)
    # The rest of the account is read as before.
    clean = almanac_billing(almanac(), currency="USD", drift=no_drift)
    assert billing.organization_id == clean.organization_id
    if field != "usage" and not field.startswith("usage["):
        assert billing.usage == clean.usage
    if not field.startswith("plans"):
        assert billing.plans == clean.plans


def test_only_the_field_that_dropped_an_element_counts_not_the_rest_of_it() -> None:
    def drift_then_drop(state: Json) -> None:
        state["plans"][0].update(price=SECRET, interval=7)
        del state["plans"][0]["plan_id"]

    drifts = Drifts()
    billing = almanac_billing(almanac(drift_then_drop), currency="USD", drift=drifts.append)
    assert [plan.plan_id for plan in billing.plans] == ["pro"]
    assert drifts.seen() == [("plans[].plan_id", MISSING)]


def test_the_same_drift_in_many_elements_is_one_report_with_its_count() -> None:
    def prices_as_text(state: Json) -> None:
        for plan in state["plans"]:
            plan["price"] = SECRET

    drifts = Drifts()
    almanac_billing(almanac(prices_as_text), currency="USD", drift=drifts.append)
    assert [(d.field, d.kind, d.count) for d in drifts] == [("plans[].price", MALFORMED, 2)]


def test_an_answer_that_fails_reports_no_drift() -> None:
    def drift_then_fail(state: Json) -> None:
        state["plans"][0]["price"] = SECRET
        del state["organization_id"]

    drifts = Drifts()
    with pytest.raises(UpstreamBadResponse):
        almanac_billing(almanac(drift_then_fail), currency="USD", drift=drifts.append)
    assert drifts == []


@pytest.mark.parametrize(
    "payload", [None, [almanac_state()], SECRET, 3], ids=["null", "list", "string", "number"]
)
def test_a_billing_payload_that_is_not_an_object_raises_bad_response(payload: object) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        almanac_billing(payload, currency="USD", drift=no_drift)
    assert_bad_response(error, "payload must be an object")


# Autoposting status


def status_with(**fields: object) -> AutopostingStatus:
    data = autoposting_status_data()
    data.update(fields)
    return autoposting_status(data, drift=no_drift)


def status_drifting(**fields: object) -> tuple[AutopostingStatus, list[tuple[str, DriftKind]]]:
    data = autoposting_status_data()
    data.update(fields)
    drifts = Drifts()
    status = autoposting_status(data, drift=drifts.append)
    assert {(d.provider, d.endpoint) for d in drifts} <= {(Provider.AUTOPOSTING, "/billing/status")}
    return status, drifts.seen()


def test_autoposting_status_normalizes_the_sdk_example() -> None:
    data = autoposting_status_data()
    status = autoposting_status(data, drift=no_drift)
    subscription = status.subscription
    assert (status.plan_id, status.plan_name, status.raw) == ("pro", "Pro", data)
    assert subscription.provider is Provider.AUTOPOSTING
    assert (subscription.status, subscription.status_raw) == (SubscriptionStatus.ACTIVE, "active")
    assert (subscription.plan_id, subscription.billing_cycle) == ("pro", "monthly")
    assert subscription.current_period_start == datetime(2024, 6, 1, tzinfo=UTC)
    assert subscription.current_period_end == datetime(2024, 7, 1, tzinfo=UTC)
    assert (subscription.trial_end, subscription.cancelled_at, subscription.suspended_at) == (
        None,
        None,
        None,
    )
    assert (subscription.pending_plan_id, subscription.pending_change_at) == (None, None)
    assert subscription.raw is data


def test_a_pending_plan_change_is_kept() -> None:
    subscription = status_with(
        pendingPlan="plan_business", pendingChangeDate="2024-07-01T00:00:00Z"
    ).subscription
    assert subscription.pending_plan_id == "plan_business"
    assert subscription.pending_change_at == datetime(2024, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "active"}, SubscriptionStatus.ACTIVE),
        ({"status": "ACTIVE"}, SubscriptionStatus.ACTIVE),
        ({"status": "trialing"}, SubscriptionStatus.TRIALING),
        ({"status": "trial"}, SubscriptionStatus.TRIALING),
        ({"status": "past_due"}, SubscriptionStatus.PAST_DUE),
        ({"status": "past-due"}, SubscriptionStatus.PAST_DUE),
        ({"status": "PastDue"}, SubscriptionStatus.PAST_DUE),
        ({"status": "unpaid"}, SubscriptionStatus.PAST_DUE),
        ({"status": "canceled"}, SubscriptionStatus.CANCELED),
        ({"status": "cancelled"}, SubscriptionStatus.CANCELED),
        ({"status": "suspended"}, SubscriptionStatus.SUSPENDED),
        ({"status": "none"}, SubscriptionStatus.NONE),
        ({"status": "free"}, SubscriptionStatus.NONE),
        ({"status": "inactive"}, SubscriptionStatus.OTHER),
        ({"status": "expired"}, SubscriptionStatus.OTHER),
        ({"status": "paused"}, SubscriptionStatus.OTHER),
        (
            {"status": "active", "suspendedAt": "2024-06-15T00:00:00Z"},
            SubscriptionStatus.SUSPENDED,
        ),
        (
            {"status": "trialing", "suspendedAt": "2024-06-15T00:00:00Z", "isTrialing": True},
            SubscriptionStatus.SUSPENDED,
        ),
        ({"status": None, "suspendedAt": "2024-06-15T00:00:00Z"}, SubscriptionStatus.SUSPENDED),
        ({"status": "active", "isTrialing": True}, SubscriptionStatus.ACTIVE),
        ({"status": "active", "cancelledAt": "2024-06-15T00:00:00Z"}, SubscriptionStatus.ACTIVE),
        ({"status": None, "isTrialing": True}, SubscriptionStatus.TRIALING),
        (
            {"status": None, "isTrialing": True, "cancelledAt": "2024-06-15T00:00:00Z"},
            SubscriptionStatus.TRIALING,
        ),
        ({"status": None, "cancelledAt": "2024-06-15T00:00:00Z"}, SubscriptionStatus.CANCELED),
        ({"status": "", "cancelledAt": "2024-06-15T00:00:00Z"}, SubscriptionStatus.CANCELED),
        ({"status": None}, SubscriptionStatus.OTHER),
        ({"status": "  "}, SubscriptionStatus.OTHER),
    ],
    ids=[
        "active",
        "active-uppercase",
        "trialing",
        "trial",
        "past_due",
        "past-due",
        "pastdue",
        "unpaid",
        "canceled",
        "cancelled",
        "suspended",
        "none",
        "free",
        "inactive-is-ambiguous",
        "expired-is-ambiguous",
        "unknown",
        "suspendedAt-beats-active",
        "suspendedAt-beats-trialing",
        "suspendedAt-without-status",
        "status-beats-isTrialing",
        "status-beats-cancelledAt",
        "no-status-isTrialing",
        "no-status-isTrialing-beats-cancelledAt",
        "no-status-cancelledAt",
        "empty-status-cancelledAt",
        "no-status-no-signal-is-other",
        "blank-status-no-signal-is-other",
    ],
)
def test_every_autoposting_status_maps_to_a_subscription_status(
    fields: Json, expected: SubscriptionStatus
) -> None:
    status, drifts = status_drifting(**fields)
    subscription = status.subscription
    assert subscription.status is expected
    assert subscription.status_raw == fields["status"]
    unknown = fields["status"] in {"inactive", "expired", "paused"}
    assert drifts == ([("status", UNKNOWN)] if unknown else [])


def test_a_missing_status_with_no_other_signal_is_other_with_no_raw_string() -> None:
    subscription = autoposting_status({"plan": "pro"}, drift=no_drift).subscription
    assert (subscription.status, subscription.status_raw) == (SubscriptionStatus.OTHER, None)


def test_a_status_with_every_field_missing_normalizes_to_nones() -> None:
    status = autoposting_status({}, drift=no_drift)
    assert (status.plan_id, status.plan_name, status.accounts_meter) == (None, None, None)
    subscription = status.subscription
    assert subscription.status is SubscriptionStatus.OTHER
    assert subscription.plan_id is None
    assert subscription.current_period_end is None


@pytest.mark.parametrize(
    ("fields", "used", "granted", "remaining", "unlimited"),
    [
        ({"accountLimit": 10, "accountsUsed": 3}, 3, 10, 7, False),
        ({"accountLimit": 10, "accountsUsed": 10}, 10, 10, 0, False),
        ({"accountLimit": 10, "accountsUsed": 12}, 12, 10, 0, False),
        ({"accountLimit": -1, "accountsUsed": 40}, 40, None, None, True),
        ({"accountLimit": 5, "accountsUsed": 0}, 0, 5, 5, False),
    ],
    ids=["within-limit", "at-limit", "over-limit", "minus-one-is-unlimited", "none-used"],
)
def test_the_account_limit_becomes_a_social_accounts_meter(
    fields: Json, used: float, granted: float | None, remaining: float | None, unlimited: bool
) -> None:
    meter = status_with(**fields).accounts_meter
    assert meter is not None
    assert meter.feature_id == "social_accounts"
    assert (meter.used, meter.granted, meter.remaining, meter.unlimited) == (
        used,
        granted,
        remaining,
        unlimited,
    )
    assert (meter.overage_allowed, meter.resets_at) == (False, None)


def test_over_the_account_limit_the_used_fraction_exceeds_one() -> None:
    meter = status_with(accountLimit=10, accountsUsed=12).accounts_meter
    assert meter is not None
    assert meter.used_fraction == 1.2


def test_no_accounts_meter_without_an_account_limit() -> None:
    assert status_with(accountLimit=None).accounts_meter is None
    data = autoposting_status_data()
    del data["accountLimit"]
    assert autoposting_status(data, drift=no_drift).accounts_meter is None


def _subscription(attribute: str) -> Callable[[AutopostingStatus], object]:
    return lambda status: getattr(status.subscription, attribute)


def _no_meter(status: AutopostingStatus) -> object:
    return status.accounts_meter


# Once contract violations that failed the account: nothing in the status identifies it, so every
# malformed field degrades, with one drift naming it. (Absent fields are normal: every field of
# /billing/status is optional, but accountsUsed once accountLimit is sent.)
STATUS_TOLERATED: list[
    tuple[str, Json, str, DriftKind, Callable[[AutopostingStatus], object], object]
] = [
    ("plan-number", {"plan": 42}, "plan", MALFORMED, lambda status: status.plan_id, None),
    (
        "status-number",
        {"status": 1},
        "status",
        MALFORMED,
        lambda status: (status.subscription.status, status.subscription.status_raw),
        (SubscriptionStatus.OTHER, None),
    ),
    (
        "status-number-trialing",
        {"status": 1, "isTrialing": True},
        "status",
        MALFORMED,
        _subscription("status"),
        SubscriptionStatus.TRIALING,
    ),
    (
        "isTrialing-string",
        {"status": None, "isTrialing": "yes"},
        "isTrialing",
        MALFORMED,
        _subscription("status"),
        SubscriptionStatus.OTHER,
    ),
    (
        "period-end-garbage",
        {"currentPeriodEnd": SECRET},
        "currentPeriodEnd",
        MALFORMED,
        _subscription("current_period_end"),
        None,
    ),
    (
        "suspendedAt-unix-number-still-suspends",
        {"suspendedAt": 1719792000},
        "suspendedAt",
        MALFORMED,
        lambda status: (status.subscription.status, status.subscription.suspended_at),
        (SubscriptionStatus.SUSPENDED, None),
    ),
    (
        "cancelledAt-garbage-still-cancels",
        {"status": None, "cancelledAt": SECRET},
        "cancelledAt",
        MALFORMED,
        lambda status: (status.subscription.status, status.subscription.cancelled_at),
        (SubscriptionStatus.CANCELED, None),
    ),
    (
        "suspendedAt-false-is-not-set",
        {"suspendedAt": False},
        "suspendedAt",
        MALFORMED,
        _subscription("status"),
        SubscriptionStatus.ACTIVE,
    ),
    (
        "pending-plan-number",
        {"pendingPlan": 3},
        "pendingPlan",
        MALFORMED,
        _subscription("pending_plan_id"),
        None,
    ),
    (
        "plan-name-list",
        {"planName": [SECRET]},
        "planName",
        MALFORMED,
        lambda status: status.plan_name,
        None,
    ),
    (
        "cycle-number",
        {"billingCycle": 30},
        "billingCycle",
        MALFORMED,
        _subscription("billing_cycle"),
        None,
    ),
    (
        "cycle-unknown",
        {"billingCycle": "fortnightly"},
        "billingCycle",
        UNKNOWN,
        _subscription("billing_cycle"),
        "fortnightly",
    ),
    ("limit-string", {"accountLimit": "10"}, "accountLimit", MALFORMED, _no_meter, None),
    ("limit-bool", {"accountLimit": True}, "accountLimit", MALFORMED, _no_meter, None),
    ("limit-below-minus-one", {"accountLimit": -2}, "accountLimit", MALFORMED, _no_meter, None),
    ("used-bool", {"accountsUsed": False}, "accountsUsed", MALFORMED, _no_meter, None),
    ("used-null", {"accountsUsed": None}, "accountsUsed", MALFORMED, _no_meter, None),
]


@pytest.mark.parametrize(
    ("fields", "field", "kind", "read", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in STATUS_TOLERATED],
)
def test_autoposting_status_with_wrong_types_degrades_with_one_drift_naming_the_field(
    fields: Json,
    field: str,
    kind: DriftKind,
    read: Callable[[AutopostingStatus], object],
    expected: object,
) -> None:
    status, drifts = status_drifting(**fields)
    assert read(status) == expected
    assert drifts == [(field, kind)]


def test_an_account_limit_without_the_number_used_gives_no_meter_and_one_drift() -> None:
    data = autoposting_status_data()
    del data["accountsUsed"]
    drifts = Drifts()
    assert autoposting_status(data, drift=drifts.append).accounts_meter is None
    assert drifts.seen() == [("accountsUsed", MISSING)]


def test_a_status_payload_that_is_not_an_object_raises_bad_response() -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_status([SECRET], drift=no_drift)
    assert_bad_response(error, "data must be an object")


# Autoposting plan catalog

CATALOG: list[Json] = [
    {"id": "plan_starter", "name": "Starter", "price": 9, "interval": "month", "group": "base"},
    {
        "id": "plan_pro",
        "name": "Pro",
        "price": 29.99,
        "interval": "monthly",
        "features": [{"id": "social_accounts", "included": 10}, {"id": "clips", "included": None}],
    },
    {"id": "plan_business", "name": "Business", "price": 99, "currency": "EUR"},
]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("pro", "plan_pro", True),
        ("plan_pro", "pro", True),
        ("PRO", "Plan_Pro", True),
        ("pro", "pro", True),
        ("pro", "plan_business", False),
        ("pro", "professional", False),
        ("plan_plan_pro", "pro", False),
    ],
    ids=[
        "bare-vs-prefixed",
        "prefixed-vs-bare",
        "case",
        "identical",
        "different",
        "prefix-only",
        "one-prefix-only",
    ],
)
def test_plan_ids_compare_ignoring_case_and_a_plan_prefix(a: str, b: str, same: bool) -> None:
    assert same_plan_id(a, b) is same


@pytest.mark.parametrize("plan", ["pro", "plan_pro", "Pro"], ids=["bare", "prefixed", "cased"])
def test_the_catalog_marks_the_status_plan_current(plan: str) -> None:
    plans = autoposting_plans(CATALOG, status_with(plan=plan), currency="USD")
    assert [p.plan_id for p in plans] == ["plan_starter", "plan_pro", "plan_business"]
    assert [p.current for p in plans] == [False, True, False]


def test_catalog_entries_become_plans() -> None:
    starter, pro, business = autoposting_plans(CATALOG, status_with(plan=None), currency="USD")
    assert starter.provider is Provider.AUTOPOSTING
    assert (starter.price, starter.interval, starter.group) == (
        Money(Decimal("9"), "USD"),
        Interval.MONTH,
        "base",
    )
    assert pro.price == Money(Decimal("29.99"), "USD")
    assert (pro.interval, pro.interval_raw) == (Interval.MONTH, "monthly")
    assert [(f.feature_id, f.included) for f in pro.features] == [
        ("social_accounts", 10.0),
        ("clips", None),
    ]
    assert pro.raw is CATALOG[1]
    assert business.price == Money(Decimal("99"), "EUR")
    assert (business.interval, business.features) == (None, ())


def test_no_plan_is_current_when_the_status_has_no_plan() -> None:
    plans = autoposting_plans(CATALOG, autoposting_status({}, drift=no_drift), currency="USD")
    assert len(plans) == len(CATALOG)
    assert not any(plan.current for plan in plans)


def test_an_exact_id_match_wins_over_a_prefixed_one() -> None:
    catalog = [{"id": "plan_pro", "name": "Pro (new)"}, {"id": "pro", "name": "Pro"}]
    plans = autoposting_plans(catalog, status_with(plan="pro"), currency="USD")
    assert [p.current for p in plans] == [False, True]


def test_a_current_plan_missing_from_the_catalog_is_appended() -> None:
    status = status_with(plan="legacy_agency", planName="Agency (legacy)", billingCycle="yearly")
    plans = autoposting_plans(CATALOG, status, currency="USD")
    assert [p.current for p in plans] == [False, False, False, True]
    appended = plans[-1]
    assert (appended.plan_id, appended.name, appended.price) == (
        "legacy_agency",
        "Agency (legacy)",
        None,
    )
    assert (appended.interval, appended.interval_raw) == (Interval.YEAR, "yearly")
    assert (appended.group, appended.features) == (None, ())
    assert appended.raw is status.raw


def test_an_appended_plan_without_a_name_or_cycle_is_named_by_its_id() -> None:
    plans = autoposting_plans(
        [], autoposting_status({"plan": "plan_x"}, drift=no_drift), currency="USD"
    )
    assert len(plans) == 1
    assert (plans[0].plan_id, plans[0].name, plans[0].interval) == ("plan_x", "plan_x", None)


# Autoposting meters


@pytest.mark.parametrize(
    ("payload", "used", "granted", "remaining", "resets_at"),
    [
        (
            {
                "balance": 450,
                "monthlyAllocation": 500,
                "used": 50,
                "breakdown": {"clips": 30, "aiGeneration": 15, "other": 5},
                "resetAt": "2024-02-01T00:00:00Z",
            },
            50,
            500,
            450,
            datetime(2024, 2, 1, tzinfo=UTC),
        ),
        (
            {"balance": 450, "monthlyAllocation": 500, "used": 620},
            620,
            500,
            450,
            None,
        ),
        (
            {"balance": 450, "monthlyAllocation": 500, "resetAt": "2024-02-01T00:00:00Z"},
            50,
            500,
            450,
            datetime(2024, 2, 1, tzinfo=UTC),
        ),
        (
            {"balance": 800, "monthlyAllocation": 500, "resetAt": None},
            0,
            500,
            800,
            None,
        ),
        (
            {
                "balance": 750,
                "balanceFormatted": "$7.50",
                "recentUsage": [
                    {"date": "2024-06-20", "description": "Ideas", "amount": 12, "type": "x"},
                    {"date": "2024-06-21", "description": "Rewrite", "amount": 3.5},
                    {"date": "2024-06-22", "description": "No amount"},
                ],
                "totalSpent30d": 2.5,
            },
            15.5,
            None,
            750,
            None,
        ),
        ({"balance": 750, "balanceFormatted": "$7.50", "totalSpent30d": 2.5}, 0, None, 750, None),
    ],
    ids=[
        "credit-summary",
        "credit-summary-over-the-allocation",
        "docs-shape-used-derived",
        "docs-shape-balance-above-allocation-used-not-below-zero",
        "sdk-shape-used-from-recent-usage",
        "sdk-shape-without-recent-usage",
    ],
)
def test_every_credit_shape_becomes_a_credits_meter(
    payload: Json,
    used: float,
    granted: float | None,
    remaining: float,
    resets_at: datetime | None,
) -> None:
    meter = autoposting_credits_meter(payload, drift=no_drift)
    assert meter.provider is Provider.AUTOPOSTING
    assert meter.feature_id == "credits"
    assert (meter.used, meter.granted, meter.remaining, meter.resets_at) == (
        used,
        granted,
        remaining,
        resets_at,
    )
    assert (meter.unlimited, meter.overage_allowed) == (False, False)
    assert meter.raw is payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"monthlyAllocation": 500, "used": 50}, "balance is missing"),
        ({"balance": None}, "balance must be a number"),
        ({"balance": "450"}, "balance must be a number"),
        ({"balance": True}, "balance must be a number"),
        (SECRET, "data must be an object"),
    ],
    ids=["balance-missing", "balance-null", "balance-string", "balance-bool", "not-an-object"],
)
def test_credit_contract_violations_raise_bad_response(payload: object, field: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_credits_meter(payload, drift=no_drift)
    assert_bad_response(error, field)


@pytest.mark.parametrize(
    ("payload", "field", "kind", "used", "granted", "resets_at"),
    [
        (
            {"balance": 450, "monthlyAllocation": SECRET},
            "monthlyAllocation",
            MALFORMED,
            0,
            None,
            None,
        ),
        (
            {"balance": 450, "monthlyAllocation": 500, "used": False},
            "used",
            MALFORMED,
            50,
            500,
            None,
        ),
        ({"balance": 1, "used": 3, "resetAt": SECRET}, "resetAt", MALFORMED, 3, None, None),
        ({"balance": 1, "recentUsage": SECRET}, "recentUsage", MALFORMED, 0, None, None),
        (
            {"balance": 1, "recentUsage": [SECRET, {"amount": 2}]},
            "recentUsage[]",
            MALFORMED,
            2,
            None,
            None,
        ),
        (
            {"balance": 1, "recentUsage": [{"amount": SECRET}, {"amount": 2}]},
            "recentUsage[].amount",
            MALFORMED,
            2,
            None,
            None,
        ),
    ],
    ids=[
        "allocation-string",
        "used-bool-derived-from-the-allocation",
        "reset-garbage",
        "recent-usage-string",
        "recent-usage-entry-string",
        "recent-usage-amount-string",
    ],
)
def test_credit_descriptive_violations_degrade_with_one_drift_naming_the_field(
    payload: Json,
    field: str,
    kind: DriftKind,
    used: float,
    granted: float | None,
    resets_at: datetime | None,
) -> None:
    drifts = Drifts()
    meter = autoposting_credits_meter(payload, drift=drifts.append)
    assert (meter.used, meter.granted, meter.remaining, meter.resets_at) == (
        used,
        granted,
        payload["balance"],
        resets_at,
    )
    assert drifts.seen() == [(field, kind)]
    assert drifts[0].endpoint == "/billing/credit-summary"


def test_token_usage_becomes_an_ai_tokens_meter() -> None:
    payload = {
        "period": "30d",
        "total": 482000,
        "breakdown": {"agents": 210000, "other": 272000},
        "dailyUsage": [{"date": "2024-01-10", "tokens": 18000}],
    }
    meter = autoposting_tokens_meter(payload, drift=no_drift)
    assert (meter.feature_id, meter.used, meter.granted, meter.remaining) == (
        "ai_tokens",
        482000,
        None,
        None,
    )
    assert (meter.unlimited, meter.resets_at, meter.used_fraction) == (False, None, None)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"period": "30d"}, "total is missing"),
        ({"total": "482000"}, "total must be a number"),
        ({"total": True}, "total must be a number"),
        ({"total": 1.5}, "total must be an integer"),
        ([], "data must be an object"),
    ],
    ids=["missing", "string", "bool", "fraction", "not-an-object"],
)
def test_token_usage_violations_raise_bad_response(payload: object, field: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_tokens_meter(payload, drift=no_drift)
    assert_bad_response(error, field)


# Autoposting profile


@pytest.mark.parametrize(
    ("payload", "organization_id", "name"),
    [
        ({"id": "org-x", "orgId": "org-x", "name": "API Key", "email": ""}, "org-x", "API Key"),
        ({"id": "user-1", "orgId": "org-y"}, "org-y", None),
        ({"id": "org-z", "authType": "api_key"}, "org-z", None),
        ({"id": "org-z", "orgId": ""}, "org-z", None),
    ],
    ids=["api-key-example", "org-id-wins", "id-fallback", "empty-org-id-falls-back"],
)
def test_the_profile_names_the_organization(
    payload: Json, organization_id: str, name: str | None
) -> None:
    profile = autoposting_profile(payload, drift=no_drift)
    assert (profile.organization_id, profile.name, profile.raw) == (organization_id, name, payload)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "API Key"}, "orgId is missing"),
        ({"orgId": 42}, "orgId must be a string"),
        ({"id": 42}, "id must be a string"),
        ({"orgId": 42, "id": "user-1"}, "orgId must be a string"),
        (None, "data must be an object"),
    ],
    ids=["missing", "org-id-number", "id-number", "org-id-number-never-falls-back", "null"],
)
def test_profile_violations_raise_bad_response(payload: object, field: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_profile(payload, drift=no_drift)
    assert_bad_response(error, field)


def test_a_profile_name_of_the_wrong_type_is_null_with_one_drift() -> None:
    drifts = Drifts()
    profile = autoposting_profile({"orgId": "org-x", "name": 3}, drift=drifts.append)
    assert (profile.organization_id, profile.name) == ("org-x", None)
    assert drifts.seen() == [("name", MALFORMED)]


# Checkout


@pytest.mark.parametrize(
    ("url", "session_id"),
    [
        ("https://checkout.stripe.com/c/pay/cs_test_a1B2c3D4", "cs_test_a1B2c3D4"),
        ("https://checkout.stripe.com/c/pay/cs_live_a1B2c3#fidkdWxOYHwnPyd1", "cs_live_a1B2c3"),
        ("https://pay.example.com/cs_a1_B2/confirm", "cs_a1_B2"),
        ("https://billing.example.com/checkout?session_id=sess_42", "sess_42"),
        ("https://billing.example.com/checkout?plan=pro&sessionId=abc-123", "abc-123"),
        ("https://billing.example.com/checkout?checkout_session_id=xyz", "xyz"),
        ("https://checkout.stripe.com/c/pay/cs_test_path?session_id=other", "cs_test_path"),
        ("https://billing.example.com/checkout?session_id=&sessionId=second", "second"),
        ("https://billing.example.com/checkout?session_id={CHECKOUT_SESSION_ID}", None),
        ("https://checkout.stripe.com/c/pay#cs_test_in_fragment", None),
        ("https://billing.example.com/checkout#session_id=abc", None),
        ("https://checkout.dodopayments.com/c/pay_abc123", None),
        ("https://billing.example.com/cs_/x", None),
        ("https://billing.example.com/docs-cs_test_abc", None),
        ("http://[::1", None),
    ],
    ids=[
        "stripe-test-path",
        "stripe-live-path-with-fragment",
        "generic-cs-segment",
        "query-session_id",
        "query-sessionId",
        "query-checkout_session_id",
        "path-beats-query",
        "empty-param-skipped",
        "template-placeholder-is-not-an-id",
        "id-only-in-fragment",
        "param-only-in-fragment",
        "no-id",
        "bare-prefix",
        "prefix-inside-a-segment",
        "unparseable",
    ],
)
def test_the_session_id_comes_from_the_url_or_is_none(url: str, session_id: str | None) -> None:
    assert session_id_from_url(url) == session_id


def test_an_almanac_checkout_carries_the_organization_plan_and_url_session_id() -> None:
    payload = {"url": "https://checkout.stripe.com/c/pay/cs_test_abc#fid", "extra": 1}
    session = almanac_checkout(payload, organization_id="org_1", plan_id="pro", drift=no_drift)
    assert session.provider is Provider.ALMANAC
    assert (session.account_id, session.plan_id, session.url, session.session_id) == (
        "org_1",
        "pro",
        payload["url"],
        "cs_test_abc",
    )
    assert session.raw is payload


def test_an_almanac_checkout_url_without_an_id_has_no_session_id() -> None:
    session = almanac_checkout(
        {"url": "https://almanac.example.com/billing/checkout/9f2"},
        organization_id="org_1",
        plan_id="pro",
        drift=no_drift,
    )
    assert session.session_id is None


BAD_URLS = [
    (None, "must be a string"),
    (42, "must be a string"),
    ("", "must be an absolute http(s) URL"),
    ("/relative/checkout", "must be an absolute http(s) URL"),
    ("checkout.stripe.com/c/pay", "must be an absolute http(s) URL"),
    ("javascript:alert(1)", "must be an absolute http(s) URL"),
    ("ftp://files.example.com/pay", "must be an absolute http(s) URL"),
    ("https://", "must be an absolute http(s) URL"),
    ("https:///path-only", "must be an absolute http(s) URL"),
    ("https://exa mple.com/pay", "must be an absolute http(s) URL"),
    ("https://example.com/pay\n", "must be an absolute http(s) URL"),
    ("https://[::1/pay", "must be an absolute http(s) URL"),
    ("https://example.com:99999/pay", "must be an absolute http(s) URL"),
]
BAD_URL_IDS = [
    "null",
    "number",
    "empty",
    "relative",
    "no-scheme",
    "javascript",
    "ftp",
    "no-host",
    "empty-host",
    "space",
    "newline",
    "broken-ipv6",
    "bad-port",
]


@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=BAD_URL_IDS)
def test_bad_almanac_checkout_urls_raise_bad_response(url: object, problem: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        almanac_checkout({"url": url}, organization_id="org_1", plan_id="pro", drift=no_drift)
    assert error.value.provider is Provider.ALMANAC
    assert_bad_response(error, f"url {problem}")


def test_an_almanac_checkout_without_a_url_raises_bad_response() -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        almanac_checkout({"detail": SECRET}, organization_id="org_1", plan_id="pro", drift=no_drift)
    assert_bad_response(error, "url is missing")


@pytest.mark.parametrize(
    "url",
    ["https://checkout.dodopayments.com/c/pay_abc123", "HTTP://localhost:8080/pay"],
    ids=["https", "http-uppercase-scheme-with-port"],
)
def test_an_autoposting_checkout_carries_its_session_id(url: str) -> None:
    payload = {"checkoutUrl": url, "sessionId": "cs_abc123"}
    session = autoposting_checkout(payload, plan_id="plan_pro", drift=no_drift)
    assert session.provider is Provider.AUTOPOSTING
    assert (session.account_id, session.plan_id, session.url, session.session_id) == (
        None,
        "plan_pro",
        url,
        "cs_abc123",
    )
    assert session.raw is payload


@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=BAD_URL_IDS)
def test_bad_autoposting_checkout_urls_raise_bad_response(url: object, problem: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_checkout(
            {"checkoutUrl": url, "sessionId": "cs_1"}, plan_id="pro", drift=no_drift
        )
    assert error.value.provider is Provider.AUTOPOSTING
    assert_bad_response(error, f"checkoutUrl {problem}")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sessionId": "cs_1"}, "checkoutUrl is missing"),
        ([SECRET], "data must be an object"),
    ],
    ids=["url-missing", "not-an-object"],
)
def test_autoposting_checkout_violations_raise_bad_response(payload: object, field: str) -> None:
    with pytest.raises(UpstreamBadResponse) as error:
        autoposting_checkout(payload, plan_id="pro", drift=no_drift)
    assert_bad_response(error, field)


@pytest.mark.parametrize(
    ("payload", "kind", "session_id"),
    [
        ({"checkoutUrl": "https://pay.example.com/x"}, MISSING, None),
        ({"checkoutUrl": "https://pay.example.com/x", "sessionId": 7}, MALFORMED, None),
        ({"checkoutUrl": "https://pay.example.com/x", "sessionId": ""}, MALFORMED, None),
        ({"checkoutUrl": "https://pay.example.com/x?session_id=s_9"}, MISSING, "s_9"),
    ],
    ids=["session-missing", "session-number", "session-empty", "session-from-the-url"],
)
def test_an_autoposting_checkout_without_a_usable_session_id_stands_with_one_drift(
    payload: Json, kind: DriftKind, session_id: str | None
) -> None:
    drifts = Drifts()
    session = autoposting_checkout(payload, plan_id="pro", drift=drifts.append)
    assert (session.url, session.session_id) == (payload["checkoutUrl"], session_id)
    assert drifts.seen() == [("sessionId", kind)]
    assert drifts[0].endpoint == "/billing/checkout"


def test_normalizing_never_mutates_the_payload() -> None:
    state = almanac()
    before = copy.deepcopy(state)
    almanac_billing(state, currency="USD", drift=no_drift)
    assert state == before


# The reader itself, on a table of its own


TOY = Contract(
    Provider.ALMANAC,
    "/toy",
    {
        "items": identifies(),
        "items[]": degrades("dropped"),
        "items[].note": degrades("null"),
        "items[].id": identifies(),
    },
)


def _toy_items(body: Reader) -> tuple[str, ...]:
    def item(element: Reader) -> str:
        element.text("note")  # a descriptive field read before the identifying one
        return element.key_str("id")

    return body.elements("items", item)


def test_a_dropped_element_counts_only_the_field_that_dropped_it_whatever_was_read_first() -> None:
    drifts = Drifts()
    payload = {"items": [{"note": 1, "id": "a"}, {"note": 2}, {"id": "c"}]}
    assert read_answer(TOY, payload, drifts.append, _toy_items) == ("a", "c")
    assert drifts.seen() == [("items[].note", MALFORMED), ("items[].id", MISSING)]


def test_a_field_read_against_its_table_rule_or_missing_from_the_table_is_a_bug() -> None:
    with pytest.raises(TypeError, match=re.escape("items[].id is read against its rule")):
        read_answer(
            TOY,
            {"items": [{"id": 1}]},
            no_drift,
            lambda b: b.elements("items", lambda e: e.text("id")),
        )
    with pytest.raises(KeyError):
        read_answer(TOY, {"items": []}, no_drift, lambda body: body.text("unlisted"))
