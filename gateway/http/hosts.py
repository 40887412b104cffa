"""The Host names the gateway answers to (`GATEWAY_ALLOWED_HOSTS`), checked before any route.

Nothing the gateway sends is built from the Host header (redirects are relative), so the list is
defence in depth: it refuses requests for names the gateway is not published under, such as a
DNS-rebinding page's own name or a proxy's misrouted traffic. `app.example.com` matches exactly,
ignoring case and any port; `*.example.com` matches any subdomain but not `example.com` itself.
A request whose Host is missing, malformed or not listed gets 421 Misdirected Request with a JSON
error (code MISDIRECTED_REQUEST). Liveness and readiness probes (`exempt_paths`) are answered
whatever their Host: an orchestrator's probe names the pod's address, which no list can know.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ErrorCode
from gateway.http.guard import error_response

# A host name (letters, digits, hyphens, dots) or an IPv6 literal in brackets, then an optional
# port: anything else (userinfo, spaces, a path) is malformed.
_HOST = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def host_name(value: str | None) -> str | None:
    """The lower-cased host of a Host header value, without its port; None if malformed."""
    match = _HOST.fullmatch(value or "")
    if match is None:
        return None
    return match.group("host").lower().rstrip(".")


def host_allowed(host: str, patterns: Collection[str]) -> bool:
    """Whether `host` is one of `patterns` (`*.example.com`: a subdomain of example.com)."""
    return any(
        host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
        for pattern in patterns
    )


class AllowedHostsMiddleware:
    """Refuses requests whose Host is not in `allowed_hosts` (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, *, allowed_hosts: Collection[str], exempt_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.allowed_hosts = tuple(host.lower() for host in allowed_hosts)
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host"))
        if host is not None and host_allowed(host, self.allowed_hosts):
            await self.app(scope, receive, send)
            return
        # The refused name is not echoed: it is the caller's input.
        response = error_response(
            421,
            "This gateway does not answer for that host name (see GATEWAY_ALLOWED_HOSTS).",
            ErrorCode.MISDIRECTED_REQUEST,
        )
        await response(scope, receive, send)
