"""Previewing a plan change: what it will cost, before any checkout is started.

Only Almanac offers a preview (`POST .../billing/preview`, no side effects); like every POST it is
sent once and never retried. Autoposting has no preview endpoint: asking for one is invalid input.
"""

from __future__ import annotations

from gateway import normalize
from gateway.clients import Clients
from gateway.credentials import Credential
from gateway.errors import InvalidInput
from gateway.models import CheckoutPreview
from gateway.provider import Provider
from gateway.settings import Settings
from gateway.validation import check_account_id, check_identifier


async def preview_checkout(
    provider: Provider,
    *,
    account_id: str | None,
    plan_id: str,
    clients: Clients,
    settings: Settings,
    credential: Credential,
) -> CheckoutPreview:
    """Check the input, then ask the provider for the price of the plan change."""
    plan_id = check_identifier(plan_id, field="planId")
    if provider is not Provider.ALMANAC:
        raise InvalidInput(
            f"{provider.label} offers no checkout preview; start the checkout to see its price.",
            field="provider",
            provider=provider,
        )
    organization_id = check_account_id(provider, account_id)
    assert organization_id is not None
    payload = await clients.almanac.preview_checkout(
        organization_id, plan_id=plan_id, credential=credential
    )
    return normalize.almanac_preview(
        payload,
        organization_id=organization_id,
        currency=settings.almanac.currency,
        drift=clients.drift,
    )
