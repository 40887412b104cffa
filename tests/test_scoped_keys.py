"""Scoped gateway keys: the key file, hashing, matching, and the scopes applied to operations.

Hostile requests and bad key files are tabled in tests/test_hostile_scopes.py; here are the
loading rules and what a well-behaved scoped key may do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import OutOfScope
from gateway.http.guard import ApiKeys
from gateway.keys import (
    FULL_SCOPE,
    GatewayKey,
    KeyScope,
    Permission,
    account_matches,
    plain_keys,
)
from gateway.provider import Provider
from gateway.sandbox import SandboxState
from gateway.settings import ConfigurationError, load_settings
from tests.support import TEST_API_KEY, client_of

GRAPHQL = "/graphql"
SCOPED_KEY = "gw-dashboard-7f3a"
ACCOUNTS = """
query($accounts: [AccountInput!]!) {
  billingAccounts(accounts: $accounts) {
    __typename
    ... on BillingAccount { accountId currentPlan { planId } }
    ... on Error { code provider }
  }
}
"""
ENTRY: dict[str, Any] = {
    "name": "dashboard",
    "sha256": hashlib.sha256(SCOPED_KEY.encode()).hexdigest(),
    "providers": ["almanac"],
    "accounts": ["org_acme", "org_init*"],
    "permissions": ["billing:read"],
}
TOML_FILE = f"""
[[keys]]
name = "dashboard"
sha256 = "{ENTRY["sha256"]}"
providers = ["almanac"]
accounts = ["org_acme", "org_init*"]
permissions = ["billing:read"]
"""


def key_file(tmp_path: Path, *entries: dict[str, Any]) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": list(entries)}), encoding="utf-8")
    return str(path)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# --- loading -------------------------------------------------------------------------------------


def test_a_json_and_a_toml_key_file_give_the_same_keys(tmp_path: Path) -> None:
    toml_path = tmp_path / "keys.toml"
    toml_path.write_text(TOML_FILE, encoding="utf-8")

    from_json = load_settings({"GATEWAY_API_KEYS_FILE": key_file(tmp_path, ENTRY)}).api_keys
    from_toml = load_settings({"GATEWAY_API_KEYS_FILE": str(toml_path)}).api_keys

    assert (
        from_json
        == from_toml
        == (
            GatewayKey(
                name="dashboard",
                digest=hashlib.sha256(SCOPED_KEY.encode()).digest(),
                scope=KeyScope(
                    providers=frozenset({Provider.ALMANAC}),
                    accounts=("org_acme", "org_init*"),
                    permissions=frozenset({Permission.BILLING_READ}),
                ),
            ),
        )
    )


def test_plain_keys_and_a_key_file_are_both_accepted_each_with_its_own_scope(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {"GATEWAY_API_KEYS": "plain-1,plain-2", "GATEWAY_API_KEYS_FILE": key_file(tmp_path, ENTRY)}
    )
    keys = ApiKeys(settings.api_keys)

    plain = keys.match("Bearer plain-2")
    scoped = keys.match(f"Bearer {SCOPED_KEY}")

    assert plain is not None
    assert scoped is not None
    assert (plain.name, plain.scope) == ("GATEWAY_API_KEYS[2]", FULL_SCOPE)
    assert (scoped.name, scoped.scope.permissions) == (
        "dashboard",
        frozenset({Permission.BILLING_READ}),
    )
    assert keys.match(f"Bearer {ENTRY['sha256']}") is None  # the hash is not the key


def test_service_credentials_may_be_guarded_by_a_key_file_alone(tmp_path: Path) -> None:
    settings = load_settings(
        {"GATEWAY_ALMANAC_TOKEN": "alm-service", "GATEWAY_API_KEYS_FILE": key_file(tmp_path, ENTRY)}
    )

    assert [key.name for key in settings.api_keys] == ["dashboard"]


def test_an_unreadable_key_file_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read GATEWAY_API_KEYS_FILE"):
        load_settings({"GATEWAY_API_KEYS_FILE": str(tmp_path / "missing.json")})


def test_plain_keys_are_kept_only_as_their_sha256() -> None:
    settings = load_settings({"GATEWAY_API_KEYS": "plain-secret-key-1,plain-secret-key-2"})

    # Every value the settings hold, recursively, Credentials' own text included.
    held = str(dataclasses.asdict(settings))
    assert "plain-secret-key" not in held
    assert "plain-secret-key" not in repr(settings)
    assert hashlib.sha256(b"plain-secret-key-1").digest() in {k.digest for k in settings.api_keys}


# --- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "account_id", "matches"),
    [
        ("org_acme", "org_acme", True),
        ("org_acme", "org_acme2", False),
        ("org_acme", "ORG_ACME", False),
        ("org_acme", "org_acm", False),
        ("org_*", "org_acme", True),
        ("org_*", "org_", True),
        ("org_*", "xorg_acme", False),
        ("*_eu", "org_acme_eu", True),
        ("*_eu", "org_acme_eu2", False),
        ("org_*_eu", "org_acme_eu", True),
        ("org_*_eu", "org_eu", False),  # the pieces may not overlap
        ("a*a", "a", False),
        ("a*b*c", "a-c-b-c", True),
        ("a*b*c", "a-c-c", False),
        ("*", "anything at all", True),
        ("org.acme", "orgXacme", False),  # only '*' is special
    ],
)
def test_an_account_pattern_matches_as_documented(
    pattern: str, account_id: str, matches: bool
) -> None:
    assert account_matches(pattern, account_id) is matches


READ_ACME = KeyScope(
    providers=frozenset({Provider.ALMANAC, Provider.AUTOPOSTING}),
    accounts=("org_acme", "org-pro-*"),
    permissions=frozenset({Permission.BILLING_READ}),
)


@pytest.mark.parametrize(
    ("provider", "account_id", "permission", "allowed"),
    [
        (Provider.ALMANAC, "org_acme", Permission.BILLING_READ, True),
        (Provider.ALMANAC, "org_globex", Permission.BILLING_READ, False),
        (Provider.ALMANAC, "org_acme", Permission.CHECKOUT_WRITE, False),
        (Provider.AUTOPOSTING, "org-pro-demo", Permission.BILLING_READ, True),
        # The Autoposting account must be named for its pattern to be checked.
        (Provider.AUTOPOSTING, None, Permission.BILLING_READ, False),
    ],
)
def test_a_scope_allows_only_its_providers_accounts_and_permissions(
    provider: Provider, account_id: str | None, permission: Permission, allowed: bool
) -> None:
    if allowed:
        READ_ACME.check(provider, account_id, permission)
    else:
        with pytest.raises(OutOfScope) as caught:
            READ_ACME.check(provider, account_id, permission)
        assert caught.value.provider is provider


def test_a_key_reaching_any_account_may_leave_the_autoposting_account_out() -> None:
    FULL_SCOPE.check(Provider.AUTOPOSTING, None, Permission.CHECKOUT_WRITE)


def test_a_presented_key_is_compared_with_every_key_whichever_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"k{i}" for i in range(5)]
    keys = ApiKeys(plain_keys(names, variable="GATEWAY_API_KEYS"))
    compared: list[bytes] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return compare(a, b)

    monkeypatch.setattr("gateway.http.guard.hmac.compare_digest", counting)
    for presented in ("k0", "k4", "nope"):
        compared.clear()
        match = keys.match(f"Bearer {presented}")
        assert (match.name if match else None) == (
            f"GATEWAY_API_KEYS[{names.index(presented) + 1}]" if presented in names else None
        )
        assert len(compared) == len(names)


# --- a scoped key over HTTP ----------------------------------------------------------------------


async def test_a_scoped_key_reads_its_accounts_while_another_in_the_request_is_refused(
    state: SandboxState, tmp_path: Path
) -> None:
    accounts = [
        {"provider": "ALMANAC", "accountId": "org_acme"},
        {"provider": "ALMANAC", "accountId": "org_globex"},
        {"provider": "ALMANAC", "accountId": "org_initech"},
        {"provider": "AUTOPOSTING"},
    ]
    async with client_of(state, GATEWAY_API_KEYS_FILE=key_file(tmp_path, ENTRY)) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": ACCOUNTS, "variables": {"accounts": accounts}},
            headers=bearer(SCOPED_KEY),
        )

    assert response.status_code == 200, response.text
    items = response.json()["data"]["billingAccounts"]
    assert [item["__typename"] for item in items] == [
        "BillingAccount",
        "NotAllowedError",
        "BillingAccount",
        "NotAllowedError",
    ]
    assert [item.get("code") for item in items] == [None, "NOT_ALLOWED", None, "NOT_ALLOWED"]
    assert sorted(call.path for call in state.calls()) == [
        "/v1/organizations/org_acme/billing",
        "/v1/organizations/org_initech/billing",
    ]


async def test_a_key_limited_to_some_accounts_reads_the_autoposting_account_it_names(
    state: SandboxState, tmp_path: Path
) -> None:
    entry = {**ENTRY, "providers": ["autoposting"], "accounts": ["org-pro-*"]}
    query = {"query": ACCOUNTS, "variables": {"accounts": [{"provider": "AUTOPOSTING"}]}}
    async with client_of(state, GATEWAY_API_KEYS_FILE=key_file(tmp_path, entry)) as client:
        unnamed = await client.post(GRAPHQL, json=query, headers=bearer(SCOPED_KEY))
        assert state.count() == 0
        query["variables"] = {
            "accounts": [{"provider": "AUTOPOSTING", "accountId": "org-pro-demo"}]
        }
        named = await client.post(GRAPHQL, json=query, headers=bearer(SCOPED_KEY))

    [refused] = unnamed.json()["data"]["billingAccounts"]
    assert (refused["__typename"], refused["code"]) == ("NotAllowedError", "NOT_ALLOWED")
    [account] = named.json()["data"]["billingAccounts"]
    assert account == {
        "__typename": "BillingAccount",
        "accountId": "org-pro-demo",
        "currentPlan": {"planId": "plan_pro"},
    }


async def test_a_plain_key_keeps_every_permission(state: SandboxState) -> None:
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL,
            json={
                "query": '{ billingAccount(provider: ALMANAC, accountId: "org_acme") '
                "{ __typename ... on BillingAccount { raw plans { raw } } } }"
            },
            headers=bearer(TEST_API_KEY),
        )
        metrics = await client.get("/metrics", headers=bearer(TEST_API_KEY))

    body = response.json()
    assert "errors" not in body, body
    account = body["data"]["billingAccount"]
    assert account["raw"] is not None
    assert all(p["raw"] is not None for p in account["plans"])
    assert metrics.status_code == 200


async def test_a_key_with_metrics_read_reads_the_metrics(
    state: SandboxState, tmp_path: Path
) -> None:
    entry = {**ENTRY, "permissions": ["metrics:read"]}
    async with client_of(state, GATEWAY_API_KEYS_FILE=key_file(tmp_path, entry)) as client:
        response = await client.get("/metrics", headers=bearer(SCOPED_KEY))

    assert response.status_code == 200
    assert "gateway_graphql_operations_total" in response.text


async def test_the_access_line_names_the_key_never_the_key_itself(
    state: SandboxState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with client_of(state, GATEWAY_API_KEYS_FILE=key_file(tmp_path, ENTRY)) as client:
        await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=bearer(SCOPED_KEY))
        await client.post(GRAPHQL, json={"query": "{ __typename }"}, headers=bearer("wrong"))

    lines = [vars(r)["access"] for r in caplog.records if r.name == "gateway.access"]
    assert [line.get("key") for line in lines] == ["dashboard", None]
    assert SCOPED_KEY not in caplog.text
