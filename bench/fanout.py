"""Fan-out latency: the gateway over the sandbox upstreams with added upstream latency.

Runs the gateway (uvicorn, one worker, in this process) against the sandbox upstreams on loopback,
each upstream call delayed by --latency seconds, and sends --requests sequential queries at one
connection: the one-organization billing query and the five-organizations-plus-Autoposting query.
Prints p50/p99 latency and upstream calls per query. A correctness check of concurrency (the
five-organization query should take about one upstream latency, not five); not a load test.
`--concurrency N` sends from N connections at once (all for the same accounts and credentials, so
`--coalesce` shares their upstream GETs); `--transport httpx` puts httpx's own transport under the
clients instead of the default (the gateway's own pool), to compare the two.

    .venv/bin/python bench/fanout.py --latency 0.02 --requests 200
    .venv/bin/python bench/fanout.py --concurrency 32 --transport httpx
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
from collections.abc import Iterator

import httpx
import uvicorn

from gateway.__main__ import demo_environ
from gateway.app import create_app
from gateway.provider import Provider
from gateway.sandbox import ALMANAC_ORGANIZATION_IDS, Fault, start_sandbox
from gateway.settings import load_settings

API_KEY = "bench-key"
ACCOUNT = """__typename ... on BillingAccount {
  accountId currentPlan { planId name price { amount currency } }
  subscription { status } usageMeters { featureId used granted usedFraction } }"""
ONE_ORGANIZATION = (
    '{ billingAccount(provider: ALMANAC, accountId: "org_acme") { ' + ACCOUNT + " } }"
)
FIVE_AND_AUTOPOSTING = (
    "{ billingAccounts(accounts: ["
    + " ".join(f'{{provider: ALMANAC, accountId: "{org}"}}' for org in ALMANAC_ORGANIZATION_IDS[:5])
    + " {provider: AUTOPOSTING}]) { "
    + ACCOUNT
    + " } }"
)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(
    latency: float, requests: int, *, concurrency: int, transport: str, coalesce: bool
) -> None:
    async with start_sandbox() as sandbox:
        for provider in ("almanac", "autoposting"):
            sandbox.state.add_fault(provider, Fault(delay=latency))
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see gateway/sandbox/server.py
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        environ = demo_environ(
            {
                "GATEWAY_API_KEYS": API_KEY,
                "GATEWAY_GET_RETRIES": "0",
                "GATEWAY_COALESCE": "true" if coalesce else "false",
            },
            sandbox.almanac_url,
            sandbox.autoposting_url,
            f"http://127.0.0.1:{port}",
        )
        transports: dict[Provider, httpx.AsyncBaseTransport] | None = None
        if transport == "httpx":
            transports = {p: httpx.AsyncHTTPTransport() for p in Provider}
        app = create_app(load_settings(environ), transports=transports)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}/graphql"
        headers = {"authorization": f"Bearer {API_KEY}"}
        print(
            f"upstream latency {latency * 1000:.0f} ms, {requests} requests each over "
            f"{concurrency} connection(s), {transport} transport, coalescing "
            f"{'on' if coalesce else 'off'}"
        )
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
            for name, query in (
                ("1 organization", ONE_ORGANIZATION),
                ("5 organizations + Autoposting", FIVE_AND_AUTOPOSTING),
            ):
                await client.post(url, json={"query": query})  # warm-up: connections, caches
                sandbox.state.reset()
                for provider in ("almanac", "autoposting"):
                    sandbox.state.add_fault(provider, Fault(delay=latency))
                samples: list[float] = []
                remaining = iter(range(requests))

                async def worker(
                    query: str = query,
                    remaining: Iterator[int] = remaining,
                    samples: list[float] = samples,
                ) -> None:
                    for _ in remaining:
                        started = time.perf_counter()
                        response = await client.post(url, json={"query": query})
                        samples.append(time.perf_counter() - started)
                        body = response.json()
                        if response.status_code != 200 or "errors" in body:
                            raise SystemExit(f"unexpected answer: {body}")

                began = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                rate = requests / (time.perf_counter() - began)
                calls = sandbox.state.count() / requests
                print(
                    f"  {name:32s} p50 {statistics.median(samples) * 1000:6.1f} ms"
                    f"  p99 {percentile(samples, 0.99) * 1000:6.1f} ms"
                    f"  {rate:6.0f} queries/s  upstream calls/query {calls:.1f}"
                )
        server.should_exit = True
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added per call")
    parser.add_argument("--requests", type=int, default=200, help="requests per query")
    parser.add_argument("--concurrency", type=int, default=1, help="connections sending at once")
    parser.add_argument("--transport", choices=("gateway", "httpx"), default="gateway")
    parser.add_argument("--coalesce", action="store_true", help="share identical upstream GETs")
    args = parser.parse_args()
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
    asyncio.run(
        measure(
            args.latency,
            args.requests,
            concurrency=args.concurrency,
            transport=args.transport,
            coalesce=args.coalesce,
        )
    )


if __name__ == "__main__":
    main()
