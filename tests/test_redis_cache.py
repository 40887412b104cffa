"""The response cache in Redis: its encoding and failure modes over a fake client, then against a
real `redis-server`, two gateway apps (what replicas do) sharing one Redis in front of one sandbox.

The apps run in process with their own lifespans (clients, Redis pool, metrics) under
`httpx.ASGITransport`; both reach the same in-process sandbox, whose `SandboxState` counts every
upstream call. Tests that need Redis skip without `redis-server` (see `tests/redis_server.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.checkout.redis_store import open_redis
from gateway.credentials import Credential
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    SandboxState,
)
from gateway.telemetry.metrics import Metrics
from gateway.upstreams import AlmanacClient
from gateway.upstreams.redis_cache import KEY_PREFIX, RedisResponseCache
from gateway.upstreams.reuse import Cached, CachePolicy, CacheUnavailable, credential_digest
from tests.redis_server import RedisServer
from tests.support import TEST_API_KEY, make_settings, metric, sandbox_transports, serve

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
BOTH = """{
  almanac: billingAccount(provider: ALMANAC, accountId: "org_acme") {
    __typename
    ... on BillingAccount { accountId currentPlan { planId } usageMeters { featureId used } }
    ... on Error { code }
  }
  autoposting: billingAccount(provider: AUTOPOSTING) {
    __typename
    ... on BillingAccount { accountId currentPlan { planId } usageMeters { featureId used } }
    ... on Error { code }
  }
}"""
# One request for BOTH: the Almanac billing, and Autoposting's status, profile, credits, tokens.
CALLS_PER_REQUEST = 5
USAGE_PATHS = ["/billing/credit-summary", "/usage/tokens"]
VIEWER_TRIAL = {
    "x-almanac-token": ALMANAC_VIEWER_TOKEN,
    "x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY,
}
SUSPENDED = {"x-autoposting-api-key": AUTOPOSTING_SUSPENDED_KEY}
CACHE_ALL = {"GATEWAY_CACHE_SECONDS": "60", "GATEWAY_CACHE_USAGE_SECONDS": "60"}
SECRETS = [
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    TEST_API_KEY,
]


# --- the cache over a fake client ----------------------------------------------------------------


class FakeRedis:
    """The two commands the cache sends, over a dict; `error` makes them raise, `hang` stall."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.sets: list[tuple[str, str, int]] = []
        self.error: Exception | None = None
        self.hang = False

    async def get(self, name: str) -> bytes | None:
        await self._misbehave()
        return self.data.get(name)

    async def set(self, name: str, value: str, *, px: int) -> None:
        await self._misbehave()
        self.sets.append((name, value, px))
        self.data[name] = value.encode()

    async def _misbehave(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error


def fake_cache(fake: FakeRedis, timeout: float = 0.25) -> RedisResponseCache:
    return RedisResponseCache(fake, timeout=timeout)  # type: ignore[arg-type]


VALUES = [
    pytest.param(None, id="none"),
    pytest.param(0, id="zero"),
    pytest.param(False, id="false"),
    pytest.param("", id="empty-string"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-object"),
    pytest.param(
        {"n": 1.5, "big": 2**70, "items": [None, True, "é €", "\ud800"], "x": {"y": []}},
        id="nested-unicode-big-int-lone-surrogate",
    ),
]


@pytest.mark.parametrize("value", VALUES)
async def test_a_kept_value_reads_back_equal_and_a_kept_none_is_a_hit_not_a_miss(
    value: object,
) -> None:
    cache = fake_cache(FakeRedis())
    await cache.set("k", value, 60)

    assert await cache.get("k") == Cached(value)
    assert await cache.get("other") is None


async def test_an_answer_is_set_as_compact_ascii_json_under_the_prefix_with_its_ttl_in_ms() -> None:
    fake = FakeRedis()
    cache = fake_cache(fake)

    await cache.set("almanac GET /x? abc", {"a": [1, "é"]}, 1.5)
    await cache.set("short", 1, 0.0001)
    await cache.set("never", 1, 0)

    assert fake.sets == [
        (f"{KEY_PREFIX}almanac GET /x? abc", '{"a":[1,"\\u00e9"]}', 1500),
        (f"{KEY_PREFIX}short", "1", 1),
    ]


@pytest.mark.parametrize("stored", [b"{not json", b"\xff\xfe", b""], ids=["json", "utf8", "empty"])
async def test_an_entry_that_does_not_decode_is_a_miss(
    stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeRedis()
    fake.data[f"{KEY_PREFIX}k"] = stored

    assert await fake_cache(fake).get("k") is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]


@pytest.mark.parametrize("operation", ["get", "set"])
@pytest.mark.parametrize("failure", ["error", "hang"])
async def test_redis_failing_or_not_answering_is_cache_unavailable_within_the_time_limit(
    operation: str, failure: str
) -> None:
    fake = FakeRedis()
    if failure == "hang":
        fake.hang = True
    else:
        fake.error = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
    cache = fake_cache(fake, timeout=0.1)
    key = "almanac GET /v1/organizations/org_acme/billing? " + "d" * 32

    call = cache.get(key) if operation == "get" else cache.set(key, {"a": 1}, 60)

    started = time.monotonic()
    with pytest.raises(CacheUnavailable) as raised:
        await call
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    expected = "TimeoutError" if failure == "hang" else "ConnectionError"
    assert str(raised.value) == f"Redis {operation.upper()} failed: {expected}"
    assert "org_acme" not in str(raised.value)


def test_the_cache_refuses_a_time_limit_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        RedisResponseCache(None, timeout=0)  # type: ignore[arg-type]


# --- a client over a cache that fails ------------------------------------------------------------


async def test_a_cache_that_cannot_answer_is_a_miss_counted_and_warned_once_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    sent: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"n": len(sent), "plans": []})

    fake = FakeRedis()
    fake.error = RedisConnectionError("Connection refused")
    settings = make_settings().upstream(Provider.ALMANAC)
    client = AlmanacClient(
        settings,
        transport=httpx.MockTransport(handler),
        cache=fake_cache(fake),
        cache_policy=CachePolicy(state_seconds=30),
    )
    metrics = Metrics()
    metrics.watch([client])
    token = Credential(ALMANAC_OWNER_TOKEN)

    down = [await client.get_billing_state("org_acme", credential=token) for _ in range(3)]
    fake.error = None
    back = [await client.get_billing_state("org_acme", credential=token) for _ in range(2)]
    await client.aclose()

    assert down == [{"n": 1, "plans": []}, {"n": 2, "plans": []}, {"n": 3, "plans": []}]
    assert back == [{"n": 4, "plans": []}] * 2  # a miss (nothing was kept), then a hit
    assert len(sent) == 4
    labels = {"provider": "almanac", "endpoint": "/v1/organizations/{id}/billing"}
    sample = metrics.registry.get_sample_value
    lookups = "gateway_upstream_cache_lookups_total"
    assert sample(lookups, {**labels, "result": "error"}) == 3
    assert sample(lookups, {**labels, "result": "miss"}) == 1
    assert sample(lookups, {**labels, "result": "hit"}) == 1
    assert sample("gateway_upstream_cache_store_errors_total", labels) == 3
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("WARNING", "almanac response cache unavailable (Redis GET failed: ConnectionError): "
                    "lookups are misses"),
        ("WARNING", "almanac response cache unavailable (Redis SET failed: ConnectionError): "
                    "answers are not kept"),
        ("INFO", "almanac response cache answers get again"),
        ("INFO", "almanac response cache answers set again"),
    ]  # fmt: skip


