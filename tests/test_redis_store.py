"""The Redis idempotency store against a real `redis-server`: its contract, and two gateways
sharing one Redis in front of one sandbox (what several replicas of the gateway do)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from gateway.__main__ import DEMO_API_KEY, demo_environ
from gateway.app import create_app
from gateway.checkout.idempotency import (
    Acquired,
    Conflict,
    RememberedFailure,
    Replay,
    Scope,
)
from gateway.checkout.redis_store import (
    KEY_PREFIX,
    LIVE_PREFIX,
    RedisIdempotencyStore,
    open_redis,
)
from gateway.errors import ErrorCode, GatewayUnavailable, UpstreamTimeout, UpstreamUnreachable
from gateway.models import CheckoutSession
from gateway.provider import Provider
from gateway.sandbox import Fault, SandboxState, SandboxThread
from gateway.settings import ConfigurationError, load_settings
from tests.redis_server import RedisServer
from tests.servers import ServerThread
from tests.support import AUTOPOSTING_CHECKOUT, START_CHECKOUT

# /readyz names its checks only to a caller with a gateway key.
DEMO_KEY = {"authorization": f"Bearer {DEMO_API_KEY}"}

SCOPE = Scope(Provider.AUTOPOSTING, "0" * 64)
SESSION = CheckoutSession(
    Provider.AUTOPOSTING, None, "plan_pro", "https://pay/x", "cs_1", raw={"id": "cs_1", "n": [1]}
)
FAILURE = RememberedFailure(UpstreamTimeout, "lost", Provider.AUTOPOSTING, 504, "gateway_timeout")


def make_store(
    client: Any, *, ttl: float = 60, lease: float = 5, wait_timeout: float = 2
) -> RedisIdempotencyStore:
    return RedisIdempotencyStore(client, ttl, lease=lease, wait_timeout=wait_timeout)


@pytest.fixture
def store(redis_client: Any) -> RedisIdempotencyStore:
    return make_store(redis_client, lease=5, wait_timeout=2)


async def acquire(store: RedisIdempotencyStore, key: str = "k", fingerprint: str = "f") -> str:
    reservation = await store.reserve(SCOPE, key, fingerprint)
    assert isinstance(reservation, Acquired)
    return reservation.token


# --- the contract ------------------------------------------------------------------------------


async def _then_complete_session(store: RedisIdempotencyStore, token: str) -> None:
    await store.complete(SCOPE, "k", token, SESSION)


async def _then_complete_failure(store: RedisIdempotencyStore, token: str) -> None:
    await store.complete(SCOPE, "k", token, FAILURE)


async def _then_release(store: RedisIdempotencyStore, token: str) -> None:
    await store.release(SCOPE, "k", token)


async def _then_stale_complete(store: RedisIdempotencyStore, token: str) -> None:
    await store.complete(SCOPE, "k", "not-the-token", SESSION)


async def _then_stale_release(store: RedisIdempotencyStore, token: str) -> None:
    await store.release(SCOPE, "k", "not-the-token")


async def _then_complete_twice(store: RedisIdempotencyStore, token: str) -> None:
    await store.complete(SCOPE, "k", token, SESSION)
    await store.complete(SCOPE, "k", token, FAILURE)


async def _then_release_after_complete(store: RedisIdempotencyStore, token: str) -> None:
    await store.complete(SCOPE, "k", token, SESSION)
    await store.release(SCOPE, "k", token)


# After reserving "k" with fingerprint "f": what the same and another fingerprint get.
CONTRACT = [
    pytest.param(_then_complete_session, Replay(SESSION), Conflict(), id="completed-session"),
    pytest.param(_then_complete_failure, Replay(FAILURE), Conflict(), id="completed-failure"),
    pytest.param(_then_release, Acquired, Acquired, id="released"),
    pytest.param(_then_stale_complete, GatewayUnavailable, Conflict(), id="stale-complete"),
    pytest.param(_then_stale_release, GatewayUnavailable, Conflict(), id="stale-release"),
    pytest.param(_then_complete_twice, Replay(SESSION), Conflict(), id="first-outcome-stays"),
    pytest.param(_then_release_after_complete, Replay(SESSION), Conflict(), id="no-late-release"),
]


@pytest.mark.parametrize(("then", "same", "other"), CONTRACT)
@pytest.mark.parametrize("fingerprint", ["f", "g"], ids=["same-input", "other-input"])
async def test_the_store_answers_a_reused_key_as_the_contract_says(
    redis_client: Any, then: Any, same: Any, other: Any, fingerprint: str
) -> None:
    store = make_store(redis_client, lease=5, wait_timeout=0.3)
    token = await acquire(store)
    await then(store, token)
    expected = same if fingerprint == "f" else other

    if expected is GatewayUnavailable:  # still in flight: waits, then is told to retry
        with pytest.raises(GatewayUnavailable) as raised:
            await store.reserve(SCOPE, "k", fingerprint)
        assert raised.value.retryable
        assert raised.value.code is ErrorCode.GATEWAY_UNAVAILABLE
        return
    reservation = await store.reserve(SCOPE, "k", fingerprint)
    if expected is Acquired:
        assert isinstance(reservation, Acquired)
        assert reservation.token != token
    else:
        assert reservation == expected


async def test_a_replayed_session_keeps_every_field_and_its_raw_answer(
    store: RedisIdempotencyStore,
) -> None:
    await store.complete(SCOPE, "k", await acquire(store), SESSION)

    replay = await store.reserve(SCOPE, "k", "f")

    assert isinstance(replay, Replay)
    assert isinstance(replay.outcome, CheckoutSession)
    assert replay.outcome == SESSION
    assert replay.outcome.raw == SESSION.raw


async def test_a_replayed_failure_raises_a_fresh_error_of_its_class_each_time(
    store: RedisIdempotencyStore,
) -> None:
    await store.complete(SCOPE, "k", await acquire(store), FAILURE)

    replay = await store.reserve(SCOPE, "k", "f")

    assert isinstance(replay, Replay)
    assert isinstance(replay.outcome, RememberedFailure)
    first, second = replay.outcome.error(), replay.outcome.error()
    assert first is not second
    assert type(first) is UpstreamTimeout
    assert (first.message, first.status, first.upstream_code) == ("lost", 504, "gateway_timeout")
    assert first.retryable is False


async def test_a_waiter_in_another_process_gets_the_outcome_once_it_is_written(
    redis_server: RedisServer, store: RedisIdempotencyStore
) -> None:
    other_client = open_redis(redis_server.url)
    try:
        other = make_store(other_client, lease=5, wait_timeout=2)
        token = await acquire(store)
        waiter = asyncio.create_task(other.reserve(SCOPE, "k", "f"))
        await asyncio.sleep(0.1)
        assert not waiter.done()

        await store.complete(SCOPE, "k", token, SESSION)

        assert await waiter == Replay(SESSION)
    finally:
        await other_client.aclose()


async def test_a_waiter_on_a_released_key_reserves_it_for_itself(
    store: RedisIdempotencyStore,
) -> None:
    token = await acquire(store)
    waiter = asyncio.create_task(store.reserve(SCOPE, "k", "f"))
    await asyncio.sleep(0.05)
    assert not waiter.done()

    await store.release(SCOPE, "k", token)

    assert isinstance(await waiter, Acquired)


async def test_many_stores_reserving_one_key_at_once_let_exactly_one_acquire_it(
    redis_server: RedisServer,
) -> None:
    clients = [open_redis(redis_server.url) for _ in range(8)]
    try:
        stores = [make_store(c, lease=5, wait_timeout=0.2) for c in clients]
        await clients[0].flushdb()
        results = await asyncio.gather(
            *(s.reserve(SCOPE, "k", "f") for s in stores), return_exceptions=True
        )
    finally:
        for c in clients:
            await c.aclose()

    assert sum(isinstance(r, Acquired) for r in results) == 1
    assert all(isinstance(r, Acquired | GatewayUnavailable) for r in results)


async def test_a_key_expires_after_the_ttl_and_may_then_be_used_with_other_input(
    redis_client: Any,
) -> None:
    store = make_store(redis_client, ttl=0.2, lease=5, wait_timeout=1)
    await store.complete(SCOPE, "k", await acquire(store), SESSION)
    assert await store.reserve(SCOPE, "k", "g") == Conflict()

    await asyncio.sleep(0.3)

    assert isinstance(await store.reserve(SCOPE, "k", "g"), Acquired)


async def test_a_key_whose_owner_outlived_its_lease_reads_as_an_unknown_outcome_not_a_release(
    redis_client: Any,
) -> None:
    store = make_store(redis_client, lease=0.1, wait_timeout=2)
    await acquire(store)  # and the owner dies: neither complete nor release comes

    reservation = await store.reserve(SCOPE, "k", "f")

    assert isinstance(reservation, Replay)
    assert isinstance(reservation.outcome, RememberedFailure)
    error = reservation.outcome.error()
    assert isinstance(error, UpstreamUnreachable)
    assert error.provider is Provider.AUTOPOSTING
    assert "new idempotency key" in error.message
    assert await store.reserve(SCOPE, "k", "g") == Conflict()


async def test_keys_are_namespaced_and_hold_no_more_than_digests_and_the_outcome(
    redis_client: Any, store: RedisIdempotencyStore
) -> None:
    await store.complete(SCOPE, "order 42", await acquire(store, "order 42"), SESSION)

    name = f"{KEY_PREFIX}{SCOPE}:order 42"
    live = [
        f"{LIVE_PREFIX}caller:-",
        f"{LIVE_PREFIX}credential:autoposting:{'0' * 64}",
        f"{LIVE_PREFIX}all",
    ]
    keys = await redis_client.keys("*")
    held = await redis_client.hgetall(name)
    ttl = await redis_client.pttl(name)

    assert sorted(keys) == sorted(k.encode() for k in [name, *live])
    assert set(held) == {b"fingerprint", b"token", b"lease", b"expires", b"outcome"}
    assert 59_000 < ttl <= 60_000
    for counted in live:  # each live set: the SHA-1 of the key's name, scored by its expiry
        [(member, expires)] = await redis_client.zrange(counted, 0, -1, withscores=True)
        assert member == hashlib.sha1(name.encode()).hexdigest().encode()
        assert 59_000 < await redis_client.pttl(counted) <= 60_000
        assert expires > 0


async def test_a_redis_that_cannot_be_reached_makes_reserve_a_retryable_error_at_once() -> None:
    client = open_redis("redis://127.0.0.1:1/0", connect_timeout=0.5)
    store = make_store(client)
    try:
        with pytest.raises(GatewayUnavailable) as raised:
            await store.reserve(SCOPE, "k", "f")
        # complete and release log and return: the caller keeps its session or its real error.
        await store.complete(SCOPE, "k", "token", SESSION)
        await store.release(SCOPE, "k", "token")
    finally:
        await client.aclose()

    assert raised.value.retryable
    assert raised.value.provider is Provider.AUTOPOSTING
    assert "did not send the checkout" in raised.value.message


@pytest.mark.parametrize(("ttl", "lease", "wait"), [(0, 1, 1), (1, 0, 1), (1, 1, -1)])
def test_the_store_refuses_a_ttl_lease_or_wait_that_cannot_work(
    ttl: float, lease: float, wait: float
) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RedisIdempotencyStore(None, ttl, lease=lease, wait_timeout=wait)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("rediss://:secret@cache.example.com:6380", "rediss://:secret@cache.example.com:6380"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("http://redis:6379", ConfigurationError),
        ("redis://", ConfigurationError),
        ("unix://", ConfigurationError),
        ("localhost:6379", ConfigurationError),
    ],
)
def test_gateway_redis_url_is_read_and_checked(value: str, expected: Any) -> None:
    environ = {"GATEWAY_REDIS_URL": value}
    if expected is ConfigurationError:
        with pytest.raises(ConfigurationError, match="GATEWAY_REDIS_URL") as raised:
            load_settings(environ)
        assert "secret" not in str(raised.value)
    else:
        assert load_settings(environ).redis_url == expected


# --- two gateways, one Redis, one sandbox ------------------------------------------------------

CHECKOUT = {**AUTOPOSTING_CHECKOUT, "idempotencyKey": "order-42"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread() as running:
        yield running


def serve_gateway(sandbox: SandboxThread, redis_url: str) -> ServerThread:
    """A replica: the real app with its own lifespan (clients, store, readiness), under uvicorn."""

    def make_app(gateway_url: str) -> Any:
        environ = demo_environ({}, sandbox.almanac_url, sandbox.autoposting_url, gateway_url)
        environ.update(
            GATEWAY_REDIS_URL=redis_url,
            GATEWAY_REDIRECT_HOSTS="app.example.com",
            GATEWAY_READY_CACHE_SECONDS="0",
            GATEWAY_BREAKER_FAILURES="1000",
        )
        return create_app(load_settings(environ))

    return ServerThread(make_app)


@pytest.fixture(scope="module")
def replicas(sandbox: SandboxThread, redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    with (
        serve_gateway(sandbox, redis_server.url) as first,
        serve_gateway(sandbox, redis_server.url) as second,
    ):
        yield first.url, second.url


@pytest.fixture
def state(sandbox: SandboxThread, redis_server: RedisServer) -> Iterator[SandboxState]:
    with redis.Redis.from_url(redis_server.url) as sync_client:
        sync_client.flushdb()
    sandbox.state.reset()
    yield sandbox.state
    sandbox.state.reset()


def start(replica: str, **changes: str) -> dict[str, Any]:
    response = httpx.post(
        f"{replica}/graphql",
        json={"query": START_CHECKOUT, "variables": {"input": {**CHECKOUT, **changes}}},
        headers={"authorization": f"Bearer {DEMO_API_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["startCheckout"]
    return payload


def posts(state: SandboxState) -> int:
    return state.count("autoposting", "POST")


def test_the_same_key_on_two_replicas_one_after_the_other_creates_one_checkout(
    replicas: tuple[str, str], state: SandboxState
) -> None:
    first = start(replicas[0])
    second = start(replicas[1])

    assert first["__typename"] == "CheckoutSession"
    assert second == first
    assert posts(state) == 1
    assert len(state.checkouts) == 1


def test_the_same_key_on_two_replicas_at_once_creates_one_checkout(
    replicas: tuple[str, str], state: SandboxState
) -> None:
    state.add_fault("autoposting", Fault(delay=0.3), method="POST")

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(start, replicas)

    assert first["__typename"] == "CheckoutSession"
    assert second == first
    assert posts(state) == 1
    assert len(state.checkouts) == 1


def test_the_same_key_with_other_input_on_the_other_replica_is_a_conflict(
    replicas: tuple[str, str], state: SandboxState
) -> None:
    first = start(replicas[0])

    error = start(replicas[1], cancelUrl="https://app.example.com/billing/other")

    assert first["__typename"] == "CheckoutSession"
    assert error["__typename"] == "InvalidInputError"
    assert error["code"] == "IDEMPOTENCY_CONFLICT"
    assert posts(state) == 1


def test_replicas_report_redis_in_readiness(replicas: tuple[str, str], state: SandboxState) -> None:
    response = httpx.get(f"{replicas[0]}/readyz", headers=DEMO_KEY, timeout=10)

    assert response.status_code == 200, response.text
    assert response.json()["checks"]["redis"]["status"] == "up"


def test_with_redis_down_a_checkout_is_a_retryable_error_and_nothing_is_sent_upstream(
    replicas: tuple[str, str], state: SandboxState, redis_server: RedisServer
) -> None:
    start(replicas[0], idempotencyKey="warm-up")  # the replica's pool holds a live connection
    calls = state.count()
    redis_server.stop()
    try:
        errors = [start(replica) for replica in replicas]
        sent = state.count() - calls
        ready = httpx.get(f"{replicas[1]}/readyz", headers=DEMO_KEY, timeout=10)
    finally:
        redis_server.start()

    for error in errors:
        assert error["__typename"] == "GatewayUnavailableError"
        assert error["code"] == "GATEWAY_UNAVAILABLE"
        assert error["retryable"] is True
        assert "idempotency store" in error["message"]
    assert sent == 0  # no POST, and not even the profile GET
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "down"
    # Redis back (empty: it keeps nothing on disk): the same replicas recover on their own.
    assert start(replicas[1])["__typename"] == "CheckoutSession"
    assert posts(state) == 2


async def test_a_key_in_flight_outlives_an_idempotency_ttl_shorter_than_its_lease(
    redis_client: Any,
) -> None:
    # Expired while its checkout is still in flight, the key would let a retry send a second one.
    store = make_store(redis_client, ttl=0.2, lease=5, wait_timeout=2)
    token = await acquire(store)
    await asyncio.sleep(0.3)

    again = asyncio.ensure_future(store.reserve(SCOPE, "k", "f"))
    await asyncio.sleep(0.1)
    assert not again.done()  # it waits for the call in flight instead of acquiring the key

    await store.complete(SCOPE, "k", token, SESSION)
    assert await again == Replay(SESSION)
    # Completed past its ttl, the key then expires (after a grace of two polls for its waiters).
    await asyncio.sleep(0.5)
    assert isinstance(await store.reserve(SCOPE, "k", "g"), Acquired)
