"""A circuit breaker and a retry budget per upstream client: pure state over an injected clock.

Neither sends, sleeps or knows HTTP: `UpstreamClient` asks them before each call and each retry and
tells them how calls ended. Both are shared by every request of the process and are not
thread-safe: they are used from the one event loop that owns the client.

Circuit breaker contract: a call (a GET with all its retries, or a POST) fails when its last
error says the provider is unwell (`mapping.UNHEALTHY_ERRORS`: a timeout, a refused or dropped
connection, a 5xx, an answer that breaks the contract); any other answer, 4xx and 429 included,
shows it healthy. While open, every call fails fast with `UpstreamCircuitOpen` (`retry_after`: the
seconds left) before anything is sent.

Circuit breaker::

    closed ──(`failures` consecutive failed calls)──► open ──(`reset` seconds)──► half-open
      ▲                                               ▲                              │
      └──────────────(the one probe succeeds)─────────┼──────────────────────────────┤
                                                      └──(the one probe fails)───────┘

A call is admitted with a `Ticket`; its outcome is reported against that ticket and ignored when
the breaker changed state since (a slow call that started before the breaker opened neither
extends nor closes it). In half-open exactly one call, the probe, is admitted; everyone else is
refused until it ends. A probe that ends without a verdict (cancelled) frees the slot for the next
caller.

Retry budget: one token bucket. Every original call deposits `ratio` tokens, every retry withdraws
one, and the bucket also refills at `min_per_second` tokens a second, up to `capacity`
(`min_per_second` x `window`, at least 1). It starts full, so a quiet process retries as usual;
in an outage retries add at most `ratio` x calls + `capacity` + `min_per_second` x seconds.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("gateway.upstream.resilience")

Clock = Callable[[], float]
# The retry-after hint while the probe is in flight: it ends within a read timeout, usually sooner.
PROBE_RETRY_AFTER = 1.0
DEFAULT_BUDGET_WINDOW = 10.0
# Deposits of a fractional ratio add up to a whole token only approximately.
_EPSILON = 1e-9


class BreakerState(enum.Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Ticket:
    """Admission of one call: the breaker generation it was admitted in, and whether it probes."""

    generation: int
    probe: bool


class CircuitBreaker:
    """Fails calls fast after `failures` consecutive failed calls, for `reset` seconds at a time."""

    def __init__(
        self, name: str, *, failures: int, reset: float, clock: Clock = time.monotonic
    ) -> None:
        if failures < 1 or reset <= 0:
            raise ValueError("a circuit breaker needs failures >= 1 and reset > 0")
        self.name = name
        self.failures = failures
        self.reset = reset
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        # Told of every move (metrics); an open breaker turning half-open on its own, with time,
        # is reported when a call next asks, so read `state` for the current one.
        self.on_change: Callable[[BreakerState], None] | None = None

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose `reset` has passed reports half-open."""
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.reset:
            return BreakerState.HALF_OPEN
        return self._state

    def acquire(self) -> Ticket | None:
        """A ticket when a call may be sent now; None when it must fail fast."""
        if self.state is BreakerState.HALF_OPEN and self._state is BreakerState.OPEN:
            self._move(BreakerState.HALF_OPEN)
        if self._state is BreakerState.CLOSED:
            return Ticket(self._generation, probe=False)
        if self._state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return Ticket(self._generation, probe=True)
        return None

    def retry_after(self) -> float:
        """Seconds until a call may be admitted: 0 when closed or ready for a probe."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset - self._clock())
        if self._state is BreakerState.HALF_OPEN and self._probing:
            return min(PROBE_RETRY_AFTER, self.reset)
        return 0.0

    def is_current(self, ticket: Ticket) -> bool:
        """Whether the breaker is still in the state `ticket` was admitted in."""
        return ticket.generation == self._generation

    def record_success(self, ticket: Ticket) -> None:
        """The call answered in a way that shows the upstream is healthy (4xx included)."""
        if not self.is_current(ticket):
            return
        self._consecutive = 0
        if ticket.probe:
            self._move(BreakerState.CLOSED)

    def record_failure(self, ticket: Ticket, reason: str) -> None:
        """The call failed in a way that says the upstream is unhealthy; `reason` is logged."""
        if not self.is_current(ticket):
            return
        self._consecutive += 1
        if ticket.probe or self._consecutive >= self.failures:
            self._move(BreakerState.OPEN, reason)

    def release(self, ticket: Ticket) -> None:
        """The call ended without a verdict (cancelled); a probe frees its slot."""
        if ticket.probe and self.is_current(ticket):
            self._probing = False

    def _move(self, new: BreakerState, reason: str | None = None) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._probing = False
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        if new is BreakerState.CLOSED:
            self._consecutive = 0
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            why = f" after {self._consecutive} consecutive failures ({reason})"
        elif new is BreakerState.OPEN:
            why = f": the probe failed ({reason})"
        else:
            why = ""
        logger.warning("%s circuit breaker %s -> %s%s", self.name, old.value, new.value, why)
        if self.on_change is not None:
            self.on_change(new)


class RetryBudget:
    """Allows a retry only while its token bucket holds a whole token (see the module docstring)."""

    def __init__(
        self,
        *,
        ratio: float,
        min_per_second: float,
        window: float = DEFAULT_BUDGET_WINDOW,
        clock: Clock = time.monotonic,
    ) -> None:
        if ratio < 0 or min_per_second < 0 or window <= 0:
            raise ValueError("a retry budget needs ratio >= 0, min_per_second >= 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = max(1.0, min_per_second * window)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()

    @property
    def tokens(self) -> float:
        """The tokens in the bucket now."""
        self._refill()
        return self._tokens

    def record_call(self) -> None:
        """An original call (not a retry) is being sent: deposit `ratio` tokens."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + self.ratio)

    def try_retry(self) -> bool:
        """Withdraw one token for a retry; False, withdrawing nothing, when there is none."""
        self._refill()
        if self._tokens + _EPSILON < 1.0:
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.min_per_second)
