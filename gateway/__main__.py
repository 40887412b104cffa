"""The `billing-gateway` command: `serve`, `demo`, `export-schema` and `check-schema`."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import uvicorn
from graphql import build_ast_schema, find_breaking_changes, find_dangerous_changes, parse

from gateway.app import create_app
from gateway.examples import EXAMPLE_QUERY
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    start_sandbox,
)
from gateway.schema import build_schema, schema_sdl
from gateway.settings import ConfigurationError, Settings, load_settings
from gateway.telemetry.logs import LOG_FORMATS, configure_logging

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# The gateway key of demo mode: the sandbox credentials are service credentials, and a gateway
# with service credentials asks its callers for a key.
DEMO_API_KEY = "demo-gateway-key"
CURL_QUERY = (
    '{ billingAccount(provider: ALMANAC, accountId: "org_acme") '
    "{ __typename ... on BillingAccount { currentPlan { name } } } }"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="billing-gateway",
        description="One GraphQL API over the Almanac and Autoposting billing APIs.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway against the configured upstreams")
    _add_address(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    demo = commands.add_parser(
        "demo", help="run the gateway with the built-in sandbox upstreams (the default)"
    )
    _add_address(demo)

    export = commands.add_parser("export-schema", help="print the schema in SDL")
    export.add_argument(
        "--output", "-o", type=Path, help="write to this file (schema.graphql) instead of stdout"
    )

    check = commands.add_parser(
        "check-schema",
        help="fail on breaking changes since the released schema that are not declared",
    )
    check.add_argument(
        "--released",
        type=Path,
        default=Path("schema.released.graphql"),
        help="the last released schema (default schema.released.graphql)",
    )
    check.add_argument(
        "--declared",
        type=Path,
        default=Path("schema.breaking.txt"),
        help="breaking changes declared for the next release, one a line "
        "(default schema.breaking.txt)",
    )

    args = parser.parse_args(argv)
    try:
        _configure_logging(os.environ, args.command)
        if args.command == "export-schema":
            return _export_schema(args.output)
        if args.command == "check-schema":
            return _check_schema(args.released, args.declared)
        if args.command == "serve":
            return _serve(args.host, args.port, args.workers)
        return asyncio.run(
            _demo(getattr(args, "host", DEFAULT_HOST), getattr(args, "port", DEFAULT_PORT))
        )
    except ConfigurationError as exc:
        print(f"billing-gateway: configuration error: {exc}", file=sys.stderr)
        return 2


def _configure_logging(environ: Mapping[str, str], command: str | None) -> None:
    """JSON lines for `serve` (log collectors), text for a person running `demo`, unless
    GATEWAY_LOG_FORMAT says otherwise."""
    log_format = environ.get("GATEWAY_LOG_FORMAT", "").strip().lower() or (
        "json" if command == "serve" else "text"
    )
    if log_format not in LOG_FORMATS:
        raise ConfigurationError("GATEWAY_LOG_FORMAT must be json or text")
    level = environ.get("GATEWAY_LOG_LEVEL", "INFO").strip().upper()
    if not isinstance(logging.getLevelNamesMapping().get(level), int):
        raise ConfigurationError("GATEWAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    configure_logging(log_format, level)


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )


def _export_schema(output: Path | None) -> int:
    sdl = schema_sdl()
    if output is None:
        sys.stdout.write(sdl)
    else:
        output.write_text(sdl, encoding="utf-8")
    return 0


def _check_schema(released_path: Path, declared_path: Path) -> int:
    """Compare the schema of the code with the released one (graphql-core's change finder).

    Each breaking change must be declared, by its description as printed here, on a line of
    `declared_path` (`#` starts a comment); at a release schema.graphql becomes the released
    schema and the declarations are emptied.
    """
    released = build_ast_schema(parse(released_path.read_text(encoding="utf-8")))
    current = build_schema()._schema
    declared = set()
    if declared_path.exists():
        lines = declared_path.read_text(encoding="utf-8").splitlines()
        declared = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    breaking = [change.description for change in find_breaking_changes(released, current)]
    undeclared = [description for description in breaking if description not in declared]
    for change in find_dangerous_changes(released, current):
        print(f"dangerous (allowed): {change.description}")
    for description in sorted(declared - set(breaking)):
        print(f"declared but not found (remove it from {declared_path}): {description}")
    for description in breaking:
        if description in declared:
            print(f"breaking (declared): {description}")
    if undeclared:
        print(
            f"Breaking changes since {released_path}, not declared in {declared_path}:",
            file=sys.stderr,
        )
        for description in undeclared:
            print(f"  {description}", file=sys.stderr)
        print(
            f"Keep the schema compatible, or declare each change as a line of {declared_path}.",
            file=sys.stderr,
        )
        return 1
    print(f"schema check: no undeclared breaking change since {released_path}")
    return 0


def _serve(host: str, port: int, workers: int) -> int:
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    settings = load_settings(os.environ)  # fail here, once, on a bad configuration
    uvicorn.run(
        "gateway.app:create_app_from_environ",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        **server_options(settings),
    )
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options of `serve` and `demo`, from the settings.

    uvicorn has no time limit on a request's headers or body (see README, "Security"): a
    connection trickling them in is held until the client stops; put a proxy with header and
    body timeouts in front (docs/replicas.md).
    """
    return {
        # Per worker: while this many connections are open or requests running, a new request
        # is answered 503 at once instead of queueing without bound.
        "limit_concurrency": settings.max_concurrency,
        # An idle kept-alive connection is closed after this long.
        "timeout_keep_alive": settings.keep_alive_seconds,
        # On SIGTERM: stop accepting, let requests in flight finish (then close the clients).
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        # The gateway has no WebSocket endpoint: an upgrade is answered as plain HTTP.
        "ws": "none",
        # Logging is configured by `main`; the gateway writes its own access line.
        "log_config": None,
        "access_log": False,
    }


def demo_environ(
    environ: Mapping[str, str], almanac_url: str, autoposting_url: str, gateway_url: str
) -> dict[str, str]:
    """The environment of `demo`: the sandbox upstreams and their sample credentials."""
    return {
        **environ,
        "GATEWAY_ALMANAC_URL": almanac_url,
        "GATEWAY_AUTOPOSTING_URL": autoposting_url,
        "GATEWAY_ALMANAC_TOKEN": ALMANAC_OWNER_TOKEN,
        "GATEWAY_AUTOPOSTING_API_KEY": AUTOPOSTING_PRO_KEY,
        "GATEWAY_DEFAULT_SUCCESS_URL": f"{gateway_url}/?checkout=success",
        "GATEWAY_DEFAULT_CANCEL_URL": f"{gateway_url}/?checkout=cancel",
        "GATEWAY_API_KEYS": environ.get("GATEWAY_API_KEYS") or DEMO_API_KEY,
        "GATEWAY_REDIRECT_HOSTS": environ.get("GATEWAY_REDIRECT_HOSTS")
        or f"{urlsplit(gateway_url).hostname},app.example.com",
    }


def demo_graphiql_headers(host: str, api_key: str | None) -> dict[str, str] | None:
    """The headers the demo's GraphiQL page starts with: the published demo key, and only when
    the gateway listens on loopback (anyone who can reach it there may read the banner too)."""
    if api_key is None or not _is_loopback(host):
        return None
    return {"Authorization": f"Bearer {api_key}"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _demo(host: str, port: int) -> int:
    gateway_url = f"http://{host}:{port}"
    async with start_sandbox() as sandbox:
        environ = demo_environ(
            os.environ, sandbox.almanac_url, sandbox.autoposting_url, gateway_url
        )
        settings = load_settings(environ)
        # Keys of the caller's own are not printed; the demo's own key is, and on a loopback
        # address the GraphiQL page starts with it, so the plain address works as printed.
        api_key = DEMO_API_KEY if environ["GATEWAY_API_KEYS"] == DEMO_API_KEY else None
        app = create_app(settings, graphiql_headers=demo_graphiql_headers(host, api_key))
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, **server_options(settings))
        )
        banner = _demo_banner(gateway_url, sandbox.almanac_url, sandbox.autoposting_url, api_key)
        print(banner, flush=True)
        await server.serve()
    return 0


