"""Gateway keys and what each one may do.

A key is known by its SHA-256 only. Keys from `GATEWAY_API_KEYS` are hashed as they are read and
may do everything (`FULL_SCOPE`); a key file (`GATEWAY_API_KEYS_FILE`, JSON or TOML) names each
key and limits it:

    name         shown in the access log        "billing-dashboard" (letters, digits, . _ -)
    sha256       the key's SHA-256, in hex      never the key itself
    providers    the providers it may reach     ["almanac", "autoposting"]
    accounts     the account ids it may reach   ["org_acme", "org_acme_*"], or ["*"] for any
    permissions  what it may do                 billing:read, checkout:write, raw:read, metrics:read

An account pattern is a glob in which `*` matches any run of characters and every other character
stands for itself, case included (`?`, `[` and `]` are refused, not taken literally). An
Autoposting account is the organization of the API key in use, known only by asking Autoposting:
a gateway key whose patterns are not `*` must name it (`accountId`) for the pattern to be checked
before any call, and the gateway then checks, as for any caller, that it is that organization.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import OutOfScope
from gateway.provider import Provider

MAX_KEY_NAME = 64
MAX_ACCOUNT_PATTERN = 128
ANY_ACCOUNT = "*"
KEY_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_KEY_NAME - 1}}}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
ENTRY_FIELDS = ("name", "sha256", "providers", "accounts", "permissions")
# Characters fnmatch gives a meaning: refused in a pattern rather than silently taken literally.
GLOB_RESERVED = frozenset("?[]")

E = TypeVar("E", bound=enum.Enum)


class Permission(enum.Enum):
    """What a gateway key may do; a key file names them by value."""

    BILLING_READ = "billing:read"
    CHECKOUT_WRITE = "checkout:write"
    RAW_READ = "raw:read"
    METRICS_READ = "metrics:read"


class KeyFileError(ValueError):
    """The key file is malformed; the message names the entry at fault (never a key)."""


def account_matches(pattern: str, account_id: str) -> bool:
    """Whether `account_id` matches `pattern`, in which `*` is any run of characters.

    Leftmost matching of each literal piece decides a `*`-only glob, in time linear in the
    pattern's pieces times the id's length (both at most 128 characters).
    """
    first, *middle_and_last = pattern.split(ANY_ACCOUNT)
    if not middle_and_last:
        return pattern == account_id
    *middle, last = middle_and_last
    end = len(account_id) - len(last)
    if end < len(first) or not account_id.startswith(first) or not account_id.endswith(last):
        return False
    position = len(first)
    for piece in middle:
        found = account_id.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


@dataclass(frozen=True, slots=True)
class KeyScope:
    """The providers, accounts and permissions of one gateway key."""

    providers: frozenset[Provider]
    accounts: tuple[str, ...]
    permissions: frozenset[Permission]

    @property
    def any_account(self) -> bool:
        return ANY_ACCOUNT in self.accounts

    def permits(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission, provider: Provider) -> None:
        """Raise `OutOfScope` unless the key holds `permission`."""
        if permission not in self.permissions:
            raise OutOfScope(
                f"This gateway key may not do this: it lacks the {permission.value} permission.",
                provider=provider,
            )

    def check(self, provider: Provider, account_id: str | None, permission: Permission) -> None:
        """Raise `OutOfScope` unless the key may do `permission` on this account.

        `account_id` None is the Autoposting account of the API key in use, whose id is unknown
        until Autoposting is asked: only a key reaching any account may leave it out.
        """
        if provider not in self.providers:
            raise OutOfScope(
                f"This gateway key may not reach {provider.label} accounts.", provider=provider
            )
        self.require(permission, provider)
        if self.any_account:
            return
        if account_id is None:
            raise OutOfScope(
                f"This gateway key reaches only some {provider.label} accounts: give accountId "
                "(for Autoposting, the organization of the API key in use).",
                provider=provider,
            )
        if not any(account_matches(pattern, account_id) for pattern in self.accounts):
            raise OutOfScope(
                f"This gateway key may not reach this {provider.label} account.",
                provider=provider,
            )


FULL_SCOPE = KeyScope(frozenset(Provider), (ANY_ACCOUNT,), frozenset(Permission))
"""The scope of a key from GATEWAY_API_KEYS, and of every caller when no key is configured."""
NO_SCOPE = KeyScope(frozenset(), (), frozenset())
"""The scope of a request no key was accepted for although keys are configured: nothing."""


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """One gateway key: its name, its SHA-256 (never the key itself) and its scope."""

    name: str
    digest: bytes = field(repr=False)
    scope: KeyScope


def key_digest(key: str | bytes) -> bytes:
    """The SHA-256 a key is known by."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def plain_keys(keys: Iterable[str], *, variable: str) -> tuple[GatewayKey, ...]:
    """Keys given in plain text (from `variable`), hashed now, each with the full scope."""
    return tuple(
        GatewayKey(name=f"{variable}[{index}]", digest=key_digest(key), scope=FULL_SCOPE)
        for index, key in enumerate(keys, start=1)
    )


