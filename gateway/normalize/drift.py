"""Contract drift: what a tolerant read of an upstream answer reports instead of failing.

A field the gateway degrades (to null, a default, or by dropping the list element it belongs to)
is reported to a `DriftRecorder` as a `Drift`: the provider, the endpoint template, the field's
path without list indices (`plans[].price`), the kind, and how many times the answer shows it.
Paths come from the providers' field tables, never from the answer, so their number is bounded;
no value is ever part of a `Drift`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from gateway.provider import Provider


class DriftKind(enum.Enum):
    """How an answer departs from its contract."""

    MISSING = "missing"  # a field the contract requires is absent
    MALFORMED = "malformed"  # a field is present with the wrong type or an impossible value
    UNKNOWN_VALUE = "unknown_value"  # an enum-like string the gateway does not know: OTHER


@dataclass(frozen=True, slots=True)
class Drift:
    """A tolerated departure from a provider's contract, `count` times in one answer (once per
    list element it concerns), so that recording costs the same however long the answer."""

    provider: Provider
    endpoint: str
    field: str
    kind: DriftKind
    count: int = 1


DriftRecorder = Callable[[Drift], None]
