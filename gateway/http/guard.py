"""HTTP-level protection of the GraphQL endpoint, applied before Strawberry sees a request.

`GraphQLGuard` wraps the endpoint and refuses, in this order and each with a JSON error:

    method other than GET or POST          405  INVALID_QUERY   (Allow: GET, POST)
    GraphiQL page while GraphiQL is off    404  NOT_FOUND
    no or wrong gateway key                401  UNAUTHENTICATED (WWW-Authenticate: Bearer)
    Accept without a JSON media type       406  NOT_ACCEPTABLE  (GraphQL over HTTP)
    POST body that is not application/json 415  INVALID_QUERY   (also what stops CSRF)
    body larger than `max_body_bytes`      413  INVALID_QUERY   (Content-Length, then counted)

Refusals are labelled with the media type the caller negotiated (`negotiation.py`).

The GraphiQL page itself is served without a key, so that a person can open it and type the
`Authorization` header; every operation, GraphiQL's included, needs the key. The accepted key's
entry is kept as `scope["state"]["gateway_key"]`: the GraphQL context applies its scope.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorCode
from gateway.http.negotiation import (
    GRAPHQL_RESPONSE_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    negotiated,
    preferred_media_type,
)
from gateway.keys import GatewayKey, key_digest

ALLOWED_METHODS = ("GET", "POST")


def error_response(
    status: int,
    message: str,
    code: ErrorCode,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A refusal in the shape of a GraphQL response: one error with `extensions.code`."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code.value}}]},
        status_code=status,
        headers=dict(headers or {}),
    )


def unauthenticated(authorization: str | None) -> JSONResponse:
    """The 401 of every endpoint that needs a gateway key, for the `Authorization` header value
    the request sent (None: none), which did not carry a key of this gateway."""
    if authorization is None:
        return error_response(
            401,
            "A gateway key is required: send Authorization: Bearer <key>.",
            ErrorCode.UNAUTHENTICATED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return error_response(
        401,
        "The gateway key is not valid: send Authorization: Bearer <key> with a key of this "
        "gateway.",
        ErrorCode.UNAUTHENTICATED,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class ApiKeys:
    """The gateway keys callers present as `Authorization: Bearer <key>`, known by their SHA-256.

    A presented key is hashed once and compared with every configured key's hash by
    `hmac.compare_digest`, with no early exit: the time taken tells neither which key matched nor
    how much of one did (hashing first also hides the keys' lengths).
    """

    def __init__(self, keys: Collection[GatewayKey]) -> None:
        self._keys = tuple(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def match(self, authorization: str | None) -> GatewayKey | None:
        """The key an `Authorization` header value carries, or None."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes as sent.
        presented = key_digest(token.encode("latin-1"))
        matched: GatewayKey | None = None
        for key in self._keys:
            if hmac.compare_digest(presented, key.digest) and matched is None:
                matched = key
        return matched if scheme.lower() == "bearer" and token else None


class _BodyTooLarge(Exception):
    pass


class GraphQLGuard:
    """ASGI wrapper of the GraphQL endpoint applying the checks of this module's docstring.

    `is_ide_page` says whether a request asks for the GraphiQL page (the GraphQL view's own rule);
    `graphiql` whether that page is served.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: Collection[GatewayKey],
        max_body_bytes: int,
        graphiql: bool,
        is_ide_page: Callable[[Request], bool],
    ) -> None:
        self.app = app
        self.api_keys = ApiKeys(api_keys)
        self.max_body_bytes = max_body_bytes
        self.graphiql = graphiql
        self.is_ide_page = is_ide_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        media_type = preferred_media_type(request.headers.get("accept"))
        ide_page = self.is_ide_page(request)
        send = negotiated(send, media_type)
        refusal = self.refusal(request, ide_page=ide_page, media_type=media_type)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if not ide_page:
            # Accepted by the key check (or no key is configured): telemetry may now give this
            # request's operation name a label of its own.
            scope.setdefault("state", {})["authenticated"] = True
        if request.method == "GET":
            await self.app(scope, receive, send)
            return
        try:
            body = await self.read_body(receive)
        except _BodyTooLarge:
            await self.too_large()(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        await self.app(scope, replay_body(body, receive), send)

    def refusal(
        self, request: Request, *, ide_page: bool, media_type: str | None
    ) -> Response | None:
        """The response refusing `request` on its method and headers, or None to go on;
        `ide_page` says whether it asks for GraphiQL, `media_type` what its Accept prefers."""
        if request.method not in ALLOWED_METHODS:
            return error_response(
                405,
                f"The GraphQL endpoint answers GET and POST, not {request.method}.",
                ErrorCode.INVALID_QUERY,
                headers={"Allow": ", ".join(ALLOWED_METHODS)},
            )
        if ide_page:
            if self.graphiql:
                return None
            return error_response(
                404, "GraphiQL is not enabled on this gateway.", ErrorCode.NOT_FOUND
            )
        authorization = request.headers.get("authorization")
        key = self.api_keys.match(authorization) if self.api_keys else None
        if key is not None:
            # The accepted key, whose scope the GraphQL context applies (gateway/keys.py).
            request.state.gateway_key = key
        elif self.api_keys:
            return unauthenticated(authorization)
        if media_type is None:
            return error_response(
                406,
                f"The GraphQL endpoint answers {GRAPHQL_RESPONSE_MEDIA_TYPE} or {JSON_MEDIA_TYPE}: "
                "send an Accept header naming one of them (or none).",
                ErrorCode.NOT_ACCEPTABLE,
            )
        if request.method == "POST":
            media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            # JSON is never a CORS "simple" content type: a browser asks (preflight) before
            # sending it cross-origin. Refusing forms and text/plain is the CSRF protection.
            if media_type != JSON_MEDIA_TYPE:
                return error_response(
                    415,
                    "Send GraphQL requests as POST with Content-Type: application/json "
                    f"(got {media_type or 'no content type'}).",
                    ErrorCode.INVALID_QUERY,
                )
            length = request.headers.get("content-length")
            if length is not None:
                if not (length.isascii() and length.isdigit()):
                    return error_response(
                        400, "The Content-Length header is malformed.", ErrorCode.INVALID_QUERY
                    )
                if int(length) > self.max_body_bytes:
                    return self.too_large()
        return None

    def too_large(self) -> Response:
        return error_response(
            413,
            f"The request body is larger than the gateway accepts ({self.max_body_bytes} bytes).",
            ErrorCode.INVALID_QUERY,
        )

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, counted as it streams in: a chunked body has no Content-Length."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over `body` whole, then defers to the server (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
