"""Liveness (`/healthz`) and readiness (`/readyz`), both answered without a gateway key.

`/healthz` answers 200 `{"status": "ok"}` while the process serves requests; it sends nothing
upstream, so a slow or failing upstream never gets the gateway restarted.

`/readyz` runs every readiness check at once and answers 200 `{"status": "ready"}`, or 503
`{"status": "not ready"}` when one fails. Only a caller whose gateway key holds `metrics:read`
(anyone, when the gateway has no keys) also gets `checks`: each check's state, circuit and latency,
which would tell anyone else when an upstream is failing. A result is kept `ready_cache_seconds`,
and concurrent callers share one run, so a burst of probes, keyed or not, sends at most one request
per upstream.
The upstream checks (`upstream_check`) send a credential-less GET through the upstream client (its
pool, timeouts, request id and metrics), outside its circuit breaker and retry budget: probing
neither opens nor closes the breaker, whose state each check reports beside its own answer.
More checks (a shared idempotency store) are more entries of `Readiness(checks)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import UpstreamError
from gateway.http.guard import ApiKeys
from gateway.keys import GatewayKey, Permission
from gateway.upstreams import UpstreamClient


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Whether one dependency is usable, and what an operator should see about it."""

    ok: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[[], Awaitable[CheckResult]]


def upstream_check(
    client: UpstreamClient, path: str, *, timeout: float, success_only: bool
) -> Check:
    """A check that GETs `path`: any answer below 500 is reachable (only 2xx if `success_only`);
    a timeout, a transport error or a 5xx is not."""

    async def check() -> CheckResult:
        started = time.perf_counter()
        detail: dict[str, Any] = {"circuit": client.breaker.state.value}
        try:
            status = await client.probe(path, time_limit=timeout)
        except UpstreamError as error:
            return CheckResult(False, {**detail, "error": error.code.value})
        detail["http_status"] = status
        detail["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        ok = 200 <= status < 300 if success_only else status < 500
        return CheckResult(ok, detail)

    return check


class Readiness:
    """Runs `checks` at most once per `cache_seconds`; see the module docstring."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.checks = dict(checks)
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._on_result = on_result
        self._lock = asyncio.Lock()
        self._result: tuple[bool, dict[str, Any]] | None = None
        self._checked_at = 0.0

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether every check passed, and each check's state."""
        async with self._lock:
            if self._result is None or self._clock() - self._checked_at >= self.cache_seconds:
                self._result = await self._run()
                self._checked_at = self._clock()
            return self._result

    async def _run(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._safe(self.checks[name]) for name in names))
        states: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            states[name] = {"status": "up" if result.ok else "down", **result.detail}
            if self._on_result is not None:
                self._on_result(name, result.ok)
        return all(result.ok for result in results), states

    @staticmethod
    async def _safe(check: Check) -> CheckResult:
        try:
            return await check()
        except Exception as exc:
            # A check's own bug reads as "down", never as a 500 of /readyz.
            return CheckResult(False, {"error": type(exc).__name__})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


def readyz(api_keys: Collection[GatewayKey]) -> Callable[[Request], Awaitable[Response]]:
    """The readiness endpoint: 200 when every check passes, else 503; the body names each check's
    state only for a caller presenting one of `api_keys` with `metrics:read` (for anyone when
    there are none). Any other caller, a wrong key included, gets the status alone: a probe never
    fails on its headers."""
    keys = ApiKeys(api_keys)

    def shows_details(authorization: str | None) -> bool:
        if not keys:
            return True
        key = keys.match(authorization)
        return key is not None and key.scope.permits(Permission.METRICS_READ)

    async def endpoint(request: Request) -> Response:
        readiness: Readiness = request.state.readiness
        ready, checks = await readiness.report()
        body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
        if shows_details(request.headers.get("authorization")):
            body["checks"] = checks
        return JSONResponse(
            body, status_code=200 if ready else 503, headers={"cache-control": "no-store"}
        )

    return endpoint
