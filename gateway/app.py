"""The ASGI application: Starlette routes, the GraphQL endpoint, a lifespan owning the clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gateway.context import Context, build_context
from gateway.loaders import Clients
from gateway.provider import Provider
from gateway.schema import build_schema
from gateway.settings import Settings, load_settings

GRAPHQL_PATH = "/graphql"


class State(TypedDict):
    """What the lifespan hands every request."""

    clients: Clients


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with a context built for each request."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql" if settings.graphiql else None)
        self.settings = settings

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(self.settings, request.state.clients, request.headers)


def create_app(
    settings: Settings,
    *,
    transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
) -> Starlette:
    """The gateway for `settings`; `transports` replaces the network to the upstreams."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        clients = Clients.create(settings, transports)
        try:
            yield {"clients": clients}
        finally:
            await clients.aclose()

    async def home(request: Request) -> Response:
        return RedirectResponse(GRAPHQL_PATH)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    graphql: Any = GatewayGraphQL(settings)
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route(GRAPHQL_PATH, graphql),
        ],
        lifespan=lifespan,
    )


def create_app_from_environ() -> Starlette:
    """The app configured from the process environment (uvicorn's factory for `serve`)."""
    return create_app(load_settings(os.environ))
