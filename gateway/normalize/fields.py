"""Shared readers of upstream JSON: provider-free parsers (they raise ValueError) and
field checks that raise `UpstreamBadResponse` naming the field, never echoing its value."""

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
    Interval,
    Money,
)
from gateway.provider import Provider

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
    return _INTERVALS.get(enum_key(raw), Interval.OTHER)


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


# Shared helpers: `at` is the path of the object read from, for messages only.


def bad(provider: Provider, field: str, problem: str) -> UpstreamBadResponse:
    return UpstreamBadResponse(f"{provider.label} response: {field} {problem}", provider=provider)


def _path(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _wrong(obj: Json, key: str, provider: Provider, at: str, expected: str) -> UpstreamBadResponse:
    problem = f"must be {expected}" if key in obj else "is missing"
    return bad(provider, _path(at, key), problem)


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def enum_key(raw: str) -> str:
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def _bare_plan_id(plan_id: str) -> str:
    return plan_id.strip().casefold().removeprefix("plan_")


def money(amount: object, currency: str) -> Money | None:
    # str() first: Decimal(29.99) would carry the float's binary error into the amount.
    return None if amount is None else Money(Decimal(str(amount)), currency)


def as_object(value: object, provider: Provider, field: str) -> Json:
    if not isinstance(value, Mapping):
        raise bad(provider, field, "must be an object")
    return value


def require_object(obj: Json, key: str, provider: Provider, at: str = "") -> Json:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise _wrong(obj, key, provider, at, "an object")
    return value


def require_list(obj: Json, key: str, provider: Provider, at: str = "") -> Sequence[object]:
    value = obj.get(key)
    if not isinstance(value, list | tuple):
        raise _wrong(obj, key, provider, at, "a list")
    return value


def optional_list(obj: Json, key: str, provider: Provider, at: str = "") -> Sequence[object]:
    return () if obj.get(key) is None else require_list(obj, key, provider, at)


def require_str(obj: Json, key: str, provider: Provider, at: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _wrong(obj, key, provider, at, "a string")
    return value


def optional_str(obj: Json, key: str, provider: Provider, at: str = "") -> str | None:
    return None if obj.get(key) is None else require_str(obj, key, provider, at)


def require_number(obj: Json, key: str, provider: Provider, at: str = "") -> int | float:
    value = obj.get(key)
    if not _is_number(value):
        raise _wrong(obj, key, provider, at, "a number")
    return value


def optional_number(obj: Json, key: str, provider: Provider, at: str = "") -> int | float | None:
    return None if obj.get(key) is None else require_number(obj, key, provider, at)


def require_bool(obj: Json, key: str, provider: Provider, at: str = "") -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise _wrong(obj, key, provider, at, "a boolean")
    return value


def optional_bool(obj: Json, key: str, provider: Provider, at: str = "") -> bool:
    return obj.get(key) is not None and require_bool(obj, key, provider, at)


def optional_datetime(obj: Json, key: str, provider: Provider, at: str = "") -> datetime | None:
    try:
        return parse_datetime(obj.get(key))
    except ValueError as exc:
        raise bad(provider, _path(at, key), "must be an ISO 8601 date-time") from exc


def optional_timestamp(obj: Json, key: str, provider: Provider, at: str = "") -> datetime | None:
    try:
        return parse_unix_timestamp(optional_number(obj, key, provider, at))
    except ValueError as exc:
        raise bad(provider, _path(at, key), "must be a Unix timestamp") from exc


def require_http_url(obj: Json, key: str, provider: Provider) -> str:
    url = require_str(obj, key, provider)
    if not _is_http_url(url):
        raise bad(provider, key, "must be an absolute http(s) URL")
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
