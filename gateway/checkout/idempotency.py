"""Idempotency keys for `startCheckout`: one upstream checkout per key, however often it is sent.

Neither provider honours idempotency keys, so the gateway keeps them itself. A key is held in a
`Scope`: the provider, a SHA-256 of the credential the checkout is made with and a digest of the
caller's gateway key (`checkout_scope`), so two callers can neither see each other's sessions nor
collide on a key. Under a key the store keeps a *fingerprint* of the checked input.

Store contract (`IdempotencyStore`)
- `admit(caller)` counts one `startCheckout` of the caller against its rate (`CheckoutLimits`),
  or raises `CheckoutLimitReached` (CALLER_RATE) with the wait until it may go on.
- `reserve(scope, key, fingerprint)` answers one of:
  `Acquired(token)`: the key is new (or expired, or released); the caller makes the one upstream
  call and must end with `complete` or `release`, passing `token`.
  `Replay(outcome)`: the key was used with the same fingerprint; `outcome` is what that call
  produced. While that call is still in flight, `reserve` waits for it.
  `Conflict()`: the key was used with another fingerprint, in flight or done; answered at once.
  Or, for a new key only, it raises `CheckoutLimitReached` when a quota of live keys is full.
- `complete(scope, key, token, outcome)` keeps the outcome until `ttl` after the key was reserved.
- `release(scope, key, token)` forgets the key, as if it had never been sent; a call waiting in
  `reserve` then reserves it for itself.

Quotas, not eviction: a live (unexpired) key is never dropped to make room, since dropping it would
let its retry create a second checkout. Live keys are counted per caller (one gateway key; callers
without a configured key count as one caller), per upstream credential and in all; expired keys are
reclaimed first, and a new key that would pass a quota is refused with `CheckoutLimitReached`,
retryable after the oldest key counted against that quota expires. Replays and conflicts are
always answered: a full quota never stops a caller from getting its own session back.

What is remembered (the decision)
- A session: always, so the same key returns it without a second upstream call.
- A failure before anything was sent (bad input, no credential, an open circuit, the profile check)
  or one the provider answered definitively (a 4xx, billing suspended, 429): released. Nothing was
  created, so a retry with the same key may try again.
- A failure whose outcome is unknown (a timeout or dropped connection after sending, a 5xx, an
  unreadable success answer, an interrupted request): remembered as a `RememberedFailure` until
  the key expires. The checkout may exist at the provider, and the gateway cannot ask (neither
  provider lists checkouts), so a retry with the same key gets the same typed error rather than
  risking a second checkout; its message says to retry with a new key after checking.

`MemoryIdempotencyStore` serves one process; `checkout.redis_store.RedisIdempotencyStore` keeps
the same contract in a Redis shared by several processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.checkout.limits import CheckoutLimits, CheckoutRate, limit_reached
from gateway.credentials import Credential
from gateway.errors import CheckoutLimit, UpstreamError
from gateway.models import CheckoutSession
from gateway.provider import Provider

# Ends the message of every remembered failure whose outcome is unknown (what is remembered, above).
UNKNOWN_OUTCOME = (
    " The checkout may have been created, so this idempotency key gives this answer until it "
    "expires: retry with a new idempotency key after checking the account's billing for it."
)


@dataclass(frozen=True, slots=True)
class RememberedFailure:
    """An upstream failure with an unknown outcome, kept under its key and raised on each retry.

    Plain data (the class, not an instance), so each retry raises a fresh exception and a shared
    store can serialize it.
    """

    error_type: type[UpstreamError]
    message: str
    provider: Provider
    status: int | None = None
    upstream_code: str | None = None

    @classmethod
    def of(cls, error: UpstreamError, *, provider: Provider, message: str) -> RememberedFailure:
        """`error` as remembered, with the message every retry will show."""
        return cls(type(error), message, provider, error.status, error.upstream_code)

    def error(self) -> UpstreamError:
        """A fresh exception for this failure; not retryable, as the same key gives it again."""
        error = self.error_type(
            self.message,
            provider=self.provider,
            status=self.status,
            upstream_code=self.upstream_code,
        )
        error.retryable = False
        return error


Outcome = CheckoutSession | RememberedFailure


@dataclass(frozen=True, slots=True)
class Acquired:
    """The key is the caller's: make the call, then `complete` or `release` with `token`."""

    token: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was used with the same input: this is what that call produced."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Conflict:
    """The key was used with different input."""


