"""Small hostile requests ("Safe to expose", query cost): each is refused before any resolver runs,
as a GraphQL-over-HTTP request error, and none holds the event loop.

The table runs the app in process over the sandbox simulators; the /healthz tests run it under
uvicorn on loopback, as `test_end_to_end.py` does. `bench/limits.py` measures the same requests
(time, answer size, /healthz) before and after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from graphql import parse

from gateway.__main__ import DEMO_API_KEY, demo_environ
from gateway.app import create_app
from gateway.sandbox import SandboxState, SandboxThread
from gateway.schema import build_schema
from gateway.schema.limits import measure_document
from gateway.settings import (
    DEFAULT_MAX_ACCOUNTS_PER_REQUEST,
    DEFAULT_MAX_QUERY_COST,
    load_settings,
)
from tests.servers import ServerThread
from tests.support import TEST_API_KEY, doubling, make_settings, sandbox_transports, serve

GRAPHQL_RESPONSE = "application/graphql-response+json"
HEADERS = {"accept": f"{GRAPHQL_RESPONSE}, application/json;q=0.9"}
ACCOUNT = 'billingAccount(provider: ALMANAC, accountId: "org_acme")'
MANY = (
    "query Q($accounts: [AccountInput!]!) { billingAccounts(accounts: $accounts) { __typename } }"
)
ACME = {"provider": "ALMANAC", "accountId": "org_acme"}
ORGANIZATIONS = ("org_acme", "org_globex", "org_initech", "org_umbrella", "org_hooli", "org_stark")
# The providers' own JSON, the field that answers the most bytes: 29 times under aliases (the
# alias limit is 30 with the list's), and below every object that carries it; 40 fields an account,
# with the list's: 25 accounts spend the whole cost budget.
RAW = (
    "__typename ... on BillingAccount { id "
    + " ".join(f"r{i}: raw" for i in range(29))
    + " plans { raw } currentPlan { raw } subscription { raw } usageMeters { raw } }"
)
# The README's selection, the one the report's request used (39 fields with the list).
README_ACCOUNT = """__typename ... on BillingAccount { id provider accountId
  currentPlan { id planId name price { amount currency } interval } plans { id planId name current }
  subscription { id status trialEnd currentPeriodEnd pendingPlanId } manage { allowed reason }
  usageMeters { id featureId used granted remaining unlimited usedFraction resetsAt } }
  ... on Error { code message provider }"""


def side_by_side(count: int) -> str:
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on Query {{ __typename }}" for i in range(count))
    return f"{{ {spreads} }} {fragments}"


def listed(selection: str, aliases: int = 1) -> str:
    """`billingAccounts(accounts: $accounts)` under `aliases` aliases, selecting `selection`."""
    fields = " ".join(
        f"a{i}: billingAccounts(accounts: $accounts) {{ {selection} }}" for i in range(aliases)
    )
    return f"query Q($accounts: [AccountInput!]!) {{ {fields} }}"


def rotating(count: int) -> list[dict[str, str]]:
    """`count` account entries: the sandbox's organizations and Autoposting, round and round."""
    pool: list[dict[str, str]] = [
        {"provider": "ALMANAC", "accountId": org} for org in ORGANIZATIONS
    ]
    pool.append({"provider": "AUTOPOSTING"})
    return [pool[i % len(pool)] for i in range(count)]


@dataclass
class Hostile:
    finding: str
    query: str
    message: str
    variables: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"query": self.query, "variables": self.variables}


