"""The comparative benchmark: this gateway beside GraphQL Hive Gateway and the bare upstream mocks.

One command, from the project's root:

    .venv/bin/python bench/run.py                 # everything once, about 13 minutes
    .venv/bin/python bench/run.py --duration 5    # shorter runs
    .venv/bin/python bench/run.py --targets python-1,python-2 --scenarios one-org-32

It starts the upstream mocks (bench/mocks.py, one process per provider), then each target in
turn: the gateway (`billing-gateway serve`) with 1 and with N workers, and Hive Gateway over the
same OpenAPI files (bench/node/, set up with `npm ci` on first use), with 1 and N processes. Each
scenario is driven by wrk from Debian's packages (`apt-get install wrk`): a warm-up, then a
measured run whose answers a Lua check reads (an answer that is not a 200 with the expected data is
counted as an error). For each run it records requests/s, p50 and p99 latency, upstream calls per
query (the mocks' counters), CPU per request (utime + stime of the target's processes, from /proc)
and peak RSS (the largest VmHWM among the target's processes). A table goes to standard output and
to bench/results/latest.md (with the machine and versions), the raw figures to latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE = BENCH / "node"
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
GATEWAY_KEY = "bench-key"
ALMANAC_TOKEN = "alm_owner_demo"  # the sandbox's demo credentials, not secrets
AUTOPOSTING_KEY = "sk-social-demo-pro"
FIVE_ORGANIZATIONS = ("org_acme", "org_initech", "org_umbrella", "org_hooli", "org_globex")
SUCCESS_URL = "https://app.example.com/billing/done"


@dataclass(frozen=True)
class Operation:
    """One GraphQL request and how to tell a good answer from a bad one."""

    query: str
    variables: dict[str, object] = field(default_factory=dict)
    expect: str = '"data"'
    reject: tuple[str, ...] = ('"errors"',)
    operation_name: str | None = None

    def body(self) -> str:
        body: dict[str, object] = {"query": self.query, "variables": self.variables}
        if self.operation_name:
            body["operationName"] = self.operation_name
        return json.dumps(body)


@dataclass(frozen=True)
class Scenario:
    name: str
    operation: str  # one_org | five_orgs_autoposting | checkout
    connections: int
    latency_ms: float
    what: str


SCENARIOS = (
    Scenario("one-org-32", "one_org", 32, 20, "1 organization, 32 connections, 20 ms upstream"),
    Scenario("one-org-1", "one_org", 1, 20, "1 organization, 1 connection, 20 ms upstream"),
    Scenario(
        "five-orgs-1",
        "five_orgs_autoposting",
        1,
        20,
        "5 organizations + Autoposting, 1 connection, 20 ms upstream",
    ),
    Scenario(
        "five-orgs-32",
        "five_orgs_autoposting",
        32,
        20,
        "5 organizations + Autoposting, 32 connections, 20 ms upstream",
    ),
    Scenario("checkout-32", "checkout", 32, 20, "startCheckout, 32 connections, 20 ms upstream"),
    Scenario("overhead-1", "one_org", 1, 0, "1 organization, 1 connection, 0 ms upstream"),
    # The gateway's own CPU per request under load, the upstream answering at once.
    Scenario("one-org-32-0ms", "one_org", 32, 0, "1 organization, 32 connections, 0 ms upstream"),
    Scenario(
        "five-orgs-32-0ms",
        "five_orgs_autoposting",
        32,
        0,
        "5 organizations + Autoposting, 32 connections, 0 ms upstream",
    ),
    Scenario("checkout-32-0ms", "checkout", 32, 0, "startCheckout, 32 connections, 0 ms upstream"),
)

_ACCOUNT = """__typename
... on BillingAccount {
  accountId
  plans { planId name price { amount currency } current }
  currentPlan { planId }
  subscription { status }
  usageMeters { featureId used granted remaining }
  manage { allowed }
}
... on Error { code message }"""

# Our gateway's operations; every answer that carries an error type name is counted as an error.
GATEWAY_OPERATIONS = {
    "one_org": Operation(
        "query OneOrganization($id: ID!) {\n"
        f" billingAccount(provider: ALMANAC, accountId: $id) {{ {_ACCOUNT} }} }}",
        {"id": "org_acme"},
        expect='"BillingAccount"',
        reject=('"errors"', 'Error"'),
    ),
    "five_orgs_autoposting": Operation(
        "query FiveAndAutoposting($accounts: [AccountInput!]!) {\n"
        f" billingAccounts(accounts: $accounts) {{ {_ACCOUNT} }} }}",
        {
            "accounts": [{"provider": "ALMANAC", "accountId": org} for org in FIVE_ORGANIZATIONS]
            + [{"provider": "AUTOPOSTING"}]
        },
        expect='"BillingAccount"',
        reject=('"errors"', 'Error"'),
    ),
    "checkout": Operation(
        "mutation Checkout($input: StartCheckoutInput!) {\n"
        " startCheckout(input: $input) { __typename ... on CheckoutSession { url sessionId }"
        " ... on Error { code message } } }",
        {
            "input": {
                "provider": "ALMANAC",
                "accountId": "org_acme",
                "planId": "team",
                "successUrl": SUCCESS_URL,
            }
        },
        expect='"CheckoutSession"',
        reject=('"errors"', 'Error"'),
    ),
}


# What a good answer of Hive Gateway carries, by operation (errors are rejected as for ours).
HIVE_EXPECT = {"one_org": '"plans"', "five_orgs_autoposting": '"plans"', "checkout": '"url"'}


def hive_operations() -> dict[str, Operation]:
    """Hive Gateway's equivalent operations, from bench/node/operations.json."""
    raw = json.loads((NODE / "operations.json").read_text())
    return {
        name: Operation(
            spec["query"],
            spec.get("variables", {}),
            expect=HIVE_EXPECT[name],
            # A GraphQL error, or an upstream error answered on a union's error branch.
            reject=('"errors"', '"error"'),
            operation_name=spec.get("operationName"),
        )
        for name, spec in raw.items()
        if name in HIVE_EXPECT
    }


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start within {timeout:.0f} s")


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@contextlib.contextmanager
def process(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    child = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        if child.returncode not in (0, -signal.SIGTERM, 143):
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace")
            print(f"  {command[0]} exited {child.returncode}:\n{tail}", file=sys.stderr)
        log.close()


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_by_process(pids).values())


