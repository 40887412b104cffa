"""Starting a hosted checkout: input checks first, then exactly one upstream POST.

A checkout is never retried here or below (see `upstreams/_base.py`): neither provider honours
idempotency keys, so a second POST could create a second checkout session.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import normalize
from gateway.errors import InvalidInput
from gateway.loaders import Clients, Loaders
from gateway.models import CheckoutSession
from gateway.provider import Provider
from gateway.settings import Credential, Settings, is_http_url
from gateway.validation import account_mismatch, check_account_id, check_identifier

MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What a caller asked for, before the configured defaults are applied."""

    provider: Provider
    account_id: str | None
    plan_id: str
    success_url: str | None
    cancel_url: str | None


def _redirect_url(value: str | None, default: str | None, field: str) -> str | None:
    url = value if value is not None else default
    if url is None:
        return None
    if len(url) > MAX_URL_LENGTH or not is_http_url(url):
        raise InvalidInput(f"{field} must be an absolute http(s) URL.", field=field)
    return url


async def start_checkout(
    request: CheckoutRequest,
    *,
    clients: Clients,
    loaders: Loaders,
    settings: Settings,
    credential: Credential,
) -> CheckoutSession:
    """Check `request`, then create one hosted checkout at its provider."""
    provider = request.provider
    plan_id = check_identifier(request.plan_id, field="planId")
    success_url = _redirect_url(request.success_url, settings.default_success_url, "successUrl")
    cancel_url = _redirect_url(request.cancel_url, settings.default_cancel_url, "cancelUrl")
    account_id = check_account_id(provider, request.account_id)

    if provider is Provider.ALMANAC:
        assert account_id is not None
        # Almanac has no cancel URL: a given one is checked above but not sent (its body is strict).
        payload = await clients.almanac.create_checkout(
            account_id, plan_id=plan_id, success_url=success_url, credential=credential
        )
        return normalize.almanac_checkout(payload, organization_id=account_id, plan_id=plan_id)

    if not any(normalize.same_plan_id(plan_id, plan["id"]) for plan in settings.autoposting_plans):
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
    assert success_url is not None
    assert cancel_url is not None
    if account_id is not None:
        profile = await loaders.autoposting_profiles.get(credential)
        if profile.organization_id != account_id:
            raise account_mismatch(provider)
    payload = await clients.autoposting.create_checkout(
        plan_id=plan_id, success_url=success_url, cancel_url=cancel_url, credential=credential
    )
    return normalize.autoposting_checkout(payload, plan_id=plan_id)
