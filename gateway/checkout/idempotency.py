"""Idempotency keys for `startCheckout`: one upstream checkout per key, however often it is sent.

Neither provider honours idempotency keys, so the gateway keeps them itself. A key is held in a
*scope*: the provider, a SHA-256 of the credential the checkout is made with and a digest of the
caller's gateway key (`checkout_scope`), so two callers can neither see each other's sessions nor
collide on a key. Under a key the store keeps a *fingerprint* of the checked input.

Store contract (`IdempotencyStore`)
- `reserve(scope, key, fingerprint)` answers one of:
  `Acquired(token)`: the key is new (or expired, or released); the caller makes the one upstream
  call and must end with `complete` or `release`, passing `token`.
  `Replay(outcome)`: the key was used with the same fingerprint; `outcome` is what that call
  produced. While that call is still in flight, `reserve` waits for it.
  `Conflict()`: the key was used with another fingerprint, in flight or done; answered at once.
- `complete(scope, key, token, outcome)` keeps the outcome until `ttl` after the key was reserved.
- `release(scope, key, token)` forgets the key, as if it had never been sent; a call waiting in
  `reserve` then reserves it for itself.

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

`MemoryIdempotencyStore` serves one process. For several processes a shared store implements the
same protocol, for example over Redis: `reserve` as `SET key {fingerprint, token} NX PX ttl`, a
lease on the pending state with waiters polling (or subscribing) until an outcome is written;
`complete` and `release` as compare-the-token scripts, so a late owner never overwrites another's
reservation; outcomes serialized (`CheckoutSession` is plain data; `RememberedFailure` names its
error class). An owner that died with its lease should be read as an unknown outcome, not a release.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import UpstreamError
from gateway.models import CheckoutSession
from gateway.provider import Provider
from gateway.settings import Credential

DEFAULT_MAX_ENTRIES = 10_000


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


class IdempotencyStore(Protocol):
    """Where idempotency keys are kept; see the module docstring for the contract."""

    async def reserve(self, scope: str, key: str, fingerprint: str) -> Reservation:
        """Reserve `key` in `scope`, or give what it holds (waiting while it is in flight)."""
        ...

    async def complete(self, scope: str, key: str, token: str, outcome: Outcome) -> None:
        """Keep `outcome` under the key reserved with `token`, until it expires."""
        ...

    async def release(self, scope: str, key: str, token: str) -> None:
        """Forget the key reserved with `token`, so that it may be used again."""
        ...


def digest(value: str) -> str:
    """SHA-256 of `value`, in hex: how secrets appear in scopes."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def checkout_scope(provider: Provider, credential: Credential, caller: str | None) -> str:
    """The scope of checkout keys: one per provider, credential and caller (never raw secrets).

    `caller` is a digest of the caller's gateway key, if one was presented: callers who share the
    configured service credential still get scopes of their own.
    """
    return f"checkout:{provider.value}:{digest(credential.reveal())}:{caller or '-'}"


@dataclass(slots=True)
class _Pending:
    fingerprint: str
    token: str
    created: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class _Finished:
    fingerprint: str
    expires: float
    outcome: Outcome


class MemoryIdempotencyStore:
    """An `IdempotencyStore` in this process's memory.

    A finished entry expires `ttl` seconds after its key was reserved. Expired entries are purged
    on every `reserve`, oldest first, and at most `max_entries` finished entries are kept (the
    oldest give way). Keys in flight are never dropped: each belongs to a running request, which
    completes or releases it, so their number is bounded by the requests in flight.
    """

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl must be positive and max_entries at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}
        # In order of completion, which is creation order give or take one upstream call.
        self._finished: OrderedDict[tuple[str, str], _Finished] = OrderedDict()

    @property
    def size(self) -> int:
        """The number of keys held, in flight or finished (expired ones may linger until purged).

        A property, not `__len__`: an empty store must not be falsy (`store or default()`).
        """
        return len(self._pending) + len(self._finished)

    async def reserve(self, scope: str, key: str, fingerprint: str) -> Reservation:
        slot = (scope, key)
        while True:
            now = self._clock()
            self._purge(now)
            pending = self._pending.get(slot)
            if pending is not None:
                if pending.fingerprint != fingerprint:
                    return Conflict()
                await pending.done.wait()
                if pending.outcome is not None:
                    return Replay(pending.outcome)
                continue  # released: try to reserve it afresh
            finished = self._finished.get(slot)
            if finished is not None and finished.expires > now:
                if finished.fingerprint != fingerprint:
                    return Conflict()
                return Replay(finished.outcome)
            self._finished.pop(slot, None)
            token = uuid.uuid4().hex
            self._pending[slot] = _Pending(fingerprint, token, created=now)
            return Acquired(token)

    async def complete(self, scope: str, key: str, token: str, outcome: Outcome) -> None:
        pending = self._take(scope, key, token)
        if pending is None:
            return
        pending.outcome = outcome
        while len(self._finished) >= self.max_entries:
            self._finished.popitem(last=False)
        self._finished[(scope, key)] = _Finished(
            pending.fingerprint, pending.created + self.ttl, outcome
        )
        pending.done.set()

    async def release(self, scope: str, key: str, token: str) -> None:
        pending = self._take(scope, key, token)
        if pending is not None:
            pending.done.set()

    def _take(self, scope: str, key: str, token: str) -> _Pending | None:
        pending = self._pending.get((scope, key))
        if pending is None or pending.token != token:
            return None
        del self._pending[(scope, key)]
        return pending

    def _purge(self, now: float) -> None:
        while self._finished:
            slot, oldest = next(iter(self._finished.items()))
            if oldest.expires > now:
                return
            del self._finished[slot]


class ObservedIdempotencyStore:
    """Any `IdempotencyStore`, telling `on_reserve` how each `reserve` ended: "new" (acquired),
    "replay" or "conflict" (for metrics)."""

    def __init__(self, store: IdempotencyStore, on_reserve: Callable[[str], None]) -> None:
        self.store = store
        self._on_reserve = on_reserve

    async def reserve(self, scope: str, key: str, fingerprint: str) -> Reservation:
        reservation = await self.store.reserve(scope, key, fingerprint)
        if isinstance(reservation, Acquired):
            self._on_reserve("new")
        elif isinstance(reservation, Replay):
            self._on_reserve("replay")
        else:
            self._on_reserve("conflict")
        return reservation

    async def complete(self, scope: str, key: str, token: str, outcome: Outcome) -> None:
        await self.store.complete(scope, key, token, outcome)

    async def release(self, scope: str, key: str, token: str) -> None:
        await self.store.release(scope, key, token)


__all__ = [
    "Acquired",
    "Conflict",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "ObservedIdempotencyStore",
    "Outcome",
    "RememberedFailure",
    "Replay",
    "Reservation",
    "checkout_scope",
    "digest",
]
