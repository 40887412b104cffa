"""`AutopostingClient`: Autoposting billing endpoints, unwrapping its `{success, data}` envelope."""

from __future__ import annotations

import httpx

from gateway.credentials import Credential
from gateway.errors import UpstreamBadResponse
from gateway.upstreams._base import UpstreamClient
from gateway.upstreams.endpoints import Endpoint
from gateway.upstreams.mapping import is_safe_code
from gateway.upstreams.reuse import CacheGroup

BILLING_STATUS = Endpoint("/billing/status", cache=CacheGroup.STATE)
CREDIT_SUMMARY = Endpoint("/billing/credit-summary", cache=CacheGroup.USAGE)
TOKEN_USAGE = Endpoint("/usage/tokens", cache=CacheGroup.USAGE)
PROFILE = Endpoint("/auth/profile", cache=CacheGroup.STATE)
CHECKOUT = Endpoint("/billing/checkout")
# Credential-less: the readiness probe's (gateway/http/health.py).
HEALTH = Endpoint("/health")


class AutopostingClient(UpstreamClient):
    """Autoposting: billing per API key's organization; every answer is an envelope."""

    endpoints = (BILLING_STATUS, CREDIT_SUMMARY, TOKEN_USAGE, PROFILE, CHECKOUT, HEALTH)

    async def get_billing_status(self, *, credential: Credential) -> object:
        """`GET /billing/status`: plan, subscription state and social-account limit."""
        return await self.get(BILLING_STATUS.path(), credential=credential)

    async def get_credit_summary(self, *, credential: Credential) -> object:
        """`GET /billing/credit-summary`: credit balance, allocation and use."""
        return await self.get(CREDIT_SUMMARY.path(), credential=credential)

    async def get_token_usage(self, *, period: str, credential: Credential) -> object:
        """`GET /usage/tokens?period=...`: AI tokens used in the period."""
        return await self.get(TOKEN_USAGE.path(), credential=credential, params={"period": period})

    async def get_profile(self, *, credential: Credential) -> object:
        """`GET /auth/profile`: the organization behind the API key."""
        return await self.get(PROFILE.path(), credential=credential)

    async def create_checkout(
        self, *, plan_id: str, success_url: str, cancel_url: str, credential: Credential
    ) -> object:
        """`POST /billing/checkout` with all three required fields: checkout URL and session id."""
        return await self.post(
            CHECKOUT.path(),
            credential=credential,
            json={"planId": plan_id, "successUrl": success_url, "cancelUrl": cancel_url},
        )

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
