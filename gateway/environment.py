"""Where settings come from: typed reads of environment variables, and the files some of them
name (the Autoposting plan catalog, the persisted operations manifest, the gateway key file).

Every bad value is a `ConfigurationError` naming the variable, raised at start-up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from starlette.config import Config

from gateway.credentials import Credential, MalformedCredential
from gateway.http.persisted import ManifestError, read_manifest
from gateway.keys import GatewayKey, KeyFileError, distinct_keys, plain_keys, read_key_file

T = TypeVar("T")

DEFAULT_CURRENCY = "USD"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
# Autoposting has no plan catalog endpoint. Its docs name one plan, as `pro` (billing status) and
# `plan_pro` (checkout); its price is not published, so the default catalog gives none.
DEFAULT_AUTOPOSTING_PLANS: tuple[Mapping[str, Any], ...] = (
    {"id": "plan_pro", "name": "Pro", "interval": "monthly", "group": "subscription"},
)


class ConfigurationError(ValueError):
    """A setting is missing or malformed; raised at start-up, never per request."""


class Environment:
    """Typed reads of environment variables; a bad value is a `ConfigurationError` naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._config = Config(environ=environ)

    def text(self, name: str, default: str = "") -> str:
        return str(self._config(name, default=default)).strip()

    def _cast(self, name: str, cast: Callable[[str], T], default: T, what: str) -> T:
        raw = self.text(name)
        if not raw:
            return default
        try:
            return cast(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be {what}") from None

    def integer(self, name: str, default: int) -> int:
        return self._cast(name, int, default, "a whole number")

    def non_negative_integer(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if value < 0:
            raise ConfigurationError(f"{name} must be a whole number of zero or more")
        return value

    def positive_integer(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if value < 1:
            raise ConfigurationError(f"{name} must be at least 1")
        return value

    def non_negative(self, name: str, default: float) -> float:
        value = self._cast(name, float, default, "a number of zero or more")
        if not math.isfinite(value) or value < 0:
            raise ConfigurationError(f"{name} must be a number of zero or more")
        return value

    def fraction(self, name: str, default: float) -> float:
        value = self._cast(name, float, default, "a number from 0 to 1")
        if not 0 <= value <= 1:
            raise ConfigurationError(f"{name} must be a number from 0 to 1")
        return value

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(item.strip() for item in self.text(name).split(",") if item.strip())
        )

    def credentials(self, name: str) -> tuple[Credential, ...]:
        try:
            return tuple(Credential(item) for item in self.items(name))
        except MalformedCredential:
            raise ConfigurationError(
                f"{name} must be comma-separated tokens without spaces or control characters"
            ) from None

    def hosts(self, name: str) -> tuple[str, ...]:
        hosts = tuple(host.lower() for host in self.items(name))
        for host in hosts:
            bare = host.removeprefix("*.")
            if not bare or "*" in bare or "/" in bare or ":" in bare or not bare.isascii():
                raise ConfigurationError(
                    f"{name} must be comma-separated host names, like app.example.com or "
                    "*.example.com (no scheme, port or path)"
                )
        return hosts

    def origins(self, name: str) -> tuple[str, ...]:
        origins = self.items(name)
        for origin in origins:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https") or not parts.hostname or parts.path
            ):
                raise ConfigurationError(
                    f"{name} must be comma-separated origins like https://app.example.com, or *"
                )
        return origins

    def flag(self, name: str, *, default: bool) -> bool:
        return self._cast(name, _parse_flag, default, "true or false")

    def seconds(self, name: str, default: float) -> float:
        value = self._cast(name, float, default, "a positive number of seconds")
        if not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds")
        return value

    def credential(self, name: str) -> Credential | None:
        raw = self.text(name)
        if not raw:
            return None
        try:
            return Credential(raw)
        except MalformedCredential:
            raise ConfigurationError(
                f"{name} must be a token without spaces or control characters"
            ) from None

    def url(self, name: str, default: str | None = None) -> str | None:
        raw = self.text(name, default or "")
        if not raw:
            return None
        if not is_http_url(raw):
            raise ConfigurationError(f"{name} must be an absolute http(s) URL")
        return raw

    def redis_url(self, name: str) -> str | None:
        raw = self.text(name)
        if not raw:
            return None
        parts = urlsplit(raw)
        where = parts.path if parts.scheme == "unix" else parts.hostname
        if parts.scheme not in REDIS_URL_SCHEMES or not where:
            raise ConfigurationError(
                f"{name} must be a Redis URL like redis://host:6379/0 (rediss:// for TLS, or "
                "unix:///path/to/redis.sock)"
            )
        return raw

    def base_url(self, name: str, default: str) -> str:
        # Every upstream path starts with "/", so a base URL keeps no trailing slash.
        return (self.url(name, default) or default).rstrip("/")

    def currency(self, name: str) -> str:
        raw = self.text(name, DEFAULT_CURRENCY).upper()
        if len(raw) != 3 or not (raw.isascii() and raw.isalpha()):
            raise ConfigurationError(f"{name} must be a three-letter ISO 4217 code")
        return raw


def _parse_flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def is_http_url(value: str) -> bool:
    """Whether `value` is an absolute http or https URL with a host."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


def load_plan_catalog(*, inline: str, path: str) -> tuple[Mapping[str, Any], ...]:
    """Parse and check the Autoposting plan catalog from JSON text or a JSON file.

    Each entry: `id` and `name` (strings, required), `price` (number or decimal string),
    `currency`, `interval`, `group` (strings) and `features` (list of `{id, included}`).
    """
    if inline.strip() and path.strip():
        raise ConfigurationError(
            "set GATEWAY_AUTOPOSTING_PLANS or GATEWAY_AUTOPOSTING_PLANS_FILE, not both"
        )
    if path.strip():
        try:
            inline = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read GATEWAY_AUTOPOSTING_PLANS_FILE: {exc}") from exc
    if not inline.strip():
        return DEFAULT_AUTOPOSTING_PLANS
    try:
        entries = json.loads(inline)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the Autoposting plan catalog is not JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError("the Autoposting plan catalog must be a non-empty JSON list")
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"Autoposting plan catalog entry {index}"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where} must be an object")
        for key in ("id", "name"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigurationError(f"{where} needs a non-empty string {key!r}")
        for key in ("currency", "interval", "group"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ConfigurationError(f"{where}: {key!r} must be a string")
        price = entry.get("price")
        if price is not None:
            try:
                amount = Decimal(str(price))
            except InvalidOperation as exc:
                raise ConfigurationError(f"{where}: 'price' must be a number") from exc
            if isinstance(price, bool) or not amount.is_finite() or amount < 0:
                raise ConfigurationError(f"{where}: 'price' must be a finite, non-negative number")
        features = entry.get("features", [])
        if not isinstance(features, list) or not all(
            isinstance(f, dict) and isinstance(f.get("id"), str) for f in features
        ):
            raise ConfigurationError(f"{where}: 'features' must be a list of {{id, included}}")
        if entry["id"] in seen:
            raise ConfigurationError(f"{where}: duplicate plan id {entry['id']!r}")
        seen.add(entry["id"])
    return tuple(entries)


def load_persisted_operations(path: str, *, required: bool) -> Mapping[str, str]:
    """The persisted operations manifest at `path` (formats: gateway/http/persisted.py), or none."""
    if not path:
        if required:
            raise ConfigurationError(
                "GATEWAY_PERSISTED_ONLY is on: set GATEWAY_PERSISTED_OPERATIONS_FILE to the "
                "manifest of the operations that may run"
            )
        return {}
    try:
        return read_manifest(Path(path))
    except OSError as exc:
        raise ConfigurationError(f"cannot read GATEWAY_PERSISTED_OPERATIONS_FILE: {exc}") from exc
    except ManifestError as exc:
        raise ConfigurationError(f"GATEWAY_PERSISTED_OPERATIONS_FILE: {exc}") from exc


def load_api_keys(plain: tuple[Credential, ...], path: str) -> tuple[GatewayKey, ...]:
    """The gateway keys: GATEWAY_API_KEYS' hashed now (their text is not kept), with every
    permission, then the scoped keys of the key file at `path` (format: gateway/keys.py)."""
    keys = plain_keys((key.reveal() for key in plain), variable="GATEWAY_API_KEYS")
    if path:
        try:
            keys += read_key_file(Path(path))
        except OSError as exc:
            raise ConfigurationError(f"cannot read GATEWAY_API_KEYS_FILE: {exc}") from exc
        except KeyFileError as exc:
            raise ConfigurationError(f"GATEWAY_API_KEYS_FILE: {exc}") from exc
    try:
        return distinct_keys(keys)
    except KeyFileError as exc:
        raise ConfigurationError(f"GATEWAY_API_KEYS and GATEWAY_API_KEYS_FILE: {exc}") from exc
