"""Request ids, access logs, /metrics, tracing and graceful shutdown."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.__main__ import DEMO_API_KEY, demo_environ
from gateway.__main__ import main as cli
from gateway.app import create_app
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    Fault,
    SandboxState,
    SandboxThread,
)
from gateway.settings import load_settings
from gateway.telemetry.logs import JSONFormatter, TextFormatter
from gateway.telemetry.metrics import MAX_OPERATION_NAMES, Metrics
from gateway.upstreams.endpoints import endpoint_template
from tests.servers import ServerThread
from tests.support import (
    AUTOPOSTING_CHECKOUT,
    START_CHECKOUT,
    TEST_API_KEY,
    Gateway,
    make_settings,
    sandbox_transports,
    serve,
)

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
BILLING = """
query Billing {
  acme: billingAccount(provider: ALMANAC, accountId: "org_acme") { __typename }
  social: billingAccount(provider: AUTOPOSTING) { __typename }
}
"""
REQUEST_TOKEN = "alm_per_request_secret_token"


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text `text`."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


# --- request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-123_abc", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("bad\tid", False),
        (None, False),
    ],
)
async def test_a_sane_request_id_is_kept_and_any_other_replaced(
    state: SandboxState, sent: str | None, kept: bool
) -> None:
    headers = {**KEY, **({"x-request-id": sent} if sent is not None else {})}
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.post("/graphql", json={"query": BILLING}, headers=headers)

    request_id = response.headers["x-request-id"]
    if kept:
        assert request_id == sent
    else:
        assert len(request_id) == 32
        assert int(request_id, 16) >= 0
    # Forwarded to every upstream call the request made.
    assert state.count() == 2
    assert {call.headers["x-request-id"] for call in state.calls()} == {request_id}


async def test_every_answer_carries_a_request_id(state: SandboxState) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        answers = [
            await client.get("/healthz"),
            await client.post("/graphql", json={"query": "{ __typename }"}),  # 401
            await client.get("/nowhere"),
        ]

    assert all(len(answer.headers["x-request-id"]) == 32 for answer in answers)


# --- access log and secrets ----------------------------------------------------------------------


async def test_one_access_line_per_request_says_what_happened(
    state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    state.add_fault("almanac", Fault(status=503, body={"error": "down"}))
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.post(
            "/graphql", json={"query": BILLING}, headers={**KEY, "x-request-id": "r-1"}
        )

    [record] = [r for r in caplog.records if r.name == "gateway.access"]
    line = json.loads(JSONFormatter().format(record))
    assert response.status_code == 200
    assert line | {"time": "", "duration_ms": 0} == {
        "time": "",
        "level": "INFO",
        "logger": "gateway.access",
        "message": "POST /graphql 200",
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "duration_ms": 0,
        "request_id": "r-1",
        "upstream_calls": 2,
        "upstream_failures": ["almanac:503"],
        "key": "GATEWAY_API_KEYS[1]",
        "operation": "Billing",
        "outcome": "ok",
        "error_codes": [],
    }
    assert "request_id=r-1" in TextFormatter().format(record)


ACCESS_CASES = [
    {"query": BILLING},
    {"query": BILLING, "operationName": "Billing"},
    {"query": "query Named { nope }"},
    {"query": "{ billingAccount(provider: ALMANAC) { __typename } }"},
    {"query": "query A { __typename } query B { __typename }", "operationName": "B"},
    {"query": START_CHECKOUT.replace("mutation", "mutation   Spaced", 1), "variables": {}},
]


async def test_the_access_line_is_the_same_whoever_answered_the_request(
    state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    """The lean path (compiled execution on) hands the middleware what it decoded and sent; the
    view (off) leaves it to parse both bodies: the same fields either way."""
    state.add_fault("almanac", Fault(status=503, body={"error": "down"}))
    caplog.set_level(logging.INFO, logger="gateway.access")
    fields: dict[str, list[tuple[object, ...]]] = {}
    for compiled in ("true", "false"):
        caplog.clear()
        settings = make_settings(GATEWAY_COMPILED_EXECUTION=compiled)
        async with serve(settings, sandbox_transports(state)) as client:
            for body in ACCESS_CASES:
                await client.post("/graphql", json=body, headers=KEY)
        lines = [json.loads(JSONFormatter().format(r)) for r in caplog.records]
        fields[compiled] = [
            (line["status"], line["operation"], line["outcome"], line["error_codes"])
            for line in lines
            if line.get("logger") == "gateway.access"
        ]

    assert fields["true"] == fields["false"]
    assert fields["true"] == [
        (200, "Billing", "ok", []),
        (200, "Billing", "ok", []),
        (200, "other", "refused", ["INVALID_QUERY"]),  # a new name takes no label when refused
        (200, "anonymous", "ok", []),
        (200, "B", "ok", []),
        (200, "other", "refused", ["INVALID_QUERY"]),  # its variables missing
    ]


async def test_no_log_line_of_a_failing_or_succeeding_request_shows_a_credential(
    state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = (TEST_API_KEY, ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY, REQUEST_TOKEN)
    async with serve(make_settings(), sandbox_transports(state)) as client:
        await client.post("/graphql", json={"query": BILLING}, headers=KEY)
        # Failing: a credential the upstream rejects, an upstream fault, a wrong gateway key.
        state.add_fault("autoposting", Fault(drop=True))
        await client.post(
            "/graphql",
            json={"query": BILLING},
            headers={**KEY, "x-almanac-token": REQUEST_TOKEN},
        )
        await client.post(
            "/graphql",
            json={"query": BILLING},
            headers={"authorization": f"Bearer {REQUEST_TOKEN}"},
        )

    lines = [
        formatter.format(record)
        for record in caplog.records
        for formatter in (JSONFormatter(), TextFormatter())
    ]
    assert len([r for r in caplog.records if r.name == "gateway.access"]) == 3
    assert any("failed" in line or "answered 401" in line for line in lines)
    for line in lines:
        for secret in secrets:
            assert secret not in line, line


# --- metrics -------------------------------------------------------------------------------------


async def test_metrics_count_operations_upstream_calls_and_replays(state: SandboxState) -> None:
    settings = make_settings(GATEWAY_GET_RETRIES="1")
    state.add_fault("almanac", Fault(status=503, body={}), times=1)
    async with serve(settings, sandbox_transports(state)) as client:
        await client.post("/graphql", json={"query": BILLING}, headers=KEY)
        await client.post("/graphql", json={"query": "{ nope }"}, headers=KEY)
        await client.post("/graphql", json={"query": BILLING})  # no key
        checkout = {"input": {**AUTOPOSTING_CHECKOUT, "idempotencyKey": "k1"}}
        for _ in range(2):
            await client.post(
                "/graphql", json={"query": START_CHECKOUT, "variables": checkout}, headers=KEY
            )
        refused = await client.get("/metrics")
        text = (await client.get("/metrics", headers=KEY)).text

    assert refused.status_code == 401
    ops = "gateway_graphql_operations_total"
    assert _sample(text, ops, operation="Billing", outcome="ok") == 1
    assert _sample(text, ops, operation="anonymous", outcome="refused") == 1
    # A request without a key is never labelled by its operation name.
    assert _sample(text, ops, operation="unauthenticated", outcome="refused") == 1
    assert _sample(text, ops, operation="StartCheckout", outcome="ok") == 2
    latency = "gateway_graphql_operation_duration_seconds_count"
    assert _sample(text, latency, operation="Billing", outcome="ok") == 1
    upstream = "gateway_upstream_requests_total"
    billing = "/v1/organizations/{id}/billing"  # the template: never the raw organization id
    assert _sample(text, upstream, provider="almanac", endpoint=billing, status="503") == 1
    assert _sample(text, upstream, provider="almanac", endpoint=billing, status="200") == 1
    assert (
        _sample(text, "gateway_upstream_retries_total", provider="almanac", endpoint=billing) == 1
    )
    assert "org_acme" not in text
    assert _sample(text, "gateway_upstream_circuit_state", provider="almanac") == 0
    assert _sample(text, "gateway_idempotency_keys_total", result="new") == 1
    assert _sample(text, "gateway_idempotency_keys_total", result="replay") == 1
    # Never a raw account id as a label value.
    assert "org_acme" not in text


async def test_the_circuit_state_gauge_shows_an_open_breaker(state: SandboxState) -> None:
    settings = make_settings(GATEWAY_BREAKER_FAILURES="1", GATEWAY_METRICS_OPEN="true")
    state.add_fault("autoposting", Fault(status=503, body={}))
    async with serve(settings, sandbox_transports(state)) as client:
        await client.post("/graphql", json={"query": BILLING}, headers=KEY)
        text = (await client.get("/metrics")).text  # open: no key asked

    assert _sample(text, "gateway_upstream_circuit_state", provider="autoposting") == 2
    transitions = "gateway_upstream_circuit_transitions_total"
    assert _sample(text, transitions, provider="autoposting", state="open") == 1


async def test_each_app_has_a_registry_of_its_own(state: SandboxState) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as first:
        await first.post("/graphql", json={"query": BILLING}, headers=KEY)
    async with serve(make_settings(), sandbox_transports(state)) as second:
        text = (await second.get("/metrics", headers=KEY)).text

    assert (
        _sample(text, "gateway_graphql_operations_total", operation="Billing", outcome="ok") is None
    )


def test_operation_names_beyond_the_limit_are_counted_as_other() -> None:
    metrics = Metrics()
    names = [metrics.operation_label(f"Op{i}") for i in range(MAX_OPERATION_NAMES + 5)]

    assert names[:MAX_OPERATION_NAMES] == [f"Op{i}" for i in range(MAX_OPERATION_NAMES)]
    assert set(names[MAX_OPERATION_NAMES:]) == {"other"}
    assert metrics.operation_label("Op0") == "Op0"
    assert metrics.operation_label("not a name!") == "other"
    assert metrics.operation_label("x" * 65) == "other"
    assert metrics.operation_label(None) == "anonymous"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/organizations/org_acme/billing", "/v1/organizations/{id}/billing"),
        ("/v1/organizations/org%2Fx/billing/checkout", "/v1/organizations/{id}/billing/checkout"),
        ("/v1/organizations/a/b/billing", "other"),
        ("/billing/status", "/billing/status"),
        ("/somewhere/else", "other"),
    ],
)
def test_an_upstream_path_is_labelled_by_its_endpoint_template(path: str, expected: str) -> None:
    templates = (
        "/v1/organizations/{id}/billing",
        "/v1/organizations/{id}/billing/checkout",
        "/billing/status",
    )

    assert endpoint_template(path, templates) == expected


# --- tracing -------------------------------------------------------------------------------------


async def test_tracing_shows_the_operation_and_each_upstream_call(state: SandboxState) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from gateway.schema import build_schema
    from gateway.telemetry import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    schema = build_schema(more=[tracing.operation_extension(provider)])
    gateway = Gateway(settings=make_settings(), state=state, schema=schema)
    assert gateway.clients is not None
    tracing.instrument_clients([gateway.clients.almanac, gateway.clients.autoposting], provider)
    try:
        await gateway.execute(BILLING)
    finally:
        await gateway.aclose()

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans if s.name.startswith("GraphQL Query")] == [
        "GraphQL Query: Billing"
    ]
    client_spans = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(client_spans) == state.count() == 2
    # Resolver arguments are not recorded.
    assert not any(
        "org_acme" in str((s.attributes or {}).get("graphql.param.accountId")) for s in spans
    )


# --- graceful shutdown ---------------------------------------------------------------------------


def test_a_request_in_flight_completes_when_the_server_is_asked_to_exit() -> None:
    with SandboxThread() as sandbox:
        sandbox.state.add_fault("almanac", Fault(delay=0.5))
        environ = demo_environ({}, sandbox.almanac_url, sandbox.autoposting_url, "http://gw.test")
        server = ServerThread(lambda url: create_app(load_settings(environ)))
        server.__enter__()
        try:
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    httpx.post,
                    f"{server.url}/graphql",
                    json={"query": BILLING},
                    headers={"authorization": f"Bearer {DEMO_API_KEY}"},
                    timeout=10,
                )
                deadline = time.monotonic() + 5
                while not sandbox.state.count("almanac") and time.monotonic() < deadline:
                    time.sleep(0.01)
                stopping_at = time.monotonic()
                server.__exit__(None, None, None)  # asks uvicorn to exit, waits for it
                response = pending.result()
        finally:
            server.__exit__(None, None, None)

    assert sandbox.state.count("almanac") == 1
    assert time.monotonic() - stopping_at < 5
    assert response.status_code == 200
    data: dict[str, Any] = response.json()["data"]
    assert data["acme"]["__typename"] == "BillingAccount"


# --- command line --------------------------------------------------------------------------------


def test_an_unknown_log_format_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_LOG_FORMAT", "xml")

    assert cli(["export-schema", "--output", "/dev/null"]) == 2
    assert "GATEWAY_LOG_FORMAT" in capsys.readouterr().err
