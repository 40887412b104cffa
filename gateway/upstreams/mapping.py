"""How an upstream's answers and transport failures map to the exception tree: one table each.

Messages are written here, never copied from an upstream body, and name no URL or credential.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from gateway import jsonfast
from gateway.errors import (
    BillingSuspended,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.provider import Provider
from gateway.upstreams.transport import AnswerTooLarge

# Appended to the message of a failed POST: the caller must know it was not sent twice.
NOT_RETRIED = " The request was sent once and not retried."

# An error status, most specific first: the first matching row gives the exception class and the
# message ({name}: the provider, {status}, {code}: " (upstream_code)" or "").
STATUS_ERRORS: tuple[tuple[Callable[[int], bool], type[UpstreamError], str], ...] = (
    (lambda status: status == 401, UpstreamUnauthorized, "{name} rejected the credential{code}."),
    (
        lambda status: status == 403,
        UpstreamForbidden,
        "{name} does not allow this for the credential{code}.",
    ),
    (
        lambda status: status == 404,
        UpstreamNotFound,
        "{name} does not know this account or resource{code}.",
    ),
    (lambda status: status == 429, UpstreamRateLimited, "{name} is rate limiting requests{code}."),
    (
        lambda status: status >= 500,
        UpstreamUnavailable,
        "{name} failed with status {status}{code}.",
    ),
    (
        lambda status: 400 <= status < 500,
        UpstreamRejected,
        "{name} rejected the request with status {status}{code}.",
    ),
    # 1xx or a 3xx that is not a redirect (redirects are refused before): outside any contract.
    (lambda status: True, UpstreamBadResponse, "{name} answered with status {status}{code}."),
)
# Upstream error codes that name a more specific failure than the status alone.
UPSTREAM_CODE_ERRORS: Mapping[str, type[UpstreamError]] = {
    "billing_suspended": BillingSuspended,
}
# A request that got no HTTP answer, by the httpx exception it raised, most specific first: its
# metric label, the exception class and the message ({lost}: NOT_RETRIED for a POST, else "").
TRANSPORT_ERRORS: tuple[tuple[type[httpx.HTTPError], str, type[UpstreamError], str], ...] = (
    (httpx.TimeoutException, "timeout", UpstreamTimeout, "{name} did not answer in time.{lost}"),
    (
        AnswerTooLarge,
        "too_large",
        UpstreamBadResponse,
        "{name} sent an answer longer than the gateway reads.{lost}",
    ),
    (
        httpx.DecodingError,
        "decoding_error",
        UpstreamBadResponse,
        "{name} sent a body that could not be decoded.",
    ),
    (
        httpx.TransportError,
        "unreachable",
        UpstreamUnreachable,
        "{name} could not be reached or dropped the connection.{lost}",
    ),
    (httpx.HTTPError, "error", UpstreamUnavailable, "{name} request failed.{lost}"),
)
# Errors that say the provider is unhealthy, counted by the circuit breaker; any other answer
# (4xx: the caller's doing, 429 included: it answers one credential, see `throttle`) shows it
# healthy.
UNHEALTHY_ERRORS: tuple[type[UpstreamError], ...] = (
    UpstreamTimeout,
    UpstreamUnreachable,
    UpstreamUnavailable,
    UpstreamBadResponse,
)
# Statuses after which a GET is sent again (with timeouts and unreachable upstreams).
RETRIED_STATUSES = frozenset({429, 502, 503, 504})


def status_error(status: int, upstream_code: str | None) -> tuple[type[UpstreamError], str]:
    """The exception class of an error status, and its message template."""
    _, error_class, message = next(row for row in STATUS_ERRORS if row[0](status))
    return UPSTREAM_CODE_ERRORS.get(upstream_code or "", error_class), message


def transport_error(exc: httpx.HTTPError) -> tuple[str, type[UpstreamError], str]:
    """The metric label, exception class and message template of a transport failure."""
    return next(row[1:] for row in TRANSPORT_ERRORS if isinstance(exc, row[0]))


def json_body(response: httpx.Response, provider: Provider) -> object:
    """The decoded JSON of an answer; `UpstreamBadResponse` for a successful answer that is not
    JSON (a redirect, HTML from a misconfigured base URL, no body, malformed JSON). An error
    answer without usable JSON is None: its status says enough."""
    name = provider.label
    content_type = response.headers.get("content-type", "")
    if response.is_redirect:
        raise UpstreamBadResponse(
            f"{name} answered with a redirect; check the configured base URL.",
            provider=provider,
            status=response.status_code,
        )
    if "json" not in content_type:
        if response.is_success and "html" in content_type:
            raise UpstreamBadResponse(
                f"{name} answered with HTML where JSON was expected; check the configured "
                "base URL.",
                provider=provider,
                status=response.status_code,
            )
        if response.is_success:
            raise UpstreamBadResponse(
                f"{name} answered without a JSON body.",
                provider=provider,
                status=response.status_code,
            )
        return None
    try:
        return jsonfast.loads(response.content)
    except ValueError as exc:
        if not response.is_success:
            return None
        raise UpstreamBadResponse(
            f"{name} answered with malformed JSON.",
            provider=provider,
            status=response.status_code,
        ) from exc


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_safe_code(value: Any) -> bool:
    """Whether an upstream error code is a short identifier that is safe to pass on."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-.") for c in value)
    )
