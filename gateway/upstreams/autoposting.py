"""`AutopostingClient`: Autoposting billing endpoints, unwrapping its `{success, data}` envelope."""

from __future__ import annotations

import httpx

from gateway.errors import UpstreamBadResponse
from gateway.settings import Credential
from gateway.upstreams._base import UpstreamClient, is_safe_code


class AutopostingClient(UpstreamClient):
    """Autoposting: billing per API key's organization; every answer is an envelope."""

    endpoints = (
        "/billing/status",
        "/billing/credit-summary",
        "/usage/tokens",
        "/auth/profile",
        "/billing/checkout",
        "/health",
    )

    async def get_billing_status(self, *, credential: Credential) -> object:
        """`GET /billing/status`: plan, subscription state and social-account limit."""
        return await self.get("/billing/status", credential=credential)

    async def get_credit_summary(self, *, credential: Credential) -> object:
        """`GET /billing/credit-summary`: credit balance, allocation and use."""
        return await self.get("/billing/credit-summary", credential=credential)

    async def get_token_usage(self, *, period: str, credential: Credential) -> object:
        """`GET /usage/tokens?period=...`: AI tokens used in the period."""
        return await self.get("/usage/tokens", credential=credential, params={"period": period})

    async def get_profile(self, *, credential: Credential) -> object:
        """`GET /auth/profile`: the organization behind the API key."""
        return await self.get("/auth/profile", credential=credential)

    async def create_checkout(
        self, *, plan_id: str, success_url: str, cancel_url: str, credential: Credential
    ) -> object:
        """`POST /billing/checkout` with all three required fields: checkout URL and session id."""
        return await self.post(
            "/billing/checkout",
            credential=credential,
            json={"planId": plan_id, "successUrl": success_url, "cancelUrl": cancel_url},
        )

    async def health(self) -> object:
        """`GET /health`, which needs no credential."""
        return await self.get("/health", credential=None)

    def unwrap(self, body: object, response: httpx.Response) -> object:
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise UpstreamBadResponse(
                "Autoposting answered without its {success, data} envelope.",
                provider=self.provider,
                status=response.status_code,
            )
        if body["success"] is not True:
            raise UpstreamBadResponse(
                "Autoposting answered a success status with success: false.",
                provider=self.provider,
                status=response.status_code,
                upstream_code=self.error_code(body),
            )
        # /health answers {"success": true} with no data.
        return body.get("data")

    def error_code(self, body: object) -> str | None:
        if isinstance(body, dict) and is_safe_code(body.get("error")):
            code: str = body["error"]
            return code
        return None
