"""GraphQL enums, with a description on every value, and their conversion from the domain.

Each GraphQL enum has the same values as its domain enum, so conversion is by value.
"""

from __future__ import annotations

import enum
import functools
from typing import TypeVar

import strawberry

E = TypeVar("E", bound=enum.Enum)


@functools.cache
def from_domain(graphql_enum: type[E], value: enum.Enum) -> E:
    """The GraphQL member with the same value as a domain enum member (kept: an enum's call
    costs about a microsecond, and an account's plans make tens of them)."""
    return graphql_enum(value.value)


@strawberry.enum(name="Provider", description="A billing provider behind the gateway.")
class ProviderEnum(enum.Enum):
    ALMANAC = strawberry.enum_value(
        "almanac", description="Almanac: hosted wikis, billed per organization."
    )
    AUTOPOSTING = strawberry.enum_value(
        "autoposting",
        description="Autoposting: social scheduling, billed per API key's organization.",
    )


@strawberry.enum(name="Interval", description="How often a plan bills.")
class IntervalEnum(enum.Enum):
    DAY = strawberry.enum_value("day", description="Every day.")
    WEEK = strawberry.enum_value("week", description="Every week.")
    MONTH = strawberry.enum_value("month", description="Every month.")
    QUARTER = strawberry.enum_value("quarter", description="Every three months.")
    YEAR = strawberry.enum_value("year", description="Every year.")
    ONE_TIME = strawberry.enum_value("one_time", description="Once, not recurring.")
    OTHER = strawberry.enum_value(
        "other", description="A value the gateway does not know: see `intervalRaw`."
    )


@strawberry.enum(
    name="SubscriptionStatus", description="A subscription's state, normalized across providers."
)
class SubscriptionStatusEnum(enum.Enum):
    ACTIVE = strawberry.enum_value("active", description="Paid and in good standing.")
    TRIALING = strawberry.enum_value("trialing", description="In a free trial.")
    PAST_DUE = strawberry.enum_value("past_due", description="A payment is overdue.")
    CANCELED = strawberry.enum_value("canceled", description="Canceled by the customer.")
    SUSPENDED = strawberry.enum_value(
        "suspended", description="Suspended by the provider; billing actions are refused."
    )
    NONE = strawberry.enum_value("none", description="No subscription.")
    OTHER = strawberry.enum_value(
        "other", description="A state the gateway does not know: see `statusRaw`."
    )


@strawberry.enum(
    name="ManageReason", description="Why the caller may or may not manage billing (Almanac)."
)
class ManageReasonEnum(enum.Enum):
    PERMISSION = strawberry.enum_value(
        "permission", description="Decided by the caller's permission in the organization."
    )
    NOT_ALLOWED = strawberry.enum_value(
        "not_allowed", description="Billing of this organization may not be managed here."
    )
    OTHER = strawberry.enum_value(
        "other", description="A reason the gateway does not know: see `reasonRaw`."
    )


# `gateway.errors.ErrorCode` but its `EDGE_CODES`, which no exception and no typed error carries.
@strawberry.enum(
    name="ErrorCode",
    description="Machine-readable error codes, in typed errors and in `extensions.code`. "
    "Refusals of the HTTP endpoint before GraphQL runs carry codes of their own in "
    "`extensions.code`: NOT_ACCEPTABLE, MISDIRECTED_REQUEST, PERSISTED_QUERY_NOT_FOUND, "
    "PERSISTED_QUERY_REQUIRED.",
)
class ErrorCodeEnum(enum.Enum):
    INVALID_INPUT = strawberry.enum_value(
        "INVALID_INPUT", description="An argument was rejected before any upstream call."
    )
    IDEMPOTENCY_CONFLICT = strawberry.enum_value(
        "IDEMPOTENCY_CONFLICT",
        description="The idempotency key was used before with different input.",
    )
    CHECKOUT_LIMITED = strawberry.enum_value(
        "CHECKOUT_LIMITED",
        description="A checkout limit of the gateway is full (see `CheckoutLimitError.limit`); "
        "nothing was sent, retry after `retryAfterSeconds`.",
    )
    UNAUTHENTICATED = strawberry.enum_value(
        "UNAUTHENTICATED",
        description="No credential for the provider, or the provider rejected it.",
    )
    NOT_ALLOWED = strawberry.enum_value(
        "NOT_ALLOWED", description="The credential may not do this."
    )
    BILLING_SUSPENDED = strawberry.enum_value(
        "BILLING_SUSPENDED", description="The account's billing is suspended."
    )
    NOT_FOUND = strawberry.enum_value(
        "NOT_FOUND", description="The provider does not know the account or resource."
    )
    UPSTREAM_REJECTED = strawberry.enum_value(
        "UPSTREAM_REJECTED", description="The provider refused the request."
    )
    RATE_LIMITED = strawberry.enum_value(
        "RATE_LIMITED", description="The provider is rate limiting; retry after a while."
    )
    UPSTREAM_UNAVAILABLE = strawberry.enum_value(
        "UPSTREAM_UNAVAILABLE", description="The provider failed; retrying later may help."
    )
    UPSTREAM_TIMEOUT = strawberry.enum_value(
        "UPSTREAM_TIMEOUT", description="The provider did not answer in time."
    )
    UPSTREAM_UNREACHABLE = strawberry.enum_value(
        "UPSTREAM_UNREACHABLE",
        description="The provider could not be reached or dropped the connection.",
    )
    UPSTREAM_BAD_RESPONSE = strawberry.enum_value(
        "UPSTREAM_BAD_RESPONSE", description="The provider's answer broke its contract."
    )
    GATEWAY_UNAVAILABLE = strawberry.enum_value(
        "GATEWAY_UNAVAILABLE",
        description="A store of the gateway's own (its shared idempotency store) could not "
        "answer, so nothing was sent to the provider; retrying shortly may help.",
    )
    INVALID_QUERY = strawberry.enum_value(
        "INVALID_QUERY",
        description="The GraphQL document or its variables were rejected (syntax, validation, "
        "query limits); only in `extensions.code`.",
    )
    INTERNAL = strawberry.enum_value(
        "INTERNAL", description="An unexpected failure in the gateway; details are in its log."
    )


@strawberry.enum(name="CheckoutLimit", description="Which limit of the gateway refused a checkout.")
class CheckoutLimitEnum(enum.Enum):
    CALLER_RATE = strawberry.enum_value(
        "caller_rate",
        description="The caller (its gateway key) started checkouts faster than its rate allows.",
    )
    CALLER_KEYS = strawberry.enum_value(
        "caller_keys",
        description="The caller (its gateway key) holds its quota of live idempotency keys.",
    )
    CREDENTIAL_KEYS = strawberry.enum_value(
        "credential_keys",
        description="The provider credential holds its quota of live idempotency keys.",
    )
    KEY_CAPACITY = strawberry.enum_value(
        "key_capacity",
        description="The gateway holds as many live idempotency keys as it may keep.",
    )
