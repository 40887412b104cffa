"""The ASGI application: Starlette routes, the GraphQL endpoint, a lifespan owning the clients."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx

# Strawberry's HTTP refusals; cross-web is the Strawberry dependency that defines them.
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from gateway.context import Context, build_context
from gateway.errors import ErrorCode
from gateway.idempotency import IdempotencyStore, MemoryIdempotencyStore
from gateway.loaders import Clients
from gateway.provider import Provider
from gateway.schema import build_schema
from gateway.security import GraphQLGuard, JSONCORSMiddleware, cors_options, error_response
from gateway.settings import Settings, load_settings

GRAPHQL_PATH = "/graphql"


class State(TypedDict):
    """What the lifespan hands every request."""

    clients: Clients
    idempotency: IdempotencyStore


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with a context built for each request and JSON refusals."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None
        )
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as exc:
            # Strawberry answers these as text/plain; callers get the same JSON shape as
            # every other error.
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_QUERY
            response = error_response(exc.status_code, exc.reason, code)
        await response(scope, receive, send)

    def is_ide_page(self, request: Request) -> bool:
        """Whether Strawberry would answer `request` with the GraphiQL page."""
        return self.should_render_graphql_ide(self.request_adapter_class(request))

    def decode_json(self, data: str | bytes) -> object:
        # Strawberry 0.341 answers 500 to a POST body that is not UTF-8, or is JSON but not an
        # object or a list: refuse both as a malformed request. (Query-string values are str.)
        try:
            value = json.loads(data)
        except UnicodeDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if isinstance(data, bytes) and not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object with a `query`.")
        return value

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(
            self.settings,
            request.state.clients,
            request.headers,
            idempotency=request.state.idempotency,
        )


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug's 500, in the shape of every other error; the traceback goes to the server log."""
    return error_response(500, "Unexpected error.", ErrorCode.INTERNAL)


def create_app(
    settings: Settings,
    *,
    transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
    idempotency: IdempotencyStore | None = None,
) -> Starlette:
    """The gateway for `settings`; `transports` replaces the network to the upstreams.

    `idempotency` keeps checkout idempotency keys (a store shared by several processes, say);
    by default an in-memory store of this app.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        clients = Clients.create(settings, transports)
        store = idempotency or MemoryIdempotencyStore(settings.idempotency_ttl)
        try:
            yield {"clients": clients, "idempotency": store}
        finally:
            await clients.aclose()

    async def home(request: Request) -> Response:
        return RedirectResponse(GRAPHQL_PATH)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    graphql = GatewayGraphQL(settings)
    guarded = GraphQLGuard(
        graphql,
        api_keys=settings.api_keys,
        max_body_bytes=settings.max_body_bytes,
        graphiql=settings.graphiql,
        is_ide_page=graphql.is_ide_page,
    )
    middleware = (
        [Middleware(JSONCORSMiddleware, **cors_options(settings.cors_origins))]
        if settings.cors_origins
        else []
    )
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route(GRAPHQL_PATH, guarded),
        ],
        middleware=middleware,
        exception_handlers={Exception: internal_error},
        lifespan=lifespan,
    )


def create_app_from_environ() -> Starlette:
    """The app configured from the process environment (uvicorn's factory for `serve`)."""
    return create_app(load_settings(os.environ))