# --- against a real Redis ------------------------------------------------------------------------


async def entries(client: Any) -> dict[str, bytes]:
    """Every key in Redis and its value."""
    return {key.decode(): await client.get(key) async for key in client.scan_iter("*")}


@pytest.mark.parametrize("value", VALUES)
async def test_values_read_back_equal_through_a_real_redis(
    redis_client: Any, value: object
) -> None:
    cache = RedisResponseCache(redis_client)
    await cache.set("k", value, 60)

    assert await cache.get("k") == Cached(value)


async def test_an_entry_is_one_string_under_the_prefix_that_redis_expires_after_its_ttl(
    redis_client: Any,
) -> None:
    cache = RedisResponseCache(redis_client)
    await cache.set("k", {"a": 1}, 0.3)

    assert await redis_client.type(f"{KEY_PREFIX}k") == b"string"
    assert 0 < await redis_client.pttl(f"{KEY_PREFIX}k") <= 300
    assert await cache.get("k") == Cached({"a": 1})
    await asyncio.sleep(0.4)
    assert await cache.get("k") is None
    assert await redis_client.keys("*") == []


async def test_a_redis_that_does_not_answer_fails_a_lookup_within_the_time_limit_then_recovers(
    redis_url: str, redis_client: Any
) -> None:
    cache_client = open_redis(redis_url)
    cache = RedisResponseCache(cache_client, timeout=0.1)
    try:
        await cache.set("k", 1, 60)
        # Every client's commands wait.
        await redis_client.execute_command("CLIENT", "PAUSE", "1000")
        started = time.monotonic()
        with pytest.raises(CacheUnavailable, match="TimeoutError"):
            await cache.get("k")
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.0)

        assert elapsed < 0.5
        # The pool dropped the stuck connection: no late reply is read as another command's.
        await cache.set("j", 2, 60)
        assert await cache.get("j") == Cached(2)
        assert await cache.get("k") == Cached(1)
    finally:
        await cache_client.aclose()


