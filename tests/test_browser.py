"""GraphiQL in a real browser: Debian's Chromium, headless, driven by Playwright, fully offline.

The gateway runs over the sandbox upstreams on loopback, as `demo` runs it; the browser opens the
demo banner's link and runs the example query. Every request the page makes must stay on the
gateway's origin: the page works with no internet access.

.ci/run installs Chromium (`apt-get install chromium`) and make installs the `playwright` package
(the `test` extra), so this runs in CI, where GATEWAY_BROWSER_TESTS=required turns a missing
browser into a failure; elsewhere the tests are skipped, saying what is missing.
GATEWAY_TEST_SCREENSHOT=/tmp/graphiql.png keeps a screenshot of the page after the query ran.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.__main__ import DEMO_API_KEY, _demo_banner, demo_environ, demo_graphiql_headers
from gateway.app import create_app
from gateway.sandbox import SandboxThread
from gateway.settings import load_settings
from tests.servers import ServerThread

# Run by `make test`, left out of `make test-fast`.
pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium"))
# Chromium on a machine with no internet: no background connections, no first-run work. (Playwright
# adds --headless; `launch_persistent_context` gives it a fresh --user-data-dir.)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

# .ci/run sets it: there a missing browser fails the tests instead of skipping them.
REQUIRED = os.environ.get("GATEWAY_BROWSER_TESTS") == "required"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:  # depends on the machine
        return "the browser test needs the playwright package: pip install -e '.[test]'"
    if not CHROMIUM.is_file():
        return f"the browser test needs Chromium at {CHROMIUM}: apt-get install chromium"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    if (reason := _missing()) is not None:
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """The demo banner's GraphiQL link, on a gateway serving the sandbox upstreams."""
    with SandboxThread() as sandbox:

        def make_app(url: str) -> Any:
            environ = demo_environ({}, sandbox.almanac_url, sandbox.autoposting_url, url)
            headers = demo_graphiql_headers("127.0.0.1", DEMO_API_KEY)
            return create_app(load_settings(environ), graphiql_headers=headers)

        with ServerThread(make_app) as gateway:
            banner = _demo_banner(gateway.url, sandbox.almanac_url, sandbox.autoposting_url)
            [link] = [word for word in banner.split() if word.startswith(f"{gateway.url}/graphql?")]
            yield link


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright import sync_api  # here: the module imports without playwright installed

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            context.close()


def test_graphiql_runs_the_example_query_against_the_sandbox_with_no_internet(
    demo: str, page: Any, tmp_path: Path
) -> None:
    origin = demo.split("/graphql", 1)[0]
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )

    try:
        page.goto(demo)
        run = page.locator(".graphiql-execute-button")
        run.wait_for(state="visible")
        # The demo link's header, in the headers editor: every operation needs the gateway key.
        assert "Bearer demo-gateway-key" in page.locator(".graphiql-editor-tool").inner_text()
        run.click()
        result = page.locator(".result-window")
        result.get_by_text("org_acme").first.wait_for()
        text = result.inner_text()
    finally:
        page.screenshot(path=str(tmp_path / "graphiql.png"))
        if keep := os.environ.get("GATEWAY_TEST_SCREENSHOT"):
            shutil.copy(tmp_path / "graphiql.png", keep)

    assert '"BillingAccount"' in text
    assert '"org_acme"' in text
    assert "UNAUTHENTICATED" not in text
    assert problems == []
    assert requests
    assert [url for url in requests if not url.startswith((origin + "/", "data:"))] == []


def test_graphiql_opens_the_example_query_and_mutation_in_tabs(demo: str, page: Any) -> None:
    page.goto(demo.split("?", 1)[0])
    page.locator(".graphiql-execute-button").wait_for(state="visible")

    tabs = page.locator(".graphiql-tab")

    assert tabs.count() == 2
    assert tabs.nth(0).inner_text().strip().startswith("Billing")
    assert tabs.nth(1).inner_text().strip().startswith("Upgrade")


def test_the_demos_plain_graphiql_address_runs_the_example_query_with_the_demo_key(
    demo: str, page: Any
) -> None:
    page.goto(demo.split("?", 1)[0])  # what the banner's first line prints
    run = page.locator(".graphiql-execute-button")
    run.wait_for(state="visible")
    run.click()
    result = page.locator(".result-window")
    result.get_by_text("org_acme").first.wait_for()

    assert "UNAUTHENTICATED" not in result.inner_text()
