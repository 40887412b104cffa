"""The default transport (`UpstreamTransport`) keeps `_base.py`'s contract over real loopback.

Most tests call `UpstreamTransport.handle_async_request` directly against a small asyncio server
(tests/loopback_servers.py) that answers raw bytes the test chooses, and count what reached the
server: how many connections, how many requests, which bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.clients import Clients
from gateway.credentials import Credential
from gateway.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnreachable
from gateway.provider import Provider
from gateway.sandbox import ALMANAC_OWNER_TOKEN, Fault, RunningSandbox, start_sandbox
from gateway.telemetry.request_id import REQUEST_ID
from gateway.upstreams import AlmanacClient
from gateway.upstreams.transport import (
    DEFAULT_MAX_ANSWER_BYTES,
    AnswerTooLarge,
    UpstreamTransport,
    environment_proxy,
    no_cookies,
    upstream_transport,
)
from tests.loopback_servers import (
    TLS_HOST,
    LoopbackServer,
    Peer,
    answer,
    answering,
    client_tls_context,
    server_tls_context,
)
from tests.support import eventually, make_settings

TOKEN = Credential(ALMANAC_OWNER_TOKEN)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


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


def request(
    url: str,
    method: str = "GET",
    *,
    connect: float | None = 1.0,
    read: float | None = 1.0,
    pool: float | None = 1.0,
    json: object = None,
) -> httpx.Request:
    """A request as `_base.py` builds one: its timeouts in the `timeout` extension."""
    timeout = {"connect": connect, "read": read, "write": 1.0, "pool": pool}
    return httpx.Request(method, url, json=json, extensions={"timeout": timeout})


@contextlib.asynccontextmanager
async def pool(
    max_connections: int = 4,
    *,
    keepalive_expiry: float = 5.0,
    proxy: httpx.URL | None = None,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
) -> AsyncIterator[UpstreamTransport]:
    transport = UpstreamTransport(
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        proxy=proxy,
        ssl_context=client_tls_context(),
        max_answer_bytes=max_answer_bytes,
    )
    try:
        yield transport
    finally:
        await transport.aclose()


def idle_connections_closed(transport: UpstreamTransport) -> list[bool]:
    """Whether each pooled idle connection knows it is closed (white-box: the pool's own list)."""
    return [connection.closed for idle in transport._idle.values() for connection in idle]


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


# The clients' default transport, over the sandbox.


def test_the_clients_default_transport_is_the_upstream_transport_with_the_configured_pool() -> None:
    clients = Clients.create(
        make_settings(GATEWAY_UPSTREAM_MAX_CONNECTIONS="37"), drift=lambda drift: None
    )

    for client in (clients.almanac, clients.autoposting):
        transport = client._http._transport
        assert isinstance(transport, UpstreamTransport)
        assert transport.limits.max_connections == 37
        assert transport.limits.max_keepalive_connections == 37


async def silent_peer(peer: Peer) -> None:
    """A server (or proxy) that reads a request, never answers, and notes when the client
    hangs up."""
    if await peer.read_request() is not None:
        await peer.read_until_closed()
        peer.server.closed_by_client.append(peer.number)


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
    # Nothing is sent again, not even a GET dropped on a kept-alive connection.
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


# The environment's proxy.


def test_the_environments_proxy_is_found_with_its_credentials_and_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://app.autoposting.ai/api-proxy") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "almanac.internal")
    proxy = environment_proxy("https://app.autoposting.ai/api-proxy")
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.username, proxy.password) == (
        "proxy.internal",
        3128,
        "user",
        "secret",
    )
    assert environment_proxy("https://almanac.internal/v1") is None
    assert environment_proxy("http://app.autoposting.ai/api-proxy") is None


def test_a_proxy_named_without_a_scheme_is_a_plain_http_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "proxy.internal:3128")

    proxy = environment_proxy("http://almanac.internal/v1")

    assert proxy is not None
    assert (proxy.scheme, proxy.host, proxy.port, proxy.username) == (
        "http",
        "proxy.internal",
        3128,
        "",
    )


def test_a_proxy_that_is_not_plain_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")

    with pytest.raises(ValueError, match="socks5"):
        environment_proxy("https://app.autoposting.ai/api-proxy")


