"""The layering of STYLE.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# Module (or package prefix) -> imports it must not make. Data flows one way:
# upstreams -> normalize/models -> loaders -> context -> schema -> app.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The core, bottom up.
    "gateway.provider": ("gateway.", "httpx", "strawberry", "starlette"),
    "gateway.jsonfast": ("gateway.", "httpx", "strawberry", "starlette"),
    "gateway.credentials": ("gateway.", "httpx", "strawberry", "starlette"),
    "gateway.errors": ("gateway.models", "gateway.upstreams", "httpx", "strawberry", "starlette"),
    "gateway.environment": ("gateway.models", "gateway.upstreams", "gateway.settings", "httpx",
                            "strawberry"),
    "gateway.settings": ("gateway.models", "gateway.upstreams", "httpx", "strawberry"),
    "gateway.validation": ("gateway.upstreams", "gateway.loaders", "httpx", "strawberry",
                           "starlette"),
    # Gateway keys and their scopes: read by settings, the HTTP edge, the context and the schema.
    "gateway.keys": ("gateway.settings", "gateway.upstreams", "gateway.loaders", "gateway.context",
                     "gateway.schema", "gateway.http", "httpx", "strawberry", "starlette"),
    "gateway.upstreams": ("gateway.models", "gateway.normalize", "gateway.loaders", "strawberry",
                          "starlette", "gateway.schema", "gateway.context", "gateway.checkout",
                          "gateway.http", "gateway.telemetry.metrics",
                          "gateway.telemetry.observability", "gateway.settings"),
    # A `ResponseCache` of the upstream layer, over Redis: the interface, no HTTP.
    "gateway.upstreams.redis_cache": ("httpx", "gateway.upstreams._base",
                                      "gateway.upstreams.almanac",
                                      "gateway.upstreams.autoposting"),
    "gateway.models": ("gateway.upstreams", "gateway.settings", "httpx", "strawberry", "starlette"),
    "gateway.normalize": ("gateway.upstreams", "gateway.settings", "httpx", "strawberry",
                          "starlette"),
    "gateway.clients": ("strawberry", "starlette", "gateway.loaders", "gateway.sources",
                        "gateway.schema", "gateway.context", "gateway.checkout", "gateway.http",
                        "gateway.telemetry"),
    # Account sources read through the loaders (imported for types only) and know no client.
    "gateway.sources": ("strawberry", "starlette", "httpx", "gateway.upstreams", "gateway.clients",
                        "gateway.schema", "gateway.context", "gateway.checkout", "gateway.http",
                        "gateway.telemetry"),
    "gateway.loaders": ("strawberry", "starlette", "gateway.schema", "gateway.context",
                        "gateway.checkout", "gateway.http", "gateway.telemetry"),
    "gateway.context": ("httpx", "starlette", "gateway.schema", "gateway.upstreams",
                        "gateway.http", "gateway.telemetry"),
    "gateway.schema": ("httpx", "starlette", "gateway.upstreams", "gateway.http",
                       "gateway.telemetry"),
    # The GraphQL endpoint: Strawberry's view over the schema, the context and the HTTP edge.
    "gateway.endpoint": ("httpx", "gateway.upstreams", "gateway.loaders", "gateway.checkout"),
    "gateway.examples": ("gateway.", "httpx", "strawberry", "starlette"),
    # Garbage collection on a clock: the process's, knowing nothing of requests.
    "gateway.collector": ("gateway.", "httpx", "strawberry", "starlette"),
    # Compiled execution: GraphQL execution over graphql-core and Strawberry, knowing no domain.
    "gateway.execution": ("httpx", "starlette", "gateway.settings", "gateway.models",
                          "gateway.normalize", "gateway.upstreams", "gateway.clients",
                          "gateway.sources", "gateway.loaders", "gateway.context",
                          "gateway.schema", "gateway.checkout", "gateway.http",
                          "gateway.telemetry"),
    # Checkout: below the schema, above the clients; its stores know no HTTP.
    "gateway.checkout": ("strawberry", "starlette", "httpx", "gateway.schema", "gateway.context",
                         "gateway.http.guard", "gateway.http.persisted", "gateway.http.graphiql",
                         "gateway.telemetry"),
    "gateway.checkout.idempotency": ("gateway.upstreams", "gateway.loaders"),
    "gateway.checkout.redis_store": ("gateway.upstreams", "gateway.loaders"),
    # The HTTP edge: in front of the schema, never inside it.
    "gateway.http": ("strawberry", "httpx", "gateway.schema", "gateway.context",
                     "gateway.loaders", "gateway.checkout.start",
                     "gateway.checkout.preview"),
    # Telemetry observes; it decides nothing about a request.
    # (tracing.py is Strawberry's OpenTelemetry extension, hence no rule against strawberry.)
    "gateway.telemetry": ("httpx", "gateway.schema", "gateway.context",
                          "gateway.loaders", "gateway.checkout", "gateway.http"),
    "gateway.telemetry.request_id": ("gateway.", "starlette"),
    "gateway.telemetry.logs": ("gateway.upstreams", "starlette"),
    # The sandbox plays the external services: it shares no code with the gateway.
    "gateway.sandbox": ("gateway.errors", "gateway.models", "gateway.normalize",
                        "gateway.upstreams", "gateway.loaders", "gateway.schema",
                        "gateway.settings", "gateway.context", "gateway.checkout",
                        "gateway.http", "gateway.telemetry", "strawberry", "httpx"),
}  # fmt: skip
# Module -> imports allowed to it alone although a rule of its package forbids them.
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    # The base client is configured by `UpstreamSettings`; every other upstream module gets what
    # it needs from the base client, and `Credential` from gateway.credentials.
    "gateway.upstreams._base": ("gateway.settings",),
}
ENTRY_POINTS = ("gateway.app", "gateway.__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(
        prefix if prefix.endswith(".") else prefix + "."
    )


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_a_module_imports_nothing_its_layer_forbids(module: str) -> None:
    rules = [forbidden for owner, forbidden in FORBIDDEN.items() if _matches(module, owner)]
    broken = sorted(
        name
        for name in MODULES[module]
        for forbidden in rules
        for prefix in forbidden
        if _matches(name, prefix)
        and not _matches(name, module)
        and not any(_matches(name, allowed) for allowed in EXCEPTIONS.get(module, ()))
    )

    assert broken == []


@pytest.mark.parametrize("module", sorted(set(MODULES) - set(ENTRY_POINTS)), ids=str)
def test_nothing_imports_the_app_or_the_command_line(module: str) -> None:
    assert not any(_matches(name, entry) for name in MODULES[module] for entry in ENTRY_POINTS)


def test_the_layer_rules_name_only_modules_that_exist() -> None:
    assert all(any(_matches(m, owner) for m in MODULES) for owner in FORBIDDEN)


@pytest.mark.parametrize("module", sorted(set(MODULES) - set(ENTRY_POINTS) - {"gateway"}), ids=str)
def test_every_module_has_a_layer_rule(module: str) -> None:
    assert any(_matches(module, owner) for owner in FORBIDDEN)
