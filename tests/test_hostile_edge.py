"""Small hostile requests at the HTTP edge (finding 6 of "Safe to expose"): one table, one row per
case, each naming the part of the finding it covers.

Finding 6: without a key, each `GET /graphql?operationName=X_N&query=x` registered an `operation`
label, and after 100 of them real operations were counted as `other` (6a); other labels took
values an upstream chose (6b); `POST /graphql/` with `Host: evil.example` answered a redirect to
`http://evil.example/graphql` (6c); no Host allow-list (6d); `/readyz` told anyone the circuit
state and upstream latency (6e); `serve` held any number of requests and kept-alive connections
with no limit from the settings (6f).

Each row runs against the real app (in process, with its lifespan, over the sandbox upstreams), or
under uvicorn with the options `serve` passes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from gateway import __main__ as cli
from gateway.app import create_app
from gateway.keys import Permission
from gateway.sandbox import SandboxState
from gateway.settings import Settings
from gateway.telemetry.metrics import MAX_OPERATION_NAMES, Metrics
from tests.support import TEST_API_KEY, make_settings, sandbox_transports, serve

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
OPERATIONS = "gateway_graphql_operations_total"


def _operation_labels(metrics_text: str) -> dict[str, float]:
    """operation label -> requests counted, over every outcome."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == OPERATIONS:
                name = sample.labels["operation"]
                counts[name] = counts.get(name, 0) + sample.value
    return counts


def _assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == code


# --- the cases: each gets the sandbox's state and pytest's monkeypatch --------------------------


