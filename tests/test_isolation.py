"""Nothing fetched with one caller's credentials is served to a caller with other credentials."""

from __future__ import annotations

import asyncio
import random

from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
)
from tests.support import Gateway

QUERY = """{
  almanac: billingAccount(provider: ALMANAC, accountId: "org_acme") {
    ... on BillingAccount { manage { allowed } }
  }
  autoposting: billingAccount(provider: AUTOPOSTING) {
    ... on BillingAccount { accountId subscription { status } }
  }
}"""
CALLERS = {
    "owner-pro": (
        {"x-almanac-token": ALMANAC_OWNER_TOKEN, "x-autoposting-api-key": AUTOPOSTING_PRO_KEY},
        {"allowed": True, "account": "org-pro-demo", "status": "ACTIVE"},
    ),
    "viewer-trial": (
        {"x-almanac-token": ALMANAC_VIEWER_TOKEN, "x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY},
        {"allowed": False, "account": "org-trial-demo", "status": "TRIALING"},
    ),
}


async def test_two_callers_running_concurrently_each_see_only_their_own_data(
    gateway: Gateway, state: SandboxState
) -> None:
    # Random upstream delays interleave the two callers' calls every way round.
    rng = random.Random(7)
    for _ in range(200):
        state.add_fault("almanac", Fault(delay=rng.uniform(0, 0.01)), times=1)
        state.add_fault("autoposting", Fault(delay=rng.uniform(0, 0.01)), times=1)
    order = [name for name in CALLERS for _ in range(20)]
    rng.shuffle(order)

    results = await asyncio.gather(
        *(gateway.execute(QUERY, headers=CALLERS[name][0]) for name in order)
    )

    for name, data in zip(order, results, strict=True):
        expected = CALLERS[name][1]
        assert data["almanac"]["manage"]["allowed"] is expected["allowed"], name
        assert data["autoposting"]["accountId"] == expected["account"], name
        assert data["autoposting"]["subscription"]["status"] == expected["status"], name

    # Concurrent requests with the same credential may share an upstream call (coalescing);
    # requests with different credentials never do: each caller's calls carry its own.
    def calls_with(credential: str, provider: str, path: str | None = None) -> int:
        sent = f"Bearer {credential}"
        return sum(c.headers.get("authorization") == sent for c in state.calls(provider, path=path))

    for token in (ALMANAC_OWNER_TOKEN, ALMANAC_VIEWER_TOKEN):
        assert 1 <= calls_with(token, "almanac") <= 20
    for key in (AUTOPOSTING_PRO_KEY, AUTOPOSTING_TRIAL_KEY):
        assert 1 <= calls_with(key, "autoposting", "/billing/status") <= 20
    for call in state.calls():
        sent = call.headers.get("authorization", "")
        assert sent.removeprefix("Bearer ") in {
            ALMANAC_OWNER_TOKEN, ALMANAC_VIEWER_TOKEN, AUTOPOSTING_PRO_KEY, AUTOPOSTING_TRIAL_KEY
        }  # fmt: skip
        if call.provider == "almanac":
            assert "sk-social" not in sent
        else:
            assert "alm_" not in sent
