"""Request ids, the access log and GraphQL operation metrics: one ASGI middleware around the app.

Each request gets an id: the caller's `X-Request-ID` when it is sane (1-128 printable ASCII
characters), else a new uuid4 hex. It is returned as `X-Request-ID`, set in `REQUEST_ID` for the
upstream clients to forward, and added to every log line written while the request is served.

One access line per request (logger `gateway.access`, INFO) says: method, path (never the query
string), status, duration_ms, request_id, upstream_calls, upstream_failures, `key` (the name of
the gateway key accepted, never the key) and, on the GraphQL endpoint, operation, outcome and
error_codes. GraphQL outcomes: `refused` (an HTTP 4xx, or a document that did not parse or
validate: no data, only INVALID_QUERY errors), `errors` (any other top-level error, or a 5xx) and
`ok`. The operation is named only for a request the gateway-key
check accepted (`scope["state"]["authenticated"]`, set by the guard), and a new name takes a metric
label only when not refused; any other request is "unauthenticated", so a caller without a key
never adds a label.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import jsonfast
from gateway.errors import ErrorCode
from gateway.keys import GatewayKey
from gateway.telemetry.metrics import UNAUTHENTICATED, UNKNOWN, Metrics
from gateway.telemetry.request_id import REQUEST_ID
from gateway.upstreams.resilience import BreakerState

access_logger = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
# GraphQL bodies read for the operation name and the outcome; a larger one is not parsed.
MAX_OBSERVED_BODY = 1024 * 1024
_OPERATION = re.compile(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")
# `scope["state"]` key of the `Answered` record the GraphQL endpoint leaves when it answered a
# request itself (its lean path): what this middleware would otherwise parse both bodies for.
ANSWERED = "graphql_answered"


@dataclass(frozen=True, slots=True)
class Answered:
    """A GraphQL request the endpoint answered: its decoded request and the response sent."""

    request: Mapping[str, Any]
    response: Mapping[str, Any]


def accepted_request_id(value: str | None) -> str:
    """`value` if it is a sane request id, else a new one."""
    if value and len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return uuid.uuid4().hex


@dataclass
class RequestStats:
    """What the upstream clients did for one request."""

    upstream_calls: int = 0
    upstream_failures: list[str] = field(default_factory=list)


_STATS: ContextVar[RequestStats | None] = ContextVar("gateway_request_stats", default=None)


class UpstreamRecorder:
    """The clients' `UpstreamObserver`: metrics, and the current request's `RequestStats`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def request_finished(
        self, provider: str, method: str, endpoint: str, status: str, seconds: float
    ) -> None:
        self.metrics.request_finished(provider, method, endpoint, status, seconds)
        stats = _STATS.get()
        if stats is not None:
            stats.upstream_calls += 1
            if not status.isdigit() or int(status) >= 400:
                stats.upstream_failures.append(f"{provider}:{status}")

    def retry_scheduled(self, provider: str, endpoint: str) -> None:
        self.metrics.retry_scheduled(provider, endpoint)

    def retry_refused(self, provider: str) -> None:
        self.metrics.retry_refused(provider)

    def circuit_changed(self, provider: str, state: BreakerState) -> None:
        self.metrics.circuit_changed(provider, state)

    def request_throttled(self, provider: str, endpoint: str) -> None:
        self.metrics.request_throttled(provider, endpoint)


