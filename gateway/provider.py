"""The providers the gateway speaks to.

It sits below every other module (stdlib only) because errors, settings, upstream clients and the
domain models all need to say which provider they concern.
"""

from __future__ import annotations

import enum


class Provider(enum.Enum):
    """A billing provider behind the gateway."""

    ALMANAC = "almanac"
    AUTOPOSTING = "autoposting"

    @property
    def label(self) -> str:
        """The provider's name as people write it."""
        return self.value.capitalize()
