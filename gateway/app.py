"""The ASGI application: Starlette routes, the GraphQL endpoint, a lifespan owning the clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx

# Strawberry's HTTP refusals; cross-web is the Strawberry dependency that defines them.
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from gateway import jsonfast
from gateway.checkout.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    ObservedIdempotencyStore,
)
from gateway.checkout.redis_store import RedisIdempotencyStore, open_redis, redis_check
from gateway.clients import Clients
from gateway.context import Context, build_context
from gateway.errors import ErrorCode
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.http.graphiql import GraphiQLPage, assets_route
from gateway.http.guard import (
    GRAPHQL_RESPONSE_MEDIA_TYPE,
    ApiKeys,
    GraphQLGuard,
    JSONCORSMiddleware,
    cors_options,
    error_response,
    preferred_media_type,
)
from gateway.http.health import Readiness, healthz, readyz, upstream_check
from gateway.http.persisted import PersistedOperations, PersistedQueryError
from gateway.provider import Provider
from gateway.schema import build_schema
from gateway.settings import Settings, load_settings
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.observability import ObservabilityMiddleware, UpstreamRecorder
from gateway.upstreams.redis_cache import RedisResponseCache

GRAPHQL_PATH = "/graphql"
# Readiness probes: Autoposting's health endpoint; for Almanac, which has none, any answer of the
# API's root (a 404 or 401 included) shows it reachable.
AUTOPOSTING_HEALTH_PATH = "/health"
ALMANAC_PROBE_PATH = "/v1/"


class State(TypedDict):
    """What the lifespan hands every request."""

    clients: Clients
    idempotency: IdempotencyStore
    readiness: Readiness


def _operation_tracing(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Strawberry's OpenTelemetry extension when tracing is on (an optional dependency)."""
    if not settings.otel:
        return []
    from gateway.telemetry import tracing

    return [tracing.operation_extension()]


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with a context built for each request and JSON refusals."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(settings, more=_operation_tracing(settings)),
            graphql_ide="graphiql" if settings.graphiql else None,
        )
        self.settings = settings
        # Served from the gateway's own vendored files: GraphiQL works with no internet access.
        self.graphiql_page = GraphiQLPage((EXAMPLE_QUERY, EXAMPLE_MUTATION))
        self.persisted = PersistedOperations(
            settings.persisted_operations,
            persisted_only=settings.persisted_only,
            cache_size=settings.apq_cache_size,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.run(request)
        except PersistedQueryError as exc:
            response = error_response(exc.status, exc.message, exc.code)
        except HTTPException as exc:
            # Strawberry answers these as text/plain; callers get the same JSON shape as
            # every other error.
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_QUERY
            if isinstance(exc.__cause__, InvalidOperationTypeError) and _prefers_graphql_response(
                request
            ):
                # GraphQL over HTTP: a mutation sent by GET is 405 (application/json keeps 400).
                response = error_response(405, exc.reason, code, headers={"Allow": "POST"})
            else:
                response = error_response(exc.status_code, exc.reason, code)
        await response(scope, receive, send)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET naming a persisted query by hash has no `query` parameter: not the IDE page.
        return (
            super().should_render_graphql_ide(request)
            and request.query_params.get("extensions") is None
        )

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):
            # Persisted operations: the document named by hash, or a refusal (PersistedQueryError).
            data.query = self.persisted.document(data.query, data.extensions)
        return data

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response_data = await super().process_result(request, result)
        if _prefers_graphql_response(request) and not _executed(result):
            # A request error has no `data` entry (GraphQL spec, "Response"); create_response
            # gives it a 4xx status.
            response_data.pop("data", None)
        return response_data

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if isinstance(response_data, dict) and "data" not in response_data:
            # Only application/graphql-response+json responses lose `data` (process_result).
            internal = any(
                isinstance(error, dict)
                and (error.get("extensions") or {}).get("code") == ErrorCode.INTERNAL.value
                for error in response_data.get("errors") or ()
            )
            response.status_code = 500 if internal else 400
        return response

    async def render_graphql_ide(self, request: Request) -> Response:
        return self.graphiql_page.response(request)

    def is_ide_page(self, request: Request) -> bool:
        """Whether Strawberry would answer `request` with the GraphiQL page."""
        return self.should_render_graphql_ide(self.request_adapter_class(request))

    def decode_json(self, data: str | bytes) -> object:
        # Strawberry 0.341 answers 500 to a POST body that is not UTF-8, or is JSON but not an
        # object or a list: refuse both as a malformed request. (Query-string values are str.)
        try:
            value = jsonfast.loads(data)
        except UnicodeDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if isinstance(data, bytes) and not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object with a `query`.")
        return value

    def encode_json(self, data: object) -> bytes:
        return jsonfast.dumps(data)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return build_context(
            self.settings,
            request.state.clients,
            request.headers,
            idempotency=request.state.idempotency,
        )


