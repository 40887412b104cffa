"""Checks of caller-supplied identifiers, made before any upstream call."""

from __future__ import annotations

from gateway.errors import InvalidInput
from gateway.provider import Provider

MAX_IDENTIFIER_LENGTH = 128


def check_identifier(value: str, *, field: str) -> str:
    """`value` if it is a plausible provider id: non-empty, short, no spaces or control chars."""
    if not value or len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidInput(
            f"{field} must be 1 to {MAX_IDENTIFIER_LENGTH} characters long.", field=field
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidInput(f"{field} must not contain spaces or control characters.", field=field)
    if value.strip(".") == "":
        # "." and ".." would be dot segments in an upstream URL path and reach another endpoint.
        raise InvalidInput(f"{field} must not consist of dots only.", field=field)
    return value


def check_account_id(provider: Provider, account_id: str | None) -> str | None:
    """The account id: required for Almanac (the organization); optional for Autoposting, whose
    account is the API key's organization (a given id is checked against it by the caller)."""
    if provider is Provider.ALMANAC:
        if account_id is None:
            raise InvalidInput(
                "accountId (the Almanac organization id) is required for Almanac.",
                field="accountId",
                provider=provider,
            )
        return check_identifier(account_id, field="accountId")
    return None if account_id is None else check_identifier(account_id, field="accountId")


def account_mismatch(provider: Provider) -> InvalidInput:
    """The error for an Autoposting accountId that is not the API key's organization."""
    return InvalidInput(
        f"accountId is not the organization of the {provider.label} API key in use; "
        "omit it to use the key's organization.",
        field="accountId",
        provider=provider,
    )
