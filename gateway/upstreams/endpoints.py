"""An upstream endpoint, declared once: its path template, its URL paths and its cache group."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote

from gateway.upstreams.reuse import CacheGroup

# The metric label of a path that matches no declared endpoint: a raw id never becomes a label.
OTHER_ENDPOINT = "other"
_PLACEHOLDER = re.compile(r"\{([^/{}]+)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A path template (`{name}` is one segment) and, for GETs whose answers may be reused, the
    `CacheGroup` whose time-to-live applies (None: never cached)."""

    template: str
    cache: CacheGroup | None = None

    def path(self, **segments: str) -> str:
        """The template with each `{name}` replaced by `segments[name]`, percent-encoded."""
        return _PLACEHOLDER.sub(lambda match: _segment(segments[match.group(1)]), self.template)


def _segment(value: str) -> str:
    segment = quote(value, safe="")
    if not segment.strip("."):
        # "." or ".." as a segment would be resolved away by URL normalization and reach another
        # endpoint with the caller's credential.
        segment = segment.replace(".", "%2E")
    return segment


@cache
def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", template)
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    )


def endpoint_template(path: str, templates: tuple[str, ...]) -> str:
    """The first of `templates` that `path` matches (`{name}` is one segment), else "other"."""
    for template in templates:
        if _template_pattern(template).fullmatch(path):
            return template
    return OTHER_ENDPOINT
