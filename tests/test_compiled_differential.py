"""Compiled plans answer exactly as Strawberry's executor does: the differential test.

Every operation is run twice over the sandbox, through a schema with compiled execution off and
through one compiling every operation on its first run, each time with fresh clients and a fresh
sandbox (checkout session ids made deterministic), and the two answers must be the same bytes:
data, errors (message, locations, path, extensions) and their order. The operations: every
GraphQL document the test suite writes out, the README's and `docs/codegen/`'s operations, the
benchmark's, schema-generated ones (hypothesis-graphql, their arguments moved into variables),
`@skip`/`@include` with variables, and a set of them again under injected upstream faults (errors,
nulls, contract drift). Each planned answer must have come from a plan, so that a silent fallback
cannot pass for agreement; and a difference introduced into the planned executor must be caught.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    ArgumentNode,
    DocumentNode,
    EnumTypeDefinitionNode,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    NameNode,
    OperationDefinitionNode,
    VariableDefinitionNode,
    VariableNode,
    parse,
    print_ast,
    type_from_ast,
    validate,
    value_from_ast_untyped,
)
from graphql.error import GraphQLSyntaxError
from graphql.language import Visitor, parse_type, visit
from graphql.utilities import TypeInfo, TypeInfoVisitor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema
from starlette.types import Receive, Scope, Send
from strawberry.extensions import SchemaExtension

import gateway.execution.plan
import gateway.sandbox.almanac
import gateway.sandbox.autoposting
from gateway import jsonfast
from gateway.app import create_app
from gateway.context import build_context
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.execution import PlanCache
from gateway.execution.executor import PlannedExecutor
from gateway.execution.plan import BASIC, RESOLVER, TYPENAME, compile_operation
from gateway.provider import Provider
from gateway.sandbox import (
    ALMANAC_OWNER_TOKEN,
    ALMANAC_VIEWER_TOKEN,
    AUTOPOSTING_PRO_KEY,
    AUTOPOSTING_SUSPENDED_KEY,
    AUTOPOSTING_TRIAL_KEY,
    Fault,
    SandboxState,
    create_almanac_app,
    create_autoposting_app,
)
from gateway.schema import GatewaySchema, build_schema, schema_sdl
from gateway.settings import Settings
from tests.support import TEST_API_KEY, Gateway, make_settings

ROOT = Path(__file__).resolve().parent.parent
# Many checkouts in one run: the caller's checkout rate is not what is compared here.
COMMON = {"GATEWAY_CHECKOUT_RATE_PER_MINUTE": "100000", "GATEWAY_CHECKOUT_BURST": "100000"}
SETTINGS_OFF = make_settings(GATEWAY_COMPILED_EXECUTION="false", **COMMON)
SETTINGS_ON = make_settings(GATEWAY_COMPILE_THRESHOLD="1", **COMMON)
SCHEMA_OFF = build_schema(SETTINGS_OFF)
SCHEMA_ON = build_schema(SETTINGS_ON)
SDL = schema_sdl()


@dataclass(frozen=True)
class Injected:
    """A fault the sandbox injects into every matching request of one run."""

    provider: str
    fault: Fault
    path: str | None = None
    path_prefix: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class Case:
    """One operation to answer both ways."""

    name: str
    query: str
    variables: Mapping[str, Any] | None = None
    operation_name: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    faults: tuple[Injected, ...] = ()


@dataclass(frozen=True)
class Answer:
    body: bytes
    planned: bool


def _deterministic_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkout session ids from a counter per answer, instead of random hex."""
    counter = itertools.count(1)

    def counted(nbytes: int = 12) -> str:
        return f"{next(counter):0{2 * nbytes}x}"

    monkeypatch.setattr(gateway.sandbox.almanac, "random_hex", counted)
    monkeypatch.setattr(gateway.sandbox.autoposting, "random_hex", counted)


def _fixed_time() -> float:
    return 1_764_547_200.0  # 2025-12-01T00:00:00Z


