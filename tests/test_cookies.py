"""No upstream cookie is kept at any layer, so none set for one caller reaches another's request.

The sandboxes set a cookie on every answer, as a CDN in front of a real API may. They are reached
as `localhost`: some jars (aiohttp's, once used here) keep no cookie for an IP address, so over
127.0.0.1 a jar could go unseen. (conftest's `no_upstream_request_carries_a_cookie` checks every
other test too.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    SandboxThread,
)
from gateway.sandbox.web import EDGE_COOKIE
from gateway.upstreams import AlmanacClient
from tests.support import TEST_API_KEY, make_settings, serve

BILLING = """
query Billing {
  acme: billingAccount(provider: ALMANAC, accountId: "org_acme") {
    __typename ... on BillingAccount { accountId }
  }
  social: billingAccount(provider: AUTOPOSTING) {
    __typename ... on BillingAccount { accountId }
  }
}
"""
CALLERS = [
    {"x-almanac-token": ALMANAC_OWNER_TOKEN, "x-autoposting-api-key": AUTOPOSTING_PRO_KEY},
    {"x-almanac-token": ALMANAC_VIEWER_TOKEN, "x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY},
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread(host="localhost") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sandbox: SandboxThread) -> Iterator[None]:
    sandbox.state.reset()
    yield
    sandbox.state.reset()


def test_the_sandboxes_are_reached_by_name_and_set_a_cookie_on_every_answer(
    sandbox: SandboxThread,
) -> None:
    """What makes the other tests able to fail."""
    assert sandbox.almanac_url.startswith("http://localhost:")
    answer = httpx.get(f"{sandbox.autoposting_url}/health")

    assert answer.cookies.get(EDGE_COOKIE)


async def test_no_upstream_request_carries_a_cookie_whichever_caller_came_before(
    sandbox: SandboxThread,
) -> None:
    settings = make_settings(
        GATEWAY_ALMANAC_URL=sandbox.almanac_url,
        GATEWAY_AUTOPOSTING_URL=sandbox.autoposting_url,
        GATEWAY_COALESCE="false",
    )
    # The app's own transports: their pool over loopback, as in production.
    async with serve(settings, {}) as client:
        for round_ in range(2):
            for headers in CALLERS:
                response = await client.post(
                    "/graphql",
                    json={"query": BILLING},
                    headers={"authorization": f"Bearer {TEST_API_KEY}", **headers},
                )
                data: dict[str, Any] = response.json()["data"]
                assert data["acme"]["__typename"] == "BillingAccount", (round_, data)
                assert data["social"]["__typename"] == "BillingAccount", (round_, data)

    calls = sandbox.state.calls()
    assert len(calls) >= 2 * len(CALLERS) * 2
    assert {call.headers["authorization"] for call in calls} == {
        f"Bearer {token}" for caller in CALLERS for token in caller.values()
    }
    assert [call for call in calls if "cookie" in call.headers] == []


async def test_the_http_client_under_an_upstream_client_keeps_no_cookie(
    sandbox: SandboxThread,
) -> None:
    """httpx's client-level jar: the upstream clients send through their transport, but the
    `AsyncClient` they own (for instrumentation) must not be able to carry a cookie either."""
    upstream = make_settings().upstream(Provider.ALMANAC)
    client = AlmanacClient(dataclasses.replace(upstream, base_url=sandbox.almanac_url))
    try:
        for _ in range(2):
            answer = await client._http.get(f"{sandbox.almanac_url}/v1/")
            assert answer.headers["set-cookie"].startswith(f"{EDGE_COOKIE}=")
        client._http.cookies.set("planted", "by-hand")
        await client._http.get(f"{sandbox.almanac_url}/v1/")
    finally:
        await client.aclose()

    assert len(client._http.cookies.jar) == 0
    calls = sandbox.state.calls()
    assert len(calls) == 3
    assert [call for call in calls if "cookie" in call.headers] == []
