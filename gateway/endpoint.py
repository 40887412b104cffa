"""The GraphQL endpoint: Strawberry's ASGI view with a context per request, JSON refusals, the
GraphQL-over-HTTP status codes and, for the common JSON POST, the lean path."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Strawberry's HTTP refusals; cross-web is the Strawberry dependency that defines them.
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway import jsonfast
from gateway.context import Context, build_context
from gateway.errors import ErrorCode
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.http.graphiql import GraphiQLPage
from gateway.http.guard import (
    error_response,
    replay_body,
)
from gateway.http.negotiation import GRAPHQL_RESPONSE_MEDIA_TYPE, preferred_media_type
from gateway.http.persisted import PersistedOperations, PersistedQueryError
from gateway.keys import FULL_SCOPE, NO_SCOPE, GatewayKey
from gateway.schema import build_schema
from gateway.settings import Settings
from gateway.telemetry.observability import ANSWERED, Answered

# Arrays and objects nested deeper than this in a request's JSON (a POST body, GET's `variables`
# and `extensions`) are refused while decoding: no operation needs more than a few levels, and
# deep values would exhaust the stack of whatever walks them recursively.
MAX_JSON_DEPTH = 64
# What a POST may run (Strawberry's rule for the method).
POST_OPERATION_TYPES = OperationType.from_http("POST")


def _operation_tracing(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Strawberry's OpenTelemetry extension when tracing is on (an optional dependency)."""
    if not settings.otel:
        return []
    from gateway.telemetry import tracing

    return [tracing.operation_extension()]


class GatewayGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with a context built for each request and JSON refusals."""

    def __init__(
        self, settings: Settings, *, graphiql_headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            build_schema(settings, more=_operation_tracing(settings)),
            graphql_ide="graphiql" if settings.graphiql else None,
        )
        self.settings = settings
        # Served from the gateway's own vendored files: GraphiQL works with no internet access.
        self.graphiql_page = GraphiQLPage(
            (EXAMPLE_QUERY, EXAMPLE_MUTATION), headers=graphiql_headers
        )
        self.persisted = PersistedOperations(
            settings.persisted_operations,
            persisted_only=settings.persisted_only,
            cache_size=settings.apq_cache_size,
        )
        # The lean path (`answer_lean`) goes with compiled execution: off, both are today's.
        self.lean = settings.compiled_execution

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.lean and scope["method"] == "POST":
            body = await _read_body(receive)
            if body is None:  # the client went away
                return
            if await self.answer_lean(scope, body, send):
                return
            receive = replay_body(body, receive)
        request = Request(scope, receive)
        try:
            response = await self.run(request)
        except PersistedQueryError as exc:
            response = error_response(exc.status, exc.message, exc.code)
        except HTTPException as exc:
            # Strawberry answers these as text/plain; callers get the same JSON shape as
            # every other error.
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_QUERY
            if isinstance(exc.__cause__, InvalidOperationTypeError) and _prefers_graphql_response(
                request
            ):
                # GraphQL over HTTP: a mutation sent by GET is 405 (application/json keeps 400).
                response = error_response(405, exc.reason, code, headers={"Allow": "POST"})
            else:
                response = error_response(exc.status_code, exc.reason, code)
        await response(scope, receive, send)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET naming a persisted query by hash has no `query` parameter: not the IDE page.
        return (
            super().should_render_graphql_ide(request)
            and request.query_params.get("extensions") is None
        )

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):
            # Persisted operations: the document named by hash, or a refusal (PersistedQueryError).
            data.query = self.persisted.document(data.query, data.extensions)
        return data

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response_data = await super().process_result(request, result)
        if _prefers_graphql_response(request) and not _executed(result):
            # A request error has no `data` entry (GraphQL spec, "Response"); create_response
            # gives it a 4xx status.
            response_data.pop("data", None)
        return response_data

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if isinstance(response_data, dict):
            response.status_code = _status(response_data, response.status_code)
        return response

    async def answer_lean(self, scope: Scope, body: bytes, send: Send) -> bool:
        """Answer a JSON POST of one operation with less Python than Strawberry's view: one
        orjson parse, the schema's own `execute` (its caches, limits, plans, error formatting),
        one orjson dump, one response. What the view would answer as it does here: the same
        checks of the body, persisted operations, context, status codes and headers.

        False, with nothing sent, for anything else (a batch, a malformed body, a streaming
        Accept, a persisted-query refusal, an operation name or type the document refuses):
        the view answers it, having done nothing the lean path did not undo.
        """
        try:
            data = jsonfast.loads(body, max_depth=MAX_JSON_DEPTH)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        query, variables = data.get("query"), data.get("variables")
        name, extensions = data.get("operationName"), data.get("extensions")
        if not (
            isinstance(query, str | None)
            and isinstance(variables, dict | None)
            and isinstance(name, str | None)
            and isinstance(extensions, dict | None)
        ):
            return False
        headers = Headers(scope=scope)
        if "application/json" not in headers.get(
            "content-type", ""
        ) or self._get_stream_transport_from_headers(headers):
            return False
        try:
            query = self.persisted.document(query, extensions)
        except PersistedQueryError:
            return False
        if not query:
            return False
        state = scope.get("state") or {}
        context = self.context_of(headers, state.get("gateway_key"), state)
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=name,
                allowed_operation_types=POST_OPERATION_TYPES,
                operation_extensions=extensions,
            )
        except (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError):
            return False
        response_data = process_result(result)
        accept = preferred_media_type(headers.get("accept"))
        if accept == GRAPHQL_RESPONSE_MEDIA_TYPE and not _executed(result):
            response_data.pop("data", None)
        payload = jsonfast.dumps(response_data)
        if "state" in scope:  # for the access line and metrics: nothing to parse again
            scope["state"][ANSWERED] = Answered(data, response_data)
        await send(
            {
                "type": "http.response.start",
                "status": _status(response_data, 200),
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return True

    async def render_graphql_ide(self, request: Request) -> Response:
        return self.graphiql_page.response(request)

    def is_ide_page(self, request: Request) -> bool:
        """Whether Strawberry would answer `request` with the GraphiQL page."""
        return self.should_render_graphql_ide(self.request_adapter_class(request))

    def decode_json(self, data: str | bytes) -> object:
        # Strawberry 0.341 answers 500 to a POST body that is not UTF-8, or is JSON but not an
        # object or a list, or JSON that jsonfast refuses (a huge number, a lone surrogate, deep
        # nesting): refuse each as a malformed request. (Query-string values are str.)
        try:
            value = jsonfast.loads(data, max_depth=MAX_JSON_DEPTH)
        except jsonfast.JSONRefusedError as exc:
            raise HTTPException(400, f"The request's JSON is refused: {exc}.") from None
        except UnicodeDecodeError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if isinstance(data, bytes) and not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object with a `query`.")
        return value

    def encode_json(self, data: object) -> bytes:
        return jsonfast.dumps(data)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        # The key the guard accepted; with keys configured and none accepted (the GraphiQL page,
        # which runs no operation), the caller may do nothing.
        key: GatewayKey | None = getattr(request.state, "gateway_key", None)
        return self.context_of(
            request.headers,
            key,
            {"clients": request.state.clients, "idempotency": request.state.idempotency},
        )

    def context_of(
        self, headers: Mapping[str, str], key: GatewayKey | None, state: Mapping[str, Any]
    ) -> Context:
        """The context of a request with these headers and the key the guard accepted, over the
        app's `state` (its clients and idempotency store)."""
        return build_context(
            self.settings,
            state["clients"],
            headers,
            idempotency=state["idempotency"],
            gateway_key=key,
            scope=key.scope if key else NO_SCOPE if self.settings.api_keys else FULL_SCOPE,
        )


def _status(response_data: GraphQLHTTPResponse, status: int) -> int:
    """The status of a response: a request error without `data` (only in
    application/graphql-response+json, see `process_result`) is a 400, or a 500 when internal."""
    if "data" in response_data:
        return status
    internal = any(
        isinstance(error, dict)
        and (error.get("extensions") or {}).get("code") == ErrorCode.INTERNAL.value
        for error in response_data.get("errors") or ()
    )
    return 500 if internal else 400


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the guard has bounded it), or None if the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _prefers_graphql_response(request: Request) -> bool:
    return preferred_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE_MEDIA_TYPE


def _executed(result: ExecutionResult) -> bool:
    """Whether execution started: not for a document that failed to parse or validate
    (Strawberry's PreExecutionError) nor for variables that failed coercion (graphql-core answers
    those with no data and errors without a path)."""
    if isinstance(result, PreExecutionError):
        return False
    return result.data is not None or not result.errors or any(e.path for e in result.errors)
