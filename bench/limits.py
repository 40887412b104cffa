"""Hostile requests against the query limits: how long each takes to answer, how big the answer is,
and how late /healthz answers while it is served.

The sandbox upstreams run in one process and the gateway (`python -m gateway serve`, one worker,
started afresh for each request) in another, on loopback; this process sends the request while a
thread asks /healthz every 5 ms. `--source DIR` runs the gateway from another checkout's source, to
measure before and after:

    .venv/bin/python bench/limits.py
    mkdir /tmp/before && git archive HEAD | tar -x -C /tmp/before
    .venv/bin/python bench/limits.py --source /tmp/before --only doubling-16,doubling-17,repeated

A request still unanswered after --timeout seconds is reported as such (its gateway is stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.examples import EXAMPLE_QUERY
from gateway.sandbox import ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
SANDBOX = """
import sys, time
from gateway.sandbox import SandboxThread
with SandboxThread() as sandbox:
    print(sandbox.almanac_url, sandbox.autoposting_url, flush=True)
    sys.stdin.read()
"""
ORGANIZATIONS = ("org_acme", "org_globex", "org_initech", "org_umbrella", "org_hooli", "org_stark")
# The README's example selection (`gateway/examples.py`): 38 fields below each account.
ACCOUNT = EXAMPLE_QUERY[EXAMPLE_QUERY.index(") {") + 3 : EXAMPLE_QUERY.rindex("}", 0, -2)]
# What answers the most bytes per field: the providers' own JSON, 29 times under aliases (the
# alias limit is 30 with the list's), and below every object that carries it: 40 fields.
RAW = (
    "__typename ... on BillingAccount { id "
    + " ".join(f"r{i}: raw" for i in range(29))
    + " plans { raw } currentPlan { raw } subscription { raw } usageMeters { raw } }"
)


@dataclass
class Request:
    query: str
    variables: dict[str, Any]


def doubling(levels: int) -> Request:
    """`...F0`, each fragment spreading the next twice: 2**levels fields in a few bytes each."""
    fragments = " ".join(
        f"fragment F{i} on Query{{...F{i + 1} ...F{i + 1}}}" for i in range(levels)
    )
    return Request(f"query Q{{...F0}} {fragments} fragment F{levels} on Query{{__typename}}", {})


def accounts(count: int) -> list[dict[str, str]]:
    """`count` account entries: the sandbox's organizations and Autoposting, round and round."""
    pool = [{"provider": "ALMANAC", "accountId": org} for org in ORGANIZATIONS]
    pool.append({"provider": "AUTOPOSTING"})
    return [pool[i % len(pool)] for i in range(count)]


def listed(selection: str, count: int, aliases: int = 1) -> Request:
    fields = " ".join(
        f"a{i}: billingAccounts(accounts: $accounts) {{ {selection} }}" for i in range(aliases)
    )
    return Request(
        f"query Q($accounts: [AccountInput!]!) {{ {fields} }}", {"accounts": accounts(count)}
    )


def repeated() -> Request:
    """The report's request: one account 2,300 times in a variable, under three aliases (64 KB)."""
    request = listed(ACCOUNT, 0, aliases=3)
    request.variables = {"accounts": [{"provider": "AUTOPOSTING"}] * 2300}
    return request


def fragment_pairs(count: int) -> Request:
    """`count` fragments spread side by side, each selecting one of a few fields: graphql-core
    compares every pair of them."""
    names = ["id", "provider", "accountId", "raw", "manage { allowed }", "plans { name }"]
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(
        f"fragment F{i} on BillingAccount {{ {names[i % len(names)]} }}" for i in range(count)
    )
    return Request(
        f'{{ billingAccount(provider: ALMANAC, accountId: "org_acme") {{ {spreads} }} }} '
        + fragments,
        {},
    )


def introspection() -> Request:
    from graphql import get_introspection_query

    return Request(get_introspection_query(descriptions=True, input_value_deprecation=True), {})