async def answer(schema: GatewaySchema, settings: Settings, case: Case) -> Answer:
    """`case` answered through `schema`, rendered as the HTTP response's JSON."""
    state = SandboxState()
    for injected in case.faults:
        state.add_fault(
            injected.provider,
            injected.fault,
            method=injected.method,
            path=injected.path,
            path_prefix=injected.path_prefix,
        )
    gateway = Gateway(settings=settings, state=state, schema=schema)
    assert gateway.clients is not None
    assert gateway.idempotency is not None
    # Answers carry the time they were fetched (`freshness`): one fixed time for both runs.
    gateway.clients.stale._clock = _fixed_time
    plans = schema.plans
    planned_before = plans.planned if plans else 0
    try:
        context = build_context(
            settings, gateway.clients, dict(case.headers), idempotency=gateway.idempotency
        )
        result = await schema.execute(
            case.query,
            variable_values=dict(case.variables) if case.variables is not None else None,
            context_value=context,
            operation_name=case.operation_name,
        )
    finally:
        await gateway.aclose()
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    planned = plans is not None and plans.planned > planned_before
    return Answer(jsonfast.dumps(body), planned)


async def both(case: Case, monkeypatch: pytest.MonkeyPatch) -> tuple[Answer, Answer]:
    _deterministic_ids(monkeypatch)
    today = await answer(SCHEMA_OFF, SETTINGS_OFF, case)
    _deterministic_ids(monkeypatch)
    planned = await answer(SCHEMA_ON, SETTINGS_ON, case)
    return today, planned


async def assert_same(case: Case, monkeypatch: pytest.MonkeyPatch) -> Answer:
    """The planned answer of `case`, asserted the same bytes as today's and from a plan."""
    today, planned = await both(case, monkeypatch)
    assert planned.body == today.body, _difference(today.body, planned.body)
    assert planned.planned, f"{case.name}: answered without a plan"
    return planned


def _difference(today: bytes, planned: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(today, planned, strict=False)) if a != b),
        min(len(today), len(planned)),
    )
    return (
        f"first difference at byte {at}:\n  today:   {today[max(0, at - 120) : at + 120]!r}\n"
        f"  planned: {planned[max(0, at - 120) : at + 120]!r}"
    )


# --- the operations ----------------------------------------------------------------------------


def _is_operation(text: str) -> DocumentNode | None:
    """`text` parsed, if it is an executable document valid against the schema."""
    if "{" not in text:
        return None
    try:
        document = parse(text)
    except GraphQLSyntaxError:
        return None
    if any(isinstance(d, EnumTypeDefinitionNode) for d in document.definitions):
        return None
    if not any(isinstance(d, OperationDefinitionNode) for d in document.definitions):
        return None
    if validate(SCHEMA_OFF._schema, document):
        return None
    return document


def _strings_of(path: Path) -> Iterator[str]:
    """The string constants of a Python file, and its concatenations of strings and module-level
    string names (as the tests build documents from fragments)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, str] = {}

    def value(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return names.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            return None if left is None or right is None else left + right
        return None

    for statement in tree.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            found = value(statement.value)
            if isinstance(target, ast.Name) and found is not None:
                names[target.id] = found
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            found = value(node)
            if found is not None:
                yield found


def _graphql_blocks(path: Path) -> Iterator[str]:
    yield from re.findall(r"```graphql\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@cache
def suite_operations() -> tuple[tuple[str, str], ...]:
    """(where, document) of every operation the tests (and tests/operations/), the README,
    docs/codegen, the examples and the benchmark write out, each document once."""
    found: dict[str, str] = {}
    sources: list[tuple[str, Iterator[str]]] = [
        (path.name, _strings_of(path))
        for path in sorted((ROOT / "tests").glob("test_*.py"))
        if path.name != Path(__file__).name
    ]
    sources += [
        (f"tests/operations/{path.name}", iter([path.read_text(encoding="utf-8")]))
        for path in sorted((ROOT / "tests" / "operations").glob("*.graphql"))
    ]
    sources.append(("README.md", _graphql_blocks(ROOT / "README.md")))
    sources += [
        (f"docs/codegen/{path.name}", iter([path.read_text(encoding="utf-8")]))
        for path in sorted((ROOT / "docs" / "codegen" / "operations").glob("*.graphql"))
    ]
    sources.append(("examples.py", iter([EXAMPLE_QUERY, EXAMPLE_MUTATION])))
    sources.append(("bench/run.py", _strings_of(ROOT / "bench" / "run.py")))
    for where, texts in sources:
        for text in texts:
            if text not in found and _is_operation(text) is not None:
                found[text] = where
    return tuple((where, text) for text, where in found.items())


# Values for variables, by the name of the variable or input field they fill.
VALUES_BY_NAME: Mapping[str, Any] = {
    "accountId": "org_acme",
    "id": "org_acme",
    "org": "org_acme",
    "planId": "team",
    "plan": "team",
    "successUrl": "https://app.example.com/billing/done",
    "cancelUrl": "https://app.example.com/billing/cancel",
    "idempotencyKey": "differential-key-1",
    "key": "differential-key-1",
    "accounts": [
        {"provider": "ALMANAC", "accountId": "org_acme"},
        {"provider": "ALMANAC", "accountId": "org_umbrella"},
        {"provider": "AUTOPOSTING"},
        {"provider": "ALMANAC", "accountId": "org_nowhere"},
    ],
}


def _sample(type_: GraphQLInputType, name: str) -> Any:
    if name in VALUES_BY_NAME:
        return VALUES_BY_NAME[name]
    if isinstance(type_, GraphQLNonNull):
        return _sample(type_.of_type, name)
    if isinstance(type_, GraphQLList):
        return [_sample(type_.of_type, name)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {key: _sample(input_field.type, key) for key, input_field in type_.fields.items()}
    assert isinstance(type_, GraphQLScalarType)
    return {"Boolean": True, "Int": 1, "Float": 1.5}.get(type_.name, "org_acme")


def sample_variables(document: DocumentNode) -> dict[str, Any]:
    """Values for every variable of the document's operations that has no default."""
    values: dict[str, Any] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for variable in definition.variable_definitions or ():
                if variable.default_value is None:
                    type_ = type_from_ast(SCHEMA_OFF._schema, variable.type)
                    assert type_ is not None
                    values[variable.variable.name.value] = _sample(
                        type_,  # type: ignore[arg-type]
                        variable.variable.name.value,
                    )
    return values


