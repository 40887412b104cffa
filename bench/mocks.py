"""Fast upstream mocks for the benchmark: Almanac or Autoposting, with added latency and counters.

The answers are the sandbox simulators' own (gateway/sandbox), recorded once at start through
httpx's ASGI transport and served as bytes by a bare asyncio protocol on httptools, so the mock
costs a few microseconds a request and is never the bottleneck (`bench/run.py` measures it bare
beside the gateways). A checkout POST answers a fresh session each time, in the provider's shape.

Control endpoints (not part of either contract, no auth):
  GET  /__mock/stats            {"total": N, "routes": {"GET /v1/organizations/{id}/billing": N}}
  POST /__mock/reset            zero the counters
  POST /__mock/latency?ms=20    set the latency added to every contract request

    .venv/bin/python bench/mocks.py almanac --port 9101 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httptools
import httpx

from gateway.sandbox import (
    ALMANAC_ORGANIZATION_IDS,
    ALMANAC_OWNER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)

_ORGANIZATION = re.compile(r"^/v1/organizations/([^/]+)/billing(/checkout|/preview)?$")


@dataclass
class Route:
    template: str
    answer: Callable[[bytes], tuple[int, bytes]]


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + ("" if keep_alive else "connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body


class Mock:
    """One provider's recorded answers, counters and latency."""

    def __init__(self, provider: str, base_url: str, latency: float) -> None:
        self.provider = provider
        self.base_url = base_url
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self.sessions = itertools.count(1)
        self.recorded: dict[tuple[bytes, str], bytes] = {}
        self.credential = (
            b"Bearer "
            + (ALMANAC_OWNER_TOKEN if provider == "almanac" else AUTOPOSTING_PRO_KEY).encode()
        )

    async def record(self) -> None:
        """Asks the sandbox simulator every GET the gateways make, and keeps its answers."""
        state = SandboxState()
        if self.provider == "almanac":
            app = create_almanac_app(state)
            paths = [f"/v1/organizations/{org}/billing" for org in ALMANAC_ORGANIZATION_IDS]
        else:
            app = create_autoposting_app(state)
            paths = [
                "/billing/status",
                "/billing/credit-summary",
                "/billing/credits",
                "/usage/summary",
                "/usage/tokens?period=30d",
                "/auth/profile",
            ]
        headers = {"authorization": self.credential.decode()}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as client:
            for path in paths:
                response = await client.get(path, headers=headers)
                response.raise_for_status()
                self.recorded[(b"GET", path)] = response.content

    def route(self, method: bytes, target: str) -> Route | None:
        """The contract route of a request, or None (404)."""
        if (method, target) in self.recorded:
            template = target.split("?")[0]
            match = _ORGANIZATION.match(template)
            if match:
                template = "/v1/organizations/{id}/billing"
            body = self.recorded[(method, target)]
            return Route(f"GET {template}", lambda _: (200, body))
        path = target.split("?")[0]
        if method != b"POST":
            return None
        match = _ORGANIZATION.match(path)
        if self.provider == "almanac" and match and match.group(2) == "/checkout":
            return Route("POST /v1/organizations/{id}/billing/checkout", self._almanac_checkout)
        if self.provider == "autoposting" and path == "/billing/checkout":
            return Route("POST /billing/checkout", self._autoposting_checkout)
        return None

    def _session(self) -> tuple[str, str]:
        session_id = f"cs_bench_{next(self.sessions):012d}"
        return session_id, f"{self.base_url}/hosted/checkout/{session_id}"

    def _almanac_checkout(self, body: bytes) -> tuple[int, bytes]:
        sent = json.loads(body or b"null")
        if (
            not isinstance(sent, dict)
            or "plan_id" not in sent
            or set(sent) - {"plan_id", "success_url"}
        ):
            detail = [{"loc": ["body"], "msg": "Extra or missing fields", "type": "value_error"}]
            return 422, json.dumps({"detail": detail}).encode()
        _, url = self._session()
        return 200, json.dumps({"url": url}).encode()

    def _autoposting_checkout(self, body: bytes) -> tuple[int, bytes]:
        sent = json.loads(body or b"null")
        if not isinstance(sent, dict) or not all(
            sent.get(k) for k in ("planId", "successUrl", "cancelUrl")
        ):
            answer = {"success": False, "error": "bad_request", "message": "Missing fields."}
            return 400, json.dumps(answer).encode()
        session_id, url = self._session()
        data = {"checkoutUrl": url, "sessionId": session_id}
        return 200, json.dumps({"success": True, "data": data}).encode()

    def control(self, method: bytes, target: str) -> bytes | None:
        """The answer of a control endpoint, or None when `target` is not one."""
        split = urlsplit(target)
        if not split.path.startswith("/__mock/"):
            return None
        if split.path == "/__mock/stats":
            routes = dict(self.counts)
            return json.dumps({"total": sum(routes.values()), "routes": routes}).encode()
        if split.path == "/__mock/reset" and method == b"POST":
            self.counts.clear()
            return b"{}"
        if split.path == "/__mock/latency" and method == b"POST":
            self.latency = float(parse_qs(split.query)["ms"][0]) / 1000
            return b"{}"
        return b'{"error": "unknown control endpoint"}'


class MockProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive on httptools; answers in order, each after the mock's latency."""

    def __init__(self, mock: Mock) -> None:
        self.mock = mock
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.authorization = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_response(400, b"{}", False))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.authorization = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        target = self.url.decode()
        keep_alive = self.parser.should_keep_alive()
        control = self.mock.control(method, target)
        if control is not None:
            self._write(_response(200, control, keep_alive), keep_alive)
            return
        route = self.mock.route(method, target)
        if route is None:
            status, body = 404, b'{"detail": "Not Found"}'
        elif self.authorization != self.mock.credential:
            status, body = 401, b'{"detail": "Not authenticated"}'
        else:
            self.mock.counts[route.template] += 1
            status, body = route.answer(b"".join(self.body))
        response = _response(status, body, keep_alive)
        if self.mock.latency > 0:
            asyncio.get_running_loop().call_later(
                self.mock.latency, self._write, response, keep_alive
            )
        else:
            self._write(response, keep_alive)

    def _write(self, response: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if not keep_alive:
            self.transport.close()


async def serve(provider: str, host: str, port: int, latency: float) -> None:
    mock = Mock(provider, f"http://{host}:{port}", latency)
    await mock.record()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(mock), host, port, backlog=1024)
    print(f"{provider} mock on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("provider", choices=("almanac", "autoposting"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.provider, args.host, args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
