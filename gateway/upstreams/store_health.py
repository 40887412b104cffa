"""Warnings about a shared store (a response cache, the rate limits) that stops answering.

A store that cannot answer never fails a request: the client carries on without it. An operator
hears of it once when an operation starts failing and once when it answers again, not per call
(a read-only Redis fails every write but no read: one warning, not one per GET).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger("gateway.upstream")


class StoreHealth:
    """The failing operations of the store `name` (e.g. "almanac response cache");
    `consequences` says, per operation, what a failure means for requests (for the warning)."""

    def __init__(self, name: str, consequences: Mapping[str, str]) -> None:
        self.name = name
        self.consequences = consequences
        self._failing: set[str] = set()

    def failed(self, operation: str, exc: Exception) -> None:
        """`operation` failed: warned the first time since it last answered."""
        if operation not in self._failing:
            self._failing.add(operation)
            logger.warning("%s unavailable (%s): %s", self.name, exc, self.consequences[operation])

    def answered(self, operation: str) -> None:
        """`operation` answered: noted once, if it had been failing."""
        if operation in self._failing:
            self._failing.discard(operation)
            logger.info("%s answers %s again", self.name, operation)
