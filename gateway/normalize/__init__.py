"""Pure functions from decoded upstream JSON to the domain models: no I/O.

Lenient in what they accept: unknown fields are ignored, a missing or null optional field becomes
None or its default, an unknown enum-like string becomes `OTHER` with the raw string kept. A payload
that breaks the contract (not an object, a required field missing, a field of the wrong type, a
boolean where a number belongs) raises `UpstreamBadResponse`, whose message names the field and
never echoes an upstream value. Autoposting functions take the envelope's `data`, already unwrapped.
"""

from gateway.normalize.almanac import almanac_billing, almanac_checkout, almanac_preview
from gateway.normalize.autoposting import (
    autoposting_checkout,
    autoposting_credits_meter,
    autoposting_plans,
    autoposting_profile,
    autoposting_status,
    autoposting_tokens_meter,
)
from gateway.normalize.fields import (
    parse_datetime,
    parse_interval,
    parse_unix_timestamp,
    same_plan_id,
    session_id_from_url,
)

__all__ = [
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