def read_key_file(path: Path) -> tuple[GatewayKey, ...]:
    """The keys of a key file: TOML when its name ends in `.toml`, JSON when in `.json`."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise KeyFileError("the key file's name must end in .json or .toml")
    text = path.read_text(encoding="utf-8")
    try:
        document: Any = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"not valid {suffix[1:].upper()}: {exc}") from None
    return parse_keys(document)


def parse_keys(document: Any) -> tuple[GatewayKey, ...]:
    """The keys of a key file's parsed document, `{"keys": [entry, ...]}`, checked entry by
    entry."""
    if not isinstance(document, dict) or set(document) != {"keys"}:
        raise KeyFileError('it must hold exactly one list, "keys" (in TOML, [[keys]] tables)')
    entries = document["keys"]
    if not isinstance(entries, list) or not entries:
        raise KeyFileError('"keys" must be a non-empty list of entries')
    return distinct_keys(_entry(index, entry) for index, entry in enumerate(entries, start=1))


def distinct_keys(keys: Iterable[GatewayKey]) -> tuple[GatewayKey, ...]:
    """`keys`, refused if two share a name or a key (a key must have one scope)."""
    by_name: dict[str, GatewayKey] = {}
    by_digest: dict[bytes, GatewayKey] = {}
    for key in keys:
        if key.name in by_name:
            raise KeyFileError(f"two keys are named {key.name!r}")
        if key.digest in by_digest:
            raise KeyFileError(
                f"key {key.name!r} has the same sha256 as key {by_digest[key.digest].name!r}"
            )
        by_name[key.name] = by_digest[key.digest] = key
    return tuple(by_name.values())


def _entry(index: int, entry: Any) -> GatewayKey:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where} must be an object (a table in TOML)")
    name = entry.get("name")
    if isinstance(name, str) and KEY_NAME.fullmatch(name):
        where = f"entry {index} ({name!r})"
    unknown = sorted(str(key) for key in set(entry) - set(ENTRY_FIELDS))
    if unknown:
        raise KeyFileError(f"{where}: unknown field {unknown[0]!r}")
    missing = [key for key in ENTRY_FIELDS if key not in entry]
    if missing:
        raise KeyFileError(f"{where}: {missing[0]!r} is required")
    if not isinstance(name, str) or not KEY_NAME.fullmatch(name):
        raise KeyFileError(
            f"{where}: 'name' must be 1 to {MAX_KEY_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    sha256 = entry["sha256"]
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise KeyFileError(
            f"{where}: 'sha256' must be the key's SHA-256 as 64 hex digits (not the key)"
        )
    return GatewayKey(
        name=name,
        digest=bytes.fromhex(sha256),
        scope=KeyScope(
            providers=frozenset(
                _choices(where, "providers", entry["providers"], _by_value(Provider))
            ),
            accounts=tuple(_patterns(where, entry["accounts"])),
            permissions=frozenset(
                _choices(where, "permissions", entry["permissions"], _by_value(Permission))
            ),
        ),
    )


def _by_value(enum_type: type[E]) -> Mapping[str, E]:
    return {str(member.value): member for member in enum_type}


def _strings(where: str, name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise KeyFileError(f"{where}: {name!r} must be a non-empty list of strings")
    return value


def _choices(where: str, name: str, value: Any, known: Mapping[str, E]) -> list[E]:
    chosen = []
    for item in _strings(where, name, value):
        if item not in known:
            raise KeyFileError(f"{where}: unknown {name[:-1]} {item!r} (known: {', '.join(known)})")
        chosen.append(known[item])
    return chosen


def _patterns(where: str, value: Any) -> Collection[str]:
    patterns = _strings(where, "accounts", value)
    for pattern in patterns:
        if not 0 < len(pattern) <= MAX_ACCOUNT_PATTERN or any(
            c.isspace() or not c.isprintable() or c in GLOB_RESERVED for c in pattern
        ):
            raise KeyFileError(
                f"{where}: account pattern {pattern!r} must be 1 to {MAX_ACCOUNT_PATTERN} "
                "characters without spaces, control characters, '?', '[' or ']' ('*' matches "
                "any run of characters)"
            )
    return tuple(dict.fromkeys(patterns))