def suite_cases() -> list[Case]:
    cases = []
    for index, (where, text) in enumerate(suite_operations()):
        document = parse(text)
        names = [
            d.name.value if d.name else None
            for d in document.definitions
            if isinstance(d, OperationDefinitionNode)
        ]
        for name in names if len(names) > 1 else [None]:
            cases.append(
                Case(
                    f"{where}#{index}{'.' + name if name else ''}",
                    text,
                    sample_variables(document),
                    operation_name=name,
                )
            )
    return cases


CALLERS: Mapping[str, Mapping[str, str]] = {
    "service credentials": {},
    "Almanac viewer": {"x-almanac-token": ALMANAC_VIEWER_TOKEN},
    "Autoposting trial": {"x-autoposting-api-key": AUTOPOSTING_TRIAL_KEY},
    "Autoposting suspended": {"x-autoposting-api-key": AUTOPOSTING_SUSPENDED_KEY},
    "a rejected Almanac token": {"x-almanac-token": "alm_nobody"},
    "a malformed credential": {"x-autoposting-api-key": "bad key\u00e9"},
}

ACCOUNT = """
  __typename
  ... on BillingAccount {
    id provider accountId raw
    currentPlan { id planId name price { amount currency } interval intervalRaw group current raw }
    plans { id provider planId name interval features { featureId included } current }
    subscription { id provider status statusRaw planId billingCycle currentPeriodStart
      currentPeriodEnd trialEnd cancelledAt suspendedAt pendingPlanId pendingChangeAt raw }
    manage { allowed reason reasonRaw }
    usageMeters { id provider featureId used granted remaining unlimited overageAllowed
      resetsAt usedFraction raw }
  }
  ... on Error { code message provider }
  ... on InvalidInputError { field }
  ... on ProviderError { retryable retryAfterSeconds upstreamStatus upstreamCode }
"""
EVERYTHING = (
    "query Everything($accounts: [AccountInput!]!) {"
    " billingAccounts(accounts: $accounts) {" + ACCOUNT + "}"
    " one: billingAccount(provider: AUTOPOSTING) {" + ACCOUNT + "}"
    ' two: billingAccount(provider: ALMANAC, accountId: "org_hooli") {' + ACCOUNT + "} }"
)
CHECKOUTS = """
mutation Checkouts($key: String) {
  first: startCheckout(input: {provider: ALMANAC, accountId: "org_acme", planId: "team",
    successUrl: "https://app.example.com/ok", idempotencyKey: $key}) {
    __typename
    ... on CheckoutSession { id provider accountId planId url sessionId raw }
    ... on Error { code message provider }
  }
  again: startCheckout(input: {provider: ALMANAC, accountId: "org_acme", planId: "team",
    successUrl: "https://app.example.com/ok", idempotencyKey: $key}) {
    __typename ... on CheckoutSession { id sessionId } ... on Error { code message }
  }
  social: startCheckout(input: {provider: AUTOPOSTING, planId: "plan_pro",
    successUrl: "https://app.example.com/ok", cancelUrl: "https://app.example.com/no"}) {
    __typename ... on CheckoutSession { id accountId url } ... on Error { code message }
  }
}
"""
PREVIEW = """
query Preview($plan: ID!) {
  checkoutPreview(input: {provider: ALMANAC, accountId: "org_globex", planId: $plan}) {
    __typename
    ... on CheckoutPreview { id provider accountId planId currency hostedCheckoutRequired
      checkoutType lineItems { name description quantity subtotal { amount currency }
      total { amount currency } } subtotal { amount } total { amount currency } raw }
    ... on Error { code message provider }
  }
}
"""
FAULTED_OPERATIONS = (
    Case("everything", EVERYTHING, {"accounts": VALUES_BY_NAME["accounts"]}),
    Case("checkouts", CHECKOUTS, {"key": "k-1"}),
    Case("preview", PREVIEW, {"plan": "team"}),
)


