"""A simulated Almanac V1 API: billing state, checkout and preview, FastAPI-style errors."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.sandbox.data import (
    ALMANAC_ORGANIZATIONS,
    ALMANAC_PLANS,
    ALMANAC_TOKENS,
    AlmanacOrganization,
    AlmanacPlan,
)
from gateway.sandbox.state import CheckoutRecord, SandboxState
from gateway.sandbox.validation import validate_body
from gateway.sandbox.web import SandboxApp, base_url, hosted_page, random_hex

PROVIDER = "almanac"
# This organization's hosted checkout URL carries no session id.
NO_SESSION_ID_ORGANIZATION = "org_globex"


def create_almanac_app(state: SandboxState) -> Starlette:
    async def billing_state(request: Request) -> Response:
        may_manage = _authenticate(request)
        organization_id, organization = _organization(request)
        current = organization["current_plan_id"]
        return JSONResponse(
            {
                "organization_id": organization_id,
                "manage": _manage(organization, may_manage),
                "plans": [
                    {**plan, "current": plan["plan_id"] == current} for plan in ALMANAC_PLANS
                ],
                "usage": organization["usage"],
            }
        )

    async def checkout(request: Request) -> Response:
        may_manage = _authenticate(request)
        errors = validate_body(
            await request.body(), {"plan_id": False, "success_url": True}, ("plan_id",)
        )
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        organization_id, organization = _organization(request)
        if not _manage(organization, may_manage)["allowed"]:
            detail = (
                "Billing cannot be managed for this organization"
                if organization["manage_reason"] == "not_allowed"
                else "You do not have permission to manage billing"
            )
            raise HTTPException(403, detail)
        plan_id = (await request.json())["plan_id"]
        _plan(plan_id)
        url, session_id = _hosted_url(base_url(request), organization_id)
        state.record_checkout(CheckoutRecord(PROVIDER, organization_id, plan_id, session_id, url))
        return JSONResponse({"url": url})

    async def preview(request: Request) -> Response:
        _authenticate(request)
        errors = validate_body(await request.body(), {"plan_id": False}, ("plan_id",))
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        _, organization = _organization(request)
        plan = _plan((await request.json())["plan_id"])
        return JSONResponse(_preview(plan, organization))

    organization_path = "/v1/organizations/{organization_id}/billing"
    routes = [
        Route(organization_path, billing_state, methods=["GET"]),
        Route(f"{organization_path}/checkout", checkout, methods=["POST"]),
        Route(f"{organization_path}/preview", preview, methods=["POST"]),
        Route("/hosted/checkout/{session_id}", hosted_page, methods=["GET"]),
        Route("/hosted/pay", hosted_page, methods=["GET"]),
    ]
    return SandboxApp(
        provider=PROVIDER,
        state=state,
        routes=routes,
        exception_handlers={HTTPException: _http_error},
    )


def _authenticate(request: Request) -> bool:
    """Whether the caller's token may manage billing; 401 without a known token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    may_manage = ALMANAC_TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None
    if may_manage is None:
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return may_manage


def _organization(request: Request) -> tuple[str, AlmanacOrganization]:
    organization_id: str = request.path_params["organization_id"]
    organization = ALMANAC_ORGANIZATIONS.get(organization_id)
    if organization is None:
        raise HTTPException(404, "Organization not found")
    return organization_id, organization


def _manage(organization: AlmanacOrganization, may_manage: bool) -> dict[str, Any]:
    if organization["manage_reason"] == "not_allowed":
        return {"allowed": False, "reason": "not_allowed"}
    return {"allowed": may_manage, "reason": "permission"}


def _plan(plan_id: str) -> AlmanacPlan:
    for plan in ALMANAC_PLANS:
        if plan["plan_id"] == plan_id:
            return plan
    raise HTTPException(400, "Unknown plan")


def _hosted_url(base: str, organization_id: str) -> tuple[str, str | None]:
    if organization_id == NO_SESSION_ID_ORGANIZATION:
        return f"{base}/hosted/pay?ref={random_hex(8)}", None
    session_id = f"cs_test_{random_hex()}"
    return f"{base}/hosted/checkout/{session_id}", session_id


def _preview(plan: AlmanacPlan, organization: AlmanacOrganization) -> dict[str, Any]:
    price = plan["price"]
    if price is None:
        checkout_type: str | None = "contact_sales"
    else:
        current = _plan(organization["current_plan_id"])["price"]
        checkout_type = "upgrade" if current is None or price >= current else "downgrade"
    interval = plan["interval"]
    line_items = [
        {
            "name": plan["name"],
            "description": f"{plan['name']} plan, billed per {interval}",
            "quantity": 1,
            "subtotal": price,
            "total": price,
        }
    ]
    return {
        "plan_id": plan["plan_id"],
        "checkout_type": checkout_type,
        "currency": "USD",
        "line_items": line_items if price is not None else [],
        "subtotal": price,
        "total": price,
        "redirect_to_checkout": bool(price),
    }


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
