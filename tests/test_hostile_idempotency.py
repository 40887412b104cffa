"""Hostile callers against checkout idempotency and its limits, one row per case, each naming the
finding it covers; every row runs against the in-process store and against Redis.

Finding 4 ("another caller can evict your idempotency key"): the in-process store kept one
first-in-first-out list of 10,000 finished keys for all callers, so a caller flooding keyed
checkouts evicted another caller's live key, whose retry then created a second checkout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.checkout.idempotency import IdempotencyStore, MemoryIdempotencyStore
from gateway.checkout.limits import CheckoutLimits
from gateway.checkout.redis_store import RedisIdempotencyStore, open_redis
from gateway.sandbox import AUTOPOSTING_PRO_KEY, AUTOPOSTING_TRIAL_KEY, SandboxState
from tests.support import AUTOPOSTING_CHECKOUT, FakeClock, Gateway, make_settings, start_checkout

CALLERS = {"A": "gw-key-a", "B": "gw-key-b", "C": "gw-key-c"}
TTL = 60.0
# Rows that wait for keys to expire use a short TTL (Redis expires keys on its own clock).
SHORT_TTL = 2.0


@dataclass
class Harness:
    """The schema over the sandbox with one store; callers are named by their gateway key."""

    gateway: Gateway
    state: SandboxState
    pass_time: Callable[[float], Awaitable[None]]

    async def start(
        self,
        caller: str | None,
        key: str | None = None,
        *,
        credential: str | None = None,
        bearer: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if caller is not None:
            headers["authorization"] = f"Bearer {bearer or CALLERS[caller]}"
        if credential is not None:
            headers["x-autoposting-api-key"] = credential
        fields = {**AUTOPOSTING_CHECKOUT, **({} if key is None else {"idempotencyKey": key})}
        return await start_checkout(self.gateway, headers, **fields)

    def posts(self) -> int:
        return self.state.count("autoposting", "POST")


def assert_refused(payload: dict[str, Any], limit: str) -> None:
    assert payload["__typename"] == "CheckoutLimitError", payload
    assert payload["code"] == "CHECKOUT_LIMITED"
    assert payload["limit"] == limit
    assert payload["provider"] == "AUTOPOSTING"
    assert payload["retryable"] is True
    assert payload["limitRetryAfterSeconds"] > 0
    assert "not sent" in payload["message"]


# --- the cases -----------------------------------------------------------------------------------


async def flood_never_evicts_another_callers_live_key(h: Harness) -> None:
    mine = await h.start("B", "b-order-1")
    for n in range(12):  # more than A's quota and than the whole store holds
        await h.start("A", f"a-{n}")
    posts = h.posts()

    retried = await h.start("B", "b-order-1")

    assert mine["__typename"] == "CheckoutSession"
    assert retried == mine
    assert h.posts() == posts  # B's retry sent nothing: one POST for B in all


async def flood_beyond_the_callers_quota_is_refused_and_sends_nothing(h: Harness) -> None:
    for n in range(4):
        assert (await h.start("A", f"a-{n}"))["__typename"] == "CheckoutSession"
    posts = h.posts()

    refused = [await h.start("A", f"a-more-{n}") for n in range(5)]

    for payload in refused:
        assert_refused(payload, "CALLER_KEYS")
    assert h.posts() == posts
    assert (await h.start("B", "b-1"))["__typename"] == "CheckoutSession"


async def a_full_quota_still_replays_the_callers_own_keys(h: Harness) -> None:
    first = await h.start("A", "a-0")
    for n in range(1, 4):
        await h.start("A", f"a-{n}")
    assert_refused(await h.start("A", "a-4"), "CALLER_KEYS")
    posts = h.posts()

    assert await h.start("A", "a-0") == first
    assert h.posts() == posts


async def a_full_store_refuses_new_keys_and_keeps_every_live_one(h: Harness) -> None:
    kept = {}
    for caller, keys in (("A", 4), ("B", 2)):
        for n in range(keys):
            kept[(caller, n)] = await h.start(caller, f"{caller}-{n}")
    posts = h.posts()

    assert_refused(await h.start("C", "c-0"), "KEY_CAPACITY")
    assert_refused(await h.start("B", "b-late"), "KEY_CAPACITY")

    for (caller, n), session in kept.items():
        assert session["__typename"] == "CheckoutSession"
        assert await h.start(caller, f"{caller}-{n}") == session
    assert h.posts() == posts


async def a_credential_beyond_its_quota_is_refused_for_every_caller(h: Harness) -> None:
    for caller, n in (("A", 0), ("B", 1), ("A", 2)):
        await h.start(caller, f"k-{n}", credential=AUTOPOSTING_TRIAL_KEY)
    posts = h.posts()

    assert_refused(await h.start("B", "k-3", credential=AUTOPOSTING_TRIAL_KEY), "CREDENTIAL_KEYS")
    assert h.posts() == posts
    other = await h.start("B", "k-3", credential=AUTOPOSTING_PRO_KEY)
    assert other["__typename"] == "CheckoutSession"


async def expired_keys_are_reclaimed_before_a_quota_refuses(h: Harness) -> None:
    for n in range(2):
        await h.start("A", f"a-{n}")
    await h.pass_time(0.6 * SHORT_TTL)
    later = [await h.start("A", f"a-{n}") for n in (2, 3)]
    assert_refused(await h.start("A", "a-4"), "CALLER_KEYS")

    await h.pass_time(0.5 * SHORT_TTL)  # a-0 and a-1 have expired; a-2 and a-3 are live

    assert (await h.start("A", "a-4"))["__typename"] == "CheckoutSession"
    assert (await h.start("A", "a-5"))["__typename"] == "CheckoutSession"
    assert_refused(await h.start("A", "a-6"), "CALLER_KEYS")
    assert [await h.start("A", f"a-{n}") for n in (2, 3)] == later


async def a_burst_beyond_the_callers_rate_is_refused_and_sends_nothing(h: Harness) -> None:
    answers = [await h.start("A", None if n % 2 else f"a-{n}") for n in range(5)]

    assert [a["__typename"] for a in answers[:3]] == ["CheckoutSession"] * 3
    for refused in answers[3:]:
        assert_refused(refused, "CALLER_RATE")
        assert refused["limitRetryAfterSeconds"] <= 60
    assert h.posts() == 3
    assert (await h.start("B"))["__typename"] == "CheckoutSession"


async def aliased_checkouts_in_one_document_each_count_against_the_rate(h: Harness) -> None:
    fields = " ".join(f"c{n}: startCheckout(input: $input) {{ __typename }}" for n in range(6))
    document = f"mutation($input: StartCheckoutInput!) {{ {fields} }}"
    headers = {"authorization": f"Bearer {CALLERS['A']}"}

    data = await h.gateway.execute(document, {"input": AUTOPOSTING_CHECKOUT}, headers=headers)

    answers = [data[f"c{n}"]["__typename"] for n in range(6)]
    assert answers == ["CheckoutSession"] * 3 + ["CheckoutLimitError"] * 3
    assert h.posts() == 3


async def callers_without_a_configured_key_share_one_rate(h: Harness) -> None:
    # No GATEWAY_API_KEYS: a bearer token proves nothing, so inventing new ones buys nothing.
    answers = [
        await h.start("A", bearer=f"invented-{n}", credential=AUTOPOSTING_PRO_KEY) for n in range(5)
    ]

    assert [a["__typename"] for a in answers[:3]] == ["CheckoutSession"] * 3
    for refused in answers[3:]:
        assert_refused(refused, "CALLER_RATE")
    assert h.posts() == 3


@dataclass(frozen=True)
class Case:
    finding: str
    run: Callable[[Harness], Awaitable[None]]
    limits: CheckoutLimits
    gateway_keys: bool = True
    ttl: float = TTL


QUOTAS = CheckoutLimits(
    max_keys=6, keys_per_caller=4, keys_per_credential=1000, rate_per_minute=1000, burst=1000
)
RATE = CheckoutLimits(
    max_keys=1000, keys_per_caller=1000, keys_per_credential=1000, rate_per_minute=1, burst=3
)
CASES = [
    pytest.param(
        Case(
            "4: a flood evicted another caller's live key",
            flood_never_evicts_another_callers_live_key,
            QUOTAS,
        ),
        id="4-flood-never-evicts-another-callers-live-key",
    ),
    pytest.param(
        Case(
            "4: a flood grew without bound",
            flood_beyond_the_callers_quota_is_refused_and_sends_nothing,
            QUOTAS,
        ),
        id="4-flood-beyond-the-callers-quota-is-refused-and-sends-nothing",
    ),
    pytest.param(
        Case("4: retry after a flood", a_full_quota_still_replays_the_callers_own_keys, QUOTAS),
        id="4-a-full-quota-still-replays-the-callers-own-keys",
    ),
    pytest.param(
        Case(
            "4: a full store evicted live keys",
            a_full_store_refuses_new_keys_and_keeps_every_live_one,
            QUOTAS,
        ),
        id="4-a-full-store-refuses-new-keys-and-keeps-every-live-one",
    ),
    pytest.param(
        Case(
            "4: quotas per upstream credential",
            a_credential_beyond_its_quota_is_refused_for_every_caller,
            CheckoutLimits(
                max_keys=1000,
                keys_per_caller=1000,
                keys_per_credential=3,
                rate_per_minute=1000,
                burst=1000,
            ),
        ),
        id="4-a-credential-beyond-its-quota-is-refused-for-every-caller",
    ),
    pytest.param(
        Case(
            "4: expired keys reclaimed first",
            expired_keys_are_reclaimed_before_a_quota_refuses,
            QUOTAS,
            ttl=SHORT_TTL,
        ),
        id="4-expired-keys-are-reclaimed-before-a-quota-refuses",
    ),
    pytest.param(
        Case(
            "4: checkout rate per gateway key",
            a_burst_beyond_the_callers_rate_is_refused_and_sends_nothing,
            RATE,
        ),
        id="4-rate-a-burst-beyond-the-callers-rate-is-refused-and-sends-nothing",
    ),
    pytest.param(
        Case(
            "4: checkout rate per gateway key",
            aliased_checkouts_in_one_document_each_count_against_the_rate,
            RATE,
        ),
        id="4-rate-aliased-checkouts-in-one-document-each-count",
    ),
    pytest.param(
        Case(
            "4: checkout rate without gateway keys",
            callers_without_a_configured_key_share_one_rate,
            RATE,
            gateway_keys=False,
        ),
        id="4-rate-callers-without-a-configured-key-share-one-rate",
    ),
]


# --- the stores ----------------------------------------------------------------------------------


PassTime = Callable[[float], Awaitable[None]]
StoreFactory = Callable[[CheckoutLimits, float], tuple[IdempotencyStore, PassTime]]


@pytest.fixture(params=["memory", "redis"])
async def make_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[StoreFactory]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield lambda limits, ttl: (MemoryIdempotencyStore(ttl, clock, limits=limits), advance)
        return

    client = open_redis(request.getfixturevalue("redis_url"))

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    yield lambda limits, ttl: (
        RedisIdempotencyStore(client, ttl, limits=limits, wait_timeout=2),
        sleep,
    )
    await client.aclose()


@pytest.mark.parametrize("case", CASES)
async def test_a_hostile_caller_cannot_break_another_callers_idempotency(
    case: Case, make_store: StoreFactory, state: SandboxState
) -> None:
    store, pass_time = make_store(case.limits, case.ttl)
    environ = {"GATEWAY_API_KEYS": ",".join(CALLERS.values())}
    if not case.gateway_keys:
        environ = {
            "GATEWAY_API_KEYS": "",
            "GATEWAY_ALMANAC_TOKEN": "",
            "GATEWAY_AUTOPOSTING_API_KEY": "",
        }
    gateway = Gateway(settings=make_settings(**environ), state=state, idempotency=store)
    try:
        await case.run(Harness(gateway, state, pass_time))
    finally:
        await gateway.aclose()
