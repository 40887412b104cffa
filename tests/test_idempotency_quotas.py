"""Checkout limits: their settings, the rate algorithm, the app wiring them in, and the Redis side
(atomic quotas across processes, a Redis that would evict keys, a Redis that is down)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.checkout.idempotency import Acquired, Scope
from gateway.checkout.limits import CheckoutLimits, CheckoutRate
from gateway.checkout.redis_store import RedisIdempotencyStore, open_redis, warn_if_evicting
from gateway.errors import CheckoutLimit, CheckoutLimitReached
from gateway.provider import Provider
from gateway.sandbox import (
    AUTOPOSTING_PRO_KEY,
    SandboxState,
)
from gateway.settings import (
    DEFAULT_CHECKOUT_BURST,
    DEFAULT_CHECKOUT_RATE_PER_MINUTE,
    DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
    DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL,
    DEFAULT_IDEMPOTENCY_MAX_KEYS,
    ConfigurationError,
    load_settings,
)
from tests.redis_server import RedisServer
from tests.support import AUTOPOSTING_CHECKOUT, START_CHECKOUT, FakeClock, client_of

LIMIT_VARIABLES = {
    "GATEWAY_IDEMPOTENCY_MAX_KEYS": "max_keys",
    "GATEWAY_IDEMPOTENCY_KEYS_PER_CALLER": "keys_per_caller",
    "GATEWAY_IDEMPOTENCY_KEYS_PER_CREDENTIAL": "keys_per_credential",
    "GATEWAY_CHECKOUT_RATE_PER_MINUTE": "rate_per_minute",
    "GATEWAY_CHECKOUT_BURST": "burst",
}


# --- settings ------------------------------------------------------------------------------------


def test_the_checkout_limits_default_to_their_constants_and_are_read_from_the_environment() -> None:
    assert CheckoutLimits.of(load_settings({})) == CheckoutLimits(
        max_keys=DEFAULT_IDEMPOTENCY_MAX_KEYS,
        keys_per_caller=DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
        keys_per_credential=DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL,
        rate_per_minute=DEFAULT_CHECKOUT_RATE_PER_MINUTE,
        burst=DEFAULT_CHECKOUT_BURST,
    )
    environ = {name: str(n + 2) for n, name in enumerate(LIMIT_VARIABLES)}

    limits = CheckoutLimits.of(load_settings(environ))

    assert {name: getattr(limits, field) for name, field in LIMIT_VARIABLES.items()} == {
        name: int(value) for name, value in environ.items()
    }


@pytest.mark.parametrize("variable", list(LIMIT_VARIABLES))
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_checkout_limit_that_is_not_a_positive_number_stops_start_up(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        load_settings({variable: value})


# --- the rate ------------------------------------------------------------------------------------


def test_the_rate_admits_a_burst_at_once_then_one_call_per_interval() -> None:
    clock = FakeClock()
    rate = CheckoutRate(per_minute=6, burst=3, clock=clock)  # one call every 10 s

    assert [rate.take("a") for _ in range(3)] == [None, None, None]
    assert rate.take("a") == pytest.approx(10)
    assert rate.take("b") is None  # another caller has a bucket of its own

    clock.now += 9.9
    assert rate.take("a") == pytest.approx(0.1)
    clock.now += 0.1
    assert rate.take("a") is None
    assert rate.take("a") == pytest.approx(10)

    clock.now += 30  # a full bucket again: a burst of three
    assert [rate.take("a") for _ in range(4)][-2:] == [None, pytest.approx(10)]


def test_the_rate_forgets_callers_whose_bucket_is_full_again() -> None:
    clock = FakeClock()
    rate = CheckoutRate(per_minute=60, burst=5, clock=clock)
    for n in range(5000):
        rate.take(f"caller-{n}")
        clock.now += 0.01

    # Each caller's bucket is full again a second after its call: at most ~100 are remembered
    # when a sweep runs, and sweeps run before the table doubles past its last size.
    assert len(rate._due) <= 2 * 1024


# --- the app -------------------------------------------------------------------------------------


@asynccontextmanager
async def serve(**environ: str) -> AsyncIterator[tuple[httpx.AsyncClient, SandboxState]]:
    state = SandboxState()
    async with client_of(state, **environ) as client:
        yield client, state


async def checkout(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: str
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": START_CHECKOUT, "variables": {"input": {**AUTOPOSTING_CHECKOUT, **fields}}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()["data"]["startCheckout"]
    return payload


async def test_the_app_limits_each_gateway_key_to_the_configured_rate() -> None:
    async with serve(GATEWAY_API_KEYS="key-a,key-b", GATEWAY_CHECKOUT_BURST="2") as (client, state):
        a = {"authorization": "Bearer key-a"}
        answers = [await checkout(client, a) for _ in range(3)]
        other = await checkout(client, {"authorization": "Bearer key-b"})

    assert [answer["__typename"] for answer in answers] == [
        "CheckoutSession",
        "CheckoutSession",
        "CheckoutLimitError",
    ]
    assert answers[2]["limit"] == "CALLER_RATE"
    assert answers[2]["code"] == "CHECKOUT_LIMITED"
    assert answers[2]["retryable"] is True
    assert 0 < answers[2]["limitRetryAfterSeconds"] <= 1  # 60 a minute: a slot a second
    assert other["__typename"] == "CheckoutSession"
    assert state.count("autoposting", "POST") == 3


async def test_without_gateway_keys_invented_bearer_tokens_share_one_rate_through_the_app() -> None:
    environ = {
        "GATEWAY_API_KEYS": "",
        "GATEWAY_ALMANAC_TOKEN": "",
        "GATEWAY_AUTOPOSTING_API_KEY": "",
        "GATEWAY_CHECKOUT_BURST": "2",
    }
    async with serve(**environ) as (client, state):
        answers = [
            await checkout(
                client,
                {
                    "authorization": f"Bearer made-up-{n}",
                    "x-autoposting-api-key": AUTOPOSTING_PRO_KEY,
                },
            )
            for n in range(3)
        ]

    assert [answer["__typename"] for answer in answers][-1] == "CheckoutLimitError"
    assert state.count("autoposting", "POST") == 2


async def test_the_app_holds_each_gateway_key_to_the_configured_quota_of_live_keys() -> None:
    environ = {"GATEWAY_API_KEYS": "key-a,key-b", "GATEWAY_IDEMPOTENCY_KEYS_PER_CALLER": "2"}
    async with serve(**environ) as (client, state):
        a = {"authorization": "Bearer key-a"}
        answers = [await checkout(client, a, idempotencyKey=f"k{n}") for n in range(3)]
        replay = await checkout(client, a, idempotencyKey="k0")
        other = await checkout(client, {"authorization": "Bearer key-b"}, idempotencyKey="k2")

    assert [answer["__typename"] for answer in answers][:2] == ["CheckoutSession"] * 2
    assert answers[2]["limit"] == "CALLER_KEYS"
    assert 86_399 < answers[2]["limitRetryAfterSeconds"] <= 86_400  # the oldest key's 24 h TTL
    assert replay["__typename"] == other["__typename"] == "CheckoutSession"
    assert state.count("autoposting", "POST") == 3


# --- Redis ---------------------------------------------------------------------------------------


async def test_replicas_reserving_at_once_never_hold_more_keys_than_the_quota(
    redis_server: RedisServer,
) -> None:
    limits = CheckoutLimits(keys_per_caller=10)
    scope = Scope(Provider.AUTOPOSTING, "0" * 64, "a" * 64)
    clients = [open_redis(redis_server.url) for _ in range(8)]
    try:
        await clients[0].flushdb()
        stores = [RedisIdempotencyStore(c, 60, limits=limits) for c in clients]
        results = await asyncio.gather(
            *(s.reserve(scope, f"{n}-{k}", "f") for n, s in enumerate(stores) for k in range(5)),
            return_exceptions=True,
        )
    finally:
        for c in clients:
            await c.aclose()

    assert sum(isinstance(r, Acquired) for r in results) == 10
    refused = [r for r in results if not isinstance(r, Acquired)]
    assert all(isinstance(r, CheckoutLimitReached) for r in refused)
    assert {r.limit for r in refused if isinstance(r, CheckoutLimitReached)} == {
        CheckoutLimit.CALLER_KEYS
    }


async def test_a_released_key_no_longer_counts_against_the_quota(redis_client: Any) -> None:
    store = RedisIdempotencyStore(redis_client, 60, limits=CheckoutLimits(keys_per_credential=1))
    scope = Scope(Provider.ALMANAC, "1" * 64, None)
    first = await store.reserve(scope, "k1", "f")
    assert isinstance(first, Acquired)
    with pytest.raises(CheckoutLimitReached) as refused:
        await store.reserve(scope, "k2", "f")
    assert refused.value.limit is CheckoutLimit.CREDENTIAL_KEYS
    assert 59 < refused.value.retry_after <= 60

    await store.release(scope, "k1", first.token)

    assert isinstance(await store.reserve(scope, "k2", "f"), Acquired)


@pytest.mark.parametrize(
    ("policy", "warned"),
    [("noeviction", False), ("allkeys-lru", True), ("volatile-ttl", True)],
)
async def test_a_redis_that_may_evict_keys_is_reported_at_start_up(
    redis_client: Any, caplog: pytest.LogCaptureFixture, policy: str, warned: bool
) -> None:
    await redis_client.config_set("maxmemory-policy", policy)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.idempotency"):
            found = await warn_if_evicting(redis_client)
    finally:  # the module's Redis outlives the test: flushing empties it, this is config
        await redis_client.config_set("maxmemory-policy", "noeviction")

    assert found == policy
    assert any("noeviction" in r.getMessage() for r in caplog.records) is warned


async def test_with_redis_down_the_rate_is_kept_in_the_process_and_still_refuses() -> None:
    down = open_redis("redis://127.0.0.1:1/0", connect_timeout=0.2)
    store = RedisIdempotencyStore(down, 60, limits=CheckoutLimits(burst=2))
    try:
        await store.admit("a" * 64)
        await store.admit("a" * 64)
        with pytest.raises(CheckoutLimitReached) as refused:
            await store.admit("a" * 64)
        assert await warn_if_evicting(down, within=0.5) is None
    finally:
        await down.aclose()

    assert refused.value.limit is CheckoutLimit.CALLER_RATE