HOSTILE = [
    pytest.param(
        Hostile(
            "1: doubling fragments, 24 levels (1 KB); validation took minutes",
            doubling(24),
            "The document expands to 16777216 fields, fragments included; the maximum is 500.",
        ),
        id="doubling-24",
    ),
    pytest.param(
        Hostile(
            "1: doubling fragments, 100 levels",
            doubling(100),
            f"The document expands to {2**100} fields",
        ),
        id="doubling-100",
    ),
    pytest.param(
        Hostile(
            "1: doubling fragments, the most levels under the token limit (198, 7.6 KB)",
            doubling(198),
            f"The document expands to {2**198} fields",
        ),
        id="doubling-198",
    ),
    pytest.param(
        Hostile(
            "1: doubling fragments of an alias (MaxAliasesLimiter walked every spread)",
            doubling(24, "a: __typename"),
            "16777216 aliases found. Allowed: 30",
        ),
        id="doubling-aliases",
    ),
    pytest.param(
        Hostile(
            "1: graphql-core's OverlappingFieldsCanBeMergedRule compares every pair of fragments "
            "spread side by side: 180 of them (8 KB) took 75-150 ms",
            side_by_side(180),
            "Validating the document would compare 32220 pairs",
        ),
        id="fragments-side-by-side",
    ),
    pytest.param(
        Hostile(
            "1: OverlappingFieldsCanBeMergedRule, every pair of 166 same-named fields with a "
            "selection (7 KB): 90-250 ms",
            "{ " + ACCOUNT + " { ... on BillingAccount {" + " plans { name }" * 166 + " } } }",
            "Validating the document would compare 27390 pairs",
        ),
        id="same-field-with-selection",
    ),
    pytest.param(
        Hostile(
            "1: OverlappingFieldsCanBeMergedRule, one field 1,990 times (the token limit)",
            "{" + " __typename" * 1990 + " }",
            "The document expands to 1990 fields",
        ),
        id="same-field",
    ),
    pytest.param(
        Hostile(
            "1: an unknown fragment raised KeyError in QueryDepthLimiter: answered as \"'Nope'\", "
            "without extensions.code",
            "{ ...Nope }",
            "Unknown fragment 'Nope'.",
        ),
        id="unknown-fragment",
    ),
    pytest.param(
        Hostile(
            "2: one account 2,300 times in a variable, under three aliases (64 KB): 2.6 MB "
            "after 9 s, /healthz stalled 6 s",
            listed(README_ACCOUNT, aliases=3),
            "'Q' asks for 6900 accounts (every entry counted, duplicates included); a request "
            "may ask for at most 25.",
            {"accounts": [{"provider": "AUTOPOSTING"}] * 2300},
        ),
        id="repeated-account-variable",
    ),
    pytest.param(
        Hostile(
            "2: one account 26 times in an inline list (distinct accounts were counted)",
            "query Q { billingAccounts(accounts: ["
            + ' {provider: ALMANAC, accountId: "org_acme"}' * 26
            + " ]) { __typename } }",
            "'Q' asks for 26 accounts",
        ),
        id="repeated-account-inline",
    ),
    pytest.param(
        Hostile(
            "2: one account under 26 aliases",
            "query Q { " + " ".join(f"a{i}: {ACCOUNT} {{ __typename }}" for i in range(26)) + " }",
            "'Q' asks for 26 accounts",
        ),
        id="repeated-account-aliases",
    ),
    pytest.param(
        Hostile(
            "2: a list of 13 entries, spread twice through a fragment",
            "query Q($accounts: [AccountInput!]!) { ...A ...B } "
            "fragment A on Query { a: billingAccounts(accounts: $accounts) { __typename } } "
            "fragment B on Query { b: billingAccounts(accounts: $accounts) { __typename } }",
            "'Q' asks for 26 accounts",
            {"accounts": [ACME] * 13},
        ),
        id="list-spread-twice",
    ),
    pytest.param(
        Hostile(
            "cost: 25 accounts (the limit) x 42 fields of raw JSON, over the budget of 1000",
            listed(RAW[:-1] + "manage { allowed } }"),
            "The estimated cost of 'Q' is 1050 (accounts requested x fields selected per account, "
            "every list entry counted); the budget is 1000.",
            {"accounts": rotating(25)},
        ),
        id="cost-over-budget",
    ),
]