Reservation = Acquired | Replay | Conflict


@dataclass(frozen=True, slots=True)
class Scope:
    """Where checkout keys live: one per provider, credential and caller (digests, never secrets).

    `caller` is a digest of the caller's gateway key, None for a caller without one. `str(scope)`
    is its name in a shared store.
    """

    provider: Provider
    credential: str
    caller: str | None = None

    def __str__(self) -> str:
        return f"checkout:{self.provider.value}:{self.credential}:{self.caller or '-'}"

    @property
    def caller_owner(self) -> str:
        """The name live keys are counted under for the caller's quota."""
        return f"caller:{self.caller or '-'}"

    @property
    def credential_owner(self) -> str:
        """The name live keys are counted under for the credential's quota."""
        return f"credential:{self.provider.value}:{self.credential}"


class IdempotencyStore(Protocol):
    """Where idempotency keys are kept; see the module docstring for the contract."""

    async def admit(self, caller: str | None) -> None:
        """Count one checkout of `caller` against its rate, or raise `CheckoutLimitReached`."""
        ...

    async def reserve(self, scope: Scope, key: str, fingerprint: str) -> Reservation:
        """Reserve `key` in `scope`, or give what it holds (waiting while it is in flight)."""
        ...

    async def complete(self, scope: Scope, key: str, token: str, outcome: Outcome) -> None:
        """Keep `outcome` under the key reserved with `token`, until it expires."""
        ...

    async def release(self, scope: Scope, key: str, token: str) -> None:
        """Forget the key reserved with `token`, so that it may be used again."""
        ...


