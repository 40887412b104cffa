"""Hostile requests against scoped gateway keys, one row per case, each naming its finding.

Finding 7 ("every key can do everything"): with service credentials configured, any gateway key
read every organization they reach, started checkouts on them and read `raw`. Each operation row
sends one request over HTTP to the real app, with a key of a key file whose scope the row gives,
and asserts the typed error and the upstream calls made (none, but for `raw`, whose account the
key may read). Each key-file row asserts that start-up stops, naming the entry at fault.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox import SandboxState
from gateway.settings import ConfigurationError
from tests.support import (
    CANCEL_URL,
    START_CHECKOUT,
    SUCCESS_URL,
    TEST_API_KEY,
    client_of,
    make_settings,
)

FINDING_7 = "7. every key can do everything"
GRAPHQL = "/graphql"
CALLER_KEY = "gw-hostile-caller-5b1e"
CALLER_SHA256 = hashlib.sha256(CALLER_KEY.encode()).hexdigest()

BOTH = ["almanac", "autoposting"]
READ = ["billing:read"]
READ_WRITE = ["billing:read", "checkout:write"]

PREVIEW = """
query($input: CheckoutPreviewInput!) {
  checkoutPreview(input: $input) { __typename ... on Error { code provider } }
}
"""
ACCOUNT = """
query($provider: Provider!, $id: ID) {
  billingAccount(provider: $provider, accountId: $id) {
    __typename
    ... on BillingAccount { accountId raw plans { planId raw } subscription { raw } }
    ... on Error { code provider }
  }
}
"""
ACCOUNTS = """
query($accounts: [AccountInput!]!) {
  billingAccounts(accounts: $accounts) { __typename ... on Error { code provider } }
}
"""
ACCOUNT_WITH_RAW = """
query($provider: Provider!, $id: ID) {
  billingAccount(provider: $provider, accountId: $id) {
    __typename ... on BillingAccount { provider raw }
  }
}
"""
PLANS_WITH_RAW = """
query($id: ID) {
  billingAccount(provider: ALMANAC, accountId: $id) {
    __typename ... on BillingAccount { plans { planId raw } }
  }
}
"""


def checkout(provider: str, account_id: str | None = None) -> dict[str, Any]:
    """START_CHECKOUT's variables, the session's raw JSON asked for."""
    return {
        "input": {
            "provider": provider,
            "planId": "plan_pro" if provider == "AUTOPOSTING" else "team",
            "successUrl": SUCCESS_URL,
            "cancelUrl": CANCEL_URL,
            **({"accountId": account_id} if account_id else {}),
        },
        "withRaw": True,
    }


def account(provider: str, account_id: str | None = None) -> dict[str, Any]:
    return {"provider": provider, "id": account_id}


@dataclass(frozen=True)
class Case:
    """One hostile case: a request under a key of this scope, or a key file that must not load.

    `typed` is where the typed error is expected in `data` (a path), or None when the field is
    null with a GraphQL error at `error_path` carrying `code`.
    """

    finding: str
    providers: list[str] = field(default_factory=lambda: BOTH)
    accounts: list[str] = field(default_factory=lambda: ["*"])
    permissions: list[str] = field(default_factory=lambda: READ)
    document: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/graphql"
    typed: tuple[str | int, ...] | None = None
    error_path: tuple[str | int, ...] | None = None
    typename: str = "NotAllowedError"
    code: str = "NOT_ALLOWED"
    status: int = 200
    upstream_calls: int = 0
    # A key file's text and name, for a row that must stop start-up naming `refusal`.
    key_file: str | None = None
    key_file_name: str = "keys.json"
    refusal: str = ""


def entry(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "dashboard",
        "sha256": CALLER_SHA256,
        "providers": BOTH,
        "accounts": ["*"],
        "permissions": READ,
        **overrides,
    }


def keys(*entries: dict[str, Any]) -> str:
    return json.dumps({"keys": list(entries)})


CASES = [
    # --- what a key may do ---
    pytest.param(
        Case(FINDING_7, document=START_CHECKOUT, variables=checkout("ALMANAC", "org_acme"),
             typed=("startCheckout",)),
        id="a-read-only-key-starting-an-almanac-checkout",
    ),
    pytest.param(
        Case(FINDING_7, document=START_CHECKOUT, variables=checkout("AUTOPOSTING"),
             typed=("startCheckout",)),
        id="a-read-only-key-starting-an-autoposting-checkout",
    ),
    pytest.param(
        Case(FINDING_7, document=PREVIEW,
             variables={"input": {"provider": "ALMANAC", "accountId": "org_globex",
                                  "planId": "team"}},
             typed=("checkoutPreview",)),
        id="a-read-only-key-pricing-a-checkout",
    ),
    pytest.param(
        Case(FINDING_7, permissions=["checkout:write"], document=ACCOUNT,
             variables=account("ALMANAC", "org_acme"), typed=("billingAccount",)),
        id="a-checkout-only-key-reading-an-account",
    ),
    pytest.param(
        Case(FINDING_7, permissions=["metrics:read"], document=ACCOUNT,
             variables=account("ALMANAC", "org_acme"), typed=("billingAccount",)),
        id="a-metrics-key-reading-an-account",
    ),
    # --- which accounts ---
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNT,
             variables=account("ALMANAC", "org_globex"), typed=("billingAccount",)),
        id="a-key-for-org_acme-reading-org_globex",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNT,
             variables=account("ALMANAC", "org_acme_evil"), typed=("billingAccount",)),
        id="a-key-for-org_acme-reading-a-longer-id",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNT,
             variables=account("ALMANAC", "ORG_ACME"), typed=("billingAccount",)),
        id="a-key-for-org_acme-reading-it-in-capitals",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], permissions=READ_WRITE, document=START_CHECKOUT,
             variables=checkout("ALMANAC", "org_globex"), typed=("startCheckout",)),
        id="a-key-for-org_acme-starting-a-checkout-on-org_globex",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNT,
             variables=account("ALMANAC", "org_globex"), typed=("billingAccount",),
             headers={"x-almanac-token": "alm_owner_demo"}),
        id="a-key-for-org_acme-reading-org_globex-with-its-own-almanac-token",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNTS,
             variables={"accounts": [{"provider": "ALMANAC", "accountId": f"org_{i}"}
                                     for i in range(25)]},
             typed=("billingAccounts", 24)),
        id="a-key-for-org_acme-sweeping-the-most-organizations-a-request-may-ask-for",
    ),
    # --- which providers ---
    pytest.param(
        Case(FINDING_7, providers=["almanac"], document=ACCOUNT,
             variables=account("AUTOPOSTING"), typed=("billingAccount",)),
        id="a-key-for-almanac-reading-autoposting",
    ),
    pytest.param(
        Case(FINDING_7, providers=["almanac"], permissions=READ_WRITE, document=START_CHECKOUT,
             variables=checkout("AUTOPOSTING"), typed=("startCheckout",)),
        id="a-key-for-almanac-starting-an-autoposting-checkout",
    ),
    pytest.param(
        Case(FINDING_7, providers=["autoposting"], document=ACCOUNT,
             variables=account("ALMANAC", "org_acme"), typed=("billingAccount",)),
        id="a-key-for-autoposting-reading-almanac",
    ),
    # --- Autoposting, whose account is the API key's organization ---
    pytest.param(
        Case(FINDING_7, accounts=["org_acme"], document=ACCOUNT,
             variables=account("AUTOPOSTING"), typed=("billingAccount",)),
        id="a-key-for-some-accounts-reading-the-autoposting-account-unnamed",
    ),
    pytest.param(
        Case(FINDING_7, accounts=["org-trial-*"], document=ACCOUNT,
             variables=account("AUTOPOSTING", "org-pro-demo"), typed=("billingAccount",)),
        id="a-key-for-other-autoposting-organizations-naming-this-one",
    ),
    # --- raw, which carries provider fields such as customer ids ---
    pytest.param(
        Case(FINDING_7, document=ACCOUNT_WITH_RAW, variables=account("ALMANAC", "org_acme"),
             error_path=("billingAccount", "raw"), upstream_calls=1),
        id="raw-of-an-account-without-raw-read",
    ),
    pytest.param(
        Case(FINDING_7, document=ACCOUNT_WITH_RAW, variables=account("AUTOPOSTING"),
             error_path=("billingAccount", "raw"), upstream_calls=1),
        id="raw-of-the-autoposting-account-without-raw-read",
    ),
    pytest.param(
        Case(FINDING_7, document=PLANS_WITH_RAW, variables={"id": "org_acme"},
             error_path=("billingAccount", "plans", 0, "raw"), upstream_calls=1),
        id="raw-of-a-plan-without-raw-read",
    ),
    pytest.param(
        Case(FINDING_7, permissions=READ_WRITE, document=START_CHECKOUT,
             variables=checkout("AUTOPOSTING"), error_path=("startCheckout", "raw"),
             upstream_calls=1),
        id="raw-of-a-checkout-session-without-raw-read",
    ),
    # --- /metrics ---
    pytest.param(
        Case(FINDING_7, path="/metrics", status=403),
        id="a-key-without-metrics-read-reading-metrics",
    ),
    # --- key files that must stop start-up, naming the entry ---
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(sha256=CALLER_KEY)),
             refusal="entry 1 ('dashboard'): 'sha256' must be"),
        id="a-key-file-holding-a-key-instead-of-its-hash",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(), entry(name="ops", permissions=["billing:write"])),
             refusal="entry 2 ('ops'): unknown permission 'billing:write'"),
        id="a-key-file-with-an-unknown-permission",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(permissions=["BILLING:READ"])),
             refusal="unknown permission 'BILLING:READ'"),
        id="a-key-file-with-a-permission-in-capitals",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(providers=["stripe"])),
             refusal="entry 1 ('dashboard'): unknown provider 'stripe'"),
        id="a-key-file-with-an-unknown-provider",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys({k: v for k, v in entry().items() if k != "accounts"}),
             refusal="entry 1 ('dashboard'): 'accounts' is required"),
        id="a-key-file-entry-without-accounts",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(accounts=[])),
             refusal="entry 1 ('dashboard'): 'accounts' must be a non-empty list"),
        id="a-key-file-entry-with-no-accounts",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(permission=["billing:read"])),
             refusal="entry 1 ('dashboard'): unknown field 'permission'"),
        id="a-key-file-entry-with-a-misspelt-field",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(accounts=["org_?cme"])),
             refusal="entry 1 ('dashboard'): account pattern 'org_?cme'"),
        id="a-key-file-with-an-fnmatch-pattern",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(name="ops\nkey=forged")),
             refusal="entry 1: 'name' must be"),
        id="a-key-file-with-a-name-forging-a-log-field",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(), entry(name="ops")),
             refusal="key 'ops' has the same sha256 as key 'dashboard'"),
        id="a-key-file-giving-one-key-two-scopes",
    ),
    pytest.param(
        Case(FINDING_7,
             key_file=keys(entry(sha256=hashlib.sha256(TEST_API_KEY.encode()).hexdigest())),
             refusal="key 'dashboard' has the same sha256 as key 'GATEWAY_API_KEYS[1]'"),
        id="a-key-file-scoping-a-key-of-GATEWAY_API_KEYS",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(entry(), entry(sha256="0" * 64)),
             refusal="two keys are named 'dashboard'"),
        id="a-key-file-naming-two-keys-alike",
    ),
    pytest.param(
        Case(FINDING_7, key_file=keys(), refusal='"keys" must be a non-empty list'),
        id="a-key-file-with-no-keys",
    ),
    pytest.param(
        Case(FINDING_7, key_file='[[keys]]\nname = "dashboard"\n', key_file_name="keys.toml",
             refusal="entry 1 ('dashboard'): 'sha256' is required"),
        id="a-toml-key-file-entry-without-a-hash",
    ),
    pytest.param(
        Case(FINDING_7, key_file="name: dashboard", key_file_name="keys.yaml",
             refusal="must end in .json or .toml"),
        id="a-key-file-in-another-format",
    ),
]  # fmt: skip


def _at(data: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        data = data[step]
    return data


@pytest.mark.parametrize("case", CASES)
async def test_a_hostile_request_is_refused_before_any_upstream_call(
    case: Case, state: SandboxState, tmp_path: Path
) -> None:
    assert case.finding
    if case.key_file is not None:
        path = tmp_path / case.key_file_name
        path.write_text(case.key_file, encoding="utf-8")
        with pytest.raises(ConfigurationError) as refused:
            make_settings(GATEWAY_API_KEYS_FILE=str(path))
        assert "GATEWAY_API_KEYS_FILE" in str(refused.value)
        assert case.refusal in str(refused.value)
        assert CALLER_KEY not in str(refused.value)
        return

    path = tmp_path / "keys.json"
    path.write_text(
        keys(entry(providers=case.providers, accounts=case.accounts, permissions=case.permissions)),
        encoding="utf-8",
    )
    headers = {"authorization": f"Bearer {CALLER_KEY}", **case.headers}
    async with client_of(state, GATEWAY_API_KEYS_FILE=str(path)) as client:
        if case.path == GRAPHQL:
            response = await client.post(
                GRAPHQL,
                json={"query": case.document, "variables": case.variables},
                headers=headers,
            )
        else:
            response = await client.get(case.path, headers=headers)

    assert response.status_code == case.status, response.text
    body = response.json()
    if case.typed is not None:
        result = _at(body["data"], case.typed)
        assert (result["__typename"], result["code"]) == (case.typename, case.code), body
        assert "errors" not in body, body
    elif case.error_path is not None:
        assert _at(body["data"], case.error_path) is None, body
        assert case.error_path in [tuple(error["path"]) for error in body["errors"]], body
        assert {error["extensions"]["code"] for error in body["errors"]} == {case.code}, body
    else:
        [error] = body["errors"]
        assert error["extensions"]["code"] == case.code, error
    assert state.count() == case.upstream_calls, [(c.method, c.path) for c in state.calls()]
    if case.upstream_calls == 0:
        assert state.checkouts == []
