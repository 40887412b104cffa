"""The ASGI layer both simulators share: request recording, fault injection, hosted pages.

Dropping a connection: raising from an ASGI app is not a drop under uvicorn (before the response
starts it answers 500; after, it logs an error and closes). Instead the middleware closes the
socket itself: under uvicorn `send` is a method of the request cycle, whose `transport` it closes
before sending anything, then it waits for the disconnect so uvicorn neither logs nor answers. The
client sees the connection end without a response (httpx: `RemoteProtocolError`, "Server
disconnected without sending a response"). Where there is no transport to close (an in-process
transport such as `httpx.ASGITransport`), the middleware raises `ConnectionResetError`, which such
a transport passes to the caller.

Dropping mid-response (`Fault.drop_after`): `send` is wrapped so the response starts as usual,
then the body is cut at `drop_after` bytes and the socket closed the same way. uvicorn has already
written the status line and the headers, with a Content-Length larger than what follows, so the
client sees a truncated message (httpx: `RemoteProtocolError`, "peer closed connection without
sending complete message body").
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from gateway.sandbox.state import Fault, RecordedCall, SandboxState

HOSTED_PAGE = (
    "<!doctype html><html><head><title>Sandbox checkout</title></head>"
    "<body><h1>Sandbox checkout</h1><p>This is a simulated hosted checkout page: "
    "nothing is charged.</p></body></html>"
)


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


class SandboxMiddleware:
    """Records every request, then applies the first matching fault, if any."""

    def __init__(self, app: ASGIApp, *, provider: str, state: SandboxState) -> None:
        self.app = app
        self.provider = provider
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content, replay = await _read_body(receive)
        self.state.record(_recorded_call(self.provider, scope, content))
        fault = self.state.take_fault(self.provider, scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, replay, send)
            return
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            await _drop(receive, send)
            return
        respond = send if fault.drop_after is None else _cutting(send, receive, fault.drop_after)
        if fault.status is not None:
            await _send_fault(fault, fault.status, respond)
        else:
            await self.app(scope, replay, respond)


class SandboxApp(Starlette):
    """A Starlette app whose outermost layer is `SandboxMiddleware`.

    Outside even Starlette's error middleware, so it sees the server's own `send` (see `_drop`).
    """

    def __init__(
        self,
        *,
        provider: str,
        state: SandboxState,
        routes: Sequence[BaseRoute],
        exception_handlers: dict[Any, ExceptionHandler],
    ) -> None:
        super().__init__(routes=routes, exception_handlers=exception_handlers)
        self.provider = provider
        self.sandbox_state = state

    def build_middleware_stack(self) -> ASGIApp:
        stack = _SettingCookies(super().build_middleware_stack())
        return SandboxMiddleware(stack, provider=self.provider, state=self.sandbox_state)


# Every answer (but an injected fault's) sets a cookie, as the CDN in front of a real API may: a
# client that kept cookies would send it back, and the recorded calls would show it.
EDGE_COOKIE = "sandbox_edge"


class _SettingCookies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def setting_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{EDGE_COOKIE}={random_hex()}; Path=/; HttpOnly".encode("latin-1")
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"set-cookie", cookie)],
                }
            await send(message)

        await self.app(scope, receive, setting_cookie)


def base_url(request: Request) -> str:
    """The request's own scheme://host:port, for URLs that point back at the sandbox."""
    return str(request.base_url).rstrip("/")


def random_hex(nbytes: int = 12) -> str:
    return secrets.token_hex(nbytes)


async def hosted_page(request: Request) -> HTMLResponse:
    return HTMLResponse(HOSTED_PAGE)


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    content = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": content, "more_body": False}

    return content, replay


def _recorded_call(provider: str, scope: Scope, content: bytes) -> RecordedCall:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    return RecordedCall(
        provider=provider,
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        content=content,
    )


async def _drop(receive: Receive, send: Send) -> None:
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, _Closable):
        raise ConnectionResetError("sandbox fault: connection dropped")
    transport.close()
    # uvicorn marks the request disconnected once the close lands; returning earlier would make
    # it log "returned without starting response" and try to answer 500.
    while (await receive())["type"] != "http.disconnect":
        pass


def _cutting(send: Send, receive: Receive, limit: int) -> Send:
    """`send`, passing on the first `limit` bytes of the body and then dropping the connection."""
    sent = 0
    dropped = False

    async def cutting_send(message: Message) -> None:
        nonlocal sent, dropped
        if dropped:
            return  # the rest of the answer goes nowhere
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        room = limit - sent
        if len(body) < room or (len(body) == room and not more):
            sent += len(body)
            await send(message)
            return
        if room > 0:
            await send({"type": "http.response.body", "body": body[:room], "more_body": True})
        sent = limit
        dropped = True
        await _drop(receive, send)

    return cutting_send


async def _send_fault(fault: Fault, status: int, send: Send) -> None:
    body = fault.body
    if isinstance(body, dict):
        content = json.dumps(body).encode()
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = body or b""
    headers = [
        (b"content-type", fault.content_type.encode("latin-1")),
        (b"content-length", str(len(content)).encode("latin-1")),
    ]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fault.headers.items()
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})
