"""What the tests share: settings for the sandbox, the gateway two ways (the schema in process, or
the app over ASGI with its lifespan), the operations a client sends, and fakes (a clock, a log
handler).

A test file reads as the product: it names an operation from tests/operations/, sends it through a
`Gateway` or a `serve`d app, and asserts what a caller sees and what reached the sandbox upstreams.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import strawberry
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from gateway.app import create_app
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
SUCCESS_URL = "https://app.example.com/billing/success"
CANCEL_URL = "https://app.example.com/billing/cancel"
# The input of an Autoposting checkout any test can start: the key's own account, redirect URLs on
# the allow-list of `make_settings`.
AUTOPOSTING_CHECKOUT = {
    "provider": "AUTOPOSTING",
    "planId": "plan_pro",
    "successUrl": SUCCESS_URL,
    "cancelUrl": CANCEL_URL,
}


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


# --- operations ----------------------------------------------------------------------------------

OPERATIONS = Path(__file__).parent / "operations"


def operation(name: str) -> str:
    """The GraphQL document tests/operations/<name>.graphql."""
    return (OPERATIONS / f"{name}.graphql").read_text(encoding="utf-8")


# Variables: `input`; `withAccountId` and `withRaw` (both false by default) add those two fields.
START_CHECKOUT = operation("start_checkout")
# Variables: `provider`, and `id` (the account; Autoposting's is the key's own).
BILLING_ACCOUNT = operation("billing_account")
# billingAccount > currentPlan > price > amount: depth 3, as QueryDepthLimiter counts (from 0).
FOUR_LEVELS = (
    '{ billingAccount(provider: ALMANAC, accountId: "org_acme") '
    "{ ... on BillingAccount { currentPlan { price { amount } } } } }"
)


def billing_account_query(selection: str) -> str:
    """`billingAccount` of `$provider` and `$id`, selecting `selection`."""
    return (
        "query($provider: Provider!, $id: ID) "
        f"{{ billingAccount(provider: $provider, accountId: $id) {{{selection}}} }}"
    )


def billing_accounts_query(selection: str) -> str:
    """`billingAccounts` of `$accounts`, each selecting `selection`."""
    return (
        "query($accounts: [AccountInput!]!) "
        f"{{ billingAccounts(accounts: $accounts) {{{selection}}} }}"
    )


def doubling(levels: int, leaf: str = "__typename") -> str:
    """`...F0`, each fragment spreading the next twice: 2**levels leaves in a few bytes each."""
    fragments = " ".join(
        f"fragment F{i} on Query{{...F{i + 1} ...F{i + 1}}}" for i in range(levels)
    )
    return f"query Q{{...F0}} {fragments} fragment F{levels} on Query{{{leaf}}}"


# --- the schema in process -----------------------------------------------------------------------


def sandbox_transports(state: SandboxState) -> dict[Provider, httpx.AsyncBaseTransport]:
    """Transports that reach the two sandbox upstreams in process, recording into `state`."""
    return {
        Provider.ALMANAC: httpx.ASGITransport(app=create_almanac_app(state)),
        Provider.AUTOPOSTING: httpx.ASGITransport(app=create_autoposting_app(state)),
    }


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
        transports: dict[Provider, httpx.AsyncBaseTransport] = {
            provider: InFlightTransport(transport, self.in_flight)
            for provider, transport in sandbox_transports(self.state).items()
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


async def start_checkout(
    gateway: Gateway, headers: Mapping[str, str] | None = None, /, **fields: Any
) -> dict[str, Any]:
    """`startCheckout` with `fields` as its input (`START_CHECKOUT`'s default selection)."""
    data = await gateway.execute(START_CHECKOUT, {"input": fields}, headers=headers)
    payload: dict[str, Any] = data["startCheckout"]
    return payload


# --- the app over ASGI ---------------------------------------------------------------------------


@asynccontextmanager
async def serve(
    settings: Settings,
    transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    ready: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
    lifespan: bool = True,
    raise_app_exceptions: bool = True,
    root_path: str = "",
) -> AsyncIterator[httpx.AsyncClient]:
    """A client (sending `headers`) of the app, whose lifespan runs around it as under a server.

    `ready` is awaited with the lifespan's state before the first request. `lifespan=False`
    leaves the requests without that state, as a server without lifespan support would.
    """
    app = create_app(settings, transports=transports)
    async with app.router.lifespan_context(app) as lifespan_state:
        if ready is not None:
            await ready(lifespan_state or {})

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            # What uvicorn does: each request's scope gets a copy of the lifespan's state.
            if lifespan:
                scope["state"] = dict(lifespan_state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(
            app=served, raise_app_exceptions=raise_app_exceptions, root_path=root_path
        )
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", headers=headers
        ) as client:
            yield client


@asynccontextmanager
async def client_of(state: SandboxState, **environ: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app configured by `make_settings(**environ)`, over the sandbox."""
    async with serve(make_settings(**environ), sandbox_transports(state)) as client:
        yield client


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The sum of the samples of `name` on /metrics whose labels include `labels`."""
    text = (await client.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# --- answers and fakes ---------------------------------------------------------------------------


def assert_complete(account: Mapping[str, Any], provider: str, account_id: str) -> None:
    """A billing account with plans, a current plan among them, and usage meters."""
    assert account["__typename"] == "BillingAccount", account
    assert account["provider"] == provider
    assert account["accountId"] == account_id
    assert account["currentPlan"]["planId"]
    assert [plan["planId"] for plan in account["plans"] if plan["current"]] == [
        account["currentPlan"]["planId"]
    ]
    assert account["usageMeters"]


class ExplodingTransport(httpx.AsyncBaseTransport):
    """A transport with a bug: it raises something no layer expects."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("kaboom: internal detail 7f3a")


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (as in Retry-After), `seconds_from_now` from the wall clock."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Waits (briefly) for what another task or the network does next."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.002)


@dataclass
class FakeClock:
    """A clock that moves only when told: `now += seconds`, or `advance(seconds)`."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LogRecords(logging.Handler):
    """Keeps the records of `level` and above in `records`."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
