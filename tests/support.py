"""Test helpers: a gateway wired to the in-process sandbox, and a GraphQL executor that fails on
unexpected errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import strawberry

from gateway.checkout.idempotency import IdempotencyStore, MemoryIdempotencyStore
from gateway.clients import Clients
from gateway.context import build_context
from gateway.normalize import Drift
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.schema import build_schema
from gateway.settings import Settings, load_settings

ALMANAC_TEST_URL = "http://almanac.test"
AUTOPOSTING_TEST_URL = "http://autoposting.test"
TEST_API_KEY = "gw-test-key"


def make_settings(**environ: str) -> Settings:
    """Settings pointing at the in-process sandbox, with its sample credentials."""
    base = {
        "GATEWAY_ALMANAC_URL": ALMANAC_TEST_URL,
        "GATEWAY_AUTOPOSTING_URL": AUTOPOSTING_TEST_URL,
        "GATEWAY_ALMANAC_TOKEN": ALMANAC_OWNER_TOKEN,
        "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_PRO_KEY,
        "GATEWAY_GET_RETRIES": "0",
        "GATEWAY_API_KEYS": TEST_API_KEY,
        "GATEWAY_REDIRECT_HOSTS": "app.example.com",
    }
    return load_settings({**base, **environ})


@dataclass
class InFlight:
    """Counts upstream requests in flight at once, across every transport that shares it."""

    now: int = 0
    peak: int = 0


class InFlightTransport(httpx.AsyncBaseTransport):
    """Wraps a transport, counting its requests in a shared `InFlight`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, counter: InFlight) -> None:
        self.inner = inner
        self.counter = counter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.counter.now += 1
        self.counter.peak = max(self.counter.peak, self.counter.now)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.counter.now -= 1


TransportWrapper = Callable[[Provider, httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]


@dataclass
class Gateway:
    """The schema over clients whose transports reach the sandbox apps in process.

    Like the app, it keeps one idempotency store for all its requests (in memory, with the
    settings' TTL, unless one is given). `wrap_transport` may wrap each provider's transport.
    The contract drift its normalizations report is kept in `drifts`, in order.
    """

    settings: Settings
    state: SandboxState
    schema: strawberry.Schema = field(default_factory=build_schema)
    in_flight: InFlight = field(default_factory=InFlight)
    clients: Clients | None = None
    idempotency: IdempotencyStore | None = None
    wrap_transport: TransportWrapper | None = None
    drifts: list[Drift] = field(default_factory=list)

    def __post_init__(self) -> None:
        apps = {
            Provider.ALMANAC: create_almanac_app(self.state),
            Provider.AUTOPOSTING: create_autoposting_app(self.state),
        }
        transports: dict[Provider, httpx.AsyncBaseTransport] = {
            provider: InFlightTransport(httpx.ASGITransport(app=app), self.in_flight)
            for provider, app in apps.items()
        }
        if self.wrap_transport is not None:
            transports = {p: self.wrap_transport(p, t) for p, t in transports.items()}
        self.clients = Clients.create(self.settings, transports, drift=self.drifts.append)
        if self.idempotency is None:
            self.idempotency = MemoryIdempotencyStore(self.settings.idempotency_ttl)

    def with_settings(self, **environ: str) -> Gateway:
        return Gateway(settings=make_settings(**environ), state=self.state)

    async def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        expect_errors: bool = False,
    ) -> Any:
        """Run one operation with a fresh request context; fails on errors unless expected."""
        assert self.clients is not None
        assert self.idempotency is not None
        context = build_context(
            self.settings, self.clients, headers or {}, idempotency=self.idempotency
        )
        result = await self.schema.execute(
            query, variable_values=dict(variables or {}), context_value=context
        )
        if not expect_errors:
            assert not result.errors, [error.formatted for error in result.errors]
            return result.data
        return result

    async def aclose(self) -> None:
        assert self.clients is not None
        await self.clients.aclose()


__all__ = ["Gateway", "InFlight", "make_settings"]