@cache
def recorded() -> dict[str, Any]:
    """The sandbox's own answers, to drift from."""

    async def record() -> dict[str, Any]:
        state = SandboxState()
        answers: dict[str, Any] = {}
        for app, token, paths in (
            (
                create_almanac_app(state),
                ALMANAC_OWNER_TOKEN,
                ["/v1/organizations/org_acme/billing"],
            ),
            (create_autoposting_app(state), AUTOPOSTING_PRO_KEY, ["/billing/status"]),
        ):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
            ) as client:
                for path in paths:
                    response = await client.get(path, headers={"authorization": f"Bearer {token}"})
                    answers[path] = response.json()
        return answers

    return asyncio.run(record())


def _drifts(answer: Any, unwrap: str | None) -> Iterator[tuple[str, Any]]:
    """Variants of an answer: each key of its object, and of its first plan, made null, made a
    value of another type, or left out."""

    def targets(document: Any) -> list[tuple[str, dict[str, Any]]]:
        body = document[unwrap] if unwrap else document
        found: list[tuple[str, dict[str, Any]]] = [("", body)]
        if isinstance(body.get("plans"), list) and body["plans"]:
            found.append(("plans[0].", body["plans"][0]))
        return found

    for index, (prefix, target) in enumerate(targets(answer)):
        for key in target:
            for label, replacement in (("null", None), ("wrong type", {"x": [1]}), ("gone", ...)):
                copy = jsonfast.loads(jsonfast.dumps(answer))
                drifted = targets(copy)[index][1]
                if replacement is ...:
                    del drifted[key]
                else:
                    drifted[key] = replacement
                yield f"{prefix}{key} {label}", copy


def fault_scenarios() -> list[tuple[str, tuple[Injected, ...]]]:
    billing = "/v1/organizations/org_acme/billing"
    scenarios: list[tuple[str, tuple[Injected, ...]]] = [
        ("Almanac 500", (Injected("almanac", Fault(status=500, body={"detail": "boom"})),)),
        ("Almanac 404", (Injected("almanac", Fault(status=404, body={"detail": "no"}), billing),)),
        (
            "Almanac 429",
            (Injected("almanac", Fault(status=429, headers={"Retry-After": "7"}, body={})),),
        ),
        ("Almanac not JSON", (Injected("almanac", Fault(status=200, body="<html>"), billing),)),
        ("Almanac JSON null", (Injected("almanac", Fault(status=200, body="null"), billing),)),
        (
            "Autoposting credits 503",
            (
                Injected(
                    "autoposting", Fault(status=503, body={"success": False}), "/billing/credits"
                ),
            ),
        ),
        (
            "Autoposting profile 500",
            (Injected("autoposting", Fault(status=500, body={}), "/auth/profile"),),
        ),
        (
            "Autoposting usage down",
            (Injected("autoposting", Fault(status=500, body={}), path_prefix="/usage"),),
        ),
        (
            "Autoposting 401",
            (Injected("autoposting", Fault(status=401, body={"success": False})),),
        ),
        (
            "both providers down",
            (
                Injected("almanac", Fault(status=503, body={})),
                Injected("autoposting", Fault(status=500, body={})),
            ),
        ),
        (
            "Autoposting profile and usage down, Almanac slow to fail",
            (
                Injected("autoposting", Fault(status=500, body={}), "/auth/profile"),
                Injected("autoposting", Fault(status=502, body={}), path_prefix="/usage"),
                Injected("almanac", Fault(delay=0.01, status=500, body={})),
            ),
        ),
        (
            "checkout 500",
            (Injected("almanac", Fault(status=500, body={}), method="POST"),),
        ),
        (
            "checkout without url",
            (Injected("almanac", Fault(status=200, body={"nothing": 1}), method="POST"),),
        ),
    ]
    answers = recorded()
    for label, drifted in _drifts(answers[billing], None):
        scenarios.append(
            (
                f"Almanac drift: {label}",
                (Injected("almanac", Fault(status=200, body=drifted), billing),),
            )
        )
    for label, drifted in _drifts(answers["/billing/status"], "data"):
        scenarios.append(
            (
                f"Autoposting drift: {label}",
                (Injected("autoposting", Fault(status=200, body=drifted), "/billing/status"),),
            )
        )
    return scenarios


