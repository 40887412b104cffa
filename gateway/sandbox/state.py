"""What the simulated upstreams saw and did, and the faults they are told to inject.

One `SandboxState` is shared by both apps. Tests read it from another thread while the servers run,
so every access goes through one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request as it reached a simulator, recorded before auth, routing or faults."""

    provider: str  # "almanac" | "autoposting"
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: Any  # the parsed JSON body, or None when absent or not JSON
    content: bytes = b""  # the raw body


@dataclass(frozen=True, slots=True)
class CheckoutRecord:
    """A checkout a simulator created."""

    provider: str
    account_id: str  # Almanac organization id or Autoposting orgId
    plan_id: str
    session_id: str | None  # None when the hosted URL carries no session id
    url: str


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) answering normally.

    `delay` sleeps first. Then `drop` closes the connection without a response; otherwise a
    `status` answers with `body` (a dict is sent as JSON, str and bytes as they are),
    `content_type` and `headers` instead of the real handler. With neither, the real handler runs.
    `drop_after` cuts whichever answer that is short: the status line, the headers (with the full
    Content-Length) and the first `drop_after` bytes of the body are sent, then the connection is
    closed mid-response. A body no longer than `drop_after` is sent whole.
    """

    delay: float = 0
    status: int | None = None
    body: bytes | str | dict[str, Any] | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    drop_after: int | None = None

    def __post_init__(self) -> None:
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError("drop_after must be a number of bytes, at least 0")


@dataclass(slots=True)
class _FaultRule:
    provider: str
    fault: Fault
    method: str | None
    path: str | None
    path_prefix: str | None
    remaining: int | None

    def matches(self, provider: str, method: str, path: str) -> bool:
        return (
            self.provider == provider
            and (self.method is None or self.method == method.upper())
            and (self.path is None or self.path == path)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
        )


class SandboxState:
    """The request log, the checkouts created and the fault rules of a sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[RecordedCall] = []
        self._checkouts: list[CheckoutRecord] = []
        self._faults: list[_FaultRule] = []

    # --- request log ---

    def record(self, call: RecordedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(
        self, provider: str | None = None, method: str | None = None, path: str | None = None
    ) -> list[RecordedCall]:
        with self._lock:
            return [
                call
                for call in self._calls
                if (provider is None or call.provider == provider)
                and (method is None or call.method == method.upper())
                and (path is None or call.path == path)
            ]

    def count(
        self, provider: str | None = None, method: str | None = None, path: str | None = None
    ) -> int:
        return len(self.calls(provider, method, path))

    # --- checkouts ---

    def record_checkout(self, checkout: CheckoutRecord) -> None:
        with self._lock:
            self._checkouts.append(checkout)

    @property
    def checkouts(self) -> list[CheckoutRecord]:
        """A copy of the checkouts created so far, oldest first."""
        with self._lock:
            return list(self._checkouts)

    # --- faults ---

    def add_fault(
        self,
        provider: str,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str | None = None,
        times: int | None = None,
    ) -> None:
        """Apply `fault` to the next `times` matching requests (None: until cleared).

        Rules are tried in the order they were added; the first match applies.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for no limit)")
        rule = _FaultRule(provider, fault, method and method.upper(), path, path_prefix, times)
        with self._lock:
            self._faults.append(rule)

    def take_fault(self, provider: str, method: str, path: str) -> Fault | None:
        """The fault for this request, if any, counting it against its rule's `times`."""
        with self._lock:
            for rule in self._faults:
                if rule.matches(provider, method, path):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._faults.remove(rule)
                    return rule.fault
        return None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget every call, checkout and fault."""
        with self._lock:
            self._calls.clear()
            self._checkouts.clear()
            self._faults.clear()
