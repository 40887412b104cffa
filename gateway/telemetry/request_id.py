"""The id of the gateway request being served.

Set by the observability middleware for each request, read by the log formatters and forwarded to
the upstreams as `X-Request-ID`. It sits below every layer (stdlib only), like `provider.py`.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