# --- the tests ---------------------------------------------------------------------------------


def test_the_suite_readme_codegen_and_benchmark_operations_were_all_found() -> None:
    found = {where for where, _ in suite_operations()}
    documents = {text for _, text in suite_operations()}
    codegen = sorted((ROOT / "docs" / "codegen" / "operations").glob("*.graphql"))

    assert len(documents) >= 40
    assert codegen
    assert {path.read_text(encoding="utf-8") for path in codegen} <= documents
    assert {EXAMPLE_QUERY, EXAMPLE_MUTATION} <= documents
    assert {
        "README.md",
        "bench/run.py",
        "test_billing_query.py",
        "tests/operations/start_checkout.graphql",
    } <= found


@pytest.mark.parametrize("case", suite_cases(), ids=lambda case: case.name)
async def test_every_operation_of_the_suite_answers_the_same_from_its_plan(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    today, planned = await both(case, monkeypatch)

    assert planned.body == today.body, _difference(today.body, planned.body)
    # A document that asks for introspection keeps today's executor, as does a request whose
    # variables do not coerce (answered before any execution).
    introspection = "__schema" in case.query or "__type(" in case.query
    assert planned.planned or introspection or b'"data":null' in today.body, case.name


@pytest.mark.parametrize("caller", sorted(CALLERS))
async def test_each_kind_of_caller_gets_the_same_answers_from_a_plan(
    caller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for case in FAULTED_OPERATIONS:
        await assert_same(
            Case(f"{case.name} as {caller}", case.query, case.variables, headers=CALLERS[caller]),
            monkeypatch,
        )


@pytest.mark.parametrize(
    ("scenario", "faults"), fault_scenarios(), ids=[name for name, _ in fault_scenarios()]
)
async def test_under_an_upstream_fault_a_plan_answers_the_same(
    scenario: str, faults: tuple[Injected, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for case in FAULTED_OPERATIONS:
        await assert_same(
            Case(f"{case.name} under {scenario}", case.query, case.variables, faults=faults),
            monkeypatch,
        )


SKIP_INCLUDE = """
query Directed($skipPlans: Boolean!, $withMeters: Boolean = false, $id: ID!) {
  billingAccount(provider: ALMANAC, accountId: $id) {
    __typename
    ... on BillingAccount @include(if: $withMeters) { usageMeters { featureId used } }
    ... on BillingAccount {
      plans @skip(if: $skipPlans) { planId }
      planNames: plans @include(if: $skipPlans) { name }
      ...Current @skip(if: $skipPlans)
    }
    ... on Error { code message @skip(if: $withMeters) }
  }
}
fragment Current on BillingAccount {
  currentPlan { planId }
  manage @include(if: $withMeters) { allowed }
}
"""


@pytest.mark.parametrize("skip_plans", [True, False])
@pytest.mark.parametrize("with_meters", [True, False, None])
@pytest.mark.parametrize("account", ["org_acme", "org_nowhere"])
async def test_skip_and_include_with_variables_answer_the_same_for_every_value(
    skip_plans: bool, with_meters: bool | None, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables: dict[str, Any] = {"skipPlans": skip_plans, "id": account}
    if with_meters is not None:
        variables["withMeters"] = with_meters
    await assert_same(Case("directed", SKIP_INCLUDE, variables), monkeypatch)


async def test_a_directive_variable_given_null_is_left_to_todays_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = Case("null if", SKIP_INCLUDE, {"skipPlans": True, "withMeters": None, "id": "org_acme"})

    today, planned = await both(case, monkeypatch)

    assert planned.body == today.body
    assert not planned.planned
    assert b"Argument 'if' has invalid value" in today.body


async def test_variables_that_do_not_coerce_get_the_same_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variables in ({"skipPlans": "yes", "id": "org_acme"}, {"id": ["x"]}, {}):
        case = Case("bad variables", SKIP_INCLUDE, variables)

        today, planned = await both(case, monkeypatch)

        assert planned.body == today.body
        assert b'"data":null' in today.body


# Schema-generated operations: hypothesis-graphql writes arguments inline; each is also sent with
# its arguments moved into variables of the argument's type.


def _with_variables(document: DocumentNode) -> tuple[DocumentNode, dict[str, Any]]:
    schema = SCHEMA_OFF._schema
    type_info = TypeInfo(schema)
    values: dict[str, Any] = {}
    definitions: list[VariableDefinitionNode] = []

    class Extract(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: object) -> ArgumentNode | None:
            argument = type_info.get_argument()
            if argument is None or isinstance(node.value, VariableNode):
                return None
            name = f"v{len(values)}"
            values[name] = value_from_ast_untyped(node.value)
            definitions.append(
                VariableDefinitionNode(
                    variable=VariableNode(name=NameNode(value=name)),
                    type=parse_type(str(argument.type)),
                )
            )
            return ArgumentNode(name=node.name, value=VariableNode(name=NameNode(value=name)))

    rewritten = visit(document, TypeInfoVisitor(type_info, Extract()))
    operation = rewritten.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    with_variables = replace(operation, variable_definitions=tuple(definitions))
    return DocumentNode(definitions=(with_variables, *rewritten.definitions[1:])), values


GENERATED = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@GENERATED
@given(
    operation=from_schema(SDL, allow_x00=False),
    scenario=st.sampled_from([None, *range(8)]),
)
def test_schema_generated_operations_with_variables_answer_the_same_from_their_plans(
    operation: str, scenario: int | None
) -> None:
    document = parse(operation)
    if validate(SCHEMA_OFF._schema, document):
        return  # hypothesis-graphql's rare invalid document: nothing to execute either way
    faults = () if scenario is None else fault_scenarios()[scenario][1]
    rewritten, variables = _with_variables(document)
    cases = [
        Case("generated", operation, faults=faults),
        Case("generated, variables", print_ast(rewritten), variables, faults=faults),
    ]
    with pytest.MonkeyPatch.context() as monkeypatch:
        for case in cases:
            today, planned = asyncio.run(both(case, monkeypatch))
            assert planned.body == today.body, _difference(today.body, planned.body)
            assert planned.planned or b'"data":null' in today.body, case.query


async def test_introspection_keeps_todays_executor_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = Case("introspection", "{ __schema { queryType { name } } __typename }")

    today, planned = await both(case, monkeypatch)

    assert planned.body == today.body
    assert not planned.planned


# --- the harness itself, and the cache ----------------------------------------------------------


async def test_the_comparison_catches_a_difference_in_the_planned_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    complete = PlannedExecutor.complete_planned

    def uppercase(self: PlannedExecutor, *args: Any) -> Any:
        value = complete(self, *args)
        return value.upper() if isinstance(value, str) else value

    monkeypatch.setattr(PlannedExecutor, "complete_planned", uppercase)
    case = Case("example", EXAMPLE_QUERY)

    today, planned = await both(case, monkeypatch)

    assert planned.planned
    assert planned.body != today.body


def test_a_plan_calls_strawberrys_attribute_fields_without_resolve_info() -> None:
    # The detection of Strawberry's plain attribute fields (a Strawberry internal): were it to
    # find none, every field would still be answered right, through its resolver, but slower.
    schema = SCHEMA_ON._schema
    built = PlannedExecutor.build(schema, parse(EXAMPLE_QUERY), raw_variable_values={})
    assert isinstance(built, PlannedExecutor)

    plan = compile_operation(
        schema, built.operation, built.fragment_definitions, built.variable_values
    )

    kinds: dict[str, int] = {}
    pending = [plan.root]
    while pending:
        selection = pending.pop()
        for step in selection.steps:
            kinds[f"{selection.type_name}.{step.name}"] = step.kind
            completion = step.completion
            while completion.inner is not None:
                completion = completion.inner
            pending.extend(c.selection for c in completion.by_type.values() if c.selection)
            if completion.selection is not None:
                pending.append(completion.selection)
    assert kinds["Plan.planId"] == BASIC
    assert kinds["UsageMeter.used"] == BASIC
    assert kinds["BillingAccount.__typename"] == TYPENAME
    assert kinds["BillingAccount.usageMeters"] == RESOLVER
    assert kinds["Query.billingAccounts"] == RESOLVER


class Traced(SchemaExtension):
    """Stands for the tracing extension the app adds when GATEWAY_OTEL is on: it traces each
    resolver, which only Strawberry's executor calls through."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        return _next(root, info, *args, **kwargs)


def test_switched_off_the_schema_has_no_plans() -> None:
    assert SCHEMA_OFF.plans is None
    assert SCHEMA_ON.plans is not None


async def test_with_resolver_middleware_an_operation_keeps_todays_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traced = build_schema(SETTINGS_ON, more=[Traced])
    assert traced.plans is not None

    today = await answer(SCHEMA_OFF, SETTINGS_OFF, Case("example", EXAMPLE_QUERY))
    with_middleware = await answer(traced, SETTINGS_ON, Case("example", EXAMPLE_QUERY))

    assert with_middleware.body == today.body
    assert not with_middleware.planned
    assert traced.plans.compiled == 0


async def test_an_operation_runs_from_a_plan_from_its_threshold_th_run_on() -> None:
    settings_ = make_settings(GATEWAY_COMPILE_THRESHOLD="3")
    schema = build_schema(settings_)
    gateway = Gateway(settings=settings_, state=SandboxState(), schema=schema)
    assert schema.plans is not None
    try:
        planned = []
        for _ in range(5):
            await gateway.execute(EXAMPLE_QUERY)
            planned.append(schema.plans.planned)
    finally:
        await gateway.aclose()

    assert planned == [0, 0, 1, 2, 3]
    assert schema.plans.compiled == 1


def test_the_plan_cache_keeps_at_most_its_size_in_documents_and_counts() -> None:
    plans = PlanCache(threshold=2, max_entries=3)
    documents = [parse(f"{{ __typename }} # {index}") for index in range(20)]

    for document in documents:
        operation = document.definitions[0]
        assert isinstance(operation, OperationDefinitionNode)
        for _ in range(2):
            plans.hot(operation, {})

    assert len(plans) == 3
    assert len(plans.runs) <= 12
    assert [entry.operation for entry in plans.entries.values()] == [
        d.definitions[0] for d in documents[-3:]
    ]


def test_the_plan_cache_keeps_at_most_its_budget_of_document_text() -> None:
    plans = PlanCache(threshold=1, max_entries=100, max_text=1000)
    documents = [parse("{ __typename }" + " " * 300 + f"# {index}") for index in range(10)]

    for document in documents:
        operation = document.definitions[0]
        assert isinstance(operation, OperationDefinitionNode)
        plans.hot(operation, {})

    assert len(plans) == 3
    assert plans.text <= 1000


# --- over HTTP: the lean path and plans against Strawberry's view and executor ------------------

NEW_MEDIA = "application/graphql-response+json"
PERSISTED_QUERY = "query Persisted { __typename }"
PERSISTED_HASH = hashlib.sha256(PERSISTED_QUERY.encode()).hexdigest()
HTTP_REQUESTS: tuple[tuple[str | bytes, Any], ...] = (
    ("typename", {"query": "{ __typename }"}),
    ("example", {"query": EXAMPLE_QUERY}),
    ("example named", {"query": EXAMPLE_QUERY, "operationName": "Billing", "extensions": {}}),
    ("mutation", {"query": EXAMPLE_MUTATION}),
    ("variables", {"query": EVERYTHING, "variables": {"accounts": VALUES_BY_NAME["accounts"]}}),
    ("variables null", {"query": "{ __typename }", "variables": None, "operationName": None}),
    ("coercion error", {"query": EVERYTHING, "variables": {"accounts": 5}}),
    ("missing variable", {"query": EVERYTHING}),
    ("parse error", {"query": "{ __typename"}),
    ("validation error", {"query": "{ noSuchField }"}),
    ("empty query", {"query": ""}),
    ("null query", {"query": None}),
    ("no query", {"variables": {}}),
    ("query not a string", {"query": 5}),
    ("variables not an object", {"query": "{ __typename }", "variables": [1]}),
    ("extensions not an object", {"query": "{ __typename }", "extensions": "x"}),
    ("operation name not a string", {"query": "{ __typename }", "operationName": 5}),
    ("unknown operation", {"query": "query A { __typename } query B { __typename }",
                           "operationName": "C"}),
    ("two operations, no name", {"query": "query A { __typename } query B { __typename }"}),
    ("second of two", {"query": "query A { __typename } query B { b: __typename }",
                       "operationName": "B"}),
    ("introspection", {"query": "{ __schema { queryType { name } } }"}),
    ("persisted, unknown", {"extensions": {"persistedQuery": {"version": 1,
                                                              "sha256Hash": PERSISTED_HASH}}}),
    ("persisted, registered", {"query": PERSISTED_QUERY, "extensions": {
        "persistedQuery": {"version": 1, "sha256Hash": PERSISTED_HASH}}}),
    ("persisted, by hash", {"extensions": {"persistedQuery": {"version": 1,
                                                              "sha256Hash": PERSISTED_HASH}}}),
    ("persisted, wrong hash", {"query": "{ __typename }", "extensions": {
        "persistedQuery": {"version": 1, "sha256Hash": PERSISTED_HASH}}}),
    ("a batch", [{"query": "{ __typename }"}]),
    ("a number", 5),
    (b"not JSON", b'{"query": '),
    (b"deep JSON", b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 100 + b"]" * 100
     + b"}}"),
    (b"lone surrogate", b'{"query": "{ __typename }", "variables": {"a": "\\ud800"}}'),
    (b"not UTF-8", b'{"query": "\xff"}'),
)  # fmt: skip
ACCEPTS = (None, "application/json", NEW_MEDIA, f"{NEW_MEDIA}, application/json;q=0.9", "*/*")


@asynccontextmanager
async def http_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    state = SandboxState()
    transports: dict[Provider, httpx.AsyncBaseTransport] = {
        Provider.ALMANAC: httpx.ASGITransport(app=create_almanac_app(state)),
        Provider.AUTOPOSTING: httpx.ASGITransport(app=create_autoposting_app(state)),
    }
    app = create_app(settings, transports=transports)
    async with app.router.lifespan_context(app) as lifespan_state:

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(lifespan_state or {})  # as uvicorn does
            await app(scope, receive, send)

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://gateway.test"
        ) as client:
            yield client


async def http_answers(settings: Settings, accept: str | None) -> list[tuple[Any, ...]]:
    answers = []
    async with http_client(settings) as client:
        for _ in range(2):  # the second time, every valid operation runs from its plan
            for name, request in HTTP_REQUESTS:
                headers = {
                    "authorization": f"Bearer {TEST_API_KEY}",
                    "content-type": "application/json",
                    "x-request-id": "differential",
                    **({"accept": accept} if accept else {}),
                }
                content = request if isinstance(request, bytes) else jsonfast.dumps(request)
                response = await client.post("/graphql", content=content, headers=headers)
                answers.append(
                    (
                        name,
                        response.status_code,
                        sorted(
                            (k, v) for k, v in response.headers.items() if k != "content-length"
                        ),
                        response.content,
                    )
                )
    return answers


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_over_http_the_lean_path_and_plans_answer_as_strawberrys_view(
    accept: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deterministic_ids(monkeypatch)
    today = await http_answers(SETTINGS_OFF, accept)
    _deterministic_ids(monkeypatch)
    assert SETTINGS_ON.compiled_execution
    lean = await http_answers(SETTINGS_ON, accept)

    for expected, got in zip(today, lean, strict=True):
        assert got == expected


async def test_a_document_over_the_plan_size_keeps_todays_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.execution.plan, "MAX_PLAN_STEPS", 10)
    case = Case("example", EXAMPLE_QUERY + " ")  # a text not yet compiled

    today, planned = await both(case, monkeypatch)

    assert planned.body == today.body
    assert not planned.planned
    assert SCHEMA_ON.plans is not None
    assert SCHEMA_ON.plans.refused >= 1
