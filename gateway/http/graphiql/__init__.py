"""GraphiQL served by the gateway itself, so that it works with no internet access.

The page loads React, GraphiQL and its explorer plugin from `ASSETS_PATH` on the gateway: files
copied byte for byte from pinned npm packages into `vendor/` by `scripts/vendor_graphiql.py`, which
records each file's sha256 and SRI value in `vendor/lock.json`. The page's `integrity=` attributes
come from that lock (the browser refuses a file that differs), and its Content-Security-Policy
allows nothing but this origin, so a page that reached for a CDN would fail in every browser, not
only offline. Asset URLs carry the package version, so browsers may cache them for a year.

The page opens with the example operations in tabs. It reads `?q=`, `?variables=` and `?headers=`
from its own URL. Only `demo` on a loopback address gives the page request headers to pre-fill
(its published demo key); any other page has no key written into it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import PurePosixPath

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.errors import ErrorCode
from gateway.http.guard import error_response

ASSETS_PATH = "/graphiql/assets"
# Versioned URLs never change content: a year, and no revalidation.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_PACKAGE = files(__name__)


@dataclass(frozen=True, slots=True)
class Asset:
    """One vendored file as `vendor/lock.json` records it."""

    package: str
    version: str
    path: str  # under vendor/, and under ASSETS_PATH in its URL
    sha256: str
    integrity: str  # "sha384-<base64>", the page's integrity= attribute

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[PurePosixPath(self.path).suffix]

    @property
    def etag(self) -> str:
        return f'"{self.sha256[:32]}"'

    def read(self) -> bytes:
        return _PACKAGE.joinpath("vendor", *self.path.split("/")).read_bytes()


@cache
def assets() -> tuple[Asset, ...]:
    """The vendored files, in the order the page loads them."""
    lock = json.loads(_PACKAGE.joinpath("vendor", "lock.json").read_text(encoding="utf-8"))
    return tuple(
        Asset(package["name"], package["version"], file["path"], file["sha256"], file["integrity"])
        for package in lock["packages"]
        for file in package["files"]
    )


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _json_for_html(value: object) -> str:
    # Inside <script>, "</script>" or "<!--" in a query would end the element: escape "<", ">"
    # and "&" as JSON escapes, which JSON.parse reads back unchanged.
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class GraphiQLPage:
    """The GraphiQL page opening with `tabs` (GraphQL documents), rendered once; `headers`, the
    request headers its editor starts with (`demo` only: see the module docstring)."""

    def __init__(self, tabs: Sequence[str], *, headers: Mapping[str, str] | None = None) -> None:
        template = _PACKAGE.joinpath("page.html").read_text(encoding="utf-8")
        config: dict[str, object] = {"tabs": list(tabs)}
        if headers:
            config["headers"] = json.dumps(dict(headers))  # GraphiQL's headers editor: JSON text
        init = _PACKAGE.joinpath("init.js").read_text(encoding="utf-8").strip()
        # Indented as the template's other elements; the CSP hash covers the exact text.
        inline = "\n" + textwrap.indent(init, "      ") + "\n    "
        self._template = (
            template.replace("{{ config }}", _json_for_html(config))
            .replace("{{ init }}", inline)
            .replace("{{ stylesheets }}", "\n    ".join(self._tags(".css")))
            .replace("{{ scripts }}", "\n    ".join(self._tags(".js")))
        )
        self.content_security_policy = "; ".join(
            (
                "default-src 'none'",
                f"script-src 'self' '{_script_hash(inline)}'",
                # GraphiQL and CodeMirror set style attributes; the CSS inlines its fonts.
                "style-src 'self' 'unsafe-inline'",
                "font-src 'self' data:",
                "img-src 'self' data:",
                "connect-src 'self'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )

    @staticmethod
    def _tags(suffix: str) -> list[str]:
        tags = []
        for asset in assets():
            if not asset.path.endswith(suffix):
                continue
            url = "{{ prefix }}" + f"{ASSETS_PATH}/{asset.path}"
            if suffix == ".css":
                tags.append(f'<link rel="stylesheet" href="{url}" integrity="{asset.integrity}" />')
            else:
                tags.append(f'<script src="{url}" integrity="{asset.integrity}"></script>')
        return tags

    def html(self, root_path: str = "") -> str:
        """The page for a gateway mounted at `root_path` (asset URLs are absolute paths)."""
        return self._template.replace("{{ prefix }}", root_path.rstrip("/"))

    def response(self, request: Request) -> Response:
        return HTMLResponse(
            self.html(request.scope.get("root_path", "")),
            headers={
                "Content-Security-Policy": self.content_security_policy,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )


@cache
def _body(asset: Asset, encoding: str) -> bytes:
    data = asset.read()
    # Level 6: a tenth of a second for GraphiQL's 3.5 MB (level 9 takes four times as long for
    # 1% less); once per process.
    return gzip.compress(data, compresslevel=6, mtime=0) if encoding == "gzip" else data


def assets_route(*, enabled: bool = True) -> Route:
    """The route serving the vendored files (a JSON 404 for any other path, or when disabled)."""
    by_path = {asset.path: asset for asset in assets()}

    async def asset_file(request: Request) -> Response:
        asset = by_path.get(request.path_params["path"]) if enabled else None
        if asset is None:
            return error_response(404, "No such GraphiQL asset.", ErrorCode.NOT_FOUND)
        headers = {
            "Cache-Control": ASSET_CACHE_CONTROL,
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        accepted = request.headers.get("accept-encoding", "")
        encoding = "gzip" if "gzip" in accepted.lower() else "identity"
        if encoding == "gzip":
            headers["Content-Encoding"] = "gzip"
        body = await run_in_threadpool(_body, asset, encoding)
        return Response(body, media_type=asset.content_type, headers=headers)

    return Route(f"{ASSETS_PATH}/{{path:path}}", asset_file, methods=["GET", "HEAD"])
