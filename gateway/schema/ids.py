"""Globally unique ids: opaque base64url of type, provider, account and the provider's own id."""

from __future__ import annotations

import base64
from urllib.parse import quote

from gateway.provider import Provider


def global_id(type_name: str, provider: Provider, *parts: str) -> str:
    """An id unique across types and providers (codegen caches key objects by it); `parts` name
    the object within its provider, e.g. account and plan."""
    # Each part is percent-encoded, so a ":" inside an id cannot make two ids collide.
    text = ":".join(quote(part, safe="") for part in (type_name, provider.value, *parts))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
