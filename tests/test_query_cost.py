"""Query limits and cost (gateway/schema/limits.py): measured once per fragment, refused before any
resolver runs, with the numbers in the message; documents at the limits answered.

The hostile documents of the issue, over HTTP and under uvicorn, are in `test_hostile_queries.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLInputObjectType,
    GraphQLList,
    InlineFragmentNode,
    get_introspection_query,
    get_nullable_type,
    parse,
    visit,
)
from graphql.language import Visitor
from strawberry.schema.schema import validate_document

import gateway.schema as gateway_schema
from gateway.context import Context
from gateway.examples import EXAMPLE_MUTATION, EXAMPLE_QUERY
from gateway.sandbox import SandboxState
from gateway.schema import build_schema
from gateway.schema.limits import (
    ACCOUNT_FIELDS,
    QueryLimits,
    limit_errors,
    measure_document,
    request_errors,
)
from gateway.settings import (
    DEFAULT_MAX_ACCOUNTS_PER_REQUEST,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_MERGE_PAIRS,
    DEFAULT_MAX_QUERY_COST,
    ConfigurationError,
)
from tests.support import Gateway, doubling, make_settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = build_schema()._schema
ACCOUNT = 'billingAccount(provider: ALMANAC, accountId: "org_acme")'
MANY = "query($accounts: [AccountInput!]!) { billingAccounts(accounts: $accounts) { __typename } }"


def selections(document: str) -> int:
    """The selections (fields, inline fragments, spreads) written in `document`."""
    counted = 0

    class Counter(Visitor):
        def enter(self, node: Any, *_: Any) -> None:
            nonlocal counted
            counted += isinstance(node, FieldNode | InlineFragmentNode | FragmentSpreadNode)

    visit(parse(document), Counter())
    return counted


def entries(count: int) -> list[dict[str, str]]:
    return [{"provider": "ALMANAC", "accountId": "org_acme"}] * count


# --- linear work ---------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [24, 100])
def test_a_document_of_doubling_fragments_is_measured_visiting_each_selection_at_most_twice(
    levels: int,
) -> None:
    document = doubling(levels)

    measure = measure_document(SCHEMA, parse(document))

    # Every expansion counted (2**levels fields), each written selection visited at most twice
    # (once to order the fragments, once to measure): Strawberry's limiters visited 2**levels.
    assert measure.fields == 2**levels
    assert measure.visits <= 2 * selections(document)


def test_a_document_of_doubling_fragments_is_refused_without_running_graphql_cores_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validated: list[object] = []
    monkeypatch.setattr(gateway_schema, "validate_document", lambda *a: validated.append(a))
    schema = build_schema(make_settings())

    result = schema.execute_sync(doubling(24))

    assert result.errors
    messages = [error.message for error in result.errors]
    assert "The document expands to 16777216 fields, fragments included; the maximum is 500." in (
        messages
    )
    assert all(error.extensions == {"code": "INVALID_QUERY"} for error in result.errors)
    assert validated == []


def test_a_fragment_cycle_ends_and_is_reported_by_graphql_core() -> None:
    document = (
        "query { ...A } fragment A on Query { __typename ...B } "
        "fragment B on Query { __typename ...A }"
    )

    measure = measure_document(SCHEMA, parse(document))
    errors = build_schema(make_settings()).execute_sync(document).errors

    assert measure.fields == 2
    assert errors
    assert [error.message for error in errors] == [
        "Cannot spread fragment 'A' within itself via 'B'."
    ]


# --- each limit: over it refused with its numbers, at it answered --------------------------------

# billingAccount > currentPlan > price > amount: depth 3 (top-level fields are depth 0).
FOUR_LEVELS = "{ " + ACCOUNT + " { ... on BillingAccount { currentPlan { price { amount } } } } }"


def aliases(count: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


def fields(count: int) -> str:
    return "{ " + ACCOUNT + " { __typename" + " ... on BillingAccount { id }" * (count - 2) + " } }"


def same_field(count: int) -> str:
    return "{" + " __typename" * count + " }"


LIMIT_CASES = [
    pytest.param(
        {"GATEWAY_MAX_QUERY_DEPTH": "2"},
        "{ " + ACCOUNT + " { ... on BillingAccount { currentPlan { planId } } } }",
        {},
        FOUR_LEVELS,
        "'anonymous' exceeds maximum operation depth of 2: its depth is 3.",
        id="depth",
    ),
    pytest.param(
        {"GATEWAY_MAX_ALIASES": "4"},
        aliases(4),
        {},
        aliases(5),
        "5 aliases found. Allowed: 4",
        id="aliases",
    ),
    pytest.param(
        {"GATEWAY_MAX_FIELDS": "8"},
        fields(8),
        {},
        fields(9),
        "The document expands to 9 fields, fragments included; the maximum is 8.",
        id="fields",
    ),
    pytest.param(
        {"GATEWAY_MAX_MERGE_PAIRS": "6"},
        same_field(4),
        {},
        same_field(5),
        "Validating the document would compare 10 pairs of fields sharing a response name, or "
        "of fragments spread together; the maximum is 6. Select each field once per selection.",
        id="merge-pairs",
    ),
    pytest.param(
        {"GATEWAY_MAX_ACCOUNTS_PER_REQUEST": "3"},
        MANY,
        {"accounts": entries(3)},
        MANY,
        "'anonymous' asks for 4 accounts (every entry counted, duplicates included); a request "
        "may ask for at most 3.",
        id="accounts",
    ),
    pytest.param(
        {"GATEWAY_MAX_QUERY_COST": "10"},
        MANY,
        {"accounts": entries(5)},
        MANY,
        "The estimated cost of 'anonymous' is 12 (accounts requested x fields selected per "
        "account, every list entry counted); the budget is 10.",
        id="cost",
    ),
]


@pytest.mark.parametrize(("environ", "at_limit", "variables", "over", "message"), LIMIT_CASES)
async def test_a_document_over_a_limit_is_refused_with_the_numbers_and_one_at_it_is_answered(
    state: SandboxState,
    environ: dict[str, str],
    at_limit: str,
    variables: dict[str, Any],
    over: str,
    message: str,
) -> None:
    settings = make_settings(**environ)
    gateway = Gateway(settings=settings, state=state, schema=build_schema(settings))
    # One entry more than the at-limit variables, where the limit is on the variables.
    over_variables = {"accounts": entries(len(variables["accounts"]) + 1)} if variables else {}
    try:
        answered = await gateway.execute(at_limit, variables)
        refused = await gateway.execute(over, over_variables, expect_errors=True)
    finally:
        await gateway.aclose()

    assert answered
    assert refused.data is None
    assert [error.message for error in refused.errors] == [message]
    assert refused.errors[0].extensions == {"code": "INVALID_QUERY"}
    # Refused before any resolver: only the answered document reached an upstream.
    assert state.count() == (1 if "billingAccount" in at_limit else 0)


# --- what the cost and the account count count ---------------------------------------------------

COUNT_CASES = [
    # (document, variables, accounts, cost)
    pytest.param("{ " + ACCOUNT + " { __typename } }", {}, 1, 2, id="one-account"),
    pytest.param(
        "{ a: " + ACCOUNT + " { __typename } b: " + ACCOUNT + " { __typename } }",
        {},
        2,
        4,
        id="the-same-account-under-two-aliases",
    ),
    pytest.param(
        "{ billingAccounts(accounts: [{provider: AUTOPOSTING}, {provider: AUTOPOSTING}, "
        "{provider: AUTOPOSTING}]) { __typename ... on Error { code } } }",
        {},
        3,
        9,
        id="an-inline-list-with-duplicates",
    ),
    pytest.param(MANY, {"accounts": entries(7)}, 7, 14, id="a-list-variable-at-its-length"),
    pytest.param(
        "query($a: AccountInput!) { billingAccounts(accounts: [$a, $a]) { __typename } }",
        {"a": entries(1)[0]},
        2,
        4,
        id="variables-as-entries",
    ),
    pytest.param(
        "query($a: AccountInput!) { billingAccounts(accounts: $a) { __typename } }",
        {"a": entries(1)[0]},
        1,
        2,
        id="one-object-for-a-list",
    ),
    pytest.param(
        "query($accounts: [AccountInput!]! = [{provider: AUTOPOSTING}, {provider: AUTOPOSTING}])"
        " { billingAccounts(accounts: $accounts) { __typename } }",
        {},
        2,
        4,
        id="a-default-value",
    ),
    pytest.param(
        "query($accounts: [AccountInput!]) { billingAccounts(accounts: $accounts) { __typename } }",
        {"accounts": None},
        0,
        0,
        id="null",
    ),
    pytest.param(
        "query($accounts: [AccountInput!]!) { ...Two } fragment Two on Query { "
        "a: billingAccounts(accounts: $accounts) { ...F } "
        "b: billingAccounts(accounts: $accounts) { ...F } } "
        "fragment F on BillingAccountResult { __typename ... on BillingAccount { id } }",
        {"accounts": entries(5)},
        10,
        30,
        id="a-list-under-two-aliases-in-a-fragment",
    ),
    pytest.param(
        'mutation { startCheckout(input: {provider: AUTOPOSTING, planId: "plan_pro"}) '
        "{ __typename } }",
        {},
        1,
        2,
        id="a-checkout",
    ),
    pytest.param(
        '{ checkoutPreview(input: {provider: ALMANAC, accountId: "org_acme", planId: "team"}) '
        "{ __typename } }",
        {},
        1,
        2,
        id="a-preview",
    ),
    pytest.param("{ __typename }", {}, 0, 1, id="no-account"),
]


@pytest.mark.parametrize(("document", "variables", "accounts", "cost"), COUNT_CASES)
def test_every_account_entry_is_counted_and_the_cost_is_accounts_times_fields(
    document: str, variables: dict[str, Any], accounts: int, cost: int
) -> None:
    [operation] = measure_document(SCHEMA, parse(document)).operations

    assert operation.accounts(variables) == accounts
    assert operation.cost(variables) == cost


def has_list(type_: Any) -> bool:
    """Whether an argument's type is a list, or an input object with a list field."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLInputObjectType):
        return any(has_list(field.type) for field in nullable.fields.values())
    return isinstance(nullable, GraphQLList)


