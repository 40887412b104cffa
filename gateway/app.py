"""The ASGI application: Starlette routes, the GraphQL endpoint, a lifespan owning the clients."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as RoutingError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.checkout.idempotency import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    ObservedIdempotencyStore,
)
from gateway.checkout.limits import CheckoutLimits
from gateway.checkout.redis_store import (
    RedisIdempotencyStore,
    open_redis,
    redis_check,
    warn_if_evicting,
)
from gateway.clients import Clients
from gateway.collector import collected_on_a_clock
from gateway.endpoint import GatewayGraphQL
from gateway.errors import ErrorCode
from gateway.http.cors import JSONCORSMiddleware, cors_options
from gateway.http.graphiql import assets_route
from gateway.http.guard import (
    ApiKeys,
    GraphQLGuard,
    error_response,
    unauthenticated,
)
from gateway.http.health import Readiness, healthz, readyz, upstream_check
from gateway.http.hosts import AllowedHostsMiddleware
from gateway.keys import Permission
from gateway.provider import Provider
from gateway.settings import Settings, load_settings
from gateway.telemetry.drift import ContractDriftRecorder
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.observability import ObservabilityMiddleware, UpstreamRecorder
from gateway.upstreams.redis_cache import RedisResponseCache
from gateway.upstreams.stale import RedisStaleStore
from gateway.upstreams.throttle import RedisRateLimits

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


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug's 500, in the shape of every other error; the traceback goes to the server log."""
    return error_response(500, "Unexpected error.", ErrorCode.INTERNAL)


async def routing_error(request: Request, exc: Exception) -> Response:
    """The router's refusals (no such path: 404; a method a route does not answer: 405), in the
    shape of every other error."""
    assert isinstance(exc, RoutingError)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_QUERY
    return error_response(exc.status_code, exc.detail, code, headers=exc.headers)


def create_app(
    settings: Settings,
    *,
    transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
    idempotency: IdempotencyStore | None = None,
    graphiql_headers: Mapping[str, str] | None = None,
) -> Starlette:
    """The gateway for `settings`; `transports` replaces the network to the upstreams.

    `idempotency` keeps checkout idempotency keys (a store shared by several processes, say);
    by default an in-memory store of this app. `graphiql_headers` are written into the GraphiQL
    page for its editor to start with: only `demo` passes them (its published key, on loopback).
    """

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        # One Redis client per app (its pool), for every shared-state user: idempotency keys, and
        # the response cache when the settings cache any answer (else the clients ignore it).
        redis = open_redis(settings.redis_url) if settings.redis_url else None
        cache = None if redis is None else RedisResponseCache(redis)
        # Throttled credentials and the last good billing answers: shared too, with Redis.
        clients = Clients.create(
            settings,
            transports,
            cache=cache,
            drift=ContractDriftRecorder(metrics),
            rate_limits=None if redis is None else RedisRateLimits(redis),
            stale_store=None if redis is None else RedisStaleStore(redis),
        )
        clients.stale.observer = metrics.stale_answer
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
        limits = CheckoutLimits.of(settings)
        shared = None
        if redis is not None:
            await warn_if_evicting(redis)
            shared = RedisIdempotencyStore(redis, settings.idempotency_ttl, limits=limits)
        store = ObservedIdempotencyStore(
            idempotency
            or shared
            or MemoryIdempotencyStore(settings.idempotency_ttl, limits=limits),
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
        # What exists once started (modules, the schema) is never garbage: a full collection
        # that walked it held the event loop past /healthz's 100 ms (docs/performance.md).
        gc.freeze()
        try:
            async with collected_on_a_clock(settings.gc_interval_seconds):
                yield {"clients": clients, "idempotency": store, "readiness": readiness}
        finally:
            gc.unfreeze()
            await clients.aclose()
            if redis is not None:
                await redis.aclose()

    async def home(request: Request) -> Response:
        # A relative URL: never built from the Host header, which the caller chooses.
        return RedirectResponse(request.scope.get("root_path", "") + GRAPHQL_PATH)

    metrics_keys = ApiKeys(() if settings.metrics_open else settings.api_keys)

    async def metrics_endpoint(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        key = metrics_keys.match(authorization) if metrics_keys else None
        if metrics_keys and key is None:
            return unauthenticated(authorization)
        if key is not None and not key.scope.permits(Permission.METRICS_READ):
            return error_response(
                403,
                f"This gateway key may not read metrics: it lacks {Permission.METRICS_READ.value}.",
                ErrorCode.NOT_ALLOWED,
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    graphql = GatewayGraphQL(settings, graphiql_headers=graphiql_headers)
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
            [
                Middleware(
                    AllowedHostsMiddleware,
                    allowed_hosts=settings.allowed_hosts,
                    exempt_paths=("/healthz", "/readyz"),
                )
            ]
            if settings.allowed_hosts
            else []
        ),
        *(
            [Middleware(JSONCORSMiddleware, **cors_options(settings.cors_origins))]
            if settings.cors_origins
            else []
        ),
    ]
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz(settings.api_keys), methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(GRAPHQL_PATH, guarded),
            assets_route(enabled=settings.graphiql),
        ],
        middleware=middleware,
        exception_handlers={Exception: internal_error, RoutingError: routing_error},
        lifespan=lifespan,
    )
    # Starlette answers `/graphql/` with a redirect to an absolute URL built from the Host header
    # (a caller's choice): unknown paths are 404 instead.
    app.router.redirect_slashes = False
    return app


def create_app_from_environ() -> Starlette:
    """The app configured from the process environment (uvicorn's factory for `serve`)."""
    return create_app(load_settings(os.environ))
