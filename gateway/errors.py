"""The gateway's one exception tree.

Every failure the gateway expects is one of these, raised with a message that is safe to show a
caller (never an upstream body, a URL with its query or a credential)::

    GatewayError                      code
    ├── InvalidInput                  INVALID_INPUT        bad arguments, caught before any call
    │   └── IdempotencyConflict       IDEMPOTENCY_CONFLICT a reused key with other input
    ├── CheckoutLimitReached          CHECKOUT_LIMITED     a checkout rate or key quota is full
    ├── MissingCredentials            UNAUTHENTICATED      no credential for a provider
    ├── OutOfScope                    NOT_ALLOWED          beyond the caller's gateway key scope
    ├── GatewayUnavailable            GATEWAY_UNAVAILABLE  a store of the gateway's own (idempotency
    │                                                      keys in Redis) cannot answer, retryable
    └── UpstreamError                 (per leaf)           a provider answered badly or not at all
        ├── UpstreamUnauthorized      UNAUTHENTICATED      401
        ├── UpstreamForbidden         NOT_ALLOWED          403 (and Almanac manage.allowed false)
        │   └── BillingSuspended      BILLING_SUSPENDED    403 billing_suspended
        ├── UpstreamNotFound          NOT_FOUND            404
        ├── UpstreamRejected          UPSTREAM_REJECTED    400, 402, 409, 422 and other 4xx
        ├── UpstreamRateLimited       RATE_LIMITED         429, retryable, with retry_after
        ├── UpstreamUnavailable       UPSTREAM_UNAVAILABLE 5xx, retryable
        │   └── UpstreamCircuitOpen   UPSTREAM_UNAVAILABLE failing fast while the breaker is open
        ├── UpstreamTimeout           UPSTREAM_TIMEOUT     connect or read timeout, retryable
        ├── UpstreamUnreachable       UPSTREAM_UNREACHABLE connection refused or dropped, retryable
        └── UpstreamBadResponse       UPSTREAM_BAD_RESPONSE answer breaks the contract

HTTP statuses and httpx exceptions are mapped to these in one place, `upstreams/mapping.py`; the
GraphQL layer maps these to GraphQL error types in one place, `schema/errors.py`.

`ErrorCode` holds every code a response can carry. `EDGE_CODES` are the HTTP edge's refusals,
answered before GraphQL runs (`gateway/http/`): never an exception's code, so they are not values
of the GraphQL `ErrorCode` enum, which types `Error.code`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.provider import Provider


class ErrorCode(enum.Enum):
    """Machine-readable error codes, shared by typed errors and `extensions.code`."""

    INVALID_INPUT = "INVALID_INPUT"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    CHECKOUT_LIMITED = "CHECKOUT_LIMITED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    NOT_ALLOWED = "NOT_ALLOWED"
    BILLING_SUSPENDED = "BILLING_SUSPENDED"
    NOT_FOUND = "NOT_FOUND"
    UPSTREAM_REJECTED = "UPSTREAM_REJECTED"
    RATE_LIMITED = "RATE_LIMITED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_UNREACHABLE = "UPSTREAM_UNREACHABLE"
    UPSTREAM_BAD_RESPONSE = "UPSTREAM_BAD_RESPONSE"
    GATEWAY_UNAVAILABLE = "GATEWAY_UNAVAILABLE"
    INVALID_QUERY = "INVALID_QUERY"
    INTERNAL = "INTERNAL"
    # The HTTP edge's own (`EDGE_CODES`).
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    MISDIRECTED_REQUEST = "MISDIRECTED_REQUEST"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_REQUIRED = "PERSISTED_QUERY_REQUIRED"


# Refusals of the HTTP edge, before GraphQL runs: a 406 for an Accept naming no JSON type, a 421
# for a Host not allowed, and Apollo's persisted-query answers (their codes are Apollo's protocol).
EDGE_CODES = frozenset(
    {
        ErrorCode.NOT_ACCEPTABLE,
        ErrorCode.MISDIRECTED_REQUEST,
        ErrorCode.PERSISTED_QUERY_NOT_FOUND,
        ErrorCode.PERSISTED_QUERY_REQUIRED,
    }
)


class GatewayError(Exception):
    """Base of every failure the gateway expects; `message` is safe to show a caller."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, provider: Provider | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider

    def concerning(self, provider: Provider) -> GatewayError:
        """This error, attributed to `provider` unless it already names one."""
        if self.provider is None:
            self.provider = provider
        return self


