"""CORS: off unless origins are configured; then GET and POST with the headers the API reads,
never cookies, and a refused preflight answered as JSON."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from gateway.errors import ErrorCode
from gateway.http.guard import ALLOWED_METHODS, error_response

# Every request header the API reads, for CORS preflights.
CORS_ALLOWED_HEADERS = (
    "authorization",
    "content-type",
    "x-almanac-token",
    "x-autoposting-api-key",
    "x-request-id",
)
CORS_MAX_AGE = 600


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, refusing a preflight with a JSON error instead of text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        return error_response(
            response.status_code,
            f"{bytes(response.body).decode()}: this origin may not call the gateway.",
            ErrorCode.NOT_ALLOWED,
            headers=headers,
        )


def cors_options(origins: Collection[str]) -> dict[str, Any]:
    """Keyword arguments of `JSONCORSMiddleware` for the configured origins."""
    return {
        "allow_origins": list(origins),
        "allow_methods": list(ALLOWED_METHODS),
        "allow_headers": list(CORS_ALLOWED_HEADERS),
        # Callers authenticate with a header, never a cookie.
        "allow_credentials": False,
        # So a browser caller can read the request id to quote it in a report.
        "expose_headers": ["x-request-id"],
        "max_age": CORS_MAX_AGE,
    }