def digest(value: str) -> str:
    """SHA-256 of `value`, in hex: how secrets appear in scopes."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def checkout_scope(provider: Provider, credential: Credential, caller: str | None) -> Scope:
    """The scope of checkout keys: one per provider, credential and caller (never raw secrets).

    `caller` is a digest of the caller's gateway key, if one was presented: callers who share the
    configured service credential still get scopes of their own.
    """
    return Scope(provider, digest(credential.reveal()), caller)


@dataclass(slots=True)
class _Pending:
    fingerprint: str
    token: str
    expires: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class _Finished:
    fingerprint: str
    expires: float
    outcome: Outcome


_Slot = tuple[Scope, str]


class MemoryIdempotencyStore:
    """An `IdempotencyStore` in this process's memory.

    A key expires `ttl` seconds after it was reserved, in flight or finished. Live keys are kept
    in the order they were reserved, which is the order they expire in: reclaiming expired keys
    (on every `reserve`) pops them from the front, and the oldest key of a quota says when it will
    have room. A key in flight past its expiry is kept until its request completes or releases it
    (their number is bounded by the requests in flight); a key completed past its expiry is
    forgotten at once.
    """

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        limits: CheckoutLimits | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.limits = limits or CheckoutLimits()
        self._clock = clock
        self._rate = CheckoutRate(self.limits.rate_per_minute, self.limits.burst, clock)
        # Every live key, in flight or finished, in the order reserved (= the order of expiry).
        self._live: OrderedDict[_Slot, _Pending | _Finished] = OrderedDict()
        # The live keys of each quota owner (`Scope.caller_owner`, `Scope.credential_owner`).
        self._owned: dict[str, OrderedDict[_Slot, None]] = {}

    @property
    def size(self) -> int:
        """The number of live keys, in flight or finished (expired ones linger until reclaimed).

        A property, not `__len__`: an empty store must not be falsy (`store or default()`).
        """
        return len(self._live)

    async def admit(self, caller: str | None) -> None:
        wait = self._rate.take(caller)
        if wait is not None:
            raise limit_reached(
                CheckoutLimit.CALLER_RATE, self.limits, retry_after=wait, caller=caller
            )

    async def reserve(self, scope: Scope, key: str, fingerprint: str) -> Reservation:
        slot = (scope, key)
        while True:
            now = self._clock()
            self._reclaim(now)
            entry = self._live.get(slot)
            if isinstance(entry, _Pending):
                if entry.fingerprint != fingerprint:
                    return Conflict()
                await entry.done.wait()
                if entry.outcome is not None:
                    return Replay(entry.outcome)
                continue  # released: try to reserve it afresh
            if entry is not None and entry.expires > now:
                if entry.fingerprint != fingerprint:
                    return Conflict()
                return Replay(entry.outcome)
            if entry is not None:
                self._forget(slot)
            self._check_quotas(scope, now)
            token = uuid.uuid4().hex
            self._live[slot] = _Pending(fingerprint, token, expires=now + self.ttl)
            for owner in (scope.caller_owner, scope.credential_owner):
                self._owned.setdefault(owner, OrderedDict())[slot] = None
            return Acquired(token)

    async def complete(self, scope: Scope, key: str, token: str, outcome: Outcome) -> None:
        slot = (scope, key)
        pending = self._pending(slot, token)
        if pending is None:
            return
        pending.outcome = outcome
        if pending.expires > self._clock():
            self._live[slot] = _Finished(pending.fingerprint, pending.expires, outcome)
        else:
            self._forget(slot)
        pending.done.set()

    async def release(self, scope: Scope, key: str, token: str) -> None:
        slot = (scope, key)
        pending = self._pending(slot, token)
        if pending is not None:
            self._forget(slot)
            pending.done.set()

    def _pending(self, slot: _Slot, token: str) -> _Pending | None:
        entry = self._live.get(slot)
        if isinstance(entry, _Pending) and entry.token == token:
            return entry
        return None

    def _forget(self, slot: _Slot) -> None:
        del self._live[slot]
        scope = slot[0]
        for owner in (scope.caller_owner, scope.credential_owner):
            owned = self._owned[owner]
            del owned[slot]
            if not owned:
                del self._owned[owner]

    def _reclaim(self, now: float) -> None:
        """Forget the finished keys that have expired; keys in flight stay until they end."""
        expired: list[_Slot] = []
        for slot, entry in self._live.items():
            if entry.expires > now:
                break
            if isinstance(entry, _Finished):
                expired.append(slot)
        for slot in expired:
            self._forget(slot)

    def _check_quotas(self, scope: Scope, now: float) -> None:
        """Raise `CheckoutLimitReached` if one more live key would pass a quota of `scope`."""
        quotas: tuple[tuple[CheckoutLimit, OrderedDict[_Slot, Any]], ...] = (
            (CheckoutLimit.CALLER_KEYS, self._owned.get(scope.caller_owner, OrderedDict())),
            (
                CheckoutLimit.CREDENTIAL_KEYS,
                self._owned.get(scope.credential_owner, OrderedDict()),
            ),
            (CheckoutLimit.KEY_CAPACITY, self._live),
        )
        for limit, held in quotas:
            if len(held) >= self.limits.most(limit):
                oldest = self._live[next(iter(held))]
                raise limit_reached(
                    limit,
                    self.limits,
                    retry_after=oldest.expires - now,
                    caller=scope.caller,
                    provider=scope.provider,
                )


class ObservedIdempotencyStore:
    """Any `IdempotencyStore`, telling `on_reserve` how each `reserve` ended: "new" (acquired),
    "replay" or "conflict" (for metrics)."""

    def __init__(self, store: IdempotencyStore, on_reserve: Callable[[str], None]) -> None:
        self.store = store
        self._on_reserve = on_reserve

    async def admit(self, caller: str | None) -> None:
        await self.store.admit(caller)

    async def reserve(self, scope: Scope, key: str, fingerprint: str) -> Reservation:
        reservation = await self.store.reserve(scope, key, fingerprint)
        if isinstance(reservation, Acquired):
            self._on_reserve("new")
        elif isinstance(reservation, Replay):
            self._on_reserve("replay")
        else:
            self._on_reserve("conflict")
        return reservation

    async def complete(self, scope: Scope, key: str, token: str, outcome: Outcome) -> None:
        await self.store.complete(scope, key, token, outcome)

    async def release(self, scope: Scope, key: str, token: str) -> None:
        await self.store.release(scope, key, token)


__all__ = [
    "Acquired",
    "CheckoutLimits",
    "CheckoutRate",
    "Conflict",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "ObservedIdempotencyStore",
    "Outcome",
    "RememberedFailure",
    "Replay",
    "Reservation",
    "Scope",
    "checkout_scope",
    "digest",
    "limit_reached",
]