def test_every_list_argument_of_the_schema_is_counted_as_accounts() -> None:
    roots = [SCHEMA.query_type, SCHEMA.mutation_type]
    lists = {
        (root.name, name)
        for root in roots
        if root is not None
        for name, field in root.fields.items()
        if any(has_list(argument.type) for argument in field.args.values())
    }

    assert lists == {key for key, argument in ACCOUNT_FIELDS.items() if argument is not None}


async def test_the_accounts_counted_before_execution_are_those_the_resolvers_ask_for(
    state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: list[Context] = []
    real = Context.account

    def spy(self: Context, *args: Any, **kwargs: Any) -> Any:
        contexts.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Context, "account", spy)
    document = EXAMPLE_QUERY.replace(
        "query Billing {", "query Billing { one: " + ACCOUNT + " { __typename }"
    )
    [operation] = measure_document(SCHEMA, parse(document)).operations
    gateway = Gateway(settings=make_settings(), state=state)
    try:
        await gateway.execute(document)
    finally:
        await gateway.aclose()

    assert operation.accounts({}) == 4
    assert contexts[-1].accounts_asked == 4


# --- the validation cache ------------------------------------------------------------------------


async def test_a_cached_document_is_validated_once_and_its_cost_checked_with_each_requests_lists(
    state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[object] = []
    real = validate_document  # what gateway.schema calls, replaced below

    def counting(*args: Any) -> Any:
        validated.append(args[1])
        return real(*args)

    monkeypatch.setattr(gateway_schema, "validate_document", counting)
    settings = make_settings(GATEWAY_MAX_ACCOUNTS_PER_REQUEST="4")
    gateway = Gateway(settings=settings, state=state, schema=build_schema(settings))
    document = MANY.replace("__typename", "__typename cachedCost: __typename")
    try:
        small = await gateway.execute(document, {"accounts": entries(2)})
        large = await gateway.execute(document, {"accounts": entries(5)}, expect_errors=True)
        again = await gateway.execute(document, {"accounts": entries(4)})
    finally:
        await gateway.aclose()

    assert len(small["billingAccounts"]) == 2
    assert large.data is None
    assert "asks for 5 accounts" in large.errors[0].message
    assert len(again["billingAccounts"]) == 4
    assert len(validated) == 1


# --- the defaults --------------------------------------------------------------------------------

PUBLISHED = {
    "README Billing": EXAMPLE_QUERY,
    "README Upgrade": EXAMPLE_MUTATION,
    **{
        f"docs/codegen/{path.name}": path.read_text()
        for path in sorted((ROOT / "docs" / "codegen" / "operations").glob("*.graphql"))
    },
    "introspection (GraphiQL, codegen)": get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    ),
}