REQUESTS: dict[str, Callable[[], Request]] = {
    "doubling-16": lambda: doubling(16),
    "doubling-17": lambda: doubling(17),
    "doubling-24": lambda: doubling(24),
    "doubling-100": lambda: doubling(100),
    # The most levels the token limit (2000) lets through.
    "doubling-198": lambda: doubling(198),
    "repeated": repeated,
    # The largest requests the default limits allow: 25 accounts (every entry counted), at the
    # cost budget (1000) with the README's selection (25 x 39 = 975) or with raw JSON (25 x 40).
    "max-accounts-readme": lambda: listed(ACCOUNT, 25),
    "max-accounts-raw": lambda: listed(RAW, 25),
    # The most merge comparisons the default limit (1000) lets through: 976 (41 fragments);
    # and what graphql-core's OverlappingFieldsCanBeMergedRule was left with before it.
    "max-merge-pairs": lambda: fragment_pairs(41),
    "merge-pairs-180-fragments": lambda: fragment_pairs(180),
    "merge-pairs-166-fields": lambda: Request(
        '{ billingAccount(provider: ALMANAC, accountId: "org_acme") { ... on BillingAccount {'
        + " plans { name }" * 166
        + " } } }",
        {},
    ),
    "introspection": introspection,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def sandbox(source: Path) -> Iterator[tuple[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = subprocess.Popen(
        [sys.executable, "-c", SANDBOX],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=source,
    )
    try:
        assert process.stdout is not None
        almanac, autoposting = process.stdout.readline().decode().split()
        yield almanac, autoposting
    finally:
        process.kill()
        process.wait()


@contextmanager
def gateway(source: Path, upstreams: tuple[str, str], environ: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "GATEWAY_ALMANAC_URL": upstreams[0],
        "GATEWAY_AUTOPOSTING_URL": upstreams[1],
        "GATEWAY_ALMANAC_TOKEN": ALMANAC_OWNER_TOKEN,
        "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_PRO_KEY,
        "GATEWAY_API_KEYS": API_KEY,
        "GATEWAY_LOG_LEVEL": "WARNING",
        **environ,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=source,  # `-m` looks in the working directory first
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(url: str, request: Request, timeout: float) -> dict[str, Any]:
    """Send `request` while polling /healthz; the answer's status, time, size, and the polls."""
    polls: list[tuple[float, float]] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=timeout + 5) as client:
            while not done.is_set():
                start = time.perf_counter()
                try:
                    client.get(f"{url}/healthz")
                except httpx.HTTPError:
                    break
                polls.append((start, time.perf_counter() - start))
                time.sleep(0.005)

    body = json.dumps(
        {"query": request.query, "variables": request.variables}, separators=(",", ":")
    ).encode()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.05)
    start = time.perf_counter()
    response: httpx.Response | None = None
    with suppress(httpx.TimeoutException):
        response = httpx.post(
            f"{url}/graphql",
            content=body,
            headers={
                "authorization": f"Bearer {API_KEY}",
                "content-type": "application/json",
                "accept": "application/graphql-response+json, application/json;q=0.9",
            },
            timeout=timeout,
        )
    elapsed = time.perf_counter() - start
    done.set()
    poller.join(timeout + 10)
    # Decoded after the polls: this process's own work would delay them.
    if response is None:
        status: Any = f"no answer in {timeout:.0f} s"
        size, errors = 0, []
    else:
        status, size = response.status_code, len(response.content)
        errors = [e.get("message", "")[:110] for e in response.json().get("errors") or []]
    during = [latency for at, latency in polls if start <= at <= start + elapsed]
    return {
        "body_bytes": len(body),
        "status": status,
        "seconds": round(elapsed, 3),
        "answer_bytes": size,
        "healthz_polls": len(during),
        "healthz_max_ms": round(max(during, default=0) * 1000, 1),
        "errors": errors[:2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="checkout to run the gateway from"
    )
    parser.add_argument("--only", default="", help="comma-separated request names")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(REQUESTS)
    with sandbox(args.source) as upstreams:
        for name in names:
            with gateway(args.source, upstreams, {}) as url:
                result = measure(url, REQUESTS[name](), args.timeout)
            print(json.dumps({"request": name, **result}), flush=True)


if __name__ == "__main__":
    main()
