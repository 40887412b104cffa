"""Shared readers of upstream JSON: provider-free parsers (they raise ValueError), and the
tolerant `Reader` that reads an answer field by field as its provider's `Contract` table says.

A field that identifies its object or gives it meaning is read strictly: missing or malformed, its
object fails. What failing means is that object's own rule as a field of its parent: the whole
answer fails with `UpstreamBadResponse` (naming the field, never echoing its value), a nested
object becomes null, or a list element is dropped. Every other field degrades to null or its
default, and the degradation is reported as a `Drift`. Drift is reported only for answers that were
served: an answer that fails, or an element that is dropped, reports only the field that failed it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn, TypeGuard, TypeVar
from urllib.parse import parse_qsl, urlsplit

from gateway.errors import UpstreamBadResponse
from gateway.models import (
    Interval,
    Money,
)
from gateway.normalize.drift import Drift, DriftKind, DriftRecorder
from gateway.provider import Provider

T = TypeVar("T")

Json = Mapping[str, Any]
ALMANAC = Provider.ALMANAC
AUTOPOSTING = Provider.AUTOPOSTING

# 1e11 s is the year 5138 and 1e11 ms is March 1973: no real reset time is ambiguous.
_MILLISECONDS_ABOVE = 1e11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace

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


# Shared helpers.


def bad(provider: Provider, field: str, problem: str) -> UpstreamBadResponse:
    return UpstreamBadResponse(f"{provider.label} response: {field} {problem}", provider=provider)


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _is_str(value: object) -> TypeGuard[str]:
    return isinstance(value, str)


def _is_bool(value: object) -> TypeGuard[bool]:
    return isinstance(value, bool)


def _is_list(value: object) -> TypeGuard[list[object] | tuple[object, ...]]:
    return isinstance(value, list | tuple)


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def enum_key(raw: str) -> str:
    return raw.strip().lower().replace("-", "_").replace(" ", "_")


def _bare_plan_id(plan_id: str) -> str:
    return plan_id.strip().casefold().removeprefix("plan_")


def money(amount: object, currency: str) -> Money | None:
    # str() first: Decimal(29.99) would carry the float's binary error into the amount.
    return None if amount is None else Money(Decimal(str(amount)), currency)


def as_float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def _is_http_url(url: str) -> bool:
    if not url.isprintable() or _SPACE.search(url):
        return False
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(host)


# The contract tables and the reader that follows them.


@dataclass(frozen=True, slots=True)
class Rule:
    """What the gateway does with one field of an upstream answer.

    `identifies`: the field identifies its object or gives it meaning, so missing or malformed it
    fails the object; for a nested object or a list element (`plans[]`), whether its failure
    fails its parent too. Otherwise the field degrades to what `becomes` says, counted as drift.
    `required`: the contract requires the field, so its absence (or a null) is drift; the absence
    of an optional field is normal and not counted.
    """

    identifies: bool
    required: bool
    becomes: str


def identifies(*, required: bool = True) -> Rule:
    """A field whose absence (when required) or malformation fails its object."""
    return Rule(identifies=True, required=required, becomes="fails")


def degrades(to: str, *, required: bool = False) -> Rule:
    """A descriptive field: missing (when required) or malformed, it becomes `to`, counted."""
    return Rule(identifies=False, required=required, becomes=to)


@dataclass(frozen=True, slots=True)
class Contract:
    """One provider answer's field table: the rule of every field the gateway reads, by path
    (`plans[].price`: the `price` of each element of `plans`)."""

    provider: Provider
    endpoint: str
    rules: Mapping[str, Rule]
    # The rules by the path of the object they belong to, then by key: what a `Reader` looks up.
    objects: Mapping[str, Mapping[str, tuple[str, Rule]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        objects: dict[str, dict[str, tuple[str, Rule]]] = {}
        for path, rule in self.rules.items():
            parent, _, key = path.rpartition(".")
            objects.setdefault(parent, {})[key] = (path, rule)
        object.__setattr__(self, "objects", objects)


class _Unusable(Exception):
    """An identifying field failed its object; `path` has list indices, `field` has none."""

    def __init__(self, path: str, field: str, kind: DriftKind, problem: str) -> None:
        super().__init__(path)
        self.path = path
        self.field = field
        self.kind = kind
        self.problem = problem


def read_answer(
    contract: Contract,
    payload: object,
    drift: DriftRecorder,
    read: Callable[[Reader], T],
    *,
    name: str = "payload",
) -> T:
    """`read` of `payload` (an object) as `contract` says; its drift goes to `drift` once it has
    been read, and an identifying field that failed the whole answer raises
    `UpstreamBadResponse` naming it."""
    if not isinstance(payload, Mapping):
        raise bad(contract.provider, name, "must be an object")
    notes: list[tuple[str, DriftKind]] = []
    try:
        value = read(Reader(payload, contract, notes, "", ""))
    except _Unusable as exc:
        raise bad(contract.provider, exc.path, exc.problem) from None
    for (path, kind), count in Counter(notes).items():
        drift(Drift(contract.provider, contract.endpoint, path, kind, count))
    return value


class Reader:
    """Reads one JSON object of an answer by its contract's rules.

    Methods named `key_*` read identifying fields (their rule must say so): a failure raises to
    the nearest object that tolerates it. The others read descriptive fields and return None
    (False for `flag`) when the field is absent, null or malformed, noting drift as the rule
    says. A null is read as absent; for a required field it is malformed. A field missing from
    the contract table is a `KeyError`: the table lists every field read.
    """

    __slots__ = ("_contract", "_notes", "_path", "_rules", "raw")

    def __init__(
        self,
        raw: Mapping[str, Any],
        contract: Contract,
        notes: list[tuple[str, DriftKind]],
        path: str,
        field: str,
    ) -> None:
        self.raw = raw
        self._contract = contract
        self._notes = notes
        self._path = path  # with list indices, for messages: plans[1]
        self._rules = contract.objects.get(field, {})  # `field` has none: plans[]

    # Identifying fields

    def key_str(self, key: str) -> str:
        """A string that identifies the object."""
        value = self._value(key, "a string", _is_str, True)
        if value is None:
            self.reject(key, "is missing", DriftKind.MISSING)
        return value

    def key_str_or_none(self, key: str) -> str | None:
        """An identifying string the contract does not require: None when absent or null."""
        return self._value(key, "a string", _is_str, True)

    def key_number(self, key: str) -> int | float:
        """A finite number (not a boolean) that identifies the object or gives it meaning."""
        value = self._value(key, "a number", _is_number, True)
        if value is None:
            self.reject(key, "is missing", DriftKind.MISSING)
        return value

    def key_bool(self, key: str) -> bool:
        """A boolean that gives the object its meaning."""
        value = self._value(key, "a boolean", _is_bool, True)
        if value is None:
            self.reject(key, "is missing", DriftKind.MISSING)
        return value

    def key_url(self, key: str) -> str:
        """An absolute http(s) URL that gives the object its meaning."""
        url = self.key_str(key)
        if not _is_http_url(url):
            self.reject(key, "must be an absolute http(s) URL")
        return url

    def reject(self, key: str, problem: str, kind: DriftKind = DriftKind.MALFORMED) -> NoReturn:
        """Fail the object on its identifying field `key`."""
        field = self._rule(key, True)[0]
        raise _Unusable(self._join(key), field, kind, problem)

    # Descriptive fields

    def text(self, key: str) -> str | None:
        return self._value(key, "a string", _is_str, False)

    def number(self, key: str) -> int | float | None:
        """A finite number, never a boolean."""
        return self._value(key, "a number", _is_number, False)

    def flag(self, key: str) -> bool:
        """A boolean whose default is false."""
        return self._value(key, "a boolean", _is_bool, False) is True

    def iso_datetime(self, key: str) -> datetime | None:
        """An ISO 8601 date-time; an empty string is absent."""
        value = self._value(key, "an ISO 8601 date-time", _is_str, False)
        try:
            return parse_datetime(value)
        except ValueError:
            self.malformed(key)
            return None

    def unix_timestamp(self, key: str) -> datetime | None:
        """A Unix timestamp in seconds or milliseconds."""
        try:
            return parse_unix_timestamp(self.number(key))
        except ValueError:
            self.malformed(key)
            return None

    def present(self, key: str) -> bool:
        """Whether `key` holds anything but null, an empty string or false, whatever its type."""
        value = self.raw.get(key)
        return value is not None and value != "" and value is not False

    def malformed(self, key: str) -> None:
        """Note that the descriptive field `key` holds an impossible value; it reads as None."""
        self._note(self._rule(key, False)[0], DriftKind.MALFORMED)

    def unknown_value(self, key: str) -> None:
        """Note that `key` holds an enum-like string the gateway maps to OTHER."""
        self._note(self._rule(key, False)[0], DriftKind.UNKNOWN_VALUE)

    # Nested objects and lists

    def nested(self, key: str, read: Callable[[Reader], T]) -> T | None:
        """`read` of the object at `key`; None when it is absent, or when it fails and its rule
        tolerates that (the failure is then its only drift)."""
        value = self._value(key, "an object", _is_object, None)
        if value is None:
            return None
        field, rule = self._rules[key]
        mark = len(self._notes)
        try:
            return read(Reader(value, self._contract, self._notes, self._join(key), field))
        except _Unusable as exc:
            if rule.identifies:
                raise
            del self._notes[mark:]
            self._note(exc.field, exc.kind)
            return None

    def elements(
        self,
        key: str,
        read: Callable[[Reader], T],
        *,
        vital: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> tuple[T, ...]:
        """`read` of each object of the list at `key`. An element that fails (or is not an
        object) is dropped, its failure its only drift, when the element rule (`key[]`)
        tolerates it and `vital` does not say it matters too much to drop. The list itself
        absent or malformed is empty when its rule tolerates that."""
        items = self._value(key, "a list", _is_list, None)
        if not items:
            return ()
        field, rule = self._rules[key + "[]"]
        path = self._join(key)
        contract, notes = self._contract, self._notes
        read_all: list[T] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                if rule.identifies:
                    raise _Unusable(f"{path}[{i}]", field, DriftKind.MALFORMED, "must be an object")
                self._note(field, DriftKind.MALFORMED)
                continue
            mark = len(notes)
            try:
                read_all.append(read(Reader(item, contract, notes, f"{path}[{i}]", field)))
            except _Unusable as exc:
                if rule.identifies or (vital is not None and vital(item)):
                    raise
                del notes[mark:]
                self._note(exc.field, exc.kind)
        return tuple(read_all)

    # Internals

    def _rule(self, key: str, identity: bool | None) -> tuple[str, Rule]:
        field, rule = self._rules[key]
        if identity is not None and rule.identifies is not identity:
            raise TypeError(f"{field} is read against its rule in the contract table")
        return field, rule

    def _value(
        self,
        key: str,
        expected: str,
        accept: Callable[[object], TypeGuard[T]],
        identity: bool | None,
    ) -> T | None:
        """The value at `key` if `accept`ed; else None, after failing the object (an
        identifying field) or noting drift (a descriptive one) as the rule says."""
        field, rule = self._rules[key]  # `_rule`, inlined: this runs for every field read
        if identity is not None and rule.identifies is not identity:
            raise TypeError(f"{field} is read against its rule in the contract table")
        value = self.raw.get(key)
        if value is None:
            if not rule.required:
                return None
            absent = key not in self.raw
            kind = DriftKind.MISSING if absent else DriftKind.MALFORMED
            self._fault(rule, key, field, kind, "is missing" if absent else f"must be {expected}")
            return None
        if accept(value):
            return value
        self._fault(rule, key, field, DriftKind.MALFORMED, f"must be {expected}")
        return None

    def _fault(self, rule: Rule, key: str, field: str, kind: DriftKind, problem: str) -> None:
        """Fail the object on an identifying field, else note the drift of a descriptive one."""
        if rule.identifies:
            raise _Unusable(self._join(key), field, kind, problem)
        self._note(field, kind)

    def _note(self, field: str, kind: DriftKind) -> None:
        self._notes.append((field, kind))

    def _join(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key
