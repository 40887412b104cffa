"""The default transport of the upstream clients: a lean HTTP/1.1 connection pool under httpx's API.

`_base.py` builds each `httpx.Request` and hands it to `UpstreamTransport.handle_async_request`;
what runs under it is an asyncio protocol per connection with httptools' parser (the one uvicorn
serves with), a pool of kept-alive connections per origin, and nothing else: no chunk streams,
no header objects in between, no thread hops. httpx's own pool (httpcore) scans every pooled
connection on each request, and aiohttp's (used here before) spent about 100 us of a pooled GET's
CPU in its own layers (docs/performance.md); this one writes the request in one call and hands
httpx the answer whole.

What it keeps of `_base.py`'s contract, each tested in tests/test_transport.py:

    connect timeout                                     -> httpx.ConnectTimeout
    no pooled connection within the pool timeout        -> httpx.PoolTimeout
    no byte of the answer within the read timeout       -> httpx.ReadTimeout
    refused, unresolvable, TLS refused                  -> httpx.ConnectError
    dropped, reset, truncated body                      -> httpx.ReadError
    malformed answer                                    -> httpx.RemoteProtocolError
    an answer longer than `max_answer_bytes`            -> AnswerTooLarge (a RemoteProtocolError)

Every request sent is one `_base.py` decided on: nothing is ever sent again by this layer (a GET
dropped on a kept-alive connection fails like any dropped request). A connection is reused only
after an answer read to its end that did not ask to close it, and only within `keepalive_expiry`
seconds of its last use; one whose request failed or was cancelled is closed.

No cookie is kept at any layer: a client serves every caller's credential, so a cookie an upstream
(or its CDN) set in answer to one caller would otherwise go out with the next caller's requests.
This transport never reads `Set-Cookie`, and the httpx client over it has `no_cookies()`.

The environment's proxy (HTTP(S)_PROXY, NO_PROXY, read once per transport) is honoured as httpx
does: a plain-HTTP upstream through the proxy with the absolute URL as the request target, an
HTTPS one through a CONNECT tunnel; credentials in the proxy's URL go as Proxy-Authorization.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Mapping
from http.cookiejar import Cookie, CookieJar
from typing import NamedTuple, cast
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httptools
import httpx

# Idle keep-alive connections are closed after this many seconds (httpx's own default): many
# servers (Node's among them) drop idle connections after 5 s, and a request sent on a connection
# the server is closing fails.
DEFAULT_KEEPALIVE_EXPIRY = 5.0
# The head of a proxy's answer to CONNECT may not be longer than this.
MAX_TUNNEL_HEAD = 16 * 1024
# The longest body read from an upstream: a billing answer is about 1.6 KB. Decoding and normalizing
# the longest (about 1,180 plans) holds the event loop about 16 ms and 2 MB (docs/performance.md).
DEFAULT_MAX_ANSWER_BYTES = 256 * 1024


class AnswerTooLarge(httpx.RemoteProtocolError):
    """The upstream's answer is longer than the transport reads; the connection is closed."""


class _NoCookieJar(CookieJar):
    """A cookie jar that keeps nothing, so it never has a cookie to send."""

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def set_cookie_if_ok(self, cookie: Cookie, request: object) -> None:
        pass


def no_cookies() -> CookieJar:
    """A jar for an `httpx.AsyncClient` (`cookies=`) that never keeps a cookie. (A jar, not an
    `httpx.Cookies`: the client would copy that into a jar of its own.)"""
    return _NoCookieJar()