async def test_the_environment_is_read_once_when_the_transport_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    assert upstream_transport(max_connections=1, base_url="http://almanac.internal").proxy == (
        httpx.URL("http://proxy.internal:3128")
    )
    monkeypatch.delenv("HTTP_PROXY")

    async with LoopbackServer(answering(answer())) as server:
        transport = upstream_transport(max_connections=1, base_url=server.url)
        # A proxy named after the transport was made is not consulted (it does not exist).
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        try:
            response = await transport.handle_async_request(request(server.url))
        finally:
            await transport.aclose()

    assert transport.proxy is None
    assert response.status_code == 200
    assert len(server.requests) == 1


# Reuse of connections.


async def test_a_kept_alive_connection_is_reused_for_the_next_request() -> None:
    async with (
        LoopbackServer(answering(answer(body=b"first"), answer(body=b"second"))) as server,
        pool() as transport,
    ):
        first = await transport.handle_async_request(request(server.url + "/a"))
        second = await transport.handle_async_request(request(server.url + "/b"))
        assert transport.open_connections == 1

    assert (first.content, second.content) == (b"first", b"second")
    assert server.connections == 1
    assert [r.line for r in server.requests] == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"]


@pytest.mark.parametrize(
    "closing",
    [
        answer(headers=(("Connection", "close"),)),
        answer(version="HTTP/1.0"),
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_an_answer_that_asks_to_close_its_connection_is_not_reused(closing: bytes) -> None:
    # The server keeps the connection open itself: the client is the one to close it.
    async with LoopbackServer(answering(closing)) as server, pool() as transport:
        first = await transport.handle_async_request(request(server.url))
        await eventually(lambda: server.closed_by_client == [0])
        assert transport.open_connections == 0
        second = await transport.handle_async_request(request(server.url))

    assert (first.status_code, second.status_code) == (200, 200)
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [0, 1]


async def test_an_idle_connection_older_than_the_keepalive_expiry_is_not_reused() -> None:
    async with (
        LoopbackServer(answering(answer())) as server,
        pool(keepalive_expiry=0.05) as transport,
    ):
        await transport.handle_async_request(request(server.url))
        await asyncio.sleep(0.08)
        await transport.handle_async_request(request(server.url))
        await eventually(lambda: server.closed_by_client == [0])

    assert server.connections == 2
    assert [r.connection for r in server.requests] == [0, 1]


async def test_a_connection_the_server_closed_while_idle_is_not_used_for_the_next_request() -> None:
    async def answer_once_then_close(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(answer())  # nothing says the connection will close

    async with LoopbackServer(answer_once_then_close) as server, pool() as transport:
        await transport.handle_async_request(request(server.url))
        await eventually(lambda: idle_connections_closed(transport) == [True])
        response = await transport.handle_async_request(request(server.url))
        assert transport.open_connections == 1

    assert response.status_code == 200
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [0, 1]  # nothing was sent twice


# The pool's limit.


async def test_at_most_max_connections_are_open_at_once() -> None:
    async with (
        LoopbackServer(answering(answer(), delay=0.03)) as server,
        pool(max_connections=2) as transport,
    ):
        responses = await asyncio.gather(
            *(transport.handle_async_request(request(server.url)) for _ in range(5))
        )
        assert transport.open_connections == 2

    assert [r.status_code for r in responses] == [200] * 5
    assert server.most_open == 2
    assert server.connections == 2
    assert len(server.requests) == 5


async def test_waiting_longer_than_the_pool_timeout_raises_pool_timeout() -> None:
    release = asyncio.Event()

    async def hold_the_first_answer(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await release.wait()
            await peer.send(answer())

    async with (
        LoopbackServer(hold_the_first_answer) as server,
        pool(max_connections=1) as transport,
    ):
        first = asyncio.create_task(transport.handle_async_request(request(server.url)))
        await eventually(lambda: len(server.requests) == 1)
        with pytest.raises(httpx.PoolTimeout):
            await transport.handle_async_request(request(server.url, pool=0.05))
        release.set()
        assert (await first).status_code == 200
        # The place the timed-out request waited for is not lost.
        third = await transport.handle_async_request(request(server.url, pool=0.5))

    assert third.status_code == 200
    assert server.connections == 1
    assert len(server.requests) == 2  # the one that timed out never reached the wire


async def test_an_idle_connection_to_another_origin_gives_way_when_the_pool_is_full() -> None:
    async with (
        LoopbackServer(answering(answer(body=b"a"))) as a,
        LoopbackServer(answering(answer(body=b"b"))) as b,
        pool(max_connections=1) as transport,
    ):
        to_a = await transport.handle_async_request(request(a.url, pool=0.5))
        to_b = await transport.handle_async_request(request(b.url, pool=0.5))
        await eventually(lambda: a.closed_by_client == [0])
        assert transport.open_connections == 1

    assert (to_a.content, to_b.content) == (b"a", b"b")


# Answers.


async def test_a_chunked_body_is_read_whole_and_the_connection_reused() -> None:
    async def chunked(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"):
                await asyncio.sleep(0.005)
                await peer.send(part)

    async with LoopbackServer(chunked) as server, pool() as transport:
        first = await transport.handle_async_request(request(server.url))
        second = await transport.handle_async_request(request(server.url))

    assert first.content == second.content == b"hello world"
    assert server.connections == 1


async def test_an_answer_up_to_the_longest_read_is_read_and_a_longer_one_refused() -> None:
    chunked_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

    async def long_chunked(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(chunked_head + b"6\r\nsix by\r\n6\r\ntes ...\r\n0\r\n\r\n")
            await peer.read_until_closed()

    async with (
        LoopbackServer(answering(answer(body=b"x" * 10), answer(body=b"x" * 11))) as said,
        LoopbackServer(long_chunked) as unsaid,
        pool(max_answer_bytes=10) as transport,
    ):
        first = await transport.handle_async_request(request(said.url))
        with pytest.raises(AnswerTooLarge):  # its Content-Length says so: nothing more is read
            await transport.handle_async_request(request(said.url))
        with pytest.raises(AnswerTooLarge):  # a chunked one, once it has gone past the limit
            await transport.handle_async_request(request(unsaid.url))
        assert transport.open_connections == 0

    assert first.content == b"x" * 10


async def test_an_answer_longer_than_the_transport_reads_is_a_bad_response_not_resent(
    sandbox: RunningSandbox,
) -> None:
    client = client_for(sandbox.almanac_url)
    client._transport = UpstreamTransport(max_connections=1, max_answer_bytes=1000)
    client._http = httpx.AsyncClient(transport=client._transport)
    try:
        with pytest.raises(UpstreamBadResponse, match="longer than the gateway reads"):
            await client.get_billing_state("org_acme", credential=TOKEN)  # about 1,650 bytes
    finally:
        await client.aclose()

    assert sandbox.state.count("almanac") == 1


async def test_a_body_without_a_length_ends_where_the_server_closes_the_connection() -> None:
    async def close_delimited(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
            await asyncio.sleep(0.01)
            await peer.send(b"part two")
            await peer.close()

    async with LoopbackServer(close_delimited) as server, pool() as transport:
        first = await transport.handle_async_request(request(server.url))
        assert transport.open_connections == 0
        second = await transport.handle_async_request(request(server.url))

    assert first.content == second.content == b"part one, part two"
    assert server.connections == 2


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "two-writes"])
async def test_an_interim_answer_before_the_final_one_is_skipped(together: bool) -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    final = answer(status=201, reason="Created", body=b"made", headers=(("X-Final", "yes"),))

    async def early_hints(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if together:
                await peer.send(interim + final)
            else:
                await peer.send(interim)
                await asyncio.sleep(0.01)
                await peer.send(final)

    async with LoopbackServer(early_hints) as server, pool() as transport:
        response = await transport.handle_async_request(request(server.url))
        again = await transport.handle_async_request(request(server.url))

    assert (response.status_code, response.content, response.reason_phrase) == (
        201,
        b"made",
        "Created",
    )
    assert response.headers["x-final"] == "yes"
    assert "link" not in response.headers
    assert again.content == b"made"
    assert server.connections == 1


async def test_a_set_cookie_answer_leaves_nothing_behind() -> None:
    setting = answer(headers=(("Set-Cookie", "edge=caller-one; Path=/"),))
    async with LoopbackServer(answering(setting)) as server:
        url = f"http://localhost:{server.port}/"  # some jars keep no cookie for an IP address
        async with pool() as transport:
            await transport.handle_async_request(request(url))
            await transport.handle_async_request(request(url))
            # The client `_base.py` keeps over the transport (`no_cookies()`) keeps none either.
            async with httpx.AsyncClient(transport=transport, cookies=no_cookies()) as client:
                await client.get(url)
                await client.get(url)
            # A client with a jar of its own would have sent it back: the check can fail.
            async with httpx.AsyncClient(transport=transport) as keeping:
                await keeping.get(url)
                await keeping.get(url)

    cookies = [r.headers.get("cookie") for r in server.requests]
    assert cookies == [None, None, None, None, None, "edge=caller-one"]


async def test_bytes_arriving_on_an_idle_connection_close_it() -> None:
    async def answer_then_more(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(answer())
            await asyncio.sleep(0.01)
            await peer.send(answer(status=500, body=b"unasked"))

    async with LoopbackServer(answer_then_more) as server, pool() as transport:
        await transport.handle_async_request(request(server.url))
        await eventually(lambda: idle_connections_closed(transport) == [True])
        response = await transport.handle_async_request(request(server.url))

    assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 2


async def test_bytes_right_behind_the_answer_are_not_part_of_it_and_close_the_connection() -> None:
    unasked = b"HTTP/1.1 500 Oops\r\nX-Unasked: 1\r\nContent-Length: 7\r\n\r\nunasked"

    async def answer_and_more(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(answer() + unasked)  # one write: one read on the client's side

    async with LoopbackServer(answer_and_more) as server, pool() as transport:
        response = await transport.handle_async_request(request(server.url))
        await transport.handle_async_request(request(server.url))

    assert (response.status_code, response.content) == (200, b"ok")
    assert "x-unasked" not in response.headers
    assert server.connections == 2


async def test_an_https_upstream_is_reached_over_tls_and_its_connection_kept(
    tmp_path: Path,
) -> None:
    async with (
        LoopbackServer(
            answering(answer(body=b"over tls")), tls=server_tls_context(tmp_path)
        ) as server,
        pool() as transport,
    ):
        first = await transport.handle_async_request(request(server.url + "/v1?x=1"))
        second = await transport.handle_async_request(request(server.url + "/v2"))

    assert server.url.startswith("https://")
    assert (first.content, second.content) == (b"over tls", b"over tls")
    assert [r.line for r in server.requests] == [b"GET /v1?x=1 HTTP/1.1", b"GET /v2 HTTP/1.1"]
    assert server.connections == 1


# Failures.


async def test_a_malformed_answer_raises_remote_protocol_error_and_closes_the_connection() -> None:
    async def garbage(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(b"NOT HTTP AT ALL\r\n\r\n")
            await peer.read_until_closed()
            peer.server.closed_by_client.append(peer.number)

    async with LoopbackServer(garbage) as server, pool() as transport:
        with pytest.raises(httpx.RemoteProtocolError):
            await transport.handle_async_request(request(server.url))
        assert transport.open_connections == 0
        await eventually(lambda: server.closed_by_client == [0])


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["before-the-answer", "mid-head", "mid-body", "mid-chunks"],
)
async def test_a_connection_closed_before_the_answer_ends_raises_read_error(sent: bytes) -> None:
    async def cut(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(sent)
            await peer.close()

    async with LoopbackServer(cut) as server, pool() as transport:
        with pytest.raises(httpx.ReadError):
            await transport.handle_async_request(request(server.url))
        assert transport.open_connections == 0

    assert len(server.requests) == 1


async def test_a_server_that_never_answers_raises_read_timeout_after_the_read_timeout() -> None:
    async with LoopbackServer(silent_peer) as server, pool() as transport:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(request(server.url, read=0.1))
        waited = loop.time() - started
        assert transport.open_connections == 0
        await eventually(lambda: server.closed_by_client == [0])

    assert 0.1 <= waited < 0.5


async def test_a_server_that_trickles_bytes_faster_than_the_read_timeout_does_not_time_out() -> (
    None
):
    # The read timeout measures silence, not the whole answer's time.
    parts = [
        b"HTTP/1.1 200 OK\r\n",
        b"Content-Length: 5\r\n",
        b"\r\n",
        *(bytes([c]) for c in b"slow!"),
    ]

    async def trickle(peer: Peer) -> None:
        if await peer.read_request() is not None:
            for part in parts:
                await asyncio.sleep(0.04)
                await peer.send(part)

    async with LoopbackServer(trickle) as server, pool() as transport:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await transport.handle_async_request(request(server.url, read=0.15))
        took = loop.time() - started

    assert response.content == b"slow!"
    assert took > 0.15 * 2


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def hold_the_first_connection(peer: Peer) -> None:
        if peer.number == 0:
            await peer.read_request()
            await peer.read_until_closed()
            peer.server.closed_by_client.append(peer.number)
        else:
            await answering(answer())(peer)

    async with (
        LoopbackServer(hold_the_first_connection) as server,
        pool(max_connections=1) as transport,
    ):
        task = asyncio.create_task(transport.handle_async_request(request(server.url)))
        await eventually(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.open_connections == 0
        await eventually(lambda: server.closed_by_client == [0])
        response = await transport.handle_async_request(request(server.url, pool=0.5))

    assert response.status_code == 200
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [0, 1]


@pytest.mark.parametrize(
    ("trusted", "host"),
    [(False, "127.0.0.1"), (True, "localhost")],
    ids=["untrusted-issuer", "wrong-name"],
)
async def test_a_certificate_the_upstream_cannot_prove_is_a_connect_error(
    tmp_path: Path, trusted: bool, host: str
) -> None:
    # The certificate names upstream.example and 127.0.0.1 (not localhost); the test CA that
    # signed it is trusted by the tests' context only, not by httpx's default one (certifi's).
    transport = UpstreamTransport(
        max_connections=1, ssl_context=client_tls_context() if trusted else None
    )
    async with LoopbackServer(answering(answer()), tls=server_tls_context(tmp_path)) as server:
        try:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await transport.handle_async_request(request(f"https://{host}:{server.port}/"))
            assert transport.open_connections == 0
        finally:
            await transport.aclose()

    assert server.requests == []


async def test_a_connection_not_made_within_the_connect_timeout_raises_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    hung = asyncio.Event()

    async def never_connected(*args: object, **kwargs: object) -> object:
        hung.set()
        await asyncio.sleep(10)
        raise AssertionError("the connect timeout did not interrupt the connection")

    monkeypatch.setattr(loop, "create_connection", never_connected)
    async with pool(max_connections=1) as transport:
        with pytest.raises(httpx.ConnectTimeout):
            await transport.handle_async_request(request("http://upstream.example/", connect=0.05))
        # The place in the pool is free again.
        assert transport.open_connections == 0
    assert hung.is_set()


# What goes on the wire.


async def test_the_request_goes_on_the_wire_once_as_httpx_built_it() -> None:
    async def record(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(answer(status=201, reason="Created"))
            await peer.read_until_closed()

    async with LoopbackServer(record) as server:
        sent = request(
            server.url + "/v1/things/a%2Fb?q=x%20y&empty=&r=1",
            "POST",
            json={"name": "café", "n": [1, 2]},
        )
        sent.headers["x-request-id"] = "req-wire-1"
        async with pool() as transport:
            response = await transport.handle_async_request(sent)
        await eventually(lambda: server.open_now == 0)

    head = b"POST /v1/things/a%2Fb?q=x%20y&empty=&r=1 HTTP/1.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in sent.headers.raw)
    assert bytes(server.peers[0].received) == head + b"\r\n" + sent.content
    assert server.requests[0].headers["content-type"] == "application/json"
    assert server.requests[0].headers["x-request-id"] == "req-wire-1"
    assert server.connections == 1
    assert response.status_code == 201


# Proxies.


@pytest.mark.parametrize(
    ("userinfo", "authorization"),
    [
        ("user:p%40ss@", basic("user:p@ss")),
        pytest.param(
            "us%25er:a%2541@", basic("us%er:a%41"), id="with-a-percent-sign-in-the-credentials"
        ),
        ("", None),
    ],
    ids=["with-credentials", None, "without"],
)
async def test_an_http_upstream_through_a_proxy_gets_the_absolute_url_as_its_target(
    userinfo: str, authorization: str | None
) -> None:
    async with LoopbackServer(answering(answer(body=b"via proxy"))) as proxy:
        proxy_url = httpx.URL(f"http://{userinfo}127.0.0.1:{proxy.port}")
        async with pool(proxy=proxy_url) as transport:
            response = await transport.handle_async_request(
                request("http://upstream.example:8080/v1/x?y=1&z=%20")
            )
            again = await transport.handle_async_request(request("http://upstream.example:8080/"))

    assert (response.content, again.content) == (b"via proxy", b"via proxy")
    first = proxy.requests[0]
    assert first.line == b"GET http://upstream.example:8080/v1/x?y=1&z=%20 HTTP/1.1"
    assert first.headers["host"] == "upstream.example:8080"
    assert first.headers.get("proxy-authorization") == authorization
    assert first.header_names.count("proxy-authorization") == (1 if authorization else 0)
    assert proxy.requests[1].line == b"GET http://upstream.example:8080/ HTTP/1.1"
    assert proxy.connections == 1


async def test_an_https_upstream_through_a_proxy_goes_through_a_connect_tunnel(
    tmp_path: Path,
) -> None:
    upstream_tls = server_tls_context(tmp_path)

    async def tunnel(peer: Peer) -> None:
        connect = await peer.read_request()
        if connect is None:
            return
        await peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        # The "proxy" is the upstream too: TLS with upstream.example's certificate, inside.
        await peer.writer.start_tls(upstream_tls)
        await answering(answer(body=b"secret"))(peer)

    async with LoopbackServer(tunnel) as proxy:
        proxy_url = httpx.URL(f"http://user:pw@127.0.0.1:{proxy.port}")
        async with pool(proxy=proxy_url) as transport:
            response = await transport.handle_async_request(request(f"https://{TLS_HOST}/v1/x?y=1"))
            again = await transport.handle_async_request(request(f"https://{TLS_HOST}/v1/z"))

    assert (response.content, again.content) == (b"secret", b"secret")
    connect, inside, next_inside = proxy.requests
    assert connect.line == b"CONNECT upstream.example:443 HTTP/1.1"
    assert connect.headers["host"] == "upstream.example:443"
    assert connect.headers["proxy-authorization"] == basic("user:pw")
    # Inside the tunnel: the origin-form target, and the proxy's credentials stay outside.
    assert inside.line == b"GET /v1/x?y=1 HTTP/1.1"
    assert inside.headers["host"] == TLS_HOST
    assert "proxy-authorization" not in inside.headers
    assert next_inside.line == b"GET /v1/z HTTP/1.1"
    assert proxy.connections == 1


async def test_a_proxy_refusing_the_tunnel_raises_proxy_error() -> None:
    async def refuse(peer: Peer) -> None:
        if await peer.read_request() is not None:
            await peer.send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 0\r\n\r\n'
            )
            await peer.read_until_closed()
            peer.server.closed_by_client.append(peer.number)

    async with LoopbackServer(refuse) as proxy:
        transport = UpstreamTransport(
            max_connections=1, proxy=httpx.URL(f"http://user:pw@127.0.0.1:{proxy.port}")
        )
        try:
            with pytest.raises(httpx.ProxyError, match="407"):
                await transport.handle_async_request(request("https://upstream.example/v1"))
            assert transport.open_connections == 0
            await eventually(lambda: proxy.closed_by_client == [0])
        finally:
            await transport.aclose()

    (connect,) = proxy.requests
    assert connect.line == b"CONNECT upstream.example:443 HTTP/1.1"
    assert connect.headers["proxy-authorization"] == basic("user:pw")


@pytest.mark.parametrize(
    ("connect", "read"),
    [
        pytest.param(0.1, None, id="connect-timeout"),
        pytest.param(1.0, 0.1, id="read-timeout"),
    ],
)
async def test_a_proxy_that_never_answers_connect_raises_connect_timeout_and_is_hung_up_on(
    connect: float, read: float | None
) -> None:
    async with (
        LoopbackServer(silent_peer) as proxy,
        pool(proxy=httpx.URL(f"http://127.0.0.1:{proxy.port}")) as transport,
    ):
        with pytest.raises(httpx.ConnectTimeout):
            await transport.handle_async_request(
                request("https://upstream.example/v1", connect=connect, read=read)
            )
        assert transport.open_connections == 0
        await eventually(lambda: proxy.closed_by_client == [0], within=0.3)


async def test_a_request_cancelled_while_the_proxy_answers_connect_hangs_up_on_the_proxy() -> None:
    async with (
        LoopbackServer(silent_peer) as proxy,
        pool(proxy=httpx.URL(f"http://127.0.0.1:{proxy.port}")) as transport,
    ):
        task = asyncio.create_task(
            transport.handle_async_request(request("https://upstream.example/v1"))
        )
        await eventually(lambda: len(proxy.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.open_connections == 0
        await eventually(lambda: proxy.closed_by_client == [0], within=0.3)
