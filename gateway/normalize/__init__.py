"""Pure functions from decoded upstream JSON to the domain models: no I/O.

A tolerant reader: each provider module holds a table of every field it reads (`CONTRACTS`). A
field that identifies its object or gives it meaning is read strictly: missing or of the wrong
type, the object fails (the whole answer with `UpstreamBadResponse`, whose message names the field
and never echoes an upstream value, or a list element is dropped, or a nested object is null, as
the table says). Every other field degrades to null or its default; an unknown enum-like string
becomes `OTHER` with the raw string kept; unknown fields are ignored (they stay in `raw`). Each
degradation is reported as a `Drift` to the `DriftRecorder` every function takes. Autoposting
functions take the envelope's `data`, already unwrapped.
"""

from gateway.normalize import almanac, autoposting
from gateway.normalize.almanac import almanac_billing, almanac_checkout, almanac_preview
from gateway.normalize.autoposting import (
    autoposting_checkout,
    autoposting_credits_meter,
    autoposting_plans,
    autoposting_profile,
    autoposting_status,
    autoposting_tokens_meter,
)
from gateway.normalize.drift import Drift, DriftKind, DriftRecorder
from gateway.normalize.fields import (
    Contract,
    Rule,
    parse_datetime,
    parse_interval,
    parse_unix_timestamp,
    same_plan_id,
    session_id_from_url,
)

# Every answer the gateway reads, by provider: the field tables.
CONTRACTS: tuple[Contract, ...] = almanac.CONTRACTS + autoposting.CONTRACTS

__all__ = [
    "CONTRACTS",
    "Contract",
    "Drift",
    "DriftKind",
    "DriftRecorder",
    "Rule",
    "almanac_billing",
    "almanac_checkout",
    "almanac_preview",
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
