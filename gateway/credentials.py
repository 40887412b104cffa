"""`Credential`: a provider token, as configured or as a request brings it, never shown.

A core module of its own so that the upstream clients, which send credentials, need not import
the settings, which configure them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MalformedCredential(ValueError):
    """A token that could not travel in an HTTP header; its text is never in the message."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A secret token: hashable by value, and never shown by repr or str."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        # Visible ASCII only (RFC 9110's VCHAR, as in a token68): it travels in an HTTP header,
        # where any other byte is refused or re-encoded on the way.
        value = self.value
        if not (value and value.isascii() and value.isprintable()) or " " in value:
            raise MalformedCredential(
                "a credential must be a non-empty token of visible ASCII characters (no spaces "
                "or control characters)"
            )

    def reveal(self) -> str:
        """The token itself, for an Authorization header and nothing else."""
        return self.value

    def __repr__(self) -> str:
        return "Credential('**********')"

    __str__ = __repr__
