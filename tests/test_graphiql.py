"""GraphiQL served by the gateway alone: vendored files, their integrity, the page, caching.

The real browser test is tests/test_browser.py; these check what the browser would rely on.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

from gateway.__main__ import demo_graphiql_headers
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.http.graphiql import ASSET_CACHE_CONTROL, ASSETS_PATH, GraphiQLPage, assets
from gateway.sandbox import ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY
from tests.support import TEST_API_KEY, make_settings, serve

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway" / "http" / "graphiql"
VENDOR = PACKAGE / "vendor"
LOCK = json.loads((VENDOR / "lock.json").read_text(encoding="utf-8"))
HTML = {"accept": "text/html"}
CONFIG = r'<script type="application/json" id="graphiql-config">(.*?)</script>'
# Tags that make a browser fetch something, and the attribute naming what (data: fetches nothing).
FETCHING = re.compile(r"<(script|link)\b[^>]*?\b(src|href)=\"(?!data:)([^\"]*)\"[^>]*>")


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_settings()) as client:  # the app alone: no upstream calls
        yield client


async def _page(client: httpx.AsyncClient) -> str:
    response = await client.get("/graphql", headers=HTML)
    assert response.status_code == 200
    return response.text


# --- The vendored files ---------------------------------------------------------------------------

LOCKED = [(package, file) for package in LOCK["packages"] for file in package["files"]]


@pytest.mark.parametrize(("package", "file"), LOCKED, ids=[file["path"] for _, file in LOCKED])
def test_each_vendored_file_is_the_one_the_lock_records(
    package: dict[str, str], file: dict[str, str | int]
) -> None:
    data = (VENDOR / str(file["path"])).read_bytes()

    assert len(data) == file["bytes"]
    assert hashlib.sha256(data).hexdigest() == file["sha256"]
    assert _sri(data) == file["integrity"]
    # The version is in the URL: that is what makes a year of caching safe.
    assert str(file["path"]).endswith(f"-{package['version']}/{Path(str(file['source'])).name}")
    assert package["tarball_integrity"].startswith("sha512-")


def test_the_vendor_folder_holds_only_the_locked_files() -> None:
    on_disk = {path.relative_to(VENDOR).as_posix() for path in VENDOR.rglob("*") if path.is_file()}

    assert on_disk == {"lock.json"} | {str(file["path"]) for _, file in LOCKED}


def test_the_pinned_packages_are_graphiql_3_with_react_18_umd_builds() -> None:
    versions = {package["name"]: package["version"] for package in LOCK["packages"]}

    assert versions["react"] == versions["react-dom"]
    assert versions["react"].startswith("18.")
    assert versions["graphiql"].startswith("3.")
    assert "@graphiql/plugin-explorer" in versions


def test_the_package_data_ships_the_page_and_every_vendored_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway.http.graphiql"]
    shipped = [path for path in PACKAGE.rglob("*") if path.is_file() and path.suffix != ".py"]
    shipped = [path for path in shipped if "__pycache__" not in path.parts]

    unshipped = [
        path.relative_to(PACKAGE).as_posix()
        for path in shipped
        if not any(fnmatch(path.relative_to(PACKAGE).as_posix(), p) for p in patterns)
    ]

    assert unshipped == []
    assert {"page.html", "init.js", "vendor/lock.json"} <= {
        path.relative_to(PACKAGE).as_posix() for path in shipped
    }


# --- Serving them ---------------------------------------------------------------------------------


@pytest.mark.parametrize("asset", assets(), ids=lambda asset: asset.path)
async def test_each_asset_is_served_with_its_content_type_and_a_year_of_caching(
    client: httpx.AsyncClient, asset: object
) -> None:
    path = getattr(asset, "path", "")
    response = await client.get(f"{ASSETS_PATH}/{path}", headers={"accept-encoding": "identity"})

    assert response.status_code == 200
    expected = "text/javascript" if path.endswith(".js") else "text/css"
    assert response.headers["content-type"] == f"{expected}; charset=utf-8"
    assert response.headers["cache-control"] == ASSET_CACHE_CONTROL
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (VENDOR / path).read_bytes()


async def test_assets_are_served_without_a_gateway_key_and_gzipped_on_request(
    client: httpx.AsyncClient,
) -> None:
    path = "graphiql-3.8.3/graphiql.min.js"
    response = await client.get(f"{ASSETS_PATH}/{path}", headers={"accept-encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) < (VENDOR / path).stat().st_size / 3
    # httpx decodes the body: what the browser checks the integrity of.
    assert _sri(response.content) == _sri((VENDOR / path).read_bytes())
    assert gzip.decompress(gzip.compress(response.content)) == response.content


async def test_an_asset_revalidated_with_its_etag_is_a_304(client: httpx.AsyncClient) -> None:
    url = f"{ASSETS_PATH}/react-18.2.0/react.production.min.js"
    first = await client.get(url)

    second = await client.get(url, headers={"if-none-match": first.headers["etag"]})

    assert second.status_code == 304
    assert second.content == b""


async def test_an_unknown_asset_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ASSETS_PATH}/react-18.2.0/nope.js")

    assert response.status_code == 404
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "path",
    [
        "nope.js",
        "lock.json",
        "../page.html",
        "..%2F__init__.py",
        "react-18.2.0/../../page.html",
        "react-18.2.0",
    ],
)
async def test_anything_but_a_vendored_file_is_a_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"{ASSETS_PATH}/{path}")

    assert response.status_code == 404
    assert "<html" not in response.text


async def test_without_graphiql_the_assets_are_not_served() -> None:
    async with serve(make_settings(GATEWAY_GRAPHIQL="false")) as client:
        response = await client.get(f"{ASSETS_PATH}/react-18.2.0/react.production.min.js")

    assert response.status_code == 404


# --- The page -------------------------------------------------------------------------------------


async def test_the_page_loads_only_same_origin_files_each_with_its_integrity(
    client: httpx.AsyncClient,
) -> None:
    page = await _page(client)
    tags = FETCHING.findall(page)
    integrity = {asset.path: asset.integrity for asset in assets()}

    assert sorted(url for _, _, url in tags) == sorted(f"{ASSETS_PATH}/{p}" for p in integrity)
    for tag in re.finditer(r"<(?:script|link)\b[^>]*\b(?:src|href)=\"(?!data:)[^>]*>", page):
        url = re.search(r"(?:src|href)=\"([^\"]+)\"", tag.group()).group(1)  # type: ignore[union-attr]
        served = await client.get(url, headers={"accept-encoding": "identity"})
        sri = re.search(r"integrity=\"([^\"]+)\"", tag.group())
        assert sri is not None, tag.group()
        assert (
            sri.group(1) == integrity[url.removeprefix(f"{ASSETS_PATH}/")] == _sri(served.content)
        )


async def test_the_page_names_no_external_url(client: httpx.AsyncClient) -> None:
    page = await _page(client)
    # The example mutation's redirect URLs are data the page never loads.
    config = re.search(CONFIG, page, re.S)
    assert config is not None
    markup = page.replace(config.group(1), "")

    assert re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}|unpkg|jsdelivr|cdn", markup, re.I) == []
    assert re.findall(r"https?://\S+", config.group(1)) == re.findall(
        r"https?://\S+", json.dumps([EXAMPLE_QUERY, EXAMPLE_MUTATION])
    )


async def test_the_page_allows_only_its_own_origin_and_its_own_inline_script(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/graphql", headers=HTML)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    [inline] = re.findall(r"<script>(.*?)</script>", response.text, re.S)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()

    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert policy["connect-src"] == "'self'"
    assert response.headers["cache-control"] == "no-cache"


async def test_the_page_opens_with_the_example_query_and_mutation(
    client: httpx.AsyncClient,
) -> None:
    page = await _page(client)
    [config] = re.findall(CONFIG, page, re.S)

    assert json.loads(config) == {"tabs": [EXAMPLE_QUERY, EXAMPLE_MUTATION]}


async def test_the_page_never_holds_a_configured_key_or_credential(
    client: httpx.AsyncClient,
) -> None:
    page = await _page(client)

    for secret in (TEST_API_KEY, ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY, "Bearer"):
        assert secret not in page


async def test_the_page_reads_the_query_and_headers_from_its_url(
    client: httpx.AsyncClient,
) -> None:
    page = await _page(client)

    for parameter in ('get("q")', 'get("variables")', 'get("headers")'):
        assert parameter in page


async def test_a_gateway_under_a_path_prefix_links_its_assets_under_it() -> None:
    async with serve(make_settings(), root_path="/billing") as client:
        response = await client.get("/billing/graphql", headers=HTML)

    urls = [url for _, _, url in FETCHING.findall(response.text)]
    assert urls
    assert all(url.startswith(f"/billing{ASSETS_PATH}/") for url in urls)


@pytest.mark.parametrize(
    ("host", "api_key", "expected"),
    [
        ("127.0.0.1", "demo-gateway-key", {"Authorization": "Bearer demo-gateway-key"}),
        ("localhost", "demo-gateway-key", {"Authorization": "Bearer demo-gateway-key"}),
        ("::1", "demo-gateway-key", {"Authorization": "Bearer demo-gateway-key"}),
        # Reachable from other machines: the page must not hand the key to whoever opens it.
        ("0.0.0.0", "demo-gateway-key", None),
        ("192.0.2.10", "demo-gateway-key", None),
        # The caller's own GATEWAY_API_KEYS are never printed, nor written into the page.
        ("127.0.0.1", None, None),
    ],
)
def test_the_demo_prefills_its_published_key_only_on_loopback(
    host: str, api_key: str | None, expected: dict[str, str] | None
) -> None:
    assert demo_graphiql_headers(host, api_key) == expected


def test_a_page_with_headers_carries_them_in_its_config_and_a_page_without_none() -> None:
    with_key = GraphiQLPage(["{ __typename }"], headers={"Authorization": "Bearer demo-key"})
    without = GraphiQLPage(["{ __typename }"])

    assert "Bearer demo-key" in with_key.html()
    assert "Bearer" not in without.html()


async def test_serve_writes_no_key_into_the_graphiql_page(client: httpx.AsyncClient) -> None:
    page = await _page(client)

    assert TEST_API_KEY not in page
    assert "Bearer" not in page
