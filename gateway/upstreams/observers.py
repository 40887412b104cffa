"""What an `UpstreamClient` reports as it works: requests, retries, breaker moves and reuse."""

from __future__ import annotations

from typing import Protocol

from gateway.upstreams.resilience import BreakerState


class UpstreamObserver(Protocol):
    """Requests sent, retries and breaker moves (metrics, access logs)."""

    def request_finished(
        self, provider: str, method: str, endpoint: str, status: str, seconds: float
    ) -> None:
        """A request ended: `status` is the HTTP status, or the transport error's label."""

    def retry_scheduled(self, provider: str, endpoint: str) -> None:
        """A failed GET will be sent again."""

    def retry_refused(self, provider: str) -> None:
        """A retry was not sent: the retry budget is spent."""

    def circuit_changed(self, provider: str, state: BreakerState) -> None:
        """The circuit breaker moved to `state`."""

    def request_throttled(self, provider: str, endpoint: str) -> None:
        """A call was not sent: a 429 throttles its credential (`throttle`)."""


class ReuseObserver(Protocol):
    """Answers reused: cache lookups and coalesced GETs (metrics)."""

    def cache_lookup(self, provider: str, endpoint: str, *, hit: bool) -> None:
        """A cacheable GET was looked up in the cache."""

    def cache_failed(self, provider: str, endpoint: str, *, operation: str) -> None:
        """The cache could not answer a lookup (`operation` "get", answered as a miss) or keep
        an answer ("set", skipped)."""

    def request_coalesced(self, provider: str, endpoint: str) -> None:
        """A GET waits for an identical GET in flight instead of sending its own."""


class NoObserver:
    """Hears everything and does nothing: a client's observer until the app sets one."""

    def request_finished(
        self, provider: str, method: str, endpoint: str, status: str, seconds: float
    ) -> None:
        pass

    def retry_scheduled(self, provider: str, endpoint: str) -> None:
        pass

    def retry_refused(self, provider: str) -> None:
        pass

    def circuit_changed(self, provider: str, state: BreakerState) -> None:
        pass

    def request_throttled(self, provider: str, endpoint: str) -> None:
        pass

    def cache_lookup(self, provider: str, endpoint: str, *, hit: bool) -> None:
        pass

    def cache_failed(self, provider: str, endpoint: str, *, operation: str) -> None:
        pass

    def request_coalesced(self, provider: str, endpoint: str) -> None:
        pass
