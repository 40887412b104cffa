"""CPU per pooled upstream GET: the gateway's transport beside httpx's own pool (and aiohttp's
pool under httpx, if `httpx-aiohttp` is installed), against the benchmark's Almanac mock.

Each round sends `--requests` GETs one at a time and then 32 at a time through each transport in
turn (interleaved, so that the machine's drift touches all alike); the figure is the calling
process's CPU (`time.process_time`) per request, the minimum over the rounds. The mock runs in a
process of its own.

    .venv/bin/python bench/transport.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import ALMANAC_TOKEN, HOST, free_port, http, process, wait_until  # noqa: E402

from gateway.upstreams.transport import UpstreamTransport  # noqa: E402

TIMEOUT = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


def transports() -> dict[str, Callable[[], httpx.AsyncBaseTransport]]:
    made: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
        "gateway (httptools pool)": lambda: UpstreamTransport(max_connections=100),
        "httpx (httpcore pool)": lambda: httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=100)
        ),
    }
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        pass
    else:
        made["aiohttp pool (httpx-aiohttp)"] = AiohttpTransport
    return made


async def cpu_per_request(
    transport: httpx.AsyncBaseTransport, url: str, requests: int, together: int
) -> float:
    async def one() -> None:
        request = httpx.Request(
            "GET",
            url,
            headers={"authorization": f"Bearer {ALMANAC_TOKEN}", "accept": "application/json"},
            extensions={"timeout": TIMEOUT},
        )
        response = await transport.handle_async_request(request)
        await response.aread()
        if response.status_code != 200:
            raise RuntimeError(f"the mock answered {response.status_code}")

    started = time.process_time()
    for _ in range(requests // together):
        await asyncio.gather(*(one() for _ in range(together)))
    return (time.process_time() - started) * 1e6 / requests


async def measure(url: str, requests: int, rounds: int) -> dict[tuple[str, int], float]:
    made = {name: make() for name, make in transports().items()}
    best: dict[tuple[str, int], float] = {}
    for transport in made.values():  # connections opened, code warm
        await cpu_per_request(transport, url, 64, 32)
    for _ in range(rounds):
        for name, transport in made.items():
            for together in (1, 32):
                figure = await cpu_per_request(transport, url, requests, together)
                key = (name, together)
                best[key] = min(best.get(key, figure), figure)
    for transport in made.values():
        await transport.aclose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    mock = [sys.executable, str(ROOT / "bench" / "mocks.py"), "almanac", "--port", str(port)]
    with process(mock):
        base = f"http://{HOST}:{port}"
        url = f"{base}/v1/organizations/org_acme/billing"
        wait_until(lambda: http("GET", f"{base}/__mock/stats")[0] == 200, "the mock")
        best = uvloop.run(measure(url, args.requests, args.rounds))
    print("| transport | 1 at a time | 32 at a time |")
    print("|---|---|---|")
    for name in dict.fromkeys(name for name, _ in best):
        print(f"| {name} | {best[(name, 1)]:.0f} µs | {best[(name, 32)]:.0f} µs |")


if __name__ == "__main__":
    main()