# --- gateways sharing one Redis ------------------------------------------------------------------


async def connect_to_redis(lifespan_state: Mapping[str, Any]) -> None:
    """A replica in service has its Redis connections open (readiness PINGs Redis): open as many
    as a request's concurrent lookups, so that no lookup of the test pays a connect within the
    cache's 0.25 s limit on a loaded machine (a miss, as designed, but then the count of upstream
    calls is not what the test is about)."""
    cache = lifespan_state["clients"].almanac.reuse.cache if lifespan_state else None
    if isinstance(cache, RedisResponseCache):
        await asyncio.gather(*(cache._client.ping() for _ in range(CALLS_PER_REQUEST)))


@asynccontextmanager
async def replica(
    state: SandboxState, redis_url: str | None, **environ: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway app with its own lifespan, as one process of several, and a client of it."""
    if redis_url is not None:
        environ["GATEWAY_REDIS_URL"] = redis_url
    settings = make_settings(**environ)
    transports = sandbox_transports(state)
    async with serve(settings, transports, headers=KEY, ready=connect_to_redis) as client:
        yield client


@asynccontextmanager
async def replicas(
    state: SandboxState, redis_url: str | None, count: int = 2, /, **environ: str
) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(replica(state, redis_url, **environ))
            for _ in range(count)
        ]


async def ask(gateway: httpx.AsyncClient, headers: Mapping[str, str] | None = None) -> Any:
    response = await gateway.post("/graphql", json={"query": BOTH}, headers=headers or {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def authorizations(state: SandboxState, since: int) -> set[str]:
    return {call.headers["authorization"] for call in state.calls()[since:]}


async def test_an_answer_one_gateway_fetched_is_served_by_another_from_redis_with_no_upstream_call(
    state: SandboxState, redis_url: str
) -> None:
    async with replicas(state, redis_url, **CACHE_ALL) as (first, second):
        fetched = await ask(first)
        calls = state.count()
        served = await ask(second)

        assert fetched["almanac"]["__typename"] == fetched["autoposting"]["__typename"]
        assert fetched["almanac"]["__typename"] == "BillingAccount"
        assert calls == CALLS_PER_REQUEST
        assert served == fetched
        assert state.count() == calls
        lookups = "gateway_upstream_cache_lookups_total"
        assert await metric(second, lookups, result="hit") == CALLS_PER_REQUEST
        assert await metric(second, lookups, result="miss") == 0
        assert await metric(first, lookups, result="miss") == CALLS_PER_REQUEST


async def test_entries_expire_after_their_ttl_and_are_then_fetched_again(
    state: SandboxState, redis_url: str, redis_client: Any
) -> None:
    ttl = {"GATEWAY_CACHE_SECONDS": "1", "GATEWAY_CACHE_USAGE_SECONDS": "1"}
    async with replicas(state, redis_url, **ttl) as (first, second):
        await ask(first)
        ttls = [await redis_client.pttl(key) for key in await redis_client.keys("*")]
        await ask(second)
        cached = state.count()
        await asyncio.sleep(1.1)
        await ask(second)

    assert len(ttls) == CALLS_PER_REQUEST
    assert all(0 < t <= 1000 for t in ttls)
    assert cached == CALLS_PER_REQUEST
    assert state.count() == 2 * CALLS_PER_REQUEST


async def test_another_credential_makes_its_own_upstream_calls_and_never_gets_a_cached_answer(
    state: SandboxState, redis_url: str
) -> None:
    async with replicas(state, redis_url, **CACHE_ALL) as (first, second):
        service = await ask(first)  # the configured credentials: Almanac owner, Autoposting pro
        other = await ask(second, VIEWER_TRIAL)
        calls = state.count()
        again = await ask(first, VIEWER_TRIAL)

    assert calls == 2 * CALLS_PER_REQUEST
    assert authorizations(state, CALLS_PER_REQUEST) == {
        f"Bearer {ALMANAC_VIEWER_TOKEN}",
        f"Bearer {AUTOPOSTING_TRIAL_KEY}",
    }
    assert other != service
    assert again == other
    assert state.count() == calls


async def test_usage_meters_are_cached_only_when_their_own_seconds_are_set(
    state: SandboxState, redis_url: str, redis_client: Any
) -> None:
    async with replicas(state, redis_url, GATEWAY_CACHE_SECONDS="60") as (first, second):
        await ask(first)
        await ask(second)
    refetched = sorted(call.path for call in state.calls()[CALLS_PER_REQUEST:])
    state_only = sorted(await redis_client.keys("*"))

    await redis_client.flushdb()
    state.reset()
    async with replicas(state, redis_url, **CACHE_ALL) as (first, second):
        await ask(first)
        await ask(second)

    assert refetched == USAGE_PATHS  # Almanac's meters come with its billing state: cached
    assert len(state_only) == CALLS_PER_REQUEST - len(USAGE_PATHS)
    assert not any(path.encode() in key for key in state_only for path in USAGE_PATHS)
    assert state.count() == CALLS_PER_REQUEST


async def test_without_cache_seconds_redis_holds_no_answers_and_without_redis_each_keeps_its_own(
    state: SandboxState, redis_url: str, redis_client: Any
) -> None:
    async with replicas(state, redis_url) as (first, second):
        await ask(first)
        await ask(second)
    assert state.count() == 2 * CALLS_PER_REQUEST
    assert await redis_client.keys("*") == []

    state.reset()
    async with replicas(state, None, **CACHE_ALL) as (first, second):
        await ask(first)
        await ask(second)  # its own memory: fetched again
        await ask(first)
        await ask(second)
    assert state.count() == 2 * CALLS_PER_REQUEST
    assert await redis_client.keys("*") == []


async def test_with_redis_gone_requests_are_answered_by_the_providers_and_nothing_logs_an_error(
    state: SandboxState,
    redis_url: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with replica(state, redis_url, **CACHE_ALL) as gateway:
        cached = await ask(gateway)
        redis_server.stop()
        try:
            started = time.monotonic()
            down = [await ask(gateway) for _ in range(3)]
            elapsed = time.monotonic() - started
            calls = state.count()
            errors = await metric(gateway, "gateway_upstream_cache_lookups_total", result="error")
            store_errors = await metric(gateway, "gateway_upstream_cache_store_errors_total")
        finally:
            redis_server.start()  # empty: it keeps nothing on disk
        back = [await ask(gateway) for _ in range(2)]

    assert down == [cached] * 3
    assert calls == 4 * CALLS_PER_REQUEST
    assert elapsed < 3.0
    assert errors == store_errors == 3 * CALLS_PER_REQUEST
    assert back == [cached] * 2
    assert state.count() == 5 * CALLS_PER_REQUEST  # refilled once Redis was back, then served
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The cache's get and set, and the rate limit lookup, per provider: once each, not per GET.
    assert len(warnings) == 6
    assert sum("response cache unavailable" in w for w in warnings) == 4
    assert sum("rate limit store unavailable" in w for w in warnings) == 2


async def test_a_redis_that_stops_answering_delays_a_request_by_no_more_than_the_time_limits(
    state: SandboxState, redis_url: str, redis_client: Any
) -> None:
    async with replica(state, redis_url, **CACHE_ALL) as gateway:
        cached = await ask(gateway)
        await redis_client.execute_command("CLIENT", "PAUSE", "1500")  # until it ends, for all
        started = time.monotonic()
        answered = await ask(gateway)
        elapsed = time.monotonic() - started

    assert answered == cached
    assert elapsed < 1.2  # the GETs in parallel, each a lookup and a store of at most 0.25 s
    assert state.count() == 2 * CALLS_PER_REQUEST


async def test_nothing_in_redis_holds_a_credential_or_gateway_key(
    state: SandboxState, redis_url: str, redis_client: Any
) -> None:
    async with replicas(state, redis_url, **CACHE_ALL) as (first, second):
        await ask(first)
        await ask(second, VIEWER_TRIAL)
        await ask(first, SUSPENDED)

    held = await entries(redis_client)
    digests = {credential_digest(Credential(secret)) for secret in SECRETS}
    assert len(held) >= 2 * CALLS_PER_REQUEST
    for key, value in held.items():
        assert key.startswith(KEY_PREFIX)
        assert key.rsplit(" ", 1)[1] in digests
        for secret in SECRETS:
            assert secret not in key
            assert secret.encode() not in value
