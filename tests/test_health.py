"""/healthz and /readyz: open (readiness details need a key), JSON, and readiness probing each
upstream at most once per window."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.http.health import CheckResult, Readiness
from gateway.provider import Provider
from gateway.sandbox import Fault, SandboxState
from tests.support import TEST_API_KEY, make_settings, sandbox_transports, serve

# /readyz names its checks only to a caller with a gateway key (tests/test_hostile_edge.py).
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_healthz_answers_ok_without_a_gateway_key_or_an_upstream_call(
    state: SandboxState,
) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert state.count() == 0


async def test_readyz_is_ready_when_both_upstreams_answer(state: SandboxState) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.get("/readyz", headers=KEY)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    # Almanac has no health endpoint: its API root answering at all (404 here) is reachable.
    assert body["checks"]["almanac"] | {"latency_ms": 0} == {
        "status": "up",
        "circuit": "closed",
        "http_status": 404,
        "latency_ms": 0,
    }
    assert body["checks"]["autoposting"]["status"] == "up"
    assert body["checks"]["autoposting"]["circuit"] == "closed"
    # Probes carry no credential.
    assert all(call.headers.get("authorization") is None for call in state.calls())


async def test_readyz_answers_503_naming_the_upstream_that_is_down(state: SandboxState) -> None:
    state.add_fault("autoposting", Fault(status=503, body={"success": False}), path="/health")
    transports = {
        **sandbox_transports(state),
        Provider.ALMANAC: httpx.MockTransport(_unreachable),
    }
    async with serve(make_settings(), transports) as client:
        response = await client.get("/readyz", headers=KEY)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["almanac"]["status"] == "down"
    assert body["checks"]["almanac"]["error"] == "UPSTREAM_UNREACHABLE"
    assert body["checks"]["autoposting"]["status"] == "down"
    assert body["checks"]["autoposting"]["http_status"] == 503


async def test_readyz_probes_each_upstream_once_per_cache_window(state: SandboxState) -> None:
    async with serve(make_settings(), sandbox_transports(state)) as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(5)))
        await client.get("/readyz")

    assert {answer.status_code for answer in answers} == {200}
    assert state.count("autoposting", path="/health") == 1
    assert state.count("almanac") == 1


async def test_readyz_probes_again_once_the_cache_expires(state: SandboxState) -> None:
    settings = make_settings(GATEWAY_READY_CACHE_SECONDS="0")
    async with serve(settings, sandbox_transports(state)) as client:
        await client.get("/readyz")
        await client.get("/readyz")

    assert state.count("autoposting", path="/health") == 2


async def test_failing_probes_never_open_the_circuit_breaker(state: SandboxState) -> None:
    settings = make_settings(GATEWAY_READY_CACHE_SECONDS="0", GATEWAY_BREAKER_FAILURES="1")
    transports = {**sandbox_transports(state), Provider.ALMANAC: httpx.MockTransport(_unreachable)}
    async with serve(settings, transports) as client:
        for _ in range(3):
            response = await client.get("/readyz", headers=KEY)

    assert response.status_code == 503
    assert response.json()["checks"]["almanac"]["circuit"] == "closed"


async def test_a_check_that_raises_reads_as_down_not_as_a_500() -> None:
    async def broken() -> CheckResult:
        raise RuntimeError("bug")

    async def fine() -> CheckResult:
        return CheckResult(True)

    ready, checks = await Readiness({"a": broken, "b": fine}, cache_seconds=5).report()

    assert not ready
    assert checks == {"a": {"status": "down", "error": "RuntimeError"}, "b": {"status": "up"}}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GATEWAY_READY_CACHE_SECONDS": "-1"}, "GATEWAY_READY_CACHE_SECONDS"),
        ({"GATEWAY_READY_TIMEOUT_SECONDS": "0"}, "GATEWAY_READY_TIMEOUT_SECONDS"),
    ],
)
def test_readiness_settings_are_checked(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_settings(**environ)