def _demo_banner(
    gateway_url: str, almanac_url: str, autoposting_url: str, api_key: str | None = DEMO_API_KEY
) -> str:
    """What `demo` prints: links and commands that work as they are (given the demo's key)."""
    authorization = f"Bearer {api_key or '<one of your GATEWAY_API_KEYS>'}"
    # The gateway's GraphiQL page reads the query from `q` and the request headers from `headers`.
    graphiql = (
        f"{gateway_url}/graphql?q={quote(EXAMPLE_QUERY)}"
        f"&headers={quote(json.dumps({'Authorization': authorization}), safe='')}"
    )
    curl_body = json.dumps({"query": CURL_QUERY})
    key_line = (
        f"Gateway key (GATEWAY_API_KEYS)  {api_key}"
        if api_key
        else "Gateway key: one of the GATEWAY_API_KEYS you set"
    )
    return f"""
Billing gateway demo: the gateway over its built-in sandbox upstreams.

  {key_line}
  Every GraphQL request sends it as the header  Authorization: {authorization}

  GraphiQL, with the example query and the Authorization header loaded:
    {graphiql}

  Sandbox Almanac at {almanac_url}, Autoposting at {autoposting_url}.
  Credentials the gateway uses when a request brings none of its own:
    Almanac token        {ALMANAC_OWNER_TOKEN}
    Autoposting API key  {AUTOPOSTING_PRO_KEY}
  Others to try, as the X-Almanac-Token or X-Autoposting-Api-Key header:
    {ALMANAC_VIEWER_TOKEN} (no manage permission), {AUTOPOSTING_TRIAL_KEY},
    {AUTOPOSTING_SUSPENDED_KEY} (checkout answers BillingSuspendedError)

  From a shell:
    curl -s {gateway_url}/graphql -H 'content-type: application/json' \\
      -H 'authorization: {authorization}' -d '{curl_body}'
"""


if __name__ == "__main__":
    raise SystemExit(main())
