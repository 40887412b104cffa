"""`UpstreamClient`: the one place that sends HTTP to a provider.

Request contract
- Every call carries the caller's credential as `Authorization: Bearer ...`, a JSON `Accept`, and
  the connect and read timeouts of the provider's settings.
- An answer is decoded as JSON; anything else (HTML from a misconfigured base URL, truncated JSON,
  a redirect) is `UpstreamBadResponse`.
- HTTP statuses and httpx exceptions map to the exception tree of `gateway.errors` here and only
  here, always chained; nothing above this module sees an httpx error. Messages are written here,
  never copied from an upstream body, and name no URL query or credential.
- A request that cannot be built (a character its URL or a header cannot carry, a body JSON cannot
  encode) is not sent: `InvalidInput` for the provider, never an upstream failure.

Retry contract
- Only GETs are retried: on connect errors, timeouts, dropped connections, 502/503/504 and 429,
  at most `get_retries` times, with jittered exponential backoff, honouring `Retry-After` (seconds
  or an HTTP date; for a 429 without one, `X-RateLimit-Reset`) when it is within
  `retry_after_cap`; a longer wait is not slept but returned to the caller in the error's
  `retry_after`.
- A retry also needs a token of the client's retry budget (`resilience.RetryBudget`): each GET or
  POST sent deposits `retry_budget_ratio` tokens, each retry takes one, and a floor of
  `retry_budget_min_per_second` refills it, so in an outage retries add at most about that ratio
  of load. A retry the budget or the circuit breaker refuses is not sent: the last error is raised.
- A POST is never retried: neither provider honours idempotency keys, so a second POST could
  create a second checkout. A POST whose answer was lost says so in its error message.

How the client applies the other contracts, each stated in its own module:
- rate limits per credential (`throttle`): a credential a 429 throttled is answered
  `UpstreamRateLimited` before the breaker is asked or anything is sent;
- the circuit breaker and the retry budget (`resilience`): which errors count as the provider
  being unwell (`mapping.UNHEALTHY_ERRORS`: a 429 is not one), one probe after `breaker_reset`;
- reuse of answers (`reuse`): a GET of an endpoint with a cache group is answered from the cache
  while fresh, else shares an identical GET in flight (only while the breaker is closed: otherwise
  every call meets the breaker). POSTs and probes take no part in either.
- Observation: every request sent, retry and breaker move is reported to the `UpstreamObserver`
  with its endpoint template (never a raw path); cache lookups and coalesced GETs to the
  `ReuseObserver`; the request id of `REQUEST_ID`, when set, goes upstream as `X-Request-ID`.
  `probe` (readiness) sends a credential-less GET outside the breaker and the retry budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from json import dumps as json_dumps
from typing import ClassVar, NoReturn

import httpx

from gateway.credentials import Credential
from gateway.errors import (
    InvalidInput,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.settings import UpstreamSettings
from gateway.telemetry.request_id import REQUEST_ID
from gateway.upstreams.endpoints import Endpoint, endpoint_template
from gateway.upstreams.mapping import (
    NOT_RETRIED,
    RETRIED_STATUSES,
    UNHEALTHY_ERRORS,
    json_body,
    status_error,
    transport_error,
)
from gateway.upstreams.observers import NoObserver, ReuseObserver, UpstreamObserver
from gateway.upstreams.resilience import BreakerState, CircuitBreaker, Clock, RetryBudget, Ticket
from gateway.upstreams.reuse import (
    CachePolicy,
    ResponseCache,
    SharedAnswers,
    request_key,
)
from gateway.upstreams.throttle import (
    CredentialThrottle,
    MemoryRateLimits,
    RateLimits,
    rate_limit_wait,
)
from gateway.upstreams.transport import no_cookies, upstream_transport

logger = logging.getLogger("gateway.upstream")

USER_AGENT = "billing-gateway/0.1"
DEFAULT_HEADERS: Mapping[str, str] = {"user-agent": USER_AGENT, "accept": "application/json"}
# Connections per provider: a request fans out to tens of GETs at once, and concurrent requests
# multiply them; kept alive for reuse (`transport.upstream_transport`).
DEFAULT_MAX_CONNECTIONS = 100
# URLs kept parsed per client (`_url`): paths carry account ids, so callers choose them; at the
# bound the table starts again.
URL_CACHE_SIZE = 1024
Sleep = Callable[[float], Awaitable[None]]


class UpstreamClient:
    """Sends requests to one provider and returns decoded JSON, or raises an `UpstreamError`."""

    # The provider's endpoints: metric labels (`{id}` matches one segment) and cache groups.
    endpoints: ClassVar[tuple[Endpoint, ...]] = ()

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        coalesce: bool = True,
        coalesce_ahead: int = 0,
        cache: ResponseCache | None = None,
        cache_policy: CachePolicy | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        """`transport` replaces the network (tests); by default a pool of `max_connections`.
        `rate_limits` keeps throttled credentials (by default in this client only)."""
        self.settings = settings
        self.provider = settings.provider
        self._sleep = sleep
        self.breaker = CircuitBreaker(
            settings.provider.value,
            failures=settings.breaker_failures,
            reset=settings.breaker_reset,
            clock=clock,
        )
        self.retry_budget = RetryBudget(
            ratio=settings.retry_budget_ratio,
            min_per_second=settings.retry_budget_min_per_second,
            clock=clock,
        )
        self._transport = transport or upstream_transport(
            max_connections=max_connections, base_url=settings.base_url
        )
        self._timeout = httpx.Timeout(
            settings.read_timeout, connect=settings.connect_timeout
        ).as_dict()
        self._base_url = str(httpx.URL(settings.base_url)).rstrip("/")
        self._urls: dict[str | tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        # Requests are built here and handed to the transport (the object OpenTelemetry's
        # instrumentation wraps), not sent by `AsyncClient.request` or `.send`: their URL merge,
        # header and cookie merges, auth and redirect flows and cookie extraction cost more than
        # the rest of the call; redirects are refused anyway, and a cookie one provider set for
        # one credential must never be sent with another's. The client only owns the transport,
        # for the instrumentation and for closing it; its jar keeps no cookie even so.
        self._http = httpx.AsyncClient(transport=self._transport, cookies=no_cookies())
        self.observer: UpstreamObserver = NoObserver()
        self._templates = tuple(endpoint.template for endpoint in self.endpoints)
        # GET answers reused between requests (the reuse contract): by cache group of endpoint.
        self.reuse = SharedAnswers(
            self.provider.value,
            cache=cache,
            policy=cache_policy or CachePolicy(),
            coalesce=coalesce,
            coalesce_ahead=coalesce_ahead,
            cached={e.template: e.cache for e in self.endpoints if e.cache is not None},
        )
        self.throttle = CredentialThrottle(
            self.provider.value,
            rate_limits if rate_limits is not None else MemoryRateLimits(clock=clock),
        )

    def observe(self, observer: UpstreamObserver) -> None:
        """Report requests, retries and breaker moves to `observer` from now on."""
        self.observer = observer
        provider = self.provider.value
        self.breaker.on_change = lambda state: observer.circuit_changed(provider, state)

    def observe_reuse(self, observer: ReuseObserver) -> None:
        """Report cache lookups and coalesced GETs to `observer` from now on."""
        self.reuse.observer = observer

    def instrument(self, instrumentor: Callable[[httpx.AsyncClient], object]) -> None:
        """Let `instrumentor` (OpenTelemetry's httpx instrumentation) wrap the HTTP client."""
        instrumentor(self._http)

    async def probe(self, path: str, *, time_limit: float) -> int:
        """GET `path` without a credential, within `time_limit` seconds; the HTTP status.

        Outside the circuit breaker and the retry budget (readiness checks); a transport failure
        raises `UpstreamTimeout` or `UpstreamUnreachable`.
        """
        response = await self._send("GET", path, path, headers={}, time_limit=time_limit)
        return response.status_code

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def get(
        self, path: str, *, credential: Credential | None, params: Mapping[str, str] | None = None
    ) -> object:
        """GET `path` and return its decoded JSON: from the cache, or shared with an identical
        GET in flight, or sent and retried as the retry contract says (see the reuse contract)."""
        if not self.reuse.active:
            return await self._get(path, credential=credential, params=params)
        return await self.reuse.get(
            request_key(self.provider.value, path, params, credential),
            self.endpoint(path),
            lambda: self._get(path, credential=credential, params=params),
            # Past failures: each call goes to the breaker itself, which lets one probe through
            # and fails the others fast (the breaker contract).
            coalesce=self.breaker.state is BreakerState.CLOSED,
        )

    async def _get(
        self, path: str, *, credential: Credential | None, params: Mapping[str, str] | None
    ) -> object:
        await self._check_throttle(credential, path)
        ticket = self._admit()
        try:
            attempt = 0
            while True:
                try:
                    body = await self._request("GET", path, credential=credential, params=params)
                except UpstreamError as error:
                    if isinstance(error, UpstreamRateLimited):
                        await self.throttle.hold(credential, error.retry_after)
                    delay = self._retry_delay(error, attempt, ticket, path)
                    if delay is None:
                        self._record_failure(ticket, error)
                        raise
                    attempt += 1
                    self.observer.retry_scheduled(self.provider.value, self.endpoint(path))
                    logger.info(
                        "retrying %s GET %s in %.2fs (%s)",
                        self.provider.value,
                        path,
                        delay,
                        error.code.value,
                    )
                    await self._sleep(delay)
                    if not self.breaker.is_current(ticket):
                        raise  # the breaker opened meanwhile: the retry is not sent
                else:
                    self.breaker.record_success(ticket)
                    return body
        finally:
            self.breaker.release(ticket)

    async def post(self, path: str, *, credential: Credential | None, json: object) -> object:
        """POST `json` to `path` once, never retried, and return the decoded JSON answer."""
        await self._check_throttle(credential, path)
        ticket = self._admit()
        try:
            body = await self._request("POST", path, credential=credential, json=json)
        except UpstreamError as error:
            if isinstance(error, UpstreamRateLimited):
                await self.throttle.hold(credential, error.retry_after)
            self._record_failure(ticket, error)
            raise
        else:
            self.breaker.record_success(ticket)
            return body
        finally:
            self.breaker.release(ticket)

    async def _check_throttle(self, credential: Credential | None, path: str) -> None:
        """`UpstreamRateLimited`, sending nothing, while a 429 throttles `credential` here."""
        left = await self.throttle.remaining(credential)
        if left <= 0:
            return
        self.observer.request_throttled(self.provider.value, self.endpoint(path))
        raise UpstreamRateLimited(
            f"{self.provider.label} is rate limiting this credential; retry after "
            f"{max(1, math.ceil(left))} s.",
            provider=self.provider,
            retry_after=max(0.001, round(left, 3)),
        )

    def _admit(self) -> Ticket:
        """A breaker ticket for a new call, or `UpstreamCircuitOpen`; an admitted call is counted
        in the retry budget."""
        ticket = self.breaker.acquire()
        if ticket is None:
            wait = self.breaker.retry_after()
            raise UpstreamCircuitOpen(
                f"{self.provider.label} is unavailable after repeated failures; retry after "
                f"{max(1, math.ceil(wait))} s.",
                provider=self.provider,
                retry_after=max(0.001, round(wait, 3)),
            )
        self.retry_budget.record_call()
        return ticket

    def _record_failure(self, ticket: Ticket, error: UpstreamError) -> None:
        if isinstance(error, UNHEALTHY_ERRORS):
            self.breaker.record_failure(ticket, error.code.value)
        else:
            self.breaker.record_success(ticket)

    def _retry_delay(
        self, error: UpstreamError, attempt: int, ticket: Ticket, path: str
    ) -> float | None:
        """The wait before retrying a GET that failed with `error`, or None: do not retry."""
        retried = isinstance(error, UpstreamTimeout | UpstreamUnreachable) or (
            error.status in RETRIED_STATUSES
        )
        if not retried or attempt >= self.settings.get_retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.settings.retry_after_cap:
                return None
            delay = error.retry_after
        else:
            backoff = self.settings.retry_backoff * (2.0**attempt)
            delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography
        # The probe is one request; and once the breaker has moved, this call's verdict is stale.
        if ticket.probe or not self.breaker.is_current(ticket):
            return None
        if not self.retry_budget.try_retry():
            self.observer.retry_refused(self.provider.value)
            logger.info(
                "not retrying %s GET %s: the retry budget is spent (%s)",
                self.provider.value,
                path,
                error.code.value,
            )
            return None
        return delay

    async def _request(
        self,
        method: str,
        path: str,
        *,
        credential: Credential | None,
        params: Mapping[str, str] | None = None,
        json: object = None,
    ) -> object:
        headers = self.auth_headers(credential) if credential is not None else {}
        response = await self._send(
            method, path, self.endpoint(path), headers=headers, params=params, json=json
        )
        return self._decode(method, path, response)

    def endpoint(self, path: str) -> str:
        """The endpoint template of `path`, the label of metrics."""
        return endpoint_template(path, self._templates)

    async def _send(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        headers: dict[str, str],
        params: Mapping[str, str] | None = None,
        json: object = None,
        time_limit: float | None = None,
    ) -> httpx.Response:
        """Send one request and read its body; the observer hears of it however it ends."""
        request_id = REQUEST_ID.get()
        if request_id is not None:
            headers["x-request-id"] = request_id
        timeout = self._timeout if time_limit is None else httpx.Timeout(time_limit).as_dict()
        try:
            content = None
            if json is not None:
                # httpx's own encoding (a NaN or a lone surrogate refused), with its URL parsed
                # once (`_url`) instead of on every request.
                content = json_dumps(
                    json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode()
                headers["content-type"] = "application/json"
            request = httpx.Request(
                method,
                self._url(path, params),
                content=content,
                headers={**DEFAULT_HEADERS, **headers},
                extensions={"timeout": timeout},
            )
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            # Nothing was sent (a character a URL or a header cannot carry, a body JSON cannot
            # encode): the input's doing, and never an unknown outcome.
            logger.warning(
                "%s %s %s not sent: %s", self.provider.value, method, path, type(exc).__name__
            )
            raise InvalidInput(
                f"The {self.provider.label} request could not be built from this input; nothing "
                "was sent.",
                provider=self.provider,
            ) from exc
        started = time.perf_counter()
        try:
            response = await self._transport.handle_async_request(request)
            await response.aread()
        except httpx.HTTPError as exc:
            label, error_class, message = transport_error(exc)
            self.observer.request_finished(
                self.provider.value, method, endpoint, label, time.perf_counter() - started
            )
            logger.warning(
                "%s %s %s failed: %s", self.provider.value, method, path, type(exc).__name__
            )
            lost = NOT_RETRIED if method == "POST" else ""
            raise error_class(
                message.format(name=self.provider.label, lost=lost), provider=self.provider
            ) from exc
        elapsed = time.perf_counter() - started
        self.observer.request_finished(
            self.provider.value, method, endpoint, str(response.status_code), elapsed
        )
        logger.debug(
            "%s %s %s -> %d in %.1f ms",
            self.provider.value,
            method,
            path,
            response.status_code,
            elapsed * 1000,
        )
        return response

    def _url(self, path: str, params: Mapping[str, str] | None) -> httpx.URL:
        """The URL of `path` with `params`, parsed once: parsing one costs about 20 µs."""
        key = (path, tuple(params.items())) if params else path
        url = self._urls.get(key)
        if url is None:
            url = httpx.URL(self._base_url + path)
            if params:
                url = url.copy_merge_params(params)
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[key] = url
        return url

    def auth_headers(self, credential: Credential) -> dict[str, str]:
        """The headers that present `credential` to the provider."""
        return {"authorization": f"Bearer {credential.reveal()}"}

    def _decode(self, method: str, path: str, response: httpx.Response) -> object:
        body = json_body(response, self.provider)
        if not response.is_success:
            self._raise_status_error(method, path, response, body)
        return self.unwrap(body, response)

    def _raise_status_error(
        self, method: str, path: str, response: httpx.Response, body: object
    ) -> NoReturn:
        status = response.status_code
        upstream_code = self.error_code(body)
        error_class, message = status_error(status, upstream_code)
        retry_after = rate_limit_wait(response.headers) if status == 429 else None
        code = f" ({upstream_code})" if upstream_code else ""
        logger.warning("%s %s %s answered %d%s", self.provider.value, method, path, status, code)
        raise error_class(
            message.format(name=self.provider.label, status=status, code=code)
            + (NOT_RETRIED if method == "POST" else ""),
            provider=self.provider,
            status=status,
            upstream_code=upstream_code,
            retry_after=retry_after,
        )

    def unwrap(self, body: object, response: httpx.Response) -> object:
        """The payload of a successful answer (overridden where a provider wraps it)."""
        return body

    def error_code(self, body: object) -> str | None:
        """A short machine code from an error body, when the provider gives one."""
        return None