@pytest.fixture
async def client(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, its lifespan around it, over the sandbox simulators."""
    key = {"authorization": f"Bearer {TEST_API_KEY}"}
    async with serve(make_settings(), sandbox_transports(state), headers=key) as client:
        yield client


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_hostile_request_is_a_request_error_with_its_numbers_and_calls_nothing(
    client: httpx.AsyncClient, state: SandboxState, hostile: Hostile
) -> None:
    response = await client.post("/graphql", json=hostile.body(), headers=HEADERS)

    assert response.status_code == 400, (hostile.finding, response.text[:500])
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" not in body
    assert any(hostile.message in error["message"] for error in body["errors"]), body
    assert {error["extensions"]["code"] for error in body["errors"]} == {"INVALID_QUERY"}
    assert state.count() == 0


def test_the_largest_allowed_request_is_at_every_limit_it_can_reach() -> None:
    """The request the /healthz test serves: 25 accounts, the whole cost budget, 30 aliases: the
    default limits, each reached."""
    measure = measure_document(build_schema()._schema, parse(LARGEST.query))
    [operation] = measure.operations
    fields_per_account = operation.cost(LARGEST.variables) // DEFAULT_MAX_ACCOUNTS_PER_REQUEST

    assert operation.accounts(LARGEST.variables) == DEFAULT_MAX_ACCOUNTS_PER_REQUEST
    assert operation.cost(LARGEST.variables) == DEFAULT_MAX_QUERY_COST
    assert fields_per_account == 40
    assert measure.aliases == 30


# --- /healthz under uvicorn, while they are served -----------------------------------------------

HEALTHZ_BOUND = 0.1  # seconds
ATTEMPTS = 3
LARGEST = Hostile("largest allowed", listed(RAW), "", {"accounts": rotating(25)})


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """The gateway under uvicorn over the sandbox simulators, both on loopback, as `demo` runs."""
    with SandboxThread() as sandbox:

        def make_app(url: str) -> Any:
            environ = demo_environ({}, sandbox.almanac_url, sandbox.autoposting_url, url)
            return create_app(load_settings(environ))

        with ServerThread(make_app) as server:
            yield server.url


@dataclass
class Served:
    response: httpx.Response
    # Latency of each /healthz request sent while the request was in flight.
    healthz: list[float]


def serve_alongside(url: str, hostile: Hostile) -> Served:
    """Send `hostile` from one thread and ask /healthz back to back from this one until it is
    answered; both connections are opened first, so that only serving is timed."""
    answered: list[httpx.Response] = []
    headers = {**HEADERS, "authorization": f"Bearer {DEMO_API_KEY}"}
    with (
        httpx.Client(base_url=url, timeout=60) as requester,
        httpx.Client(base_url=url, timeout=60) as prober,
    ):
        requester.get("/healthz")
        prober.get("/healthz")
        sender = threading.Thread(
            target=lambda: answered.append(
                requester.post("/graphql", json=hostile.body(), headers=headers)
            )
        )
        latencies: list[float] = []
        sender.start()
        while True:  # at least once: a refusal can come back before the first probe is sent
            start = time.perf_counter()
            assert prober.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            if not sender.is_alive():
                break
        sender.join()
    [response] = answered
    return Served(response, latencies)


def quickest(attempt: Callable[[], Served]) -> tuple[Served, list[float]]:
    """The attempt whose slowest /healthz was quickest, of up to ATTEMPTS.

    A stall the gateway causes is in every attempt; a loaded machine's pause in some. Repeating
    is the only slack: the bound stays 100 ms.
    """
    slowest: list[float] = []
    best: Served | None = None
    for _ in range(ATTEMPTS):
        served = attempt()
        slowest.append(max(served.healthz, default=0.0))
        if best is None or slowest[-1] < max(best.healthz, default=0.0):
            best = served
        if slowest[-1] < HEALTHZ_BOUND:
            break
    assert best is not None
    return best, slowest


def test_healthz_answers_within_100_ms_while_the_largest_allowed_request_is_served(
    served: str,
) -> None:
    result, slowest = quickest(lambda: serve_alongside(served, LARGEST))

    assert result.response.status_code == 200, result.response.text[:500]
    data = result.response.json()["data"]["a0"]
    assert [item["__typename"] for item in data].count("BillingAccount") == 25
    assert len(result.response.content) > 500_000
    # It was being served while /healthz was asked, more than once.
    assert len(result.healthz) >= 2
    assert max(result.healthz) < HEALTHZ_BOUND, f"slowest /healthz per attempt: {slowest}"


@pytest.mark.parametrize(
    "hostile",
    [
        param
        for param in HOSTILE
        if param.id in ("doubling-24", "doubling-198", "repeated-account-variable")
    ],
)
def test_healthz_answers_within_100_ms_while_a_hostile_request_is_refused(
    served: str, hostile: Hostile
) -> None:
    result, slowest = quickest(lambda: serve_alongside(served, hostile))

    assert result.response.status_code == 400
    assert result.healthz
    assert max(result.healthz) < HEALTHZ_BOUND, f"slowest /healthz per attempt: {slowest}"