def _prefers_graphql_response(request: Request) -> bool:
    return preferred_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE_MEDIA_TYPE


def _executed(result: ExecutionResult) -> bool:
    """Whether execution started: not for a document that failed to parse or validate
    (Strawberry's PreExecutionError) nor for variables that failed coercion (graphql-core answers
    those with no data and errors without a path)."""
    if isinstance(result, PreExecutionError):
        return False
    return result.data is not None or not result.errors or any(e.path for e in result.errors)


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

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        # One Redis client per app (its pool), for every shared-state user: idempotency keys, and
        # the response cache when the settings cache any answer (else the clients ignore it).
        redis = open_redis(settings.redis_url) if settings.redis_url else None
        cache = None if redis is None else RedisResponseCache(redis)
        clients = Clients.create(settings, transports, cache=cache)
        upstreams = (clients.almanac, clients.autoposting)
        recorder = UpstreamRecorder(metrics)
        for client in upstreams:
            client.observe(recorder)
        metrics.watch(upstreams)
        if settings.otel:
            from gateway.telemetry import tracing  # OpenTelemetry is an optional dependency

            tracing.configure_tracer_provider()
            tracing.instrument_clients(upstreams)
        timeout = settings.ready_timeout
        shared = None if redis is None else RedisIdempotencyStore(redis, settings.idempotency_ttl)
        store = ObservedIdempotencyStore(
            idempotency or shared or MemoryIdempotencyStore(settings.idempotency_ttl),
            on_reserve=lambda result: metrics.idempotency.labels(result).inc(),
        )
        readiness = Readiness(
            {
                "almanac": upstream_check(
                    clients.almanac, ALMANAC_PROBE_PATH, timeout=timeout, success_only=False
                ),
                "autoposting": upstream_check(
                    clients.autoposting, AUTOPOSTING_HEALTH_PATH, timeout=timeout, success_only=True
                ),
                **({} if redis is None else {"redis": redis_check(redis, timeout=timeout)}),
            },
            cache_seconds=settings.ready_cache_seconds,
            on_result=lambda name, ok: metrics.ready.labels(name).set(1 if ok else 0),
        )
        try:
            yield {"clients": clients, "idempotency": store, "readiness": readiness}
        finally:
            await clients.aclose()
            if redis is not None:
                await redis.aclose()

    async def home(request: Request) -> Response:
        return RedirectResponse(GRAPHQL_PATH)

    metrics_keys = ApiKeys(() if settings.metrics_open else settings.api_keys)

    async def metrics_endpoint(request: Request) -> Response:
        if metrics_keys and not metrics_keys.accepts(request.headers.get("authorization")):
            return error_response(
                401,
                "A gateway key is required: send Authorization: Bearer <key>.",
                ErrorCode.UNAUTHENTICATED,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    graphql = GatewayGraphQL(settings)
    guarded = GraphQLGuard(
        graphql,
        api_keys=settings.api_keys,
        max_body_bytes=settings.max_body_bytes,
        graphiql=settings.graphiql,
        is_ide_page=graphql.is_ide_page,
    )
    middleware = [
        # Outermost: every answer, CORS refusals included, carries and logs its request id.
        Middleware(ObservabilityMiddleware, metrics=metrics, graphql_path=GRAPHQL_PATH),
        *(
            [Middleware(JSONCORSMiddleware, **cors_options(settings.cors_origins))]
            if settings.cors_origins
            else []
        ),
    ]
    return Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(GRAPHQL_PATH, guarded),
            assets_route(enabled=settings.graphiql),
        ],
        middleware=middleware,
        exception_handlers={Exception: internal_error},
        lifespan=lifespan,
    )


def create_app_from_environ() -> Starlette:
    """The app configured from the process environment (uvicorn's factory for `serve`)."""
    return create_app(load_settings(os.environ))
