"""A simulated Autoposting API: billing, credits, usage and checkout, all in the envelope."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.sandbox.data import (
    AUTOPOSTING_ACCOUNTS,
    AUTOPOSTING_PLAN_IDS,
    AUTOPOSTING_USAGE_END,
    AutopostingAccount,
)
from gateway.sandbox.state import CheckoutRecord, SandboxState
from gateway.sandbox.web import SandboxApp, base_url, hosted_page, random_hex

PROVIDER = "autoposting"
TOKEN_PERIODS = {"7d": 7, "30d": 30, "90d": 90}
CHECKOUT_FIELDS = ("planId", "successUrl", "cancelUrl")
_ACCEPTED_PLANS = frozenset(AUTOPOSTING_PLAN_IDS) | {
    p.removeprefix("plan_") for p in AUTOPOSTING_PLAN_IDS
}
_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed"}  # fmt: skip


class EnvelopeError(HTTPException):
    """An error answered as `{"success": false, "error": code, "message": detail}`."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(status_code, message)
        self.code = code


def create_autoposting_app(state: SandboxState) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"success": True})

    async def profile(request: Request) -> Response:
        org_id = _authenticate(request)["org_id"]
        return _ok(
            {"id": org_id, "orgId": org_id, "name": "API Key", "email": "", "authType": "api_key"}
        )

    async def billing_status(request: Request) -> Response:
        return _ok(_authenticate(request)["billing_status"])

    async def credit_summary(request: Request) -> Response:
        return _ok(_authenticate(request)["credit_summary"])

    async def credits(request: Request) -> Response:
        return _ok(_authenticate(request)["credits"])

    async def usage_summary(request: Request) -> Response:
        return _ok(_authenticate(request)["usage_summary"])

    async def token_usage(request: Request) -> Response:
        account = _authenticate(request)
        period = request.query_params.get("period", "30d")
        if period not in TOKEN_PERIODS:
            raise EnvelopeError(400, "bad_request", "period must be one of 7d, 30d, 90d.")
        return _ok(_token_usage(account, period))

    async def checkout(request: Request) -> Response:
        account = _authenticate(request)
        if account["suspended"]:
            message = "Subscription expired, cancelled, or past due."
            raise EnvelopeError(403, "billing_suspended", message)
        body = _checkout_body(await request.body())
        plan_id = body["planId"]
        if plan_id not in _ACCEPTED_PLANS:
            raise EnvelopeError(400, "invalid_plan", f"Unknown plan: {plan_id}.")
        session_id = f"cs_{random_hex()}"
        url = f"{base_url(request)}/hosted/checkout/{session_id}"
        state.record_checkout(CheckoutRecord(PROVIDER, account["org_id"], plan_id, session_id, url))
        return _ok({"checkoutUrl": url, "sessionId": session_id})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/auth/profile", profile, methods=["GET"]),
        Route("/billing/status", billing_status, methods=["GET"]),
        Route("/billing/credit-summary", credit_summary, methods=["GET"]),
        Route("/billing/credits", credits, methods=["GET"]),
        Route("/usage/summary", usage_summary, methods=["GET"]),
        Route("/usage/tokens", token_usage, methods=["GET"]),
        Route("/billing/checkout", checkout, methods=["POST"]),
        Route("/hosted/checkout/{session_id}", hosted_page, methods=["GET"]),
    ]
    return SandboxApp(
        provider=PROVIDER,
        state=state,
        routes=routes,
        exception_handlers={HTTPException: _envelope_error},
    )


def _ok(data: Any) -> Response:
    return JSONResponse({"success": True, "data": data})


def _authenticate(request: Request) -> AutopostingAccount:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    account = AUTOPOSTING_ACCOUNTS.get(key) or AUTOPOSTING_ACCOUNTS.get(
        request.headers.get("x-api-key", "").strip()
    )
    if account is None:
        raise EnvelopeError(401, "unauthorized", "Missing or invalid API key.")
    return account


def _checkout_body(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise EnvelopeError(400, "bad_request", "Request body must be a JSON object.")
    missing = [
        name for name in CHECKOUT_FIELDS if not (isinstance(body.get(name), str) and body[name])
    ]
    if missing:
        raise EnvelopeError(400, "bad_request", f"Missing required fields: {', '.join(missing)}.")
    return body


def _token_usage(account: AutopostingAccount, period: str) -> dict[str, Any]:
    days = TOKEN_PERIODS[period]
    breakdown = {
        name: tokens * days // 30 for name, tokens in account["token_breakdown_30d"].items()
    }
    total = sum(breakdown.values())
    end = dt.date.fromisoformat(AUTOPOSTING_USAGE_END)
    per_day, extra = divmod(total, days)
    daily = [
        {
            "date": (end - dt.timedelta(days=days - 1 - i)).isoformat(),
            "tokens": per_day + (i < extra),
        }
        for i in range(days)
    ]
    return {"period": period, "total": total, "breakdown": breakdown, "dailyUsage": daily}


async def _envelope_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = (
        exc.code if isinstance(exc, EnvelopeError) else _ERROR_CODES.get(exc.status_code, "error")
    )
    body = {"success": False, "error": code, "message": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
