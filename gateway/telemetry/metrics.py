"""Prometheus metrics of one app, in a registry of its own (never the process-wide default).

Label values are bounded, and none is chosen by a caller the gateway did not accept: operation
names label only requests that passed the gateway-key check (the others share "unauthenticated");
they are GraphQL names of at most 64 characters, a new one kept only for an operation that was not
refused, up to `MAX_OPERATION_NAMES` distinct ones, any later one counted as "other". Upstream
endpoints are path templates ("other" when unknown), statuses registered HTTP codes ("other" for
any other number) or a transport error class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.upstreams import UpstreamClient
from gateway.upstreams.resilience import BreakerState

MAX_OPERATION_NAMES = 100
OTHER = "other"
ANONYMOUS = "anonymous"
UNAUTHENTICATED = "unauthenticated"
UNKNOWN = "unknown"
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
# Seconds: GraphQL operations wait on upstreams with read timeouts of 15-30 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Upstream statuses kept as labels: the registered codes; an upstream may answer any 3 digits.
_HTTP_STATUSES = frozenset(str(status.value) for status in HTTPStatus)
CIRCUIT_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Metrics:
    """The gateway's metrics; `render()` is the body of /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._operation_names: set[str] = set()
        self._breakers = _CircuitCollector()
        self.registry.register(self._breakers)
        registry = self.registry
        self.operations = Counter(
            "gateway_graphql_operations",
            "GraphQL operations by name and outcome (ok, errors, refused).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.operation_seconds = Histogram(
            "gateway_graphql_operation_duration_seconds",
            "Time to answer a GraphQL operation.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests",
            "Requests sent to an upstream, by endpoint template and HTTP status or error class.",
            ["provider", "endpoint", "status"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Time an upstream took to answer (or fail), per request sent.",
            ["provider", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "gateway_upstream_retries",
            "GET requests sent again after a retryable failure.",
            ["provider", "endpoint"],
            registry=registry,
        )
        self.retries_refused = Counter(
            "gateway_upstream_retries_refused",
            "Retries not sent because the retry budget was spent.",
            ["provider"],
            registry=registry,
        )
        self.circuit_changes = Counter(
            "gateway_upstream_circuit_transitions",
            "Moves of a circuit breaker, by the state it moved to.",
            ["provider", "state"],
            registry=registry,
        )
        self.coalesced = Counter(
            "gateway_upstream_coalesced_waiters",
            "GET requests not sent: they waited for an identical GET in flight.",
            ["provider", "endpoint"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "gateway_upstream_cache_lookups",
            "Lookups of cacheable upstream answers, by result (hit, miss; error: the cache did "
            "not answer, so the provider was asked).",
            ["provider", "endpoint", "result"],
            registry=registry,
        )
        self.cache_store_errors = Counter(
            "gateway_upstream_cache_store_errors",
            "Upstream answers not kept: the cache failed or did not answer in time (Redis down).",
            ["provider", "endpoint"],
            registry=registry,
        )
        self.throttled = Counter(
            "gateway_upstream_throttled",
            "Calls not sent and answered RATE_LIMITED: a 429 throttles their credential.",
            ["provider", "endpoint"],
            registry=registry,
        )
        self.stale_answers = Counter(
            "gateway_stale_answers",
            "Reads answered with the last good answer (stale-if-error), by resource and the "
            "code of the failure it stood in for.",
            ["provider", "resource", "reason"],
            registry=registry,
        )
        self.idempotency = Counter(
            "gateway_idempotency_keys",
            "Checkout idempotency keys presented, by result (new, replay, conflict).",
            ["result"],
            registry=registry,
        )
        self.contract_drift = Counter(
            "gateway_upstream_contract_drift",
            "Upstream answer fields read tolerantly (null, a default, or a dropped list element) "
            "per normalized answer, by field path and kind (missing, malformed, unknown_value).",
            ["provider", "endpoint", "field", "kind"],
            registry=registry,
        )
        self.ready = Gauge(
            "gateway_upstream_ready",
            "Whether the last readiness probe reached the upstream (1) or not (0).",
            ["check"],
            registry=registry,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def watch(self, clients: Iterable[UpstreamClient]) -> None:
        """Report `clients`' circuit breaker states (read at each scrape), their cache lookups
        and coalesced requests."""
        self._breakers.clients = list(clients)
        for client in self._breakers.clients:
            client.observe_reuse(self)

    def operation_label(self, name: str | None, *, register: bool = True) -> str:
        """`name` as a bounded label value; a name not yet seen takes one of the
        `MAX_OPERATION_NAMES` places only if `register` (an operation that ran, of a caller the
        gateway accepted)."""
        if name is None:
            return ANONYMOUS
        if not _NAME.fullmatch(name):
            return OTHER
        if name not in self._operation_names:
            if not register or len(self._operation_names) >= MAX_OPERATION_NAMES:
                return OTHER
            self._operation_names.add(name)
        return name

    def operation_finished(self, name: str, outcome: str, seconds: float) -> None:
        self.operations.labels(name, outcome).inc()
        self.operation_seconds.labels(name, outcome).observe(seconds)

    # `UpstreamObserver`

    def request_finished(
        self, provider: str, method: str, endpoint: str, status: str, seconds: float
    ) -> None:
        if status.isdigit() and status not in _HTTP_STATUSES:
            status = OTHER
        self.upstream_requests.labels(provider, endpoint, status).inc()
        self.upstream_seconds.labels(provider, endpoint).observe(seconds)

    def retry_scheduled(self, provider: str, endpoint: str) -> None:
        self.retries.labels(provider, endpoint).inc()

    def retry_refused(self, provider: str) -> None:
        self.retries_refused.labels(provider).inc()

    def circuit_changed(self, provider: str, state: BreakerState) -> None:
        self.circuit_changes.labels(provider, state.value).inc()

    def request_throttled(self, provider: str, endpoint: str) -> None:
        self.throttled.labels(provider, endpoint).inc()

    # `stale.StaleObserver`

    def stale_answer(self, provider: str, resource: str, reason: str) -> None:
        self.stale_answers.labels(provider, resource, reason).inc()

    # `ReuseObserver`

    def cache_lookup(self, provider: str, endpoint: str, *, hit: bool) -> None:
        self.cache_lookups.labels(provider, endpoint, "hit" if hit else "miss").inc()

    def cache_failed(self, provider: str, endpoint: str, *, operation: str) -> None:
        if operation == "get":
            self.cache_lookups.labels(provider, endpoint, "error").inc()
        else:
            self.cache_store_errors.labels(provider, endpoint).inc()

    def request_coalesced(self, provider: str, endpoint: str) -> None:
        self.coalesced.labels(provider, endpoint).inc()


class _CircuitCollector(Collector):
    """`gateway_upstream_circuit_state`, read from the breakers when scraped: an open breaker
    turns half-open with time, not on an event."""

    def __init__(self) -> None:
        self.clients: list[UpstreamClient] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "gateway_upstream_circuit_state",
            "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        for client in self.clients:
            gauge.add_metric([client.provider.value], CIRCUIT_STATE_VALUES[client.breaker.state])
        yield gauge