class Origin(NamedTuple):
    """Where a request goes: its scheme, host and port (a pool of connections each)."""

    scheme: str
    host: str
    port: int


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    return Origin(scheme, url.host, url.port or (443 if scheme == "https" else 80))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_answer_bytes: int) -> None:
        self._loop = loop
        self._max_answer_bytes = max_answer_bytes
        self._body_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[None] | None = None
        self._last_read = 0.0
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._until_close = False
        self._keep_alive = False
        self._complete = False  # the answer to the request in flight is whole
        self._unasked = False  # and bytes followed it
        self._tunnel: bytearray | None = None  # the head of a proxy's answer to CONNECT

    # asyncio's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        done = self._done
        if done is None or done.done():
            # Bytes nobody asked for: what the connection carries next cannot be trusted.
            self.close()
            return
        if self._tunnel is not None:
            self._tunnel_data(data, done)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            if not done.done():
                done.set_exception(httpx.RemoteProtocolError(f"malformed answer: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the connection; `connection_lost` settles a request in flight

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        done = self._done
        if done is None or done.done():
            return
        if self._until_close and self._status:
            done.set_result(None)  # an answer without a length ends where the connection does
        else:
            reason = f": {exc}" if exc else ""
            done.set_exception(
                httpx.ReadError(f"the connection closed before the answer was complete{reason}")
            )

    # httptools' side. Once the answer is complete, httptools goes on parsing what followed it
    # in the same read: an answer nobody asked for, which marks the connection unusable and is
    # not let into the one being read.

    def on_message_begin(self) -> None:
        if self._complete:
            self._unasked = True

    def on_status(self, status: bytes) -> None:
        if not self._complete:
            self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._complete:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        self._status = status = self._parser.get_status_code()
        # Asked here: after the message is complete, httptools answers False whatever was sent.
        self._keep_alive = self._parser.should_keep_alive()
        lengths = [value for name, value in self._headers if name.lower() == b"content-length"]
        if lengths and lengths[0].strip().isdigit() and int(lengths[0]) > self._max_answer_bytes:
            self._refuse_length()  # said at once: not a byte of the body read
            return
        named = {name.lower() for name, _ in self._headers}
        self._until_close = (
            b"content-length" not in named
            and b"transfer-encoding" not in named
            and status not in (204, 304)
            and status >= 200
        )

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_answer_bytes:
            self._refuse_length()
            return
        self._body.append(body)

    def _refuse_length(self) -> None:
        self.close()
        self._complete = True  # what follows in this read is not read
        self._body = []
        done = self._done
        if done is not None and not done.done():
            done.set_exception(
                AnswerTooLarge(f"the answer is longer than {self._max_answer_bytes} bytes")
            )

    def on_message_complete(self) -> None:
        if self._complete:
            return
        if 100 <= self._status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._status, self._reason, self._headers, self._body = 0, b"", [], []
            return
        self._complete = True
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    # The pool's side.

    def usable(self, now: float, expiry: float) -> bool:
        return not self.closed and now - self.idle_since < expiry

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self, head: bytes, content: bytes, read_timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        """Send one request; its status, reason, headers and whole body."""
        assert self.transport is not None
        loop = self._loop
        self._done = done = loop.create_future()
        self._status, self._reason, self._headers, self._body = 0, b"", [], []
        self._until_close = self._complete = self._unasked = False
        self._body_bytes = 0
        self.transport.write(head + content if content else head)
        self._last_read = loop.time()
        timer = None
        if read_timeout is not None:
            timer = loop.call_at(self._last_read + read_timeout, self._check_read, read_timeout)
        try:
            await done
        finally:
            if timer is not None:
                timer.cancel()
            self._done = None
        if self._until_close:
            self.closed = True
        elif self._unasked or not self._keep_alive:
            self.close()
        return self._status, self._reason, self._headers, b"".join(self._body)

    def _check_read(self, read_timeout: float) -> None:
        done = self._done
        if done is None or done.done():
            return
        quiet = self._loop.time() - self._last_read
        if quiet < read_timeout:
            self._loop.call_at(self._last_read + read_timeout, self._check_read, read_timeout)
            return
        self.close()
        done.set_exception(httpx.ReadTimeout(f"no answer within {read_timeout:g} s"))

    async def open_tunnel(self, head: bytes, read_timeout: float | None) -> None:
        """Send CONNECT to the proxy this connection reaches and read its answer's head."""
        assert self.transport is not None
        self._tunnel = bytearray()
        self._done = done = self._loop.create_future()
        self.transport.write(head)
        try:
            async with asyncio.timeout(read_timeout):
                await done
        except TimeoutError:
            self.close()
            raise httpx.ConnectTimeout("the proxy did not answer CONNECT in time") from None
        finally:
            self._tunnel, self._done = None, None

    def _tunnel_data(self, data: bytes, done: asyncio.Future[None]) -> None:
        assert self._tunnel is not None
        self._tunnel += data
        end = self._tunnel.find(b"\r\n\r\n")
        if end < 0:
            if len(self._tunnel) > MAX_TUNNEL_HEAD:
                self.close()
                done.set_exception(httpx.ProxyError("the proxy's answer to CONNECT is too long"))
            return
        status_line = bytes(self._tunnel[: self._tunnel.find(b"\r\n")])
        parts = status_line.split(b" ", 2)
        if end + 4 != len(self._tunnel) or len(parts) < 2 or not parts[1].startswith(b"2"):
            self.close()
            done.set_exception(
                httpx.ProxyError(f"the proxy refused the tunnel: {status_line.decode('latin-1')}")
            )
            return
        done.set_result(None)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """A pool of at most `max_connections` HTTP/1.1 connections, kept alive when idle for up to
    `keepalive_expiry` seconds; `proxy` (if any) is where every connection goes first."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        proxy: httpx.URL | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        self.proxy = proxy
        self.max_answer_bytes = max_answer_bytes
        self._ssl_context = ssl_context
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._proxy_authorization = _proxy_authorization(proxy) if proxy is not None else None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """httpx's default context (certifi's roots), made on the first HTTPS connection."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    @property
    def open_connections(self) -> int:
        """Connections open or being opened, idle ones included."""
        return self._open

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: Mapping[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        origin = _origin(url)
        connection = await self._acquire(origin, timeout)
        try:
            status, reason, headers, body = await connection.exchange(
                self._head(request, origin), request.content, timeout.get("read")
            )
        except BaseException:
            self._release(origin, connection, reuse=False)
            raise
        self._release(origin, connection, reuse=True)
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason
        return httpx.Response(
            status, headers=headers, content=body, request=request, extensions=extensions
        )

    def _head(self, request: httpx.Request, origin: Origin) -> bytes:
        url = request.url
        # Through a proxy, a plain-HTTP request names its whole URL; a tunnel carries it as is.
        if self.proxy is not None and origin.scheme == "http":
            target = str(url.copy_with(fragment=None)).encode("ascii")
        else:
            target = url.raw_path
        lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += (name, b": ", value, b"\r\n")
        if self._proxy_authorization is not None and origin.scheme == "http":
            lines += (b"Proxy-Authorization: ", self._proxy_authorization, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _acquire(self, origin: Origin, timeouts: Mapping[str, float | None]) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(origin)
            now = loop.time()
            while idle:
                connection = idle.pop()
                if connection.usable(now, self._expiry):
                    return connection
                self._forget(connection)
            if self._open < self._max:
                break
            # Idle connections to other origins give way to this one.
            if self._close_one_idle():
                continue
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken as it gave up: the next in line takes the free place
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout(
                        f"no connection of the {self._max} in the pool came free in time"
                    ) from None
                raise
        self._open += 1
        try:
            return await self._connect(origin, timeouts)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _dial(self, origin: Origin, timeouts: Mapping[str, float | None]) -> _Connection:
        """A new connection to `origin` (through the proxy's tunnel for HTTPS via a proxy)."""
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        host, port = (proxy.host, proxy.port or 80) if proxy is not None else origin[1:]
        tls_now = origin.scheme == "https" and proxy is None
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self.max_answer_bytes),
                    host,
                    port,
                    ssl=self.ssl_context if tls_now else None,
                    server_hostname=origin.host if tls_now else None,
                )
                if origin.scheme == "https" and proxy is not None:
                    await self._tunnel(connection, origin, timeouts.get("read"))
        except BaseException:
            if connection is not None:
                connection.close()  # a tunnel not made in time, or a request cancelled meanwhile
            raise
        return connection

    async def _connect(self, origin: Origin, timeouts: Mapping[str, float | None]) -> _Connection:
        """`_dial`, its failures as httpx's connect errors."""
        try:
            return await self._dial(origin, timeouts)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {origin.host}:{origin.port} within the connect timeout"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc

    async def _tunnel(self, connection: _Connection, origin: Origin, read: float | None) -> None:
        authority = f"{origin.host}:{origin.port}".encode("ascii")
        head = b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n"
        if self._proxy_authorization is not None:
            head += b"Proxy-Authorization: " + self._proxy_authorization + b"\r\n"
        await connection.open_tunnel(head + b"\r\n", read)
        assert connection.transport is not None
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(
            connection.transport, connection, self.ssl_context, server_hostname=origin.host
        )
        if tls is None:
            raise httpx.ConnectError("TLS could not start over the proxy's tunnel")
        connection.transport = tls

    def _release(self, origin: Origin, connection: _Connection, *, reuse: bool) -> None:
        if reuse and not connection.closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
            self._open -= 1
        self._wake()

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1

    def _close_one_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._forget(idle.pop(0))
                return True
        return False

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
            self._open -= len(idle)
            idle.clear()


def _proxy_authorization(proxy: httpx.URL) -> bytes | None:
    if not proxy.username:
        return None
    credentials = f"{proxy.username}:{proxy.password or ''}"  # httpx has decoded both
    return b"Basic " + base64.b64encode(credentials.encode("utf-8"))


def environment_proxy(base_url: str) -> httpx.URL | None:
    """The proxy the environment (HTTP(S)_PROXY, NO_PROXY) names for `base_url`, if any."""
    split = urlsplit(base_url)
    if not split.hostname or proxy_bypass(split.hostname):
        return None
    named = getproxies().get(split.scheme)
    if not named:
        return None
    proxy = httpx.URL(named if "://" in named else f"http://{named}")
    if proxy.scheme != "http":
        raise ValueError(f"only an http:// proxy is supported, not {proxy.scheme}://")
    return proxy


def upstream_transport(
    *, max_connections: int, base_url: str, keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
) -> UpstreamTransport:
    """A pooled transport of at most `max_connections` connections to `base_url`'s host, all
    kept alive when idle for up to `keepalive_expiry` seconds (a fan-out reuses them at once),
    through the environment's proxy for `base_url` if it names one (read once, here)."""
    return UpstreamTransport(
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        proxy=environment_proxy(base_url),
    )
