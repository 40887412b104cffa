"""Rate limits per credential: a 429 throttles the credential it answered, never the provider.

First the wait a 429 names, as a table; then a client over a fake clock and a fake provider that
rate limits one credential: one row per kind of 429 (the finding it covers in its id), each
checking that the throttled credential's next call is answered RATE_LIMITED without being sent,
that another credential is sent as usual, that the breaker stays closed, and that the credential
is sent again once its wait has passed. Then the breaker, checkouts, the in-process bound, and
gateways over HTTP: one process, and two replicas sharing Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.checkout.redis_store import open_redis
from gateway.credentials import Credential
from gateway.errors import (
    ErrorCode,
    UpstreamCircuitOpen,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.settings import UpstreamSettings
from gateway.upstreams import AlmanacClient
from gateway.upstreams.resilience import BreakerState
from gateway.upstreams.throttle import (
    DEFAULT_WAIT,
    KEY_PREFIX,
    MAX_WAIT,
    MemoryRateLimits,
    RedisRateLimits,
    held_wait,
    rate_limit_wait,
    throttle_key,
)
from tests.redis_server import RedisServer
from tests.support import TEST_API_KEY, FakeClock, http_date, make_settings, metric, serve

THROTTLED = "alm_throttled_credential"
OTHER = "alm_other_credential"
ORG = "org_acme"
NOW = 1_800_000_000.0  # wall-clock "now" of the header table

Reply = Callable[[httpx.Request], httpx.Response]


# --- the wait a 429 names ------------------------------------------------------------------------

WAITS = [
    pytest.param({"retry-after": "30"}, 30.0, id="retry-after-seconds"),
    pytest.param({"retry-after": "0"}, 0.0, id="retry-after-zero"),
    pytest.param({"x-ratelimit-reset": str(NOW + 45)}, 45.0, id="reset-unix-seconds"),
    pytest.param({"x-ratelimit-reset": str((NOW + 45) * 1000)}, 45.0, id="reset-unix-milliseconds"),
    pytest.param({"x-ratelimit-reset": str(NOW - 10)}, 0.0, id="reset-in-the-past"),
    pytest.param(
        {"retry-after": "7", "x-ratelimit-reset": str(NOW + 45)}, 7.0, id="retry-after-first"
    ),
    pytest.param({"x-ratelimit-reset": "soon"}, None, id="reset-garbage"),
    pytest.param({"x-ratelimit-reset": "nan"}, None, id="reset-nan"),
    pytest.param({}, None, id="neither"),
]


@pytest.mark.parametrize(("headers", "wait"), WAITS)
def test_the_wait_of_a_429_is_its_retry_after_else_its_rate_limit_reset(
    headers: dict[str, str], wait: float | None
) -> None:
    assert rate_limit_wait(headers, now=NOW) == (None if wait is None else pytest.approx(wait))


@pytest.mark.parametrize(
    ("wait", "held"),
    [(None, DEFAULT_WAIT), (0.0, 0.0), (30.0, 30.0), (10 * MAX_WAIT, MAX_WAIT), (-5.0, 0.0)],
)
def test_a_429_holds_its_credential_for_its_wait_one_second_without_one_an_hour_at_most(
    wait: float | None, held: float
) -> None:
    assert held_wait(wait) == held


# --- one client, a fake clock, a provider that rate limits one credential ------------------------


@dataclass
class Provider429:
    """Answers 429 (with `headers`) to `THROTTLED` (to everyone with `everyone`) while `limiting`
    (for `times` more answers when set), 200 otherwise; `status_for_all` replaces every answer."""

    headers: dict[str, str]
    limiting: bool = True
    times: int | None = None
    everyone: bool = False
    status_for_all: int | None = None
    requests: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        self.requests.append(token)
        if self.status_for_all is not None:
            return httpx.Response(self.status_for_all, json={})
        if (token == THROTTLED or self.everyone) and self.limiting and self.times != 0:
            if self.times is not None:
                self.times -= 1
            return httpx.Response(429, json={"detail": "slow down"}, headers=self.headers)
        if request.method == "POST":
            return httpx.Response(200, json={"url": "https://pay.example.com/cs_test_1"})
        return httpx.Response(200, json={"organization_id": ORG, "plans": []})

    def sent(self, token: str) -> int:
        return self.requests.count(token)


@dataclass
class Harness:
    client: AlmanacClient
    upstream: Provider429
    clock: FakeClock

    async def get(self, token: str) -> object:
        return await self.client.get_billing_state(ORG, credential=Credential(token))

    async def post(self, token: str) -> object:
        return await self.client.create_checkout(
            ORG, plan_id="team", success_url=None, credential=Credential(token)
        )


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Harness]]:
    clients: list[AlmanacClient] = []

    def make(headers: dict[str, str], **overrides: Any) -> Harness:
        settings: dict[str, Any] = {
            "provider": Provider.ALMANAC,
            "base_url": "http://almanac.test",
            "credential": None,
            "currency": "USD",
            "get_retries": 0,
            "breaker_failures": 3,
            "breaker_reset": 30.0,
            **overrides,
        }
        clock = FakeClock()
        upstream = Provider429(headers)

        async def sleep(delay: float) -> None:
            clock.advance(delay)

        client = AlmanacClient(
            UpstreamSettings(**settings),
            transport=httpx.MockTransport(upstream),
            sleep=sleep,
            clock=clock,
        )
        clients.append(client)
        return Harness(client, upstream, clock)

    yield make
    for client in clients:
        await client.aclose()


# id (the finding), the 429's headers (made when the row runs: some name a time from now), how
# long its credential is then throttled.
THROTTLES: list[Any] = [
    pytest.param(lambda: {"retry-after": "30"}, 30.0, id="retry-after-throttles-that-long"),
    pytest.param(
        lambda: {"retry-after": http_date(60)}, 60.0, id="retry-after-date-throttles-until-it"
    ),
    pytest.param(
        lambda: {
            "x-ratelimit-limit": "100",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(time.time() + 45)),
        },
        45.0,
        id="x-ratelimit-reset-without-retry-after-throttles-until-the-reset",
    ),
    pytest.param(lambda: {}, DEFAULT_WAIT, id="a-429-naming-no-wait-throttles-one-second"),
    pytest.param(
        lambda: {"retry-after": "later"}, DEFAULT_WAIT, id="an-unreadable-wait-is-one-second"
    ),
    pytest.param(
        lambda: {"retry-after": str(365 * 24 * 3600)},
        MAX_WAIT,
        id="a-year-long-wait-is-held-an-hour",
    ),
]


@pytest.mark.parametrize(("headers", "held"), THROTTLES)
async def test_a_429_throttles_its_credential_only_until_its_wait_has_passed(
    connect: Callable[..., Harness], headers: Callable[[], dict[str, str]], held: float
) -> None:
    h = connect(headers())
    with pytest.raises(UpstreamRateLimited):
        await h.get(THROTTLED)
    assert h.upstream.sent(THROTTLED) == 1

    # Throttled: answered without being sent, with the time left, and the breaker untouched.
    for _ in range(5):
        with pytest.raises(UpstreamRateLimited) as caught:
            await h.get(THROTTLED)
    assert h.upstream.sent(THROTTLED) == 1
    error = caught.value
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retryable is True
    assert error.status is None
    assert error.retry_after == pytest.approx(held, abs=2.0)
    assert THROTTLED not in error.message
    assert h.client.breaker.state is BreakerState.CLOSED

    # Another credential of the same provider is sent as usual.
    assert await h.get(OTHER) == {"organization_id": ORG, "plans": []}
    assert h.upstream.sent(OTHER) == 1

    # Once the wait has passed, the credential is sent again.
    h.upstream.limiting = False
    h.clock.advance(held + 2.0)
    assert await h.get(THROTTLED) == {"organization_id": ORG, "plans": []}
    assert h.upstream.sent(THROTTLED) == 2


async def test_a_429_with_retry_after_zero_leaves_its_credential_unthrottled(
    connect: Callable[..., Harness],
) -> None:
    h = connect({"retry-after": "0"})
    for _ in range(3):
        with pytest.raises(UpstreamRateLimited):
            await h.get(THROTTLED)

    assert h.upstream.sent(THROTTLED) == 3


async def test_the_retry_of_a_429_within_the_cap_is_sent_after_its_wait_and_succeeds(
    connect: Callable[..., Harness],
) -> None:
    h = connect({"retry-after": "2"}, get_retries=2, retry_after_cap=5.0)
    h.upstream.times = 1

    assert await h.get(THROTTLED) == {"organization_id": ORG, "plans": []}
    assert h.upstream.sent(THROTTLED) == 2


async def test_rate_limited_credentials_never_open_the_breaker_for_the_others(
    connect: Callable[..., Harness],
) -> None:
    h = connect({"retry-after": "30"}, breaker_failures=3)
    h.upstream.everyone = True
    for n in range(20):
        with pytest.raises(UpstreamRateLimited):
            await h.get(f"{THROTTLED}_{n}")
    assert h.client.breaker.state is BreakerState.CLOSED

    h.upstream.everyone = False
    assert await h.get(OTHER) == {"organization_id": ORG, "plans": []}


async def test_failures_that_say_the_provider_is_unwell_still_open_the_breaker(
    connect: Callable[..., Harness],
) -> None:
    h = connect({}, breaker_failures=3)
    h.upstream.status_for_all = 503
    for token in ("a_1", "a_2", "a_3"):
        with pytest.raises(UpstreamUnavailable):
            await h.get(token)

    with pytest.raises(UpstreamCircuitOpen):
        await h.get(OTHER)
    assert h.client.breaker.state is BreakerState.OPEN


async def test_a_throttled_credential_checkout_is_not_sent_and_a_checkout_429_throttles_reads(
    connect: Callable[..., Harness],
) -> None:
    h = connect({"retry-after": "30"})
    with pytest.raises(UpstreamRateLimited):
        await h.post(THROTTLED)  # the POST's 429 throttles the credential
    sent = h.upstream.sent(THROTTLED)

    with pytest.raises(UpstreamRateLimited) as read:
        await h.get(THROTTLED)
    with pytest.raises(UpstreamRateLimited) as checkout:
        await h.post(THROTTLED)

    assert h.upstream.sent(THROTTLED) == sent == 1
    assert read.value.status is checkout.value.status is None
    assert await h.post(OTHER) == {"url": "https://pay.example.com/cs_test_1"}


async def test_a_throttled_call_is_reported_to_the_observer_with_its_endpoint_template(
    connect: Callable[..., Harness],
) -> None:
    throttled: list[tuple[str, str]] = []

    class Recorder:
        def request_finished(self, *args: object) -> None:
            pass

        def retry_scheduled(self, *args: object) -> None:
            pass

        def retry_refused(self, *args: object) -> None:
            pass

        def circuit_changed(self, *args: object) -> None:
            pass

        def request_throttled(self, provider: str, endpoint: str) -> None:
            throttled.append((provider, endpoint))

    h = connect({"retry-after": "30"})
    h.client.observe(Recorder())
    with pytest.raises(UpstreamRateLimited):
        await h.get(THROTTLED)
    for _ in range(2):
        with pytest.raises(UpstreamRateLimited):
            await h.get(THROTTLED)

    assert throttled == [("almanac", "/v1/organizations/{id}/billing")] * 2


# --- the bound of the in-process state -----------------------------------------------------------


async def test_the_memory_state_never_holds_more_than_its_bound_and_keeps_the_longest_waits() -> (
    None
):
    clock = FakeClock()
    limits = MemoryRateLimits(max_entries=1_000, clock=clock)
    for n in range(10_000):
        await limits.hold(f"almanac {n}", 60.0 + n)
        assert len(limits) <= 1_000

    assert await limits.remaining("almanac 9999") == pytest.approx(60.0 + 9_999)
    assert await limits.remaining("almanac 0") == 0.0


async def test_an_ended_wait_is_forgotten() -> None:
    clock = FakeClock()
    limits = MemoryRateLimits(clock=clock)
    await limits.hold("k", 5.0)
    clock.advance(5.0)

    assert await limits.remaining("k") == 0.0
    assert len(limits) == 0


def test_the_key_of_a_rate_limit_names_the_provider_and_a_hash_never_the_credential() -> None:
    key = throttle_key("autoposting", Credential(AUTOPOSTING_PRO_KEY))

    assert key.startswith("autoposting ")
    assert AUTOPOSTING_PRO_KEY not in key
    assert key != throttle_key("almanac", Credential(AUTOPOSTING_PRO_KEY))
    assert key != throttle_key("autoposting", Credential(THROTTLED))


# --- gateways over HTTP: one process, two replicas sharing Redis ---------------------------------

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
OWNER = {"x-almanac-token": ALMANAC_OWNER_TOKEN}
VIEWER = {"x-almanac-token": ALMANAC_VIEWER_TOKEN}
ACCOUNTS = """{
  billingAccounts(accounts: [{provider: ALMANAC, accountId: "org_acme"}, {provider: AUTOPOSTING}]) {
    __typename
    ... on BillingAccount { provider accountId currentPlan { planId } }
    ... on Error { code message }
    ... on ProviderError { retryable retryAfterSeconds upstreamStatus }
  }
}"""


@dataclass
class LimitOne(httpx.AsyncBaseTransport):
    """The sandbox, except that `token` gets a 429 with `headers`; counts requests per token."""

    inner: httpx.AsyncBaseTransport
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.sent.append(token)
        if token == self.token:
            return httpx.Response(429, json={"detail": "slow down"}, headers=self.headers)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def almanac() -> LimitOne:
    return LimitOne(httpx.ASGITransport(app=create_almanac_app(SandboxState())))


@asynccontextmanager
async def gateway(almanac: LimitOne, **environ: str) -> AsyncIterator[httpx.AsyncClient]:
    transports: dict[Provider, httpx.AsyncBaseTransport] = {
        Provider.ALMANAC: almanac,
        Provider.AUTOPOSTING: httpx.ASGITransport(app=create_autoposting_app(SandboxState())),
    }
    async with serve(make_settings(**environ), transports, headers=KEY) as client:
        yield client


async def accounts(
    client: httpx.AsyncClient, headers: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    response = await client.post("/graphql", json={"query": ACCOUNTS}, headers=dict(headers))
    assert response.status_code == 200, response.text
    assert ALMANAC_OWNER_TOKEN not in response.text
    assert ALMANAC_VIEWER_TOKEN not in response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    almanac, autoposting = body["data"]["billingAccounts"]
    assert autoposting["__typename"] == "BillingAccount"
    return almanac, autoposting


async def test_one_callers_429_answers_its_next_request_without_a_call_and_spares_the_others(
    almanac: LimitOne,
) -> None:
    almanac.token, almanac.headers = ALMANAC_VIEWER_TOKEN, {"retry-after": "120"}
    async with gateway(almanac, GATEWAY_BREAKER_FAILURES="1") as client:
        first, _ = await accounts(client, VIEWER)
        again, _ = await accounts(client, VIEWER)
        others = [(await accounts(client, OWNER))[0] for _ in range(3)]
        throttled = await metric(client, "gateway_upstream_throttled_total", provider="almanac")

    assert (first["code"], first["upstreamStatus"], first["retryAfterSeconds"]) == (
        "RATE_LIMITED",
        429,
        120.0,
    )
    assert again["__typename"] == "ProviderError"
    assert (again["code"], again["retryable"], again["upstreamStatus"]) == (
        "RATE_LIMITED",
        True,
        None,
    )
    assert 100 < again["retryAfterSeconds"] <= 120
    assert "rate limiting this credential" in again["message"]
    assert almanac.sent.count(ALMANAC_VIEWER_TOKEN) == 1
    # A breaker opened by one failure would have failed these: the 429 did not count.
    assert [other["__typename"] for other in others] == ["BillingAccount"] * 3
    assert almanac.sent.count(ALMANAC_OWNER_TOKEN) == 3
    assert throttled == 1


async def test_a_429_seen_by_one_replica_throttles_that_credential_on_the_other_through_redis(
    almanac: LimitOne, redis_url: str
) -> None:
    almanac.token, almanac.headers = ALMANAC_VIEWER_TOKEN, {"retry-after": "90"}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(gateway(almanac, GATEWAY_REDIS_URL=redis_url))
        second = await stack.enter_async_context(gateway(almanac, GATEWAY_REDIS_URL=redis_url))
        await accounts(first, VIEWER)
        on_second, _ = await accounts(second, VIEWER)
        owner_on_second, _ = await accounts(second, OWNER)

    client = open_redis(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter("billing-gateway:throttle:*")]
        ttls = [await client.pttl(key) for key in keys]
    finally:
        await client.aclose()
    assert (on_second["code"], on_second["upstreamStatus"]) == ("RATE_LIMITED", None)
    assert 80 < on_second["retryAfterSeconds"] <= 90
    assert almanac.sent.count(ALMANAC_VIEWER_TOKEN) == 1
    assert owner_on_second["__typename"] == "BillingAccount"
    assert keys == [KEY_PREFIX + throttle_key("almanac", Credential(ALMANAC_VIEWER_TOKEN))]
    assert all(ALMANAC_VIEWER_TOKEN not in key for key in keys)
    assert all(80_000 < ttl <= 90_000 for ttl in ttls)


async def test_a_redis_rate_limit_state_reads_back_its_wait_and_forgets_a_zero_one(
    redis_url: str,
) -> None:
    client = open_redis(redis_url)
    try:
        limits = RedisRateLimits(client)
        await limits.hold("almanac x", 30.0)
        held = await limits.remaining("almanac x")
        await limits.hold("almanac x", 0.0)
        cleared = await limits.remaining("almanac x")
        never = await limits.remaining("almanac y")
    finally:
        await client.aclose()

    assert 29 < held <= 30
    assert cleared == never == 0.0


async def test_with_redis_down_credentials_are_sent_and_nothing_fails(almanac: LimitOne) -> None:
    with RedisServer() as server:
        async with gateway(almanac, GATEWAY_REDIS_URL=server.url) as client:
            await accounts(client, OWNER)
            server.stop()
            answers = [(await accounts(client, OWNER))[0] for _ in range(2)]

    assert [a["__typename"] for a in answers] == ["BillingAccount"] * 2
    assert almanac.sent.count(ALMANAC_OWNER_TOKEN) == 3
