"""Starting a hosted checkout: input checks first, then at most one upstream POST.

A checkout is never retried here or below (see `upstreams/_base.py`): neither provider honours
idempotency keys, so a second POST could create a second checkout session. The gateway keeps
idempotency keys itself (`checkout.idempotency`, whose docstring says what a key remembers): with
a key, a repeated request gets the first one's session instead of a second POST.

Redirect URLs, given or defaulted, must be absolute http(s) URLs on a host of
`Settings.redirect_hosts`. The provider's hosted page sends the paying customer there, so an
unchecked URL would make the gateway an open redirect. They are checked, like every other input,
before anything that could call an upstream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway import normalize
from gateway.checkout.idempotency import (
    UNKNOWN_OUTCOME,
    Conflict,
    IdempotencyStore,
    RememberedFailure,
    Replay,
    checkout_scope,
    digest,
)
from gateway.clients import Clients
from gateway.credentials import Credential
from gateway.errors import (
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    MissingCredentials,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnauthorized,
    UpstreamUnreachable,
)
from gateway.loaders import Loaders
from gateway.models import CheckoutSession
from gateway.provider import Provider
from gateway.settings import Settings
from gateway.validation import account_mismatch, check_account_id, check_identifier

MAX_URL_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# One DNS label of an ASCII host name. Internationalized names are accepted in their xn-- form
# only: Python and browsers map Unicode host names differently, and the host judged must be the
# host a browser goes to.
_HOST_LABEL = re.compile(r"[a-z0-9_-]+")
# What a browser reads differently from Python's URL parser: "\\" (as "/") and any whitespace.
_BACKSLASH_OR_SPACE = re.compile(r"[\\\s]")
# Failures of the POST that prove no checkout was made: it was never sent (input the request
# could not carry, no usable credential, an open circuit), or the provider refused it (4xx). Any
# other failure once the POST is under way leaves the outcome unknown.
REFUSED_CHECKOUT_ERRORS: tuple[type[GatewayError], ...] = (
    InvalidInput,
    MissingCredentials,
    UpstreamCircuitOpen,
    UpstreamUnauthorized,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamRateLimited,
)


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What a caller asked for, before the configured defaults are applied."""

    provider: Provider
    account_id: str | None
    plan_id: str
    success_url: str | None
    cancel_url: str | None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CheckedCheckout:
    """A checkout that passed every local check, with the defaults applied: what is sent."""

    provider: Provider
    account_id: str | None
    plan_id: str
    success_url: str | None
    cancel_url: str | None

    def fingerprint(self) -> str:
        """A digest of the normalized input: equal for requests that would send the same."""
        fields = [
            self.provider.value,
            self.account_id,
            self.plan_id,
            self.success_url,
            self.cancel_url,
        ]
        return digest(json.dumps(fields, separators=(",", ":")))


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether `host` (lowercase) is one of `patterns`; `*.example.com` matches its subdomains."""
    for pattern in patterns:
        pattern = pattern.lower().removesuffix(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _redirect_host(url: str, field: str, configured: str) -> str:
    """The host a browser would go to for `url`, or InvalidInput; never echoes the URL."""
    not_http = InvalidInput(f"{field}{configured} must be an absolute http(s) URL.", field=field)
    # Browsers read "\" as "/" and drop tabs and newlines, where Python's parser does not: a URL
    # holding any could be judged by one host here and open another in the browser.
    if len(url) > MAX_URL_LENGTH or not url.isprintable() or _BACKSLASH_OR_SPACE.search(url):
        raise not_http
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        raise not_http from None
    # `hostname` is the real host: after any userinfo ("https://good.com@evil.com/"), lowercased.
    host = (parts.hostname or "").removesuffix(".")
    if parts.scheme not in ("http", "https") or not host:
        raise not_http
    if not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise InvalidInput(
            f"{field}{configured} must have an ASCII host name (an internationalized one in its "
            "xn-- form).",
            field=field,
        )
    return host


def _redirect_url(
    value: str | None, default: str | None, field: str, allowed_hosts: Iterable[str]
) -> str | None:
    url = value if value is not None else default
    if url is None:
        return None
    configured = " (the configured default)" if value is None else ""
    host = _redirect_host(url, field, configured)
    if not host_allowed(host, allowed_hosts):
        raise InvalidInput(
            f"{field}{configured} must be on a host the gateway may redirect to "
            "(GATEWAY_REDIRECT_HOSTS).",
            field=field,
        )
    return url


def check_checkout(request: CheckoutRequest, settings: Settings) -> CheckedCheckout:
    """Every check of `request` that needs no upstream call, with the defaults applied."""
    provider = request.provider
    plan_id = check_identifier(request.plan_id, field="planId")
    hosts = settings.redirect_hosts
    success_url = _redirect_url(
        request.success_url, settings.default_success_url, "successUrl", hosts
    )
    cancel_url = _redirect_url(request.cancel_url, settings.default_cancel_url, "cancelUrl", hosts)
    account_id = check_account_id(provider, request.account_id)
    if provider is Provider.AUTOPOSTING:
        if not any(
            normalize.same_plan_id(plan_id, plan["id"]) for plan in settings.autoposting_plans
        ):
            raise InvalidInput(
                "planId is not a plan of the configured Autoposting catalog.",
                field="planId",
                provider=provider,
            )
        for field, url in (("successUrl", success_url), ("cancelUrl", cancel_url)):
            if url is None:
                raise InvalidInput(
                    f"Autoposting requires {field}; give it or configure a default.",
                    field=field,
                    provider=provider,
                )
    return CheckedCheckout(provider, account_id, plan_id, success_url, cancel_url)


def check_idempotency_key(key: str) -> str:
    """`key` if it is 1 to 255 printable characters."""
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(
            f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters long.",
            field="idempotencyKey",
        )
    if not key.isprintable():
        raise InvalidInput(
            "idempotencyKey must not contain control or other non-printable characters.",
            field="idempotencyKey",
        )
    return key


def checkout_was_refused(error: BaseException) -> bool:
    """Whether a failure of the checkout POST proves that no checkout was made."""
    return isinstance(error, REFUSED_CHECKOUT_ERRORS)


def _unknown_outcome(error: BaseException, provider: Provider) -> RememberedFailure:
    if isinstance(error, UpstreamError):
        return RememberedFailure.of(
            error, provider=provider, message=error.message + UNKNOWN_OUTCOME
        )
    message = f"The {provider.label} checkout was interrupted before its answer was read."
    return RememberedFailure(UpstreamUnreachable, message + UNKNOWN_OUTCOME, provider)


async def start_checkout(
    request: CheckoutRequest,
    *,
    clients: Clients,
    loaders: Loaders,
    settings: Settings,
    credential: Credential,
    idempotency: IdempotencyStore,
    caller: str | None = None,
) -> CheckoutSession:
    """Check `request`, then create one hosted checkout at its provider.

    With an idempotency key, a request repeated with the same input (by the same caller, with the
    same credential) gets the first one's session, or its remembered failure, without a POST.
    `caller` is a digest of the caller's gateway key, which scopes the key. Every checkout that
    passes the input checks counts against the caller's rate, and a new key against the quotas of
    live keys (`CheckoutLimitReached`, before anything is sent).
    """
    checkout = check_checkout(request, settings)
    key = request.idempotency_key
    if key is not None:
        key = check_idempotency_key(key)
    # Without configured gateway keys a bearer token proves nothing (anyone may send any): such
    # callers are one caller, sharing one rate and one quota, and scoped by credential alone.
    caller = caller if settings.api_keys else None
    await idempotency.admit(caller)
    if key is None:
        await _check_account(checkout, loaders, credential)
        return await _create(checkout, clients, credential)

    scope = checkout_scope(checkout.provider, credential, caller)
    reservation = await idempotency.reserve(scope, key, checkout.fingerprint())
    if isinstance(reservation, Conflict):
        raise IdempotencyConflict(
            "idempotencyKey was already used with different input; use a new key for a new "
            "checkout.",
            field="idempotencyKey",
            provider=checkout.provider,
        )
    if isinstance(reservation, Replay):
        if isinstance(reservation.outcome, RememberedFailure):
            raise reservation.outcome.error()
        return reservation.outcome

    sent = False
    try:
        await _check_account(checkout, loaders, credential)
        sent = True
        session = await _create(checkout, clients, credential)
    except BaseException as exc:
        if not sent or checkout_was_refused(exc):
            await idempotency.release(scope, key, reservation.token)
            raise
        failure = _unknown_outcome(exc, checkout.provider)
        await idempotency.complete(scope, key, reservation.token, failure)
        if isinstance(exc, UpstreamError):
            raise failure.error() from exc
        raise
    await idempotency.complete(scope, key, reservation.token, session)
    return session


async def _check_account(
    checkout: CheckedCheckout, loaders: Loaders, credential: Credential
) -> None:
    """An Autoposting account id given must be the key's organization (a GET, before the POST)."""
    if checkout.provider is Provider.AUTOPOSTING and checkout.account_id is not None:
        profile = await loaders.autoposting_profiles.get(credential)
        if profile.organization_id != checkout.account_id:
            raise account_mismatch(checkout.provider)


async def _create(
    checkout: CheckedCheckout, clients: Clients, credential: Credential
) -> CheckoutSession:
    """The one POST, and its answer as a session."""
    plan_id = checkout.plan_id
    if checkout.provider is Provider.ALMANAC:
        assert checkout.account_id is not None
        # Almanac has no cancel URL: a given one is checked but not sent (its body is strict).
        payload = await clients.almanac.create_checkout(
            checkout.account_id,
            plan_id=plan_id,
            success_url=checkout.success_url,
            credential=credential,
        )
        return normalize.almanac_checkout(
            payload, organization_id=checkout.account_id, plan_id=plan_id, drift=clients.drift
        )
    assert checkout.success_url is not None
    assert checkout.cancel_url is not None
    payload = await clients.autoposting.create_checkout(
        plan_id=plan_id,
        success_url=checkout.success_url,
        cancel_url=checkout.cancel_url,
        credential=credential,
    )
    return normalize.autoposting_checkout(payload, plan_id=plan_id, drift=clients.drift)
