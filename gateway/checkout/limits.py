"""What bounds checkouts per caller: the quotas of live idempotency keys (`CheckoutLimits`), the
rate of `startCheckout` per gateway key (`CheckoutRate`), and the refusal either gives.

A full quota refuses a new key rather than evicting a live one: an evicted key would let a
retry create a second checkout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import CheckoutLimit, CheckoutLimitReached
from gateway.provider import Provider
from gateway.settings import (
    DEFAULT_CHECKOUT_BURST,
    DEFAULT_CHECKOUT_RATE_PER_MINUTE,
    DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
    DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL,
    DEFAULT_IDEMPOTENCY_MAX_KEYS,
    Settings,
)

# The rate limiter forgets callers whose bucket is full again once it holds more than this many.
RATE_SWEEP_AT = 1024


@dataclass(frozen=True, slots=True)
class CheckoutLimits:
    """The quotas of live idempotency keys and the rate of `startCheckout` per caller."""

    max_keys: int = DEFAULT_IDEMPOTENCY_MAX_KEYS
    keys_per_caller: int = DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER
    keys_per_credential: int = DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL
    rate_per_minute: int = DEFAULT_CHECKOUT_RATE_PER_MINUTE
    burst: int = DEFAULT_CHECKOUT_BURST

    def __post_init__(self) -> None:
        if (
            min(
                self.max_keys,
                self.keys_per_caller,
                self.keys_per_credential,
                self.rate_per_minute,
                self.burst,
            )
            < 1
        ):
            raise ValueError("every checkout limit must be at least 1")

    @classmethod
    def of(cls, settings: Settings) -> CheckoutLimits:
        """The limits `settings` configure."""
        return cls(
            max_keys=settings.idempotency_max_keys,
            keys_per_caller=settings.idempotency_keys_per_caller,
            keys_per_credential=settings.idempotency_keys_per_credential,
            rate_per_minute=settings.checkout_rate_per_minute,
            burst=settings.checkout_burst,
        )

    def most(self, limit: CheckoutLimit) -> int:
        """The size of a quota (for the rate: the burst)."""
        return {
            CheckoutLimit.CALLER_RATE: self.burst,
            CheckoutLimit.CALLER_KEYS: self.keys_per_caller,
            CheckoutLimit.CREDENTIAL_KEYS: self.keys_per_credential,
            CheckoutLimit.KEY_CAPACITY: self.max_keys,
        }[limit]


def limit_reached(
    limit: CheckoutLimit,
    limits: CheckoutLimits,
    *,
    retry_after: float,
    caller: str | None,
    provider: Provider | None = None,
) -> CheckoutLimitReached:
    """The refusal of a checkout by `limit`, retryable after `retry_after` seconds."""
    wait = max(0.001, math.ceil(retry_after * 1000) / 1000)
    whose = "This gateway key" if caller else "Callers without a gateway key (together)"
    if limit is CheckoutLimit.CALLER_RATE:
        what = (
            f"{whose} may start {limits.rate_per_minute} checkouts a minute, {limits.burst} at once"
        )
    elif limit is CheckoutLimit.CALLER_KEYS:
        what = f"{whose} already holds {limits.keys_per_caller} live idempotency keys, its quota"
    elif limit is CheckoutLimit.CREDENTIAL_KEYS:
        what = (
            f"This credential already holds {limits.keys_per_credential} live idempotency keys, "
            "its quota"
        )
    else:
        what = f"The gateway already holds {limits.max_keys} live idempotency keys, its capacity"
    return CheckoutLimitReached(
        f"{what}: the checkout was not sent. Retry in {math.ceil(wait)} s.",
        limit=limit,
        retry_after=wait,
        provider=provider,
    )


class CheckoutRate:
    """`startCheckout` calls per caller: `per_minute` on average, up to `burst` at once.

    The generic cell rate algorithm: one "due" time per caller, which each admitted call moves one
    interval on; a call is refused while the due time is more than `burst` intervals ahead. A
    caller whose due time has passed holds a full burst and is forgotten.
    """

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 60.0 / per_minute
        self.tolerance = self.interval * burst
        self._clock = clock
        self._due: dict[str, float] = {}
        self._sweep_at = RATE_SWEEP_AT

    def take(self, caller: str | None) -> float | None:
        """None if `caller` may start a checkout now (and counts it), else seconds to wait."""
        now = self._clock()
        owner = caller or "-"
        due = max(self._due.get(owner, now), now) + self.interval
        if due - now > self.tolerance:
            return due - self.tolerance - now
        self._due[owner] = due
        if len(self._due) > self._sweep_at:
            self._due = {name: at for name, at in self._due.items() if at > now}
            self._sweep_at = max(RATE_SWEEP_AT, 2 * len(self._due))
        return None
