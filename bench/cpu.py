"""CPU per request in one process, deterministic enough to judge a change: the benchmark's
operations sent through the whole ASGI app (Starlette, the guard, telemetry, the GraphQL endpoint,
execution, the upstream clients) with compiled plans off, plans on, and plans on with the lean HTTP
path.

No sockets and no uvicorn: each request is an ASGI call, and the upstreams are the sandbox
simulators' answers recorded once and replayed by an httpx transport (a checkout POST answers the
recorded session each time), so what is measured is the gateway's own Python. Figures are
`time.process_time()` over `--requests` requests (`--concurrency` in flight at once), the minimum
of `--rounds` rounds, after a warm-up that also makes every operation hot enough to be compiled;
`--profile` adds the Python function calls per request under cProfile (a count that does not move
with the machine's load; cProfile counts each resumption of a coroutine as a call) and the share
of the profiled time spent in each part of the request (`PARTS`).

    .venv/bin/python bench/cpu.py                       # every scenario, plans off and on
    .venv/bin/python bench/cpu.py --modes off,plans,on --requests 320 --rounds 5 --profile
    .venv/bin/python bench/cpu.py --modes on --scenarios one_org --concurrency 32 \
        --profile --pstats one_org.pstats               # for pstats or snakeviz

The wrk run (`bench/run.py`) measures CPU per request under load, across processes, uvicorn and the
network included; this script is what each change was judged by before that run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import GATEWAY_KEY, GATEWAY_OPERATIONS, Operation  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.endpoint import GatewayGraphQL  # noqa: E402
from gateway.provider import Provider  # noqa: E402
from gateway.sandbox import (  # noqa: E402
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.settings import load_settings  # noqa: E402


class ReplayTransport(httpx.AsyncBaseTransport):
    """The sandbox's answer to each distinct request, asked once and replayed after."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.recorded: dict[tuple[str, str, str], tuple[int, list[tuple[bytes, bytes]], bytes]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, str(request.url), request.headers.get("authorization", ""))
        answer = self.recorded.get(key)
        if answer is None:
            response = await self.inner.handle_async_request(request)
            body = await response.aread()
            answer = self.recorded[key] = (response.status_code, response.headers.raw, body)
        status, headers, body = answer
        # One turn of the event loop, as a network read takes: requests sent together are then in
        # flight together, and their identical GETs coalesce as they do under load.
        await asyncio.sleep(0)
        return httpx.Response(status, headers=headers, content=body, request=request)


class AsgiClient:
    """Sends requests to an ASGI app directly, its lifespan started."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lifespan: asyncio.Task[None] | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()

    async def __aenter__(self) -> AsgiClient:
        async def receive() -> dict[str, Any]:
            return await self.events.get()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.started.set()
            elif message["type"] == "lifespan.startup.failed":
                raise SystemExit(message.get("message"))

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.state: dict[str, Any] = scope["state"]  # type: ignore[assignment]
        self.lifespan = asyncio.ensure_future(self.app(scope, receive, send))
        await self.events.put({"type": "lifespan.startup"})
        await self.started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.events.put({"type": "lifespan.shutdown"})
        assert self.lifespan is not None
        await self.lifespan

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": dict(self.state),
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never: a disconnect is not simulated
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


HEADERS = {"content-type": "application/json", "authorization": f"Bearer {GATEWAY_KEY}"}


def environ(compiled: bool) -> dict[str, str]:
    return {
        "GATEWAY_ALMANAC_URL": "http://almanac.bench",
        "GATEWAY_AUTOPOSTING_URL": "http://autoposting.bench",
        "GATEWAY_ALMANAC_TOKEN": ALMANAC_OWNER_TOKEN,
        "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_PRO_KEY,
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "GATEWAY_REDIRECT_HOSTS": "app.example.com",
        "GATEWAY_LOG_LEVEL": "WARNING",
        # The benchmark starts checkouts far faster than a caller may (60 a minute by default).
        "GATEWAY_CHECKOUT_RATE_PER_MINUTE": "100000000",
        "GATEWAY_CHECKOUT_BURST": "100000000",
        "GATEWAY_COMPILED_EXECUTION": "true" if compiled else "false",
    }


# Where a request's CPU goes, by the file of the function it is spent in (a builtin's time goes
# to the part that called it); the first pattern found in a file's path names its part.
PARTS = (
    ("GraphQL execution", ("graphql/", "gateway/execution/", "strawberry/schema/schema_converter",
                           "strawberry/types/field", "strawberry/types/arguments",
                           "strawberry/execution/", "strawberry/types/fields/")),
    ("Strawberry's operation pipeline", ("strawberry/schema/", "strawberry/extensions/",
                                         "strawberry/types/", "strawberry/utils/", "contextlib",
                                         "inspect.py", "functools.py", "gateway/schema/__init__")),
    ("Strawberry's HTTP view", ("strawberry/http/", "strawberry/asgi/", "cross_web/")),
    ("HTTP edge: Starlette, guard, telemetry, app", ("starlette/", "gateway/http/",
                                                     "gateway/telemetry/", "gateway/app.py",
                                                     "gateway/endpoint.py",
                                                     "prometheus_client/", "uuid.py",
                                                     "bench/cpu.py", "gateway/jsonfast.py")),
    ("resolvers, loaders, normalization, upstream client", ("gateway/", "httpx/", "aiodataloader",
                                                            "httptools/", "idna/", "urllib/",
                                                            "email/", "_weakrefset.py", "enum.py")),
    ("event loop", ("asyncio/", "uvloop/")),
)  # fmt: skip


def split(stats: pstats.Stats) -> dict[str, float]:
    """The share of the profiled time spent in each of `PARTS` (and "other")."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]

    def part(path: str) -> str | None:
        if path == "~":
            return None
        return next((name for name, patterns in PARTS if any(p in path for p in patterns)), "other")

    shares: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, callers) in raw.items():
        name = part(path)
        if name is not None:
            shares[name] = shares.get(name, 0.0) + own
            continue
        for (caller_path, _, _), (_, _, from_caller, _) in callers.items():
            caller = part(caller_path) or "other"
            shares[caller] = shares.get(caller, 0.0) + from_caller
    total = sum(shares.values()) or 1.0
    return {name: value / total for name, value in sorted(shares.items(), key=lambda i: -i[1])}


