"""`AlmanacClient`: the Almanac V1 billing endpoints, one short method each."""

from __future__ import annotations

from gateway.credentials import Credential
from gateway.upstreams._base import UpstreamClient
from gateway.upstreams.endpoints import Endpoint
from gateway.upstreams.reuse import CacheGroup

BILLING = Endpoint("/v1/organizations/{id}/billing", cache=CacheGroup.STATE)
CHECKOUT = Endpoint("/v1/organizations/{id}/billing/checkout")
PREVIEW = Endpoint("/v1/organizations/{id}/billing/preview")


class AlmanacClient(UpstreamClient):
    """Almanac: billing per organization; request bodies are strict, so only listed fields go."""

    endpoints = (BILLING, CHECKOUT, PREVIEW)

    async def get_billing_state(self, organization_id: str, *, credential: Credential) -> object:
        """`GET /v1/organizations/{id}/billing`: plans, usage and manage permission."""
        return await self.get(BILLING.path(id=organization_id), credential=credential)

    async def create_checkout(
        self,
        organization_id: str,
        *,
        plan_id: str,
        success_url: str | None,
        credential: Credential,
    ) -> object:
        """`POST .../billing/checkout` with `{plan_id, success_url?}`: a hosted checkout URL."""
        body: dict[str, str] = {"plan_id": plan_id}
        if success_url is not None:
            body["success_url"] = success_url
        return await self.post(CHECKOUT.path(id=organization_id), credential=credential, json=body)

    async def preview_checkout(
        self, organization_id: str, *, plan_id: str, credential: Credential
    ) -> object:
        """`POST .../billing/preview` with `{plan_id}`: line items and totals of a plan change."""
        return await self.post(
            PREVIEW.path(id=organization_id),
            credential=credential,
            json={"plan_id": plan_id},
        )
