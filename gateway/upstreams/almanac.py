"""`AlmanacClient`: the Almanac V1 billing endpoints, one short method each."""

from __future__ import annotations

from urllib.parse import quote

from gateway.settings import Credential
from gateway.upstreams._base import UpstreamClient


def _billing_path(organization_id: str) -> str:
    segment = quote(organization_id, safe="")
    if not segment.strip("."):
        # "." or ".." as a segment would be resolved away by URL normalization and reach another
        # endpoint with the caller's credential.
        segment = segment.replace(".", "%2E")
    return f"/v1/organizations/{segment}/billing"


class AlmanacClient(UpstreamClient):
    """Almanac: billing per organization; request bodies are strict, so only listed fields go."""

    endpoints = (
        "/v1/organizations/{id}/billing",
        "/v1/organizations/{id}/billing/checkout",
        "/v1/organizations/{id}/billing/preview",
    )

    async def get_billing_state(self, organization_id: str, *, credential: Credential) -> object:
        """`GET /v1/organizations/{id}/billing`: plans, usage and manage permission."""
        return await self.get(_billing_path(organization_id), credential=credential)

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
        return await self.post(
            f"{_billing_path(organization_id)}/checkout", credential=credential, json=body
        )

    async def preview_checkout(
        self, organization_id: str, *, plan_id: str, credential: Credential
    ) -> object:
        """`POST .../billing/preview` with `{plan_id}`: line items and totals of a plan change."""
        return await self.post(
            f"{_billing_path(organization_id)}/preview",
            credential=credential,
            json={"plan_id": plan_id},
        )