class ObservabilityMiddleware:
    """Request ids, access lines and GraphQL operation metrics; see the module docstring."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, graphql_path: str) -> None:
        self.app = app
        self.metrics = metrics
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_id = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"")
        request_id = accepted_request_id(raw_id.decode("latin-1"))
        graphql = scope["path"] == self.graphql_path
        request_body = bytearray()
        response_body = bytearray()
        response: dict[str, Any] = {"status": 500, "json": False}

        async def observed_receive() -> Message:
            message = await receive()
            if graphql and message["type"] == "http.request":
                _append(request_body, message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                response["status"] = message["status"]
                response["json"] = "json" in headers.get("content-type", "")
            elif (
                message["type"] == "http.response.body"
                and graphql
                and response["json"]
                and ANSWERED not in scope.get("state", ())
            ):
                _append(response_body, message.get("body", b""))
            await send(message)

        stats = RequestStats()
        id_token = REQUEST_ID.set(request_id)
        stats_token = _STATS.set(stats)
        started = time.perf_counter()
        try:
            await self.app(scope, observed_receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            line: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": response["status"],
                "duration_ms": round(seconds * 1000, 1),
                "request_id": request_id,
                "upstream_calls": stats.upstream_calls,
                "upstream_failures": stats.upstream_failures,
            }
            key = scope.get("state", {}).get("gateway_key")
            if isinstance(key, GatewayKey):  # its name, never the key
                line["key"] = key.name
            if graphql and (scope["method"] != "GET" or response["json"]):
                state = scope.get("state", {})
                answered = state.get(ANSWERED)
                if isinstance(answered, Answered):
                    outcome, codes = outcome_of(response["status"], answered.response)
                    named = name_of(answered.request)
                else:
                    outcome, codes = graphql_outcome(response["status"], bytes(response_body))
                    named = operation_name(scope, bytes(request_body))
                name = (
                    self.metrics.operation_label(named, register=outcome != "refused")
                    if state.get("authenticated")
                    else UNAUTHENTICATED
                )
                self.metrics.operation_finished(name, outcome, seconds)
                line.update(operation=name, outcome=outcome, error_codes=codes)
            access_logger.info(
                "%s %s %s", scope["method"], scope["path"], line["status"], extra={"access": line}
            )
            _STATS.reset(stats_token)
            REQUEST_ID.reset(id_token)


def _append(buffer: bytearray, chunk: bytes) -> None:
    if len(buffer) + len(chunk) <= MAX_OBSERVED_BODY:
        buffer.extend(chunk)
    else:
        buffer.clear()
        buffer.extend(b"\0")  # too large: never parsed


def operation_name(scope: Scope, body: bytes) -> str | None:
    """The operation's name: `operationName`, else the document's first named operation.

    `UNKNOWN` when the request was refused before its body was read.
    """
    payload: Any
    if scope["method"] == "GET":
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        payload = {key: values[0] for key, values in params.items()}
    else:
        try:
            payload = jsonfast.loads(body)
        except ValueError:
            return UNKNOWN
    if not isinstance(payload, dict):
        return UNKNOWN
    return name_of(payload)


def name_of(payload: Mapping[str, Any]) -> str | None:
    """The operation's name in a decoded GraphQL request (see `operation_name`)."""
    name = payload.get("operationName")
    if isinstance(name, str) and name:
        return name
    query = payload.get("query")
    if not isinstance(query, str):
        return UNKNOWN
    match = _OPERATION.search(query)
    return match.group(1) if match else None


def graphql_outcome(status: int, body: bytes) -> tuple[str, list[str]]:
    """The outcome of a GraphQL response, and the codes of its top-level errors."""
    try:
        payload = jsonfast.loads(body) if body else None
    except ValueError:
        payload = None
    return outcome_of(status, payload if isinstance(payload, dict) else None)


def outcome_of(status: int, payload: Mapping[str, Any] | None) -> tuple[str, list[str]]:
    """`graphql_outcome` of a decoded response (None: not a JSON object)."""
    errors = payload.get("errors") if payload is not None else None
    codes = sorted(
        {
            str(error.get("extensions", {}).get("code", ErrorCode.INTERNAL.value))
            for error in errors or ()
            if isinstance(error, dict)
        }
    )
    if 400 <= status < 500:
        return "refused", codes
    if status >= 500:
        return "errors", codes
    if not codes:
        return "ok", codes
    not_run = payload is not None and payload.get("data") is None
    if not_run and codes == [ErrorCode.INVALID_QUERY.value]:
        return "refused", codes
    return "errors", codes
