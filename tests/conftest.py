from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway.checkout.redis_store import open_redis
from gateway.sandbox import RecordedCall, SandboxState
from gateway.upstreams._base import USER_AGENT
from tests.redis_server import RedisServer
from tests.support import Gateway, LogRecords, make_settings


@pytest.fixture(autouse=True)
def no_upstream_request_carries_a_cookie(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails any test in which the gateway sent a sandbox a Cookie header.

    Every sandbox answer sets a cookie; reached by name (`SandboxThread(host="localhost")`) a
    client with a cookie jar would send it back with the next caller's request. Only the gateway's
    requests count: tests talk to the sandboxes directly with clients that keep cookies."""
    carried: list[RecordedCall] = []
    record = SandboxState.record

    def recording(state: SandboxState, call: RecordedCall) -> None:
        if "cookie" in call.headers and call.headers.get("user-agent") == USER_AGENT:
            carried.append(call)
        record(state, call)

    monkeypatch.setattr(SandboxState, "record", recording)
    yield
    assert not carried, [f"{call.provider} {call.method} {call.path}" for call in carried]


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
async def gateway(state: SandboxState) -> AsyncIterator[Gateway]:
    gw = Gateway(settings=make_settings(), state=state)
    yield gw
    await gw.aclose()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A synchronous client, for servers on loopback."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test module's own (see tests/redis_server.py for when it skips)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The module's Redis, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as sync_client:
        sync_client.flushdb()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    """An asyncio client of the module's Redis, emptied for this test."""
    client = open_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """The warnings and errors uvicorn logs during the test ("Exception in ASGI application")."""
    handler = LogRecords()
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
