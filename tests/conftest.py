from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.sandbox import RecordedCall, SandboxState
from gateway.upstreams._base import USER_AGENT
from tests.support import Gateway, make_settings


@pytest.fixture(autouse=True)
def no_upstream_request_carries_a_cookie(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails any test in which the gateway sent a sandbox a Cookie header.

    Every sandbox answer sets a cookie; reached by name (`SandboxThread(host="localhost")`) a
    client with a cookie jar would send it back with the next caller's request. Only the gateway's
    requests count: tests talk to the sandboxes directly with clients that keep cookies."""
    carried: list[RecordedCall] = []
    record = SandboxState.record

    def recording(state: SandboxState, call: RecordedCall) -> None:
        if "cookie" in call.headers and call.headers.get("user-agent") == USER_AGENT:
            carried.append(call)
        record(state, call)

    monkeypatch.setattr(SandboxState, "record", recording)
    yield
    assert not carried, [f"{call.provider} {call.method} {call.path}" for call in carried]


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
async def gateway(state: SandboxState) -> AsyncIterator[Gateway]:
    gw = Gateway(settings=make_settings(), state=state)
    yield gw
    await gw.aclose()
