"""Persisted operations: automatic persisted queries (Apollo's protocol) and the allow-list mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.errors import ErrorCode
from gateway.http.persisted import (
    ManifestError,
    PersistedOperations,
    PersistedQueryError,
    parse_manifest,
    sha256_hex,
)
from gateway.sandbox import SandboxState
from gateway.settings import ConfigurationError
from tests.support import TEST_API_KEY, client_of, make_settings

GRAPHQL = "/graphql"
KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
QUERY = "query Typename { __typename }"
OTHER = "query Other { other: __typename }"
PLAN = (
    'query Plan { billingAccount(provider: ALMANAC, accountId: "org_acme") '
    "{ __typename ... on BillingAccount { currentPlan { planId } } } }"
)


def persisted(document: str, *, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256_hex(document)}}


def manifest_file(tmp_path: Path, content: object) -> str:
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


def error_of(response: httpx.Response) -> dict[str, Any]:
    [error] = response.json()["errors"]
    assert isinstance(error, dict)
    return error


# --- automatic persisted queries over HTTP -------------------------------------------------------


async def test_an_unknown_hash_is_persisted_query_not_found_then_registered_by_the_retry(
    state: SandboxState,
) -> None:
    async with client_of(state) as client:
        unknown = await client.post(GRAPHQL, json={"extensions": persisted(PLAN)}, headers=KEY)
        registered = await client.post(
            GRAPHQL, json={"query": PLAN, "extensions": persisted(PLAN)}, headers=KEY
        )
        calls_after_registering = state.count()
        by_hash = await client.post(GRAPHQL, json={"extensions": persisted(PLAN)}, headers=KEY)

    # Apollo clients resend with the query on this exact message or code, and turn persisted
    # queries off on a 400: the miss is a 200.
    assert unknown.status_code == 200
    assert error_of(unknown) == {
        "message": "PersistedQueryNotFound",
        "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
    }
    assert registered.status_code == 200
    assert by_hash.status_code == 200
    assert by_hash.json() == registered.json()
    plan = by_hash.json()["data"]["billingAccount"]
    assert plan["__typename"] == "BillingAccount"
    assert calls_after_registering > 0  # the miss itself called nothing


async def test_a_persisted_query_runs_by_get_with_the_hash_in_the_extensions_parameter(
    state: SandboxState,
) -> None:
    extensions = json.dumps(persisted(QUERY))
    async with client_of(state) as client:
        miss = await client.get(GRAPHQL, params={"extensions": extensions}, headers=KEY)
        registered = await client.get(
            GRAPHQL, params={"query": QUERY, "extensions": extensions}, headers=KEY
        )
        hit = await client.get(GRAPHQL, params={"extensions": extensions}, headers=KEY)

    assert error_of(miss)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert registered.json() == hit.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", ["application/graphql-response+json", "application/json"])
async def test_a_miss_is_a_200_under_either_media_type(state: SandboxState, accept: str) -> None:
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL, json={"extensions": persisted(QUERY)}, headers={**KEY, "accept": accept}
        )

    assert response.status_code == 200
    assert response.headers["content-type"] == accept


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        pytest.param(persisted(OTHER), "is not the sha256 of the query", id="hash-of-another"),
        pytest.param(persisted(QUERY, version=2), "only version 1", id="version-2"),
        pytest.param({"persistedQuery": "abc"}, "only version 1", id="not-an-object"),
        pytest.param(
            {"persistedQuery": {"version": 1, "sha256Hash": "abc"}}, "must be a hex sha256",
            id="short-hash",
        ),
        pytest.param(
            {"persistedQuery": {"version": 1, "sha256Hash": "z" * 64}}, "must be a hex sha256",
            id="not-hex",
        ),
    ],
)  # fmt: skip
async def test_a_malformed_or_mismatched_persisted_query_is_a_clear_400(
    state: SandboxState, extensions: dict[str, Any], message: str
) -> None:
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL, json={"query": QUERY, "extensions": extensions}, headers=KEY
        )
        after = await client.post(GRAPHQL, json={"extensions": persisted(OTHER)}, headers=KEY)

    assert response.status_code == 400
    error = error_of(response)
    assert error["extensions"]["code"] == "INVALID_QUERY"
    assert message in error["message"]
    # Nothing was registered under the wrong hash.
    assert error_of(after)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


async def test_the_hash_is_of_the_exact_utf8_text(state: SandboxState) -> None:
    query = "{ __typename @skip(if: false) } # café"
    async with client_of(state) as client:
        response = await client.post(
            GRAPHQL,
            json={"query": query, "extensions": persisted(query)},
            headers=KEY,
        )

    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


# --- the allow-list mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param({sha256_hex(PLAN): PLAN, sha256_hex(QUERY): QUERY}, id="hash-to-document"),
        pytest.param(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [
                    {"id": sha256_hex(PLAN), "name": "Plan", "type": "query", "body": PLAN},
                    {"id": sha256_hex(QUERY), "name": "Typename", "type": "query", "body": QUERY},
                ],
            },
            id="apollo-manifest",
        ),
    ],
)
async def test_persisted_only_runs_the_manifests_operations_by_hash_or_by_full_query(
    state: SandboxState, tmp_path: Path, manifest: dict[str, Any]
) -> None:
    environ = {
        "GATEWAY_PERSISTED_OPERATIONS_FILE": manifest_file(tmp_path, manifest),
        "GATEWAY_PERSISTED_ONLY": "true",
    }
    async with client_of(state, **environ) as client:
        by_hash = await client.post(GRAPHQL, json={"extensions": persisted(PLAN)}, headers=KEY)
        by_query = await client.post(GRAPHQL, json={"query": QUERY}, headers=KEY)
        both = await client.post(
            GRAPHQL, json={"query": QUERY, "extensions": persisted(QUERY)}, headers=KEY
        )
        calls = state.count()
        other = await client.post(GRAPHQL, json={"query": OTHER}, headers=KEY)
        register = await client.post(
            GRAPHQL, json={"query": OTHER, "extensions": persisted(OTHER)}, headers=KEY
        )
        unknown_hash = await client.post(
            GRAPHQL, json={"extensions": persisted(OTHER)}, headers=KEY
        )

    assert by_hash.status_code == 200
    assert by_hash.json()["data"]["billingAccount"]["__typename"] == "BillingAccount"
    assert by_query.json() == both.json() == {"data": {"__typename": "Query"}}
    for refused in (other, register):
        assert refused.status_code == 400
        error = error_of(refused)
        assert error["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
        assert "persisted operations only" in error["message"]
    # An unknown hash is still a miss (an APQ client then resends, and is refused as above).
    assert error_of(unknown_hash)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert state.count() == calls


async def test_without_persisted_only_the_manifest_serves_hashes_and_other_queries_run(
    state: SandboxState, tmp_path: Path
) -> None:
    environ = {
        "GATEWAY_PERSISTED_OPERATIONS_FILE": manifest_file(tmp_path, {sha256_hex(QUERY): QUERY})
    }
    async with client_of(state, **environ) as client:
        by_hash = await client.post(GRAPHQL, json={"extensions": persisted(QUERY)}, headers=KEY)
        other = await client.post(GRAPHQL, json={"query": OTHER}, headers=KEY)

    assert by_hash.json() == {"data": {"__typename": "Query"}}
    assert other.json() == {"data": {"other": "Query"}}


# --- configuration -------------------------------------------------------------------------------


def test_persisted_only_without_a_manifest_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_PERSISTED_OPERATIONS_FILE"):
        make_settings(GATEWAY_PERSISTED_ONLY="true")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{not json", "not JSON", id="not-json"),
        pytest.param("[]", "expected a JSON object", id="a-list"),
        pytest.param(json.dumps({"abc": QUERY}), "is not the sha256", id="wrong-id"),
        pytest.param(json.dumps({sha256_hex(QUERY): 5}), "string document", id="not-a-document"),
        pytest.param(
            json.dumps({"format": "apollo-persisted-query-manifest", "version": 2,
                        "operations": []}),
            "version 1", id="apollo-version-2",
        ),
    ],
)  # fmt: skip
def test_a_malformed_manifest_is_a_configuration_error_naming_the_variable(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ConfigurationError, match="GATEWAY_PERSISTED_OPERATIONS_FILE") as caught:
        make_settings(GATEWAY_PERSISTED_OPERATIONS_FILE=str(path))
    assert message in str(caught.value)


def test_a_missing_manifest_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read GATEWAY_PERSISTED_OPERATIONS_FILE"):
        make_settings(GATEWAY_PERSISTED_OPERATIONS_FILE=str(tmp_path / "absent.json"))


def test_the_manifest_and_cache_size_are_read_into_the_settings(tmp_path: Path) -> None:
    settings = make_settings(
        GATEWAY_PERSISTED_OPERATIONS_FILE=manifest_file(tmp_path, {sha256_hex(QUERY): QUERY}),
        GATEWAY_APQ_CACHE_SIZE="7",
    )

    assert dict(settings.persisted_operations) == {sha256_hex(QUERY): QUERY}
    assert settings.persisted_only is False
    assert settings.apq_cache_size == 7


# --- the rules, directly -------------------------------------------------------------------------


def test_the_cache_keeps_the_most_recently_used_documents_up_to_its_size() -> None:
    operations = PersistedOperations({}, cache_size=2)
    first, second, third = "{ a: __typename }", "{ b: __typename }", "{ c: __typename }"
    for document in (first, second):
        operations.document(document, persisted(document))
    operations.document(None, persisted(first))  # used: `second` is now the oldest
    operations.document(third, persisted(third))

    assert len(operations) == 2
    assert operations.document(None, persisted(first)) == first
    assert operations.document(None, persisted(third)) == third
    with pytest.raises(PersistedQueryError) as caught:
        operations.document(None, persisted(second))
    assert caught.value.code is ErrorCode.PERSISTED_QUERY_NOT_FOUND


def test_a_request_without_a_persisted_query_passes_through() -> None:
    operations = PersistedOperations({})

    assert operations.document(QUERY, None) == QUERY
    assert operations.document(None, {"other": 1}) is None
    assert len(operations) == 0


def test_hashes_are_compared_case_insensitively() -> None:
    operations = PersistedOperations(parse_manifest({sha256_hex(QUERY).upper(): QUERY}))
    upper = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(QUERY).upper()}}

    assert operations.document(None, upper) == QUERY
    assert operations.document(None, persisted(QUERY)) == QUERY


def test_an_apollo_manifest_entry_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ManifestError):
        parse_manifest(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": ["x"]}
        )