async def label_flood_without_a_key(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        for index in range(MAX_OPERATION_NAMES + 5):
            refused = await client.get(
                "/graphql", params={"operationName": f"X_{index}", "query": "x"}
            )
            assert refused.status_code == 401
        real = await client.post(
            "/graphql", json={"query": "query Real { __typename }"}, headers=KEY
        )
        assert real.status_code == 200
        labels = _operation_labels((await client.get("/metrics", headers=KEY)).text)

    assert labels == {"unauthenticated": MAX_OPERATION_NAMES + 5, "Real": 1}
    assert state.count() == 0


async def refused_operations_take_no_label(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        for index in range(MAX_OPERATION_NAMES + 5):
            refused = await client.get(
                "/graphql", params={"operationName": f"Y_{index}", "query": "x"}, headers=KEY
            )
            assert refused.json()["errors"][0]["extensions"]["code"] == "INVALID_QUERY"
        await client.post("/graphql", json={"query": "query Real { __typename }"}, headers=KEY)
        labels = _operation_labels((await client.get("/metrics", headers=KEY)).text)

    assert labels == {"other": MAX_OPERATION_NAMES + 5, "Real": 1}


async def an_upstream_status_outside_http_is_one_label(
    state: SandboxState, _: pytest.MonkeyPatch
) -> None:
    metrics = Metrics()
    for status in ("200", "404", "599", "999", "UpstreamTimeout"):
        metrics.request_finished("almanac", "GET", "/v1/x", status, 0.01)
    statuses = {
        sample.labels["status"]
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "gateway_upstream_requests_total"
    }

    assert statuses == {"200", "404", "other", "UpstreamTimeout"}


async def no_redirect_names_a_hostile_host(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    hostile = {"host": "evil.example"}
    async with serve(make_settings(), sandbox_transports(state)) as client:
        slash = await client.post("/graphql/", json={"query": "{ __typename }"}, headers=hostile)
        root = await client.get("/", headers=hostile)

    assert "location" not in slash.headers
    _assert_json_error(slash, 404, "NOT_FOUND")
    assert root.status_code == 307
    assert root.headers["location"] == "/graphql"  # relative: no host in it
    assert state.count() == 0


async def a_host_off_the_allow_list_is_refused(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    settings = make_settings(GATEWAY_ALLOWED_HOSTS="api.example.com,*.gateway.example")
    query = {"query": "{ __typename }"}
    async with serve(settings, sandbox_transports(state)) as client:
        refusals = [
            await client.post("/graphql", json=query, headers={**KEY, "host": host})
            for host in ("evil.example", "example.com", "gateway.example", "api.example.com@evil")
        ]
        allowed = [
            await client.post("/graphql", json=query, headers={**KEY, "host": host})
            for host in ("api.example.com", "API.example.com:8443", "eu.gateway.example")
        ]
        probe = await client.get("/healthz", headers={"host": "10.0.0.7:8000"})

    for refusal in refusals:
        _assert_json_error(refusal, 421, "MISDIRECTED_REQUEST")
        assert "evil" not in refusal.text
    assert [response.status_code for response in allowed] == [200, 200, 200]
    assert probe.status_code == 200  # an orchestrator's probe names the pod's address


async def readyz_details_need_a_key(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        anonymous = await client.get("/readyz")
        wrong = await client.get("/readyz", headers={"authorization": "Bearer not-a-key"})
        keyed = await client.get("/readyz", headers=KEY)
    no_keys = make_settings(
        GATEWAY_API_KEYS="", GATEWAY_ALMANAC_TOKEN="", GATEWAY_AUTOPOSTING_API_KEY=""
    )
    async with serve(no_keys, sandbox_transports(state)) as client:
        open_gateway = await client.get("/readyz")

    assert anonymous.status_code == wrong.status_code == keyed.status_code == 200
    assert anonymous.json() == wrong.json() == {"status": "ready"}
    assert keyed.json()["checks"]["almanac"]["circuit"] == "closed"
    assert "latency_ms" in keyed.json()["checks"]["autoposting"]
    assert "checks" in open_gateway.json()


async def readyz_details_need_metrics_read(state: SandboxState, _: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    [full] = settings.api_keys
    reader = dataclasses.replace(
        full,
        scope=dataclasses.replace(full.scope, permissions=frozenset({Permission.BILLING_READ})),
    )
    settings = dataclasses.replace(settings, api_keys=(reader,))
    async with serve(settings, sandbox_transports(state)) as client:
        response = await client.get("/readyz", headers=KEY)

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def serve_takes_its_limits_from_the_settings(
    state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    monkeypatch.setenv("GATEWAY_MAX_CONCURRENCY", "7")
    monkeypatch.setenv("GATEWAY_KEEP_ALIVE_SECONDS", "3")

    assert cli._serve("127.0.0.1", 0, 1) == 0

    [options] = calls
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (7, 3)
    # Options uvicorn knows, with the values it keeps.
    config = uvicorn.Config("gateway.app:create_app_from_environ", **options)
    assert (config.limit_concurrency, config.timeout_keep_alive) == (7, 3)


async def requests_past_the_concurrency_limit_get_503(
    state: SandboxState, _monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two: the request's own connection and one more, held open without a request.
    settings = make_settings(GATEWAY_MAX_CONCURRENCY="2")
    async with (
        _Uvicorn(settings, state) as (server, url),
        httpx.AsyncClient(base_url=url) as client,
    ):
        alone = await client.get("/healthz")
        _, idle = await asyncio.open_connection(server.config.host, server.config.port)
        for _ in range(500):  # until uvicorn has accepted it
            if len(server.server_state.connections) >= 2:
                break
            await asyncio.sleep(0.01)
        crowded = await client.get("/healthz")
        idle.close()

    assert alone.status_code == 200
    assert crowded.status_code == 503


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    finding: str
    check: Callable[[SandboxState, pytest.MonkeyPatch], Awaitable[None]]


CASES = [
    pytest.param(
        Case("6a: an operation label per name sent without a key", label_flood_without_a_key),
        id="6a-label-flood-without-a-key-then-a-real-operation",
    ),
    pytest.param(
        Case("6a: labels taken by operations that never ran", refused_operations_take_no_label),
        id="6a-refused-operations-take-no-label",
    ),
    pytest.param(
        Case("6b: label values an upstream chooses", an_upstream_status_outside_http_is_one_label),
        id="6b-upstream-status-outside-http",
    ),
    pytest.param(
        Case("6c: a redirect built from the Host header", no_redirect_names_a_hostile_host),
        id="6c-trailing-slash-and-root-with-a-hostile-host",
    ),
    pytest.param(
        Case("6d: no Host allow-list", a_host_off_the_allow_list_is_refused),
        id="6d-disallowed-host-with-the-allow-list-set",
    ),
    pytest.param(
        Case("6e: /readyz details to anyone", readyz_details_need_a_key),
        id="6e-readyz-without-and-with-a-key",
    ),
    pytest.param(
        Case("6e: /readyz details to a key without metrics:read", readyz_details_need_metrics_read),
        id="6e-readyz-with-a-key-lacking-metrics-read",
    ),
    pytest.param(
        Case("6f: serve's limits not from the settings", serve_takes_its_limits_from_the_settings),
        id="6f-serve-uvicorn-options-from-settings",
    ),
    pytest.param(
        Case("6f: no concurrency limit", requests_past_the_concurrency_limit_get_503),
        id="6f-concurrency-limit-under-uvicorn",
    ),
]


@pytest.mark.parametrize("case", CASES)
async def test_a_hostile_request_at_the_edge_is_refused_cheaply(
    case: Case, state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    await case.check(state, monkeypatch)


# --- helpers -------------------------------------------------------------------------------------


class _Uvicorn:
    """`async with _Uvicorn(settings, state) as (server, url)`: the app under uvicorn, in
    this event loop, with the options `serve` gives it (`server_options`)."""

    def __init__(self, settings: Settings, state: SandboxState) -> None:
        self.app = create_app(settings, transports=sandbox_transports(state))
        self.options = cli.server_options(settings)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> tuple[uvicorn.Server, str]:
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        host, port = self.socket.getsockname()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host=host, port=port, lifespan="on", log_level="warning", **self.options
            )
        )
        self.task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        return self.server, f"http://{host}:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        assert self.task is not None
        self.server.should_exit = True
        await self.task
        self.socket.close()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_MAX_CONCURRENCY": "0"}, "GATEWAY_MAX_CONCURRENCY"),
        ({"GATEWAY_KEEP_ALIVE_SECONDS": "-1"}, "GATEWAY_KEEP_ALIVE_SECONDS"),
        ({"GATEWAY_ALLOWED_HOSTS": "https://api.example.com"}, "GATEWAY_ALLOWED_HOSTS"),
        ({"GATEWAY_ALLOWED_HOSTS": "api.example.com:443"}, "GATEWAY_ALLOWED_HOSTS"),
    ],
)
def test_edge_settings_are_checked_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_settings(**environ)
