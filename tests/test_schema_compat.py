"""The schema as client tools see it: live introspection, breaking changes, codegen example."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLSchema,
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    parse,
    print_schema,
    validate,
)

from gateway.__main__ import main
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.sandbox import SandboxState
from tests.support import TEST_API_KEY, make_settings, sandbox_transports, serve

ROOT = Path(__file__).resolve().parent.parent
CODEGEN = ROOT / "docs" / "codegen"
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}


def normalized(schema: GraphQLSchema) -> str:
    """The SDL of `schema`, types and fields sorted: equal for equal schemas."""
    return print_schema(lexicographic_sort_schema(schema))


async def test_the_committed_schema_graphql_is_what_the_running_gateway_introspects(
    state: SandboxState,
) -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        input_value_deprecation=True,
        one_of=True,
    )
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.post("/graphql", json={"query": query}, headers=KEY)

    assert response.status_code == 200
    payload = response.json()
    assert "errors" not in payload, payload["errors"]
    live = build_client_schema(payload["data"])
    committed = build_schema((ROOT / "schema.graphql").read_text(encoding="utf-8"))

    assert normalized(live) == normalized(committed), (
        "schema.graphql differs from the gateway's introspection: regenerate it with "
        "`billing-gateway export-schema --output schema.graphql`"
    )


# --- check-schema --------------------------------------------------------------------------------


def test_the_current_schema_has_no_undeclared_breaking_change_since_the_release(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "check-schema",
            "--released",
            str(ROOT / "schema.released.graphql"),
            "--declared",
            str(ROOT / "schema.breaking.txt"),
        ]
    )

    assert status == 0, capsys.readouterr().err


RELEASED_EXTRA = '''
extend type Query {
  """A field the code no longer has."""
  retiredField: String
}
'''
REMOVED = "Field Query.retiredField was removed."


def released_with_a_retired_field(tmp_path: Path) -> Path:
    released = tmp_path / "schema.released.graphql"
    released.write_text(
        (ROOT / "schema.graphql").read_text(encoding="utf-8") + RELEASED_EXTRA, encoding="utf-8"
    )
    return released


def test_an_undeclared_breaking_change_fails_the_check_and_is_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    released = released_with_a_retired_field(tmp_path)

    status = main(
        ["check-schema", "--released", str(released), "--declared", str(tmp_path / "none.txt")]
    )

    assert status == 1
    err = capsys.readouterr().err
    assert REMOVED in err
    assert "declare each change" in err


def test_a_declared_breaking_change_passes_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    released = released_with_a_retired_field(tmp_path)
    declared = tmp_path / "schema.breaking.txt"
    declared.write_text(
        f"# removed on purpose\n{REMOVED}\nQuery.neverThere was removed.\n", encoding="utf-8"
    )

    status = main(["check-schema", "--released", str(released), "--declared", str(declared)])

    assert status == 0
    out = capsys.readouterr().out
    assert f"breaking (declared): {REMOVED}" in out
    assert "declared but not found" in out
    assert "Query.neverThere was removed." in out


def test_a_dangerous_change_is_reported_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A value added to an enum the released schema had: clients' exhaustive switches may break.
    sdl = (ROOT / "schema.graphql").read_text(encoding="utf-8")
    released = tmp_path / "schema.released.graphql"
    internal = '  """An unexpected failure in the gateway; details are in its log."""\n  INTERNAL\n'
    assert internal in sdl
    released.write_text(sdl.replace(internal, "", 1), encoding="utf-8")

    status = main(
        ["check-schema", "--released", str(released), "--declared", str(tmp_path / "none.txt")]
    )

    assert status == 0
    assert (
        "dangerous (allowed): Enum value ErrorCode.INTERNAL was added." in capsys.readouterr().out
    )


def test_the_released_schema_is_a_valid_schema() -> None:
    build_schema((ROOT / "schema.released.graphql").read_text(encoding="utf-8"))


# --- the codegen example -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "document"),
    [("Billing.graphql", EXAMPLE_QUERY), ("Upgrade.graphql", EXAMPLE_MUTATION)],
)
def test_the_codegen_examples_are_the_readme_operations_and_valid(name: str, document: str) -> None:
    text = (CODEGEN / "operations" / name).read_text(encoding="utf-8")
    schema = build_schema((ROOT / "schema.graphql").read_text(encoding="utf-8"))

    assert text == document, f"docs/codegen/operations/{name} differs from gateway/examples.py"
    assert validate(schema, parse(text)) == []


def test_the_codegen_config_reads_the_committed_schema_and_the_example_operations() -> None:
    config = (CODEGEN / "codegen.yml").read_text(encoding="utf-8")

    assert "schema: ../../schema.graphql" in config
    assert "documents: operations/*.graphql" in config
