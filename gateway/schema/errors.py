"""GraphQL error types and the one place that maps the exception tree onto them.

Expected failures become members of a field's result union (`ExceptionHandler`, or
`to_graphql_error` for list items); elsewhere they are GraphQL errors carrying `extensions.code`.
Unexpected exceptions are masked to a generic message with code INTERNAL and logged in full.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from gateway.errors import (
    BillingSuspended,
    CheckoutLimitReached,
    ErrorCode,
    GatewayError,
    GatewayUnavailable,
    InvalidInput,
    MissingCredentials,
    OutOfScope,
    UpstreamError,
    UpstreamForbidden,
    UpstreamUnauthorized,
)
from gateway.schema.enums import CheckoutLimitEnum, ErrorCodeEnum, ProviderEnum, from_domain

logger = logging.getLogger("gateway.errors")


@strawberry.interface(
    description="A failure the caller can act on. Branch on `__typename`, or on `code`."
)
class Error:
    code: ErrorCodeEnum = strawberry.field(description="Machine-readable code of the failure.")
    message: str = strawberry.field(description="What went wrong, safe to show a person.")
    provider: ProviderEnum = strawberry.field(
        description="The provider the failure concerns: the one the account or checkout was "
        "asked of."
    )


@strawberry.type(description="An argument was rejected; no upstream was called.")
class InvalidInputError(Error):
    field: str | None = strawberry.field(description="The input field at fault, if one.")


@strawberry.type(
    description="The caller has no credential for the provider, the provider rejected it, or it "
    "may not do this."
)
class NotAllowedError(Error):
    pass


@strawberry.type(description="The account's billing is suspended at the provider.")
class BillingSuspendedError(Error):
    pass


@strawberry.type(
    description="The provider failed, refused, timed out or broke its contract. Any other "
    "provider's data in the same response is unaffected."
)
class ProviderError(Error):
    retryable: bool = strawberry.field(description="Whether retrying later may succeed.")
    retry_after_seconds: float | None = strawberry.field(
        description="How long to wait before retrying, when the provider says."
    )
    upstream_status: int | None = strawberry.field(
        description="The HTTP status the provider answered with, if it answered."
    )
    upstream_code: str | None = strawberry.field(
        description="The provider's own short error code, when it gives one."
    )


@strawberry.type(
    description="A limit of the gateway refused the checkout before anything was sent to the "
    "provider: the caller's rate, or a quota of live idempotency keys. Retry after "
    "`retryAfterSeconds`; a key already used keeps answering with its session meanwhile."
)
class CheckoutLimitError(Error):
    limit: CheckoutLimitEnum = strawberry.field(description="Which limit is full.")
    retryable: bool = strawberry.field(description="Always true: the limit will have room.")
    retry_after_seconds: float = strawberry.field(
        description="Seconds until the limit has room: a rate slot, or the expiry of the oldest "
        "live idempotency key counted against the quota."
    )


@strawberry.type(
    description="A store of the gateway's own (its shared idempotency store) could not answer, so "
    "nothing was sent to the provider. Not the provider's failure: retry shortly, with the same "
    "idempotency key."
)
class GatewayUnavailableError(Error):
    retryable: bool = strawberry.field(description="Always true: the store may answer again.")
    retry_after_seconds: float | None = strawberry.field(
        description="How long to wait before retrying, when the gateway knows."
    )


ErrorType = InvalidInputError | NotAllowedError | BillingSuspendedError | ProviderError
CheckoutErrorType = CheckoutLimitError | GatewayUnavailableError

# Exception classes to GraphQL error types, most specific first: the first match wins.
ERROR_TYPES: tuple[tuple[type[GatewayError], type[ErrorType]], ...] = (
    (InvalidInput, InvalidInputError),
    (BillingSuspended, BillingSuspendedError),
    (MissingCredentials, NotAllowedError),
    (OutOfScope, NotAllowedError),
    (UpstreamUnauthorized, NotAllowedError),
    (UpstreamForbidden, NotAllowedError),
    (UpstreamError, ProviderError),
)


# Errors only `startCheckout` raises: members of `StartCheckoutPayload` alone.
CHECKOUT_ERROR_TYPES: tuple[tuple[type[GatewayError], type[CheckoutErrorType]], ...] = (
    (CheckoutLimitReached, CheckoutLimitError),
    (GatewayUnavailable, GatewayUnavailableError),
)


def to_graphql_error(exc: GatewayError) -> ErrorType:
    """The typed GraphQL error for an expected failure that names its provider."""
    if exc.provider is None:
        raise TypeError(f"{type(exc).__name__} names no provider") from exc
    error_type = next((typ for cls, typ in ERROR_TYPES if isinstance(exc, cls)), None)
    if error_type is None:
        raise TypeError(f"{type(exc).__name__} has no GraphQL error type") from exc
    common: dict[str, Any] = {
        "code": from_domain(ErrorCodeEnum, exc.code),
        "message": exc.message,
        "provider": from_domain(ProviderEnum, exc.provider),
    }
    if error_type is InvalidInputError:
        assert isinstance(exc, InvalidInput)
        return InvalidInputError(**common, field=exc.field)
    if error_type is ProviderError:
        assert isinstance(exc, UpstreamError)
        return ProviderError(
            **common,
            retryable=exc.retryable,
            retry_after_seconds=exc.retry_after,
            upstream_status=exc.status,
            upstream_code=exc.upstream_code,
        )
    return error_type(**common)


def to_checkout_error(exc: GatewayError) -> ErrorType | CheckoutErrorType:
    """`to_graphql_error`, and the errors only a checkout raises (`CHECKOUT_ERROR_TYPES`)."""
    error_type = next((typ for cls, typ in CHECKOUT_ERROR_TYPES if isinstance(exc, cls)), None)
    if error_type is None or exc.provider is None:
        return to_graphql_error(exc)
    common: dict[str, Any] = {
        "code": from_domain(ErrorCodeEnum, exc.code),
        "message": exc.message,
        "provider": from_domain(ProviderEnum, exc.provider),
        "retryable": exc.retryable,
    }
    if isinstance(exc, CheckoutLimitReached):
        return CheckoutLimitError(
            **common,
            limit=from_domain(CheckoutLimitEnum, exc.limit),
            retry_after_seconds=exc.retry_after,
        )
    assert isinstance(exc, GatewayUnavailable)
    return GatewayUnavailableError(**common, retry_after_seconds=exc.retry_after)


class GatewayErrorHandler(strawberry.ExceptionHandler[GatewayError, ProviderError]):
    """Turns an expected failure into a member of the field's result union.

    Every result union of the schema holds all four error types; `ProviderError` is the one the
    handler is declared with, so that it applies to exactly those fields. `StartCheckoutPayload`
    also holds the checkout's own (`CHECKOUT_ERROR_TYPES`), which nothing else raises.
    """

    def handle(self, exception: GatewayError, *, field: Any, info: Any) -> Any:
        return to_checkout_error(exception)


def error_extensions(exc: GatewayError) -> dict[str, Any]:
    """`extensions` of a GraphQL error for an expected failure outside a result union."""
    extensions: dict[str, Any] = {"code": exc.code.value}
    if exc.provider is not None:
        extensions["provider"] = exc.provider.name
    if isinstance(exc, UpstreamError | GatewayUnavailable):
        extensions["retryable"] = exc.retryable
        if exc.retry_after is not None:
            extensions["retryAfterSeconds"] = exc.retry_after
    return extensions


def format_error(error: GraphQLError) -> GraphQLError:
    """Add `extensions.code` to an error, masking it when it is unexpected."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        # Parsing, validation, query limits and variable coercion (graphql-core 3.3 chains the
        # coercion error as original_error): safe to show as they are.
        error.extensions = {**(error.extensions or {}), "code": ErrorCode.INVALID_QUERY.value}
        return error
    if isinstance(original, GatewayError):
        error.extensions = {**(error.extensions or {}), **error_extensions(original)}
        return error
    logger.error(
        "unexpected error at %s: %s",
        ".".join(str(p) for p in error.path or ()),
        type(original).__name__,
        exc_info=original,
    )
    return GraphQLError(
        "Unexpected error.",
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": ErrorCode.INTERNAL.value},
    )


class ErrorFormatting(SchemaExtension):
    """Runs `format_error` over every error of a result."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [format_error(error) for error in errors]
