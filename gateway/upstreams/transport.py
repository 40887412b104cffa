"""The default transport of the upstream clients: aiohttp's connection pool under httpx's API.

httpx's own pool (httpcore) scans every pooled connection on each request, so it falls behind
under fan-out (docs/performance.md); `httpx_aiohttp.AiohttpTransport` keeps the httpx client
API over aiohttp's pool, and `UpstreamTransport` sends through that pool itself. httpx_aiohttp's
exception mapping is not fit for `_base.py`'s contract (it turns a refused or dropped connection
into `httpx.ConnectTimeout`, and lets a malformed answer escape as an aiohttp error), so every
aiohttp error is mapped here, from the aiohttp error itself:

    connect timeout (or no pooled connection in time)   -> httpx.ConnectTimeout
    read timeout                                        -> httpx.ReadTimeout
    refused, unresolvable                               -> httpx.ConnectError
    dropped, reset, truncated body, malformed answer    -> httpx.ReadError / RemoteProtocolError
    anything else aiohttp raises                        -> httpx.TransportError

aiohttp's own silent resend of a GET dropped on a kept-alive connection is turned off, so that
every request sent is one `_base.py` decided on.

No cookie is kept at any layer: a client serves every caller's credential, so a cookie an upstream
(or its CDN) set in answer to one caller would otherwise go out with the next caller's requests.
The aiohttp session has a `DummyCookieJar`, and the httpx client over it `no_cookies()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import Cookie, CookieJar
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from yarl import URL

# Idle keep-alive connections are closed after this many seconds (httpx's own default): many
# servers (Node's among them) drop idle connections after 5 s, and a request sent on a connection
# the server is closing fails.
DEFAULT_KEEPALIVE_EXPIRY = 5.0


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


def _httpx_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception `_base.py` maps, for an aiohttp error; most specific first."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return httpx.ReadError(message)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    return httpx.TransportError(message)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        raise _httpx_error(exc) from exc


class UpstreamTransport(AiohttpTransport):
    """`AiohttpTransport` whose failures are the httpx exceptions of the module docstring, and
    whose answers arrive whole.

    The gateway reads every answer to the end, so the body is read here and handed to httpx as
    content, without httpx_aiohttp's chunk stream, its wrappers and its header conversions (7% of
    a pooled GET's Python calls; BENCHMARKS.md). A failure while reading is mapped like any
    other, and the connection goes back to the pool once the body is read."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        content = request.content
        with _mapped_errors():
            async with self.client.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=content or None,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes by Content-Encoding, as it always has
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            ) as response:
                body = await response.read()
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            content=body,
            request=request,
            extensions=extensions,
        )


def environment_proxy(base_url: str) -> URL | None:
    """The proxy the environment (HTTP(S)_PROXY, NO_PROXY) names for `base_url`, if any.

    Credentials in the proxy's URL stay in it: aiohttp sends them as Proxy-Authorization."""
    split = urlsplit(base_url)
    if not split.hostname or proxy_bypass(split.hostname):
        return None
    named = getproxies().get(split.scheme)
    if not named:
        return None
    return URL(named if "://" in named else f"http://{named}")


def upstream_transport(
    *, max_connections: int, base_url: str, keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
) -> UpstreamTransport:
    """A pooled transport of at most `max_connections` connections to `base_url`'s host, all
    kept alive when idle for up to `keepalive_expiry` seconds (a fan-out reuses them at once).

    The environment's proxy settings apply, as they do with httpx's own transport, read once
    here: aiohttp's `trust_env` would read them (and ~/.netrc) again in a worker thread on every
    request, two thread hops that cost more than the rest of a pooled request."""
    proxy = environment_proxy(base_url)
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
    )

    def session() -> aiohttp.ClientSession:
        # Built on first use, inside the running event loop. `limit_per_host=0`: both limits are
        # the one pool size (each client talks to one host).
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=keepalive_expiry,
            ssl=transport.ssl_context,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            proxy=proxy,
            # aiohttp's default jar keeps what any answer sets (for a host name, not an IP) and
            # sends it with every later request, whoever's credential that carries.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp sends a GET again, unseen, when a kept-alive connection drops it: a retry
        # outside `_base.py`'s retry contract (its budget, its breaker, its counts). httpx's pool
        # does not; neither does this one. (A private attribute: tests/test_transport.py checks
        # that a dropped GET reaches the upstream once.)
        session._retry_connection = False
        return session

    transport = UpstreamTransport(limits=limits, client=session)
    return transport