@contextmanager
def attributed_to(provider: Provider) -> Iterator[None]:
    """Attribute any `GatewayError` raised inside to `provider`, unless it names one already."""
    try:
        yield
    except GatewayError as exc:
        exc.concerning(provider)
        raise


class InvalidInput(GatewayError):
    """An argument the gateway rejects before calling any upstream."""

    code = ErrorCode.INVALID_INPUT

    def __init__(
        self, message: str, *, field: str | None = None, provider: Provider | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.field = field


class IdempotencyConflict(InvalidInput):
    """An idempotency key was used before with different input."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class CheckoutLimit(enum.Enum):
    """Which limit refused a checkout (`CheckoutLimitReached.limit`)."""

    CALLER_RATE = "caller_rate"
    CALLER_KEYS = "caller_keys"
    CREDENTIAL_KEYS = "credential_keys"
    KEY_CAPACITY = "key_capacity"


class CheckoutLimitReached(GatewayError):
    """A checkout refused by one of the gateway's own limits before anything was sent upstream.

    Retryable: `retry_after` is when the limit will have room (a rate token, or the expiry of the
    oldest live idempotency key counted against the quota).
    """

    code = ErrorCode.CHECKOUT_LIMITED
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        limit: CheckoutLimit,
        retry_after: float,
        provider: Provider | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.limit = limit
        self.retry_after = retry_after


class MissingCredentials(GatewayError):
    """Neither the request nor the configuration holds a credential for the provider."""

    code = ErrorCode.UNAUTHENTICATED


class OutOfScope(GatewayError):
    """The caller's gateway key may not reach this provider or account, or do this."""

    code = ErrorCode.NOT_ALLOWED


class GatewayUnavailable(GatewayError):
    """A store of the gateway's own (the shared idempotency store) cannot answer, so nothing was
    sent to the provider: not the provider's failure. Retryable; `retry_after` when known."""

    code = ErrorCode.GATEWAY_UNAVAILABLE
    retryable = True

    def __init__(
        self, message: str, *, provider: Provider | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """A provider answered with an error, broke its contract, or could not be reached."""

    code = ErrorCode.UPSTREAM_REJECTED

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        status: int | None = None,
        upstream_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.status = status
        self.upstream_code = upstream_code
        self.retry_after = retry_after


class UpstreamUnauthorized(UpstreamError):
    """The provider rejected the credential (401)."""

    code = ErrorCode.UNAUTHENTICATED


class UpstreamForbidden(UpstreamError):
    """The credential may not do this (403)."""

    code = ErrorCode.NOT_ALLOWED


class BillingSuspended(UpstreamForbidden):
    """The account's billing is suspended (Autoposting 403 `billing_suspended`)."""

    code = ErrorCode.BILLING_SUSPENDED


class UpstreamNotFound(UpstreamError):
    """The account or resource does not exist at the provider (404)."""

    code = ErrorCode.NOT_FOUND


class UpstreamRejected(UpstreamError):
    """The provider refused the request as sent (400, 402, 409, 422 or another 4xx)."""

    code = ErrorCode.UPSTREAM_REJECTED


class UpstreamRateLimited(UpstreamError):
    """The provider is rate limiting this caller (429)."""

    code = ErrorCode.RATE_LIMITED
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """The provider failed (5xx)."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE
    retryable = True


class UpstreamCircuitOpen(UpstreamUnavailable):
    """Calls to the provider fail fast after repeated failures; `retry_after` says for how long."""


class UpstreamTimeout(UpstreamError):
    """The provider did not connect or answer in time."""

    code = ErrorCode.UPSTREAM_TIMEOUT
    retryable = True


class UpstreamUnreachable(UpstreamError):
    """The connection to the provider was refused or dropped."""

    code = ErrorCode.UPSTREAM_UNREACHABLE
    retryable = True


class UpstreamBadResponse(UpstreamError):
    """The provider's answer breaks its contract (not JSON, wrong envelope, wrong types)."""

    code = ErrorCode.UPSTREAM_BAD_RESPONSE