def graphql_view(app: Any) -> GatewayGraphQL:
    """The app's GraphQL view (behind the guard on the /graphql route)."""
    for route in app.routes:
        if getattr(route, "path", None) == "/graphql":
            view = getattr(route.app, "app", None)
            if isinstance(view, GatewayGraphQL):
                return view
    raise SystemExit("no GraphQL view found")


# What each mode turns on: compiled plans, and the lean HTTP path.
MODES = {"off": (False, False), "plans": (True, False), "on": (True, True)}


async def measure(
    mode: str,
    operation: Operation,
    requests: int,
    rounds: int,
    profile: bool,
    pstats_path: str | None,
    concurrency: int = 1,
) -> dict[str, float]:
    state = SandboxState()
    transports: dict[Provider, httpx.AsyncBaseTransport] = {
        Provider.ALMANAC: ReplayTransport(create_almanac_app(state)),
        Provider.AUTOPOSTING: ReplayTransport(create_autoposting_app(state)),
    }
    compiled, lean = MODES[mode]
    app = create_app(load_settings(environ(compiled)), transports=transports)
    graphql_view(app).lean = lean
    body = operation.body().encode()

    async def batch(client: AsgiClient) -> None:
        """`requests` requests, `concurrency` at a time."""
        for _ in range(requests // concurrency):
            await asyncio.gather(
                *(client.post("/graphql", body, HEADERS) for _ in range(concurrency))
            )

    async with AsgiClient(app) as client:
        for _ in range(50):  # warm: recorded answers, caches, and the plan compiled
            status, answer = await client.post("/graphql", body, HEADERS)
            if status != 200 or operation.expect.encode() not in answer:
                raise SystemExit(f"unexpected answer {status}: {answer[:300]!r}")
            if any(marker.encode() in answer for marker in operation.reject):
                raise SystemExit(f"an error in the answer: {answer[:500]!r}")
        best = float("inf")
        gc.collect()
        for _ in range(rounds):
            started = time.process_time()
            await batch(client)
            best = min(best, (time.process_time() - started) / requests)
        figures = {"cpu_ms": best * 1000}
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await batch(client)
            profiler.disable()
            stats = pstats.Stats(profiler)
            figures["calls"] = stats.total_calls / requests  # type: ignore[attr-defined]
            figures.update({f"share: {name}": share for name, share in split(stats).items()})
            if pstats_path:
                stats.dump_stats(pstats_path)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(GATEWAY_OPERATIONS))
    parser.add_argument(
        "--modes",
        default="off,on",
        help="off (GATEWAY_COMPILED_EXECUTION=false), plans (plans, not the lean HTTP path), on",
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--concurrency",
        default="1,32",
        help="requests in flight at once, one figure each (32: identical GETs coalesce)",
    )
    parser.add_argument("--profile", action="store_true", help="also count calls per request")
    parser.add_argument("--pstats", help="write the profile of the last measurement here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = []
    for name in args.scenarios.split(","):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for mode in args.modes.split(","):
                figures = asyncio.run(
                    measure(
                        mode,
                        GATEWAY_OPERATIONS[name],
                        args.requests,
                        args.rounds,
                        args.profile,
                        args.pstats,
                        concurrency,
                    )
                )
                rows.append({"scenario": name, "concurrency": concurrency, "mode": mode, **figures})
                calls = f", {figures['calls']:,.0f} calls" if "calls" in figures else ""
                if not args.json:
                    print(
                        f"{name:22} x{concurrency:<3} {mode:5}: "
                        f"{figures['cpu_ms']:.3f} ms CPU{calls}",
                        flush=True,
                    )
                    for key, share in figures.items():
                        if key.startswith("share: "):
                            print(f"    {100 * share:5.1f}%  {key[7:]}")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