@pytest.mark.parametrize("document", PUBLISHED.values(), ids=PUBLISHED.keys())
def test_the_published_documents_are_well_within_the_default_limits(document: str) -> None:
    measure = measure_document(SCHEMA, parse(document))
    limits = QueryLimits(
        max_depth=10,
        max_aliases=30,
        max_accounts=DEFAULT_MAX_ACCOUNTS_PER_REQUEST,
        max_fields=DEFAULT_MAX_FIELDS,
        max_merge_pairs=DEFAULT_MAX_MERGE_PAIRS,
        max_cost=DEFAULT_MAX_QUERY_COST,
    )

    assert limit_errors(measure, limits) == []
    assert request_errors(measure, limits, None, {}) == []
    # A wide margin: twice the largest (the introspection query, 229 fields) fits.
    assert 2 * measure.fields <= DEFAULT_MAX_FIELDS


def test_the_readme_query_fits_the_cost_budget_for_as_many_accounts_as_a_request_may_ask() -> None:
    [operation] = measure_document(SCHEMA, parse(EXAMPLE_QUERY)).operations

    per_account = operation.cost({}) // operation.accounts({})
    assert per_account * DEFAULT_MAX_ACCOUNTS_PER_REQUEST <= DEFAULT_MAX_QUERY_COST


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("GATEWAY_MAX_FIELDS", "max_fields"),
        ("GATEWAY_MAX_MERGE_PAIRS", "max_merge_pairs"),
        ("GATEWAY_MAX_QUERY_COST", "max_query_cost"),
    ],
)
def test_the_new_limits_are_read_from_the_environment_and_must_be_positive(
    variable: str, attribute: str
) -> None:
    assert getattr(make_settings(**{variable: "7"}), attribute) == 7
    with pytest.raises(ConfigurationError, match=variable):
        make_settings(**{variable: "0"})
