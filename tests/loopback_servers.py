"""Small asyncio servers on loopback that answer raw bytes, for tests/test_transport.py.

`async with LoopbackServer(handler) as server:` accepts connections on 127.0.0.1 (port 0) and runs
`handler(peer)` for each; the handler reads requests off its `Peer` and writes whatever bytes the
test chooses. The server counts the connections it accepted, how many were open at once and every
request it read, so a test can say what reached the wire and over how many connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"

Handler = Callable[["Peer"], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    """One request as it arrived: its head (request line and headers, CRLFs kept) and body."""

    connection: int
    head: bytes
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        """Header names lowercased; a repeated header keeps its last value."""
        found: dict[str, str] = {}
        for line in self.head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                found[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        return found

    @property
    def header_names(self) -> list[str]:
        return [
            line.partition(b":")[0].decode("latin-1").lower()
            for line in self.head.split(b"\r\n")[1:]
            if line
        ]


class Peer:
    """The server's end of one accepted connection."""

    def __init__(
        self,
        server: LoopbackServer,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.number = number
        self.reader = reader
        self.writer = writer
        self.received = bytearray()  # every byte read from this connection, in order

    async def read_request(self) -> Request | None:
        """The next request on this connection (its body by Content-Length), or None if the
        client closed the connection before sending one."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError):
                self.received += exc.partial
            return None
        self.received += head
        request = Request(self.number, head, b"")
        length = int(request.headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        self.received += body
        request = Request(self.number, head, body)
        self.server.requests.append(request)
        return request

    async def read_until_closed(self) -> bytes:
        """Whatever the client sends until it closes the connection."""
        try:
            rest = await self.reader.read()
        except ConnectionError:
            rest = b""
        self.received += rest
        return rest

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class LoopbackServer:
    """Runs `handler` for each connection accepted on loopback (over TLS with `tls`); counts
    connections and requests."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.peers: list[Peer] = []
        self.requests: list[Request] = []
        self.open_now = 0
        self.most_open = 0
        self.closed_by_client: list[int] = []  # connections whose handler saw the client's EOF

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        return len(self.peers)

    @property
    def port(self) -> int:
        assert self._port is not None, "the server is not started"
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{HOST}:{self.port}"

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._accept, HOST, 0, ssl=self._tls)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Hung up on, a handler still reading ends (EOF); one still waiting otherwise is cancelled.
        for peer in self.peers:
            peer.writer.transport.abort()
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=0.5)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(self, len(self.peers), reader, writer)
        self.peers.append(peer)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self._handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up on a handler that expected more
        except asyncio.CancelledError:
            # Not raised: a cancelled handler's task would be reported by asyncio (3.11's streams).
            pass
        finally:
            self.open_now -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


def answer(
    status: int = 200,
    body: bytes = b"ok",
    headers: tuple[tuple[str, str], ...] = (),
    reason: str = "OK",
    version: str = "HTTP/1.1",
) -> bytes:
    """A whole answer with a Content-Length."""
    lines = [f"{version} {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answering(*answers: bytes, delay: float = 0.0) -> Handler:
    """A handler that answers each request on a connection with the next of `answers` (the last
    one again once they run out), `delay` seconds after reading it, and closes the connection when
    the client does."""

    async def handle(peer: Peer) -> None:
        sent = 0
        while (await peer.read_request()) is not None:
            if delay:
                await asyncio.sleep(delay)
            await peer.send(answers[min(sent, len(answers) - 1)])
            sent += 1
        peer.server.closed_by_client.append(peer.number)

    return handle


# A test CA and a certificate it signed for `upstream.example` and 127.0.0.1 (valid 2000-2100), so
# a TLS server on loopback can stand in for an HTTPS upstream, reached directly or by a tunnel.
# Made with `openssl ca`; the key protects nothing but these tests.
TLS_HOST = "upstream.example"
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBajCCAQ+gAwIBAgIBATAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBMb29wYmFj
ayBUZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAbMRkw
FwYDVQQDDBBMb29wYmFjayBUZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEjlhJEBf+67CHvdW0PKPBw/fbvI6iDAbp7cZ1mnt8yVKxQWafHwizUebA/lW8
9K2f9wlQAQ0jJMHaiHHFNvVHRqNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFHgHWi9BKNjK73Z1dgOpTnEEnPjnMAoGCCqGSM49
BAMCA0kAMEYCIQCrTB6Ba5jQwIvuZ6PDYJGAjZ3Nqj42WUfSHG5bzJC6XQIhAN+r
Bw6Fj7dQbwV4knnJmYuM2nEhE2pUFBGOu9aO8DUz
-----END CERTIFICATE-----
"""
UPSTREAM_CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBwDCCAWegAwIBAgIBAzAKBggqhkjOPQQDAjAbMRkwFwYDVQQDDBBMb29wYmFj
ayBUZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAwWjAbMRkw
FwYDVQQDDBB1cHN0cmVhbS5leGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEhQEApWlH1623ut38LlvPUKRa63/avo0fqdJXuA3EWqnGVu9TjcQRFpCoenXi
u7vXuV9t7kgKpOkLHl0hTOSGUKOBmTCBljAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB
/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAhBgNVHREEGjAYghB1cHN0cmVh
bS5leGFtcGxlhwR/AAABMB0GA1UdDgQWBBQc9tLSHMtMJMB4EncCChWMfjdrdDAf
BgNVHSMEGDAWgBR4B1ovQSjYyu92dXYDqU5xBJz45zAKBggqhkjOPQQDAgNHADBE
AiBmub9QO9+8K6nbZlmALMg9LiMlghYu1+FEdkpsPRrTqwIgSF1L18k8xZ63Zbxo
ino663OUhEPxMTy8FlAZfcJvADU=
-----END CERTIFICATE-----
"""
UPSTREAM_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaQk0fcyDBt/AeWgc
fgWiG7GE2Gzjbnntcygbhl5YBuihRANCAASFAQClaUfXrbe63fwuW89QpFrrf9q+
jR+p0le4DcRaqcZW71ONxBEWkKh6deK7u9e5X23uSAqk6QseXSFM5IZQ
-----END PRIVATE KEY-----
"""


def client_tls_context() -> ssl.SSLContext:
    """A client context that trusts only the test CA."""
    return ssl.create_default_context(cadata=TEST_CA_PEM)


def server_tls_context(directory: Path) -> ssl.SSLContext:
    """A server context presenting `upstream.example`'s certificate (its files go in
    `directory`: `load_cert_chain` reads files only)."""
    chain = directory / "upstream.pem"
    chain.write_text(UPSTREAM_CERT_PEM + UPSTREAM_KEY_PEM)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context