def cpu_by_process(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return found


def cpu_split(before: dict[int, float], after: dict[int, float]) -> str:
    """Each busy process's share of the CPU used between two readings, largest first ("53/46"):
    how evenly the connections spread over the workers."""
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    total = sum(used.values()) or 1.0
    shares = sorted((100 * u / total for u in used.values() if u / total >= 0.02), reverse=True)
    return "/".join(f"{share:.0f}" for share in shares)


def peak_rss_mb(pids: list[int]) -> float:
    peak = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


# --- wrk -------------------------------------------------------------------------------------

_LUA = """
wrk.method = "{method}"
wrk.body = [==[{body}]==]
{headers}
local expect = [==[{expect}]==]
local reject = {{ {reject} }}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then bad = bad + 1 return end
  for _, marker in ipairs(reject) do
    if string.find(body, marker, 1, true) then bad = bad + 1 return end
  end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("BAD %d\\n", total))
end
"""


def lua_script(
    method: str, body: str, headers: dict[str, str], expect: str, reject: tuple[str, ...]
) -> str:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    markers = ", ".join(f"[==[{marker}]==]" for marker in reject)
    return _LUA.format(method=method, body=body, headers=lines, expect=expect, reject=markers)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, script: str, connections: int, duration: float) -> WrkResult:
    threads = 1 if connections < 4 else 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
        command += ["--timeout", "10s", "-s", lua.name, url]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(lua.name)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(percentiles) != {"50", "99"}:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = int(re.search(r"^BAD (\d+)$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(
        requests=requests,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        errors=errors,
    )


# --- targets ---------------------------------------------------------------------------------


@dataclass
class Mocks:
    almanac: str
    autoposting: str

    def each(self) -> tuple[str, str]:
        return (self.almanac, self.autoposting)

    def set_latency(self, ms: float) -> None:
        for base in self.each():
            http("POST", f"{base}/__mock/latency?ms={ms:g}")

    def reset(self) -> None:
        for base in self.each():
            http("POST", f"{base}/__mock/reset")

    def calls(self) -> int:
        return sum(
            json.loads(http("GET", f"{base}/__mock/stats")[1])["total"] for base in self.each()
        )


@contextlib.contextmanager
def start_mocks() -> Iterator[tuple[Mocks, list[int]]]:
    ports = free_port(), free_port()
    command = [sys.executable, str(BENCH / "mocks.py")]
    with (
        process([*command, "almanac", "--port", str(ports[0])]) as almanac,
        process([*command, "autoposting", "--port", str(ports[1])]) as autoposting,
    ):
        mocks = Mocks(f"http://{HOST}:{ports[0]}", f"http://{HOST}:{ports[1]}")
        for base in mocks.each():
            wait_until(lambda base=base: http("GET", f"{base}/__mock/stats")[0] == 200, "a mock")
        yield mocks, [almanac.pid, autoposting.pid]


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    start: Callable[[Mocks, int], contextlib.AbstractContextManager[subprocess.Popen[bytes]]]
    operations: Callable[[], dict[str, Operation]]
    headers: dict[str, str]
    scenarios: tuple[str, ...] | None = None  # None: every scenario


def python_gateway(
    workers: int, *, tree: Path = ROOT, **settings: str
) -> Callable[[Mocks, int], contextlib.AbstractContextManager[subprocess.Popen[bytes]]]:
    """This gateway as `serve` starts it, from the checkout at `tree` (its own code: `python -m`
    puts the working directory first on the path)."""

    @contextlib.contextmanager
    def start(mocks: Mocks, port: int) -> Iterator[subprocess.Popen[bytes]]:
        env = {
            "GATEWAY_ALMANAC_URL": mocks.almanac,
            "GATEWAY_AUTOPOSTING_URL": mocks.autoposting,
            "GATEWAY_ALMANAC_TOKEN": ALMANAC_TOKEN,
            "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_KEY,
            "GATEWAY_API_KEYS": GATEWAY_KEY,
            "GATEWAY_REDIRECT_HOSTS": "app.example.com",
            "GATEWAY_LOG_LEVEL": "WARNING",
            # The checkout scenario starts checkouts far faster than a caller may (60 a minute).
            "GATEWAY_CHECKOUT_RATE_PER_MINUTE": "100000000",
            "GATEWAY_CHECKOUT_BURST": "100000000",
            **{k: v for k, v in os.environ.items() if k.startswith("GATEWAY_")},
            **settings,
        }
        command = [sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port", str(port)]
        with process([*command, "--workers", str(workers)], env=env, cwd=tree) as child:
            yield child

    return start


def hive_gateway(
    forks: int,
) -> Callable[[Mocks, int], contextlib.AbstractContextManager[subprocess.Popen[bytes]]]:
    @contextlib.contextmanager
    def start(mocks: Mocks, port: int) -> Iterator[subprocess.Popen[bytes]]:
        env = {
            "ALMANAC_URL": mocks.almanac,
            "AUTOPOSTING_URL": mocks.autoposting,
            "ALMANAC_TOKEN": ALMANAC_TOKEN,
            "AUTOPOSTING_KEY": AUTOPOSTING_KEY,
        }
        command = ["bash", str(NODE / "run.sh"), str(port), str(forks)]
        with process(command, env=env, cwd=NODE) as child:
            yield child

    return start


GATEWAY_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {GATEWAY_KEY}"}
HIVE_HEADERS = {"Content-Type": "application/json"}


def targets(workers: int, baseline: Path | None = None) -> dict[str, Target]:
    before = (
        {}
        if baseline is None
        else {
            f"baseline-{n}": Target(
                f"baseline-{n}",
                f"baseline ({baseline.name}), {n} worker{'s' if n > 1 else ''}",
                python_gateway(n, tree=baseline),
                lambda: GATEWAY_OPERATIONS,
                GATEWAY_HEADERS,
            )
            for n in (1, workers)
        }
    )
    return before | {
        "python-1": Target(
            "python-1",
            "this gateway, 1 worker",
            python_gateway(1),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
        ),
        f"python-{workers}": Target(
            f"python-{workers}",
            f"this gateway, {workers} workers",
            python_gateway(workers),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
        ),
        "hive-1": Target(
            "hive-1", "Hive Gateway, 1 process", hive_gateway(1), hive_operations, HIVE_HEADERS
        ),
        f"hive-{workers}": Target(
            f"hive-{workers}",
            f"Hive Gateway, {workers} processes",
            hive_gateway(workers),
            hive_operations,
            HIVE_HEADERS,
        ),
        # Compiled plans and the lean HTTP path off (GATEWAY_COMPILED_EXECUTION=false): today's
        # Strawberry executor and view, for the CPU per request with plans on and off.
        "python-1-noplans": Target(
            "python-1-noplans",
            "this gateway, 1 worker, plans off",
            python_gateway(1, GATEWAY_COMPILED_EXECUTION="false"),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
        ),
        f"python-{workers}-noplans": Target(
            f"python-{workers}-noplans",
            f"this gateway, {workers} workers, plans off",
            python_gateway(workers, GATEWAY_COMPILED_EXECUTION="false"),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
        ),
        # Coalescing shares the upstream GETs of concurrent identical requests, which the
        # benchmark's 32 connections all are: the same gateway without it, for comparison.
        f"python-{workers}-nocoalesce": Target(
            f"python-{workers}-nocoalesce",
            f"this gateway, {workers} workers, coalescing off",
            python_gateway(workers, GATEWAY_COALESCE="false"),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
            scenarios=("one-org-32", "five-orgs-32"),
        ),
        # Coalescing without starting the next GET ahead (GATEWAY_COALESCE_AHEAD=0): callers
        # that share a GET wait for it, and come back, in step.
        f"python-{workers}-noahead": Target(
            f"python-{workers}-noahead",
            f"this gateway, {workers} workers, no GET ahead",
            python_gateway(workers, GATEWAY_COALESCE_AHEAD="0"),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
            scenarios=("one-org-32", "five-orgs-32", "one-org-32-0ms", "five-orgs-32-0ms"),
        ),
        "python-1-noahead": Target(
            "python-1-noahead",
            "this gateway, 1 worker, no GET ahead",
            python_gateway(1, GATEWAY_COALESCE_AHEAD="0"),
            lambda: GATEWAY_OPERATIONS,
            GATEWAY_HEADERS,
            scenarios=("one-org-32", "five-orgs-32", "one-org-32-0ms", "five-orgs-32-0ms"),
        ),
    }


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    calls_per_query: float
    cpu_ms_per_request: float
    peak_rss_mb: float
    errors: int
    requests: int
    # CPU seconds per second of the run (of the machine's cores), and its split over processes.
    cores_used: float = 0.0
    split: str = ""


def measure(
    url: str,
    operation: Operation,
    headers: dict[str, str],
    scenario: Scenario,
    mocks: Mocks,
    pids: Callable[[], list[int]],
    duration: float,
    warmup: float,
) -> tuple[WrkResult, float, float, float, float, str]:
    script = lua_script("POST", operation.body(), headers, operation.expect, operation.reject)
    mocks.set_latency(scenario.latency_ms)
    wrk(url, script, scenario.connections, warmup)
    mocks.reset()
    processes = pids()
    cpu_before = cpu_by_process(processes)
    result = wrk(url, script, scenario.connections, duration)
    cpu_after = cpu_by_process(processes)
    cpu = sum(cpu_after.values()) - sum(cpu_before.values())
    # wrk closes its connections with one request in flight on each, whose upstream calls the
    # mocks have mostly counted already: count those requests as started.
    calls = mocks.calls() / max(result.requests + scenario.connections, 1)
    return (
        result,
        calls,
        cpu * 1000 / max(result.requests, 1),
        peak_rss_mb(processes),
        cpu / duration,
        cpu_split(cpu_before, cpu_after),
    )


def bare_mock_rows(mocks: Mocks, mock_pids: list[int], duration: float, warmup: float) -> list[Row]:
    """The mocks alone: the upstream latency a gateway cannot go below, and their capacity."""
    rows = []
    url = f"{mocks.almanac}/v1/organizations/org_acme/billing"
    operation = Operation("", expect='"organization_id"', reject=())
    for connections, latency in ((32, 20), (1, 20), (32, 0), (1, 0)):
        mocks.set_latency(latency)
        script = lua_script(
            "GET", "", {"Authorization": f"Bearer {ALMANAC_TOKEN}"}, operation.expect, ()
        )
        script = script.replace("wrk.body = [==[]==]", "wrk.body = nil")
        wrk(url, script, connections, warmup)
        before = cpu_by_process(mock_pids)
        result = wrk(url, script, connections, duration)
        after = cpu_by_process(mock_pids)
        cpu = sum(after.values()) - sum(before.values())
        rows.append(
            Row(
                "mock (bare)",
                f"GET billing, {connections} conn, {latency} ms",
                result.rps,
                result.p50_ms,
                result.p99_ms,
                1.0,
                cpu * 1000 / max(result.requests, 1),
                peak_rss_mb(mock_pids),
                result.errors,
                result.requests,
                cpu / duration,
                cpu_split(before, after),
            )
        )
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: Row) -> str:
    return (
        f"| {row.target} | {row.scenario} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} "
        f"| {row.calls_per_query:.1f} | {row.cpu_ms_per_request:.2f} | {row.peak_rss_mb:.0f} "
        f"| {row.errors} | {row.cores_used:.2f} | {row.split} |"
    )


HEADER = (
    "| target | scenario | requests/s | p50 ms | p99 ms | upstream calls/query "
    "| CPU ms/request | peak RSS MB | errors | cores used | CPU split % |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def ensure_node() -> None:
    if not (NODE / "node_modules").exists() or not (NODE / "supergraph.graphql").exists():
        print("setting up Hive Gateway (bench/node/setup.sh) ...", flush=True)
        subprocess.run(["bash", str(NODE / "setup.sh")], cwd=NODE, check=True)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for package in (
        "strawberry-graphql",
        "graphql-core",
        "starlette",
        "uvicorn",
        "httpx",
        "uvloop",
        "httptools",
        "orjson",
    ):
        with contextlib.suppress(Exception):
            found[package] = version(package)
    with contextlib.suppress(Exception):
        found["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip()
        lock = json.loads((NODE / "package-lock.json").read_text())
        found["@graphql-hive/gateway"] = lock["packages"]["node_modules/@graphql-hive/gateway"][
            "version"
        ]
    with contextlib.suppress(Exception):
        found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[
            1
        ]
    return found


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return f"{os.cpu_count()} cores ({model}), {memory_gib} GiB, Linux {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per run")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="N (default: cores)"
    )
    parser.add_argument(
        "--targets",
        help="comma-separated subset of python-1,python-N,hive-1,hive-N,python-N-nocoalesce,"
        "python-1-noahead,python-N-noahead,python-1-noplans,python-N-noplans (and baseline-1,"
        "baseline-N with --baseline)",
    )
    parser.add_argument(
        "--scenarios", help="comma-separated subset of " + ",".join(s.name for s in SCENARIOS)
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare mock rows")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the median is kept")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add), run as targets baseline-1 and "
        "baseline-N beside the others: before and after in one run",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    chosen = targets(args.workers, args.baseline.resolve() if args.baseline else None)
    if args.targets:
        chosen = {name: chosen[name] for name in args.targets.split(",")}
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios.split(",")]
    if any(name.startswith("hive") for name in chosen):
        ensure_node()
    started = time.strftime("%Y-%m-%d %H:%M")
    rows: list[Row] = []
    print(HEADER, flush=True)
    with start_mocks() as (mocks, mock_pids):
        if not args.no_bare:
            rows += bare_mock_rows(mocks, mock_pids, args.duration, args.warmup)
        for target in chosen.values():
            port = free_port()
            operations = target.operations()
            with target.start(mocks, port) as child:
                url = f"http://{HOST}:{port}/graphql"
                body = operations["one_org"].body().encode()
                headers = target.headers
                wait_until(
                    lambda url=url, body=body, headers=headers: (
                        http("POST", url, body, **headers)[0] == 200
                    ),
                    target.label,
                )
                for scenario in scenarios:
                    if target.scenarios is not None and scenario.name not in target.scenarios:
                        continue
                    runs = [
                        measure(
                            url,
                            operations[scenario.operation],
                            target.headers,
                            scenario,
                            mocks,
                            lambda: tree(child.pid),
                            args.duration,
                            args.warmup,
                        )
                        for _ in range(args.repeat)
                    ]
                    runs.sort(key=lambda run: run[0].rps)
                    result, calls, cpu, rss, cores, split = runs[len(runs) // 2]
                    row = Row(
                        target.label,
                        scenario.what,
                        result.rps,
                        result.p50_ms,
                        result.p99_ms,
                        calls,
                        cpu,
                        rss,
                        result.errors,
                        result.requests,
                        cores,
                        split,
                    )
                    rows.append(row)
                    print(format_row(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    found = versions()
    report = (
        f"Run {started}: `{command.strip()}`, {args.duration:g} s per row after {args.warmup:g} s "
        f"of warm-up, median of {args.repeat}.\n\nMachine: {machine()}.\n\nVersions: "
        + ", ".join(f"{k} {v}" for k, v in found.items())
        + "\n\n"
        + HEADER
        + "\n"
        + "\n".join(format_row(row) for row in rows)
        + "\n"
    )
    (RESULTS / "latest.md").write_text(report)
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "started": started,
                "command": command,
                "versions": found,
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        )
    )
    print(f"\nwritten: {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
