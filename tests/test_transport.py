"""The default transport (aiohttp under httpx) keeps `_base.py`'s contract over real loopback."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from gateway.clients import Clients
from gateway.credentials import Credential
from gateway.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnreachable
from gateway.provider import Provider
from gateway.sandbox import ALMANAC_OWNER_TOKEN, Fault, RunningSandbox, start_sandbox
from gateway.telemetry.request_id import REQUEST_ID
from gateway.upstreams import AlmanacClient
from gateway.upstreams.transport import UpstreamTransport, _httpx_error, environment_proxy
from tests.support import make_settings

TOKEN = Credential(ALMANAC_OWNER_TOKEN)
BILLING = "/v1/organizations/org_acme/billing"


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    async with start_sandbox() as running:
        yield running


def client_for(url: str, read_timeout: float | None = None) -> AlmanacClient:
    upstream = make_settings(GATEWAY_GET_RETRIES="0").upstream(Provider.ALMANAC)
    upstream = dataclasses.replace(upstream, base_url=url)
    if read_timeout is not None:
        upstream = dataclasses.replace(upstream, read_timeout=read_timeout)
    return AlmanacClient(upstream)


def test_the_clients_default_transport_is_the_aiohttp_one_with_the_configured_pool() -> None:
    clients = Clients.create(
        make_settings(GATEWAY_UPSTREAM_MAX_CONNECTIONS="37"), drift=lambda drift: None
    )

    for client in (clients.almanac, clients.autoposting):
        transport = client._http._transport
        assert isinstance(transport, UpstreamTransport)
        assert transport.limits.max_connections == 37
        assert transport.limits.max_keepalive_connections == 37


async def test_a_get_over_loopback_decodes_json_and_sends_the_request_id(
    sandbox: RunningSandbox,
) -> None:
    client = client_for(sandbox.almanac_url)
    token = REQUEST_ID.set("req-transport-1")
    try:
        body = await client.get_billing_state("org_acme", credential=TOKEN)
        await client.get_billing_state("org_acme", credential=TOKEN)  # a kept-alive connection
    finally:
        REQUEST_ID.reset(token)
        await client.aclose()

    assert isinstance(body, dict)
    calls = sandbox.state.calls("almanac")
    assert [c.headers.get("x-request-id") for c in calls] == ["req-transport-1"] * 2
    assert calls[0].headers["authorization"] == f"Bearer {ALMANAC_OWNER_TOKEN}"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(delay=0.5), UpstreamTimeout),
        (Fault(drop=True), UpstreamUnreachable),
        (Fault(drop_after=5), UpstreamUnreachable),
        (Fault(status=200, body="<html></html>", content_type="text/html"), UpstreamBadResponse),
    ],
    ids=["read-timeout", "dropped", "dropped-mid-response", "html"],
)
async def test_upstream_faults_over_loopback_map_to_their_errors_after_one_request(
    sandbox: RunningSandbox, fault: Fault, error: type[Exception]
) -> None:
    client = client_for(sandbox.almanac_url, read_timeout=0.2)
    await client.get_billing_state("org_acme", credential=TOKEN)  # the pool keeps a connection
    sandbox.state.reset()
    sandbox.state.add_fault("almanac", fault)
    try:
        with pytest.raises(error) as raised:
            await client.get_billing_state("org_acme", credential=TOKEN)
    finally:
        await client.aclose()

    assert isinstance(raised.value.__cause__, httpx.HTTPError | None)
    # aiohttp's own resend of a GET dropped on a kept-alive connection is off.
    assert sandbox.state.count("almanac") == 1


async def test_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(UpstreamUnreachable) as raised:
            await client.get_billing_state("org_acme", credential=TOKEN)
    finally:
        await client.aclose()

    assert isinstance(raised.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("aiohttp_error", "httpx_error"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientOSError(), httpx.ReadError),
        (aiohttp.ClientPayloadError(), httpx.ReadError),
        (aiohttp.ClientConnectionResetError(), httpx.ReadError),
        (aiohttp.InvalidURL("x"), httpx.TransportError),
    ],
)
def test_aiohttp_errors_map_to_the_httpx_errors_base_maps(
    aiohttp_error: aiohttp.ClientError, httpx_error: type[httpx.TransportError]
) -> None:
    assert type(_httpx_error(aiohttp_error)) is httpx_error


def test_a_refused_connection_maps_to_connect_error_not_a_timeout() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    error = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))

    assert type(_httpx_error(error)) is httpx.ConnectError


def test_the_environments_proxy_is_found_with_its_credentials_and_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://app.autoposting.ai/api-proxy") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "almanac.internal")
    proxy = environment_proxy("https://app.autoposting.ai/api-proxy")
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.user, proxy.password) == (
        "proxy.internal",
        3128,
        "user",
        "secret",
    )
    assert environment_proxy("https://almanac.internal/v1") is None
    assert environment_proxy("http://app.autoposting.ai/api-proxy") is None


async def test_the_pooled_session_does_not_consult_the_environment_on_each_request(
    sandbox: RunningSandbox,
) -> None:
    # trust_env would read the proxy variables and ~/.netrc in a worker thread per request.
    client = client_for(sandbox.almanac_url)
    try:
        await client.get_billing_state("org_acme", credential=TOKEN)
        transport = client._http._transport
        assert isinstance(transport, UpstreamTransport)
        session = transport.client
        assert isinstance(session, aiohttp.ClientSession)
        assert session.trust_env is False
    finally:
        await client.aclose()
