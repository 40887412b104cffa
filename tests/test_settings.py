"""`load_settings(environ)`, `Credential` and the Autoposting plan catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.credentials import Credential, MalformedCredential
from gateway.provider import Provider
from gateway.settings import (
    DEFAULT_AUTOPOSTING_PLANS,
    ConfigurationError,
    Settings,
    load_settings,
)

TOKEN = "alm-SECRET-91b2"
GATEWAY_KEY = "gw-settings-key"
API_KEY = "sk-social-SECRET-44d0"

# --- defaults and every variable -----------------------------------------------------------------


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})

    # The base URLs of /work/shared/upstreams/README.md, written out rather than imported.
    assert settings.almanac.base_url == "https://almanac-backend-83vc.onrender.com"
    assert settings.autoposting.base_url == "https://app.autoposting.ai/api-proxy"
    assert settings.almanac.provider is Provider.ALMANAC
    assert settings.autoposting.provider is Provider.AUTOPOSTING
    for upstream in (settings.almanac, settings.autoposting):
        assert upstream.credential is None
        assert upstream.currency == "USD"
        assert upstream.connect_timeout == 5.0
        assert upstream.get_retries == 2
    # Almanac cold-starts: a first call may take several seconds.
    assert settings.almanac.read_timeout == 30.0
    assert settings.autoposting.read_timeout == 15.0
    assert settings.autoposting_tokens_period == "30d"
    assert settings.default_success_url is None
    assert settings.default_cancel_url is None
    assert settings.max_accounts_per_request == 25
    assert settings.graphiql is True
    assert [plan["id"] for plan in settings.autoposting_plans] == ["plan_pro"]


def test_upstream_returns_the_settings_of_each_provider() -> None:
    settings = load_settings({})

    assert settings.upstream(Provider.ALMANAC) is settings.almanac
    assert settings.upstream(Provider.AUTOPOSTING) is settings.autoposting


Read = Callable[[Settings], object]

READ_TABLE = [
    pytest.param(
        {"GATEWAY_ALMANAC_URL": "http://localhost:8001/"},
        lambda s: s.almanac.base_url,
        "http://localhost:8001",
        id="almanac-url-trailing-slash-stripped",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_URL": " https://almanac.example "},
        lambda s: s.almanac.base_url,
        "https://almanac.example",
        id="almanac-url-spaces-stripped",
    ),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_URL": "https://proxy.example/api-proxy/"},
        lambda s: s.autoposting.base_url,
        "https://proxy.example/api-proxy",
        id="autoposting-url-keeps-its-path",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_URL": ""},
        lambda s: s.almanac.base_url,
        "https://almanac-backend-83vc.onrender.com",
        id="empty-url-is-the-default",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_TOKEN": TOKEN},
        lambda s: (s.almanac.credential, s.autoposting.credential),
        (Credential(TOKEN), None),
        id="almanac-token",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_TOKEN": f"  {TOKEN}\n"},
        lambda s: s.almanac.credential,
        Credential(TOKEN),
        id="almanac-token-stripped",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_TOKEN": "   "},
        lambda s: s.almanac.credential,
        None,
        id="blank-token-is-none",
    ),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_API_KEY": API_KEY},
        lambda s: (s.almanac.credential, s.autoposting.credential),
        (None, Credential(API_KEY)),
        id="autoposting-api-key",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_CURRENCY": "eur"},
        lambda s: (s.almanac.currency, s.autoposting.currency),
        ("EUR", "USD"),
        id="almanac-currency-upper-cased",
    ),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_CURRENCY": " gbp "},
        lambda s: (s.almanac.currency, s.autoposting.currency),
        ("USD", "GBP"),
        id="autoposting-currency-upper-cased",
    ),
    pytest.param(
        {"GATEWAY_CONNECT_TIMEOUT": "2.5"},
        lambda s: (s.almanac.connect_timeout, s.autoposting.connect_timeout),
        (2.5, 2.5),
        id="connect-timeout-for-both",
    ),
    pytest.param(
        {"GATEWAY_ALMANAC_READ_TIMEOUT": "60"},
        lambda s: (s.almanac.read_timeout, s.autoposting.read_timeout),
        (60.0, 15.0),
        id="almanac-read-timeout",
    ),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_READ_TIMEOUT": "7.5"},
        lambda s: (s.almanac.read_timeout, s.autoposting.read_timeout),
        (30.0, 7.5),
        id="autoposting-read-timeout",
    ),
    pytest.param(
        {"GATEWAY_GET_RETRIES": "0"},
        lambda s: (s.almanac.get_retries, s.autoposting.get_retries),
        (0, 0),
        id="retries-zero",
    ),
    pytest.param(
        {"GATEWAY_GET_RETRIES": "5"},
        lambda s: (s.almanac.get_retries, s.autoposting.get_retries),
        (5, 5),
        id="retries-five",
    ),
    pytest.param(
        {"GATEWAY_DEFAULT_SUCCESS_URL": "https://app.example/billing/ok"},
        lambda s: (s.default_success_url, s.default_cancel_url),
        ("https://app.example/billing/ok", None),
        id="default-success-url",
    ),
    pytest.param(
        {"GATEWAY_DEFAULT_CANCEL_URL": "http://localhost:3000/cancel?x=1"},
        lambda s: (s.default_success_url, s.default_cancel_url),
        (None, "http://localhost:3000/cancel?x=1"),
        id="default-cancel-url",
    ),
    pytest.param(
        {"GATEWAY_MAX_ACCOUNTS_PER_REQUEST": "3"},
        lambda s: s.max_accounts_per_request,
        3,
        id="max-accounts",
    ),
    pytest.param(
        {"GATEWAY_COALESCE_AHEAD": "0"}, lambda s: s.coalesce_ahead, 0, id="coalesce-ahead-off"
    ),
    pytest.param({"GATEWAY_GRAPHIQL": "false"}, lambda s: s.graphiql, False, id="graphiql-false"),
    pytest.param({"GATEWAY_GRAPHIQL": "0"}, lambda s: s.graphiql, False, id="graphiql-zero"),
    pytest.param({"GATEWAY_GRAPHIQL": "True"}, lambda s: s.graphiql, True, id="graphiql-true"),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_TOKENS_PERIOD": "7d"},
        lambda s: s.autoposting_tokens_period,
        "7d",
        id="tokens-period-7d",
    ),
    pytest.param(
        {"GATEWAY_AUTOPOSTING_TOKENS_PERIOD": "90d"},
        lambda s: s.autoposting_tokens_period,
        "90d",
        id="tokens-period-90d",
    ),
]


@pytest.mark.parametrize(("environ", "read", "expected"), READ_TABLE)
def test_load_settings_reads_each_variable(
    environ: dict[str, str], read: Read, expected: object
) -> None:
    # A gateway key, which service credentials require, changes nothing else read here.
    assert read(load_settings({"GATEWAY_API_KEYS": GATEWAY_KEY, **environ})) == expected


def test_unknown_variables_are_ignored() -> None:
    assert load_settings({"PATH": "/bin", "GATEWAY_SOMETHING_ELSE": "x"}) == load_settings({})


BAD_VALUES = [
    pytest.param("GATEWAY_ALMANAC_URL", "almanac.example", id="url-without-scheme"),
    pytest.param("GATEWAY_ALMANAC_URL", "ftp://almanac.example", id="ftp-url"),
    pytest.param("GATEWAY_ALMANAC_URL", "https://", id="url-without-host"),
    pytest.param("GATEWAY_ALMANAC_URL", "http://exa mple.com", id="url-with-space"),
    pytest.param("GATEWAY_ALMANAC_URL", "http://[::1", id="unparseable-url"),
    pytest.param("GATEWAY_AUTOPOSTING_URL", "not a url", id="autoposting-not-a-url"),
    pytest.param("GATEWAY_AUTOPOSTING_URL", "ftp://app.autoposting.ai", id="autoposting-ftp"),
    pytest.param("GATEWAY_CONNECT_TIMEOUT", "-1", id="negative-connect-timeout"),
    pytest.param("GATEWAY_CONNECT_TIMEOUT", "0", id="zero-connect-timeout"),
    pytest.param("GATEWAY_ALMANAC_READ_TIMEOUT", "-5", id="negative-almanac-read-timeout"),
    pytest.param("GATEWAY_AUTOPOSTING_READ_TIMEOUT", "0", id="zero-autoposting-read-timeout"),
    pytest.param("GATEWAY_GET_RETRIES", "9", id="retries-9"),
    pytest.param("GATEWAY_GET_RETRIES", "-1", id="negative-retries"),
    pytest.param("GATEWAY_ALMANAC_CURRENCY", "US", id="two-letter-currency"),
    pytest.param("GATEWAY_ALMANAC_CURRENCY", "USDT", id="four-letter-currency"),
    pytest.param("GATEWAY_AUTOPOSTING_CURRENCY", "U5D", id="currency-with-digit"),
    pytest.param("GATEWAY_AUTOPOSTING_TOKENS_PERIOD", "1y", id="period-1y"),
    pytest.param("GATEWAY_AUTOPOSTING_TOKENS_PERIOD", "30", id="period-without-unit"),
    pytest.param("GATEWAY_DEFAULT_SUCCESS_URL", "/billing/ok", id="relative-success-url"),
    pytest.param("GATEWAY_DEFAULT_CANCEL_URL", "javascript:alert(1)", id="javascript-cancel-url"),
    pytest.param("GATEWAY_MAX_ACCOUNTS_PER_REQUEST", "0", id="zero-max-accounts"),
    pytest.param(
        "GATEWAY_ALMANAC_TOKEN",
        "alm tok",
        id="token-with-a-space",
    ),
    pytest.param(
        "GATEWAY_AUTOPOSTING_API_KEY",
        "sk-social-a\nb",
        id="api-key-with-a-newline",
    ),
    pytest.param(
        "GATEWAY_CONNECT_TIMEOUT",
        "nan",
        id="nan-timeout",
    ),
    pytest.param(
        "GATEWAY_ALMANAC_CURRENCY",
        "ÄÖÜ",
        id="non-ascii-currency",
    ),
    pytest.param("GATEWAY_CONNECT_TIMEOUT", "abc", id="timeout-not-a-number"),
    pytest.param("GATEWAY_GET_RETRIES", "two", id="retries-not-a-number"),
    pytest.param(
        "GATEWAY_MAX_ACCOUNTS_PER_REQUEST",
        "1.5",
        id="max-accounts-not-an-integer",
    ),
    pytest.param("GATEWAY_GRAPHIQL", "maybe", id="graphiql-not-a-bool"),
    pytest.param("GATEWAY_COALESCE_AHEAD", "-1", id="coalesce-ahead-negative"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_value_raises_configuration_error_naming_the_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        load_settings({variable: value})


def test_configuration_error_about_a_token_does_not_show_it() -> None:
    # Whatever else is wrong, the message of an error never repeats a token.
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"GATEWAY_ALMANAC_TOKEN": TOKEN, "GATEWAY_ALMANAC_URL": "ftp://x"})

    assert TOKEN not in str(caught.value)


# --- Credential ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "show",
    [
        pytest.param(repr, id="repr"),
        pytest.param(str, id="str"),
        pytest.param(lambda c: f"{c}", id="f-string"),
        pytest.param(lambda c: f"{c!r}", id="f-string-repr"),
        pytest.param(lambda c: repr([c]), id="in-a-list"),
        pytest.param(lambda c: "%s %r" % (c, c), id="percent-format"),  # noqa: UP031
    ],
)
def test_credential_never_shows_its_value(show: Callable[[Credential], str]) -> None:
    shown = show(Credential(TOKEN))

    assert TOKEN not in shown
    assert "*" in shown


def test_settings_repr_does_not_show_the_tokens() -> None:
    settings = load_settings(
        {
            "GATEWAY_ALMANAC_TOKEN": TOKEN,
            "GATEWAY_AUTOPOSTING_API_KEY": API_KEY,
            "GATEWAY_API_KEYS": GATEWAY_KEY,
        }
    )

    for shown in (repr(settings), str(settings), repr(settings.almanac)):
        assert TOKEN not in shown
        assert API_KEY not in shown
        assert GATEWAY_KEY not in shown


@pytest.mark.parametrize(
    "credential",
    [{"GATEWAY_ALMANAC_TOKEN": TOKEN}, {"GATEWAY_AUTOPOSTING_API_KEY": API_KEY}],
    ids=["almanac-token", "autoposting-api-key"],
)
def test_service_credentials_without_a_gateway_key_stop_start_up(
    credential: dict[str, str],
) -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_API_KEYS"):
        load_settings(credential)


SECURITY_TABLE = [
    pytest.param({}, lambda s: (s.api_keys, s.redirect_hosts, s.cors_origins), ((), (), ()),
                 id="defaults-ask-for-nothing-and-allow-no-redirect"),
    pytest.param({"GATEWAY_API_KEYS": "k1, k2,k1"}, lambda s: [k.digest for k in s.api_keys],
                 [hashlib.sha256(b"k1").digest(), hashlib.sha256(b"k2").digest()],
                 id="api-keys-deduplicated-and-kept-hashed"),
    pytest.param({"GATEWAY_DEFAULT_SUCCESS_URL": "https://a.example/ok",
                  "GATEWAY_DEFAULT_CANCEL_URL": "https://b.example/no"},
                 lambda s: s.redirect_hosts, ("a.example", "b.example"),
                 id="redirect-hosts-default-to-the-default-urls-hosts"),
    pytest.param({"GATEWAY_REDIRECT_HOSTS": "App.Example.com,*.shop.example",
                  "GATEWAY_DEFAULT_SUCCESS_URL": "https://a.example/ok"},
                 lambda s: s.redirect_hosts, ("app.example.com", "*.shop.example"),
                 id="redirect-hosts-configured-win"),
    pytest.param({"GATEWAY_CORS_ORIGINS": "https://app.example.com, http://localhost:3000"},
                 lambda s: s.cors_origins, ("https://app.example.com", "http://localhost:3000"),
                 id="cors-origins"),
    pytest.param({"GATEWAY_RETRY_BUDGET_RATIO": "0.5", "GATEWAY_BREAKER_FAILURES": "3",
                  "GATEWAY_BREAKER_RESET_SECONDS": "10",
                  "GATEWAY_RETRY_BUDGET_MIN_PER_SECOND": "0"},
                 lambda s: (s.almanac.retry_budget_ratio, s.autoposting.breaker_failures,
                            s.almanac.breaker_reset, s.autoposting.retry_budget_min_per_second),
                 (0.5, 3, 10.0, 0.0), id="resilience-for-both"),
    pytest.param({"GATEWAY_MAX_QUERY_DEPTH": "5", "GATEWAY_MAX_ALIASES": "7",
                  "GATEWAY_MAX_TOKENS": "300", "GATEWAY_MAX_BODY_BYTES": "1024",
                  "GATEWAY_IDEMPOTENCY_TTL_SECONDS": "60", "GATEWAY_INTROSPECTION": "false"},
                 lambda s: (s.max_query_depth, s.max_aliases, s.max_tokens, s.max_body_bytes,
                            s.idempotency_ttl, s.introspection), (5, 7, 300, 1024, 60.0, False),
                 id="limits-and-switches"),
]  # fmt: skip


@pytest.mark.parametrize(("environ", "read", "expected"), SECURITY_TABLE)
def test_load_settings_reads_the_security_and_resilience_variables(
    environ: dict[str, str], read: Read, expected: object
) -> None:
    assert read(load_settings(environ)) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_API_KEYS", "good,bad key"),
        ("GATEWAY_REDIRECT_HOSTS", "https://app.example.com"),
        ("GATEWAY_REDIRECT_HOSTS", "app.example.com:443"),
        ("GATEWAY_REDIRECT_HOSTS", "*"),
        ("GATEWAY_REDIRECT_HOSTS", "app.example.com/path"),
        ("GATEWAY_CORS_ORIGINS", "app.example.com"),
        ("GATEWAY_CORS_ORIGINS", "https://app.example.com/path"),
        ("GATEWAY_RETRY_BUDGET_RATIO", "1.5"),
        ("GATEWAY_RETRY_BUDGET_MIN_PER_SECOND", "-1"),
        ("GATEWAY_BREAKER_FAILURES", "0"),
        ("GATEWAY_BREAKER_RESET_SECONDS", "-1"),
        ("GATEWAY_MAX_BODY_BYTES", "0"),
        ("GATEWAY_INTROSPECTION", "maybe"),
    ],
)
def test_a_bad_security_or_resilience_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings({name: value})


def test_credential_reveals_its_value_only_on_request() -> None:
    assert Credential(TOKEN).reveal() == TOKEN


def test_credentials_are_equal_and_hashable_by_value() -> None:
    assert Credential(TOKEN) == Credential(TOKEN)
    assert Credential(TOKEN) != Credential(API_KEY)
    assert hash(Credential(TOKEN)) == hash(Credential(TOKEN))
    assert len({Credential(TOKEN), Credential(TOKEN), Credential(API_KEY)}) == 2
    assert {Credential(TOKEN): 1}[Credential(TOKEN)] == 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(f" {TOKEN}", id="leading-space"),
        pytest.param(f"{TOKEN}\n", id="trailing-newline"),
        pytest.param("   ", id="blank"),
    ],
)
def test_credential_rejects_an_empty_or_padded_token(value: str) -> None:
    with pytest.raises(MalformedCredential) as caught:
        Credential(value)

    assert TOKEN not in str(caught.value)


# --- the Autoposting plan catalog ----------------------------------------------------------------

CATALOG = [
    {
        "id": "plan_pro",
        "name": "Pro",
        "price": 29.99,
        "currency": "USD",
        "interval": "monthly",
        "group": "subscription",
        "features": [{"id": "social_accounts", "included": 10}],
    },
    {"id": "plan_team", "name": "Team", "price": "99.00", "features": []},
    {"id": "plan_free", "name": "Free"},
]


def test_default_plan_catalog_names_plan_pro() -> None:
    plans = load_settings({}).autoposting_plans

    assert plans == DEFAULT_AUTOPOSTING_PLANS
    assert [(plan["id"], plan["name"]) for plan in plans] == [("plan_pro", "Pro")]
    assert "price" not in plans[0]  # not published by Autoposting


def test_plan_catalog_loads_from_inline_json() -> None:
    settings = load_settings({"GATEWAY_AUTOPOSTING_PLANS": json.dumps(CATALOG)})

    assert settings.autoposting_plans == tuple(CATALOG)


def test_plan_catalog_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(CATALOG), encoding="utf-8")

    settings = load_settings({"GATEWAY_AUTOPOSTING_PLANS_FILE": str(path)})

    assert settings.autoposting_plans == tuple(CATALOG)


def test_blank_plan_catalog_variables_give_the_default_catalog() -> None:
    settings = load_settings(
        {"GATEWAY_AUTOPOSTING_PLANS": "  ", "GATEWAY_AUTOPOSTING_PLANS_FILE": ""}
    )

    assert settings.autoposting_plans == DEFAULT_AUTOPOSTING_PLANS


def test_plan_catalog_inline_and_file_together_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(CATALOG), encoding="utf-8")

    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            {
                "GATEWAY_AUTOPOSTING_PLANS": json.dumps(CATALOG),
                "GATEWAY_AUTOPOSTING_PLANS_FILE": str(path),
            }
        )

    assert "GATEWAY_AUTOPOSTING_PLANS" in str(caught.value)
    assert "GATEWAY_AUTOPOSTING_PLANS_FILE" in str(caught.value)


def test_plan_catalog_file_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="GATEWAY_AUTOPOSTING_PLANS_FILE"):
        load_settings({"GATEWAY_AUTOPOSTING_PLANS_FILE": str(tmp_path / "missing.json")})


def _entry(**fields: Any) -> str:
    return json.dumps([{"id": "plan_pro", "name": "Pro", **fields}])


BAD_CATALOGS = [
    pytest.param("{not json", id="malformed-json"),
    pytest.param('{"id": "plan_pro", "name": "Pro"}', id="object-not-list"),
    pytest.param('"plan_pro"', id="string-not-list"),
    pytest.param("[]", id="empty-list"),
    pytest.param('["plan_pro"]', id="entry-not-object"),
    pytest.param('[{"name": "Pro"}]', id="entry-without-id"),
    pytest.param('[{"id": "plan_pro"}]', id="entry-without-name"),
    pytest.param('[{"id": " ", "name": "Pro"}]', id="blank-id"),
    pytest.param('[{"id": 7, "name": "Pro"}]', id="id-not-string"),
    pytest.param('[{"id": "plan_pro", "name": null}]', id="name-null"),
    pytest.param(
        '[{"id": "plan_pro", "name": "Pro"}, {"id": "plan_pro", "name": "Pro 2"}]',
        id="duplicate-ids",
    ),
    pytest.param(_entry(price="cheap"), id="price-not-a-number"),
    pytest.param(_entry(price=True), id="price-bool"),
    pytest.param(_entry(price=[9]), id="price-list"),
    pytest.param(_entry(currency=840), id="currency-not-string"),
    pytest.param(_entry(interval=1), id="interval-not-string"),
    pytest.param(_entry(group=["a"]), id="group-not-string"),
    pytest.param(_entry(features="all"), id="features-not-a-list"),
    pytest.param(_entry(features=["seats"]), id="feature-not-object"),
    pytest.param(_entry(features=[{"included": 1}]), id="feature-without-id"),
    pytest.param(_entry(features=[{"id": 3}]), id="feature-id-not-string"),
    pytest.param(
        _entry(price="NaN"),
        id="price-nan-string",
    ),
    pytest.param(
        '[{"id": "plan_pro", "name": "Pro", "price": NaN}]',
        id="price-nan-literal",
    ),
    pytest.param(
        _entry(price="Infinity"),
        id="price-infinity",
    ),
]


@pytest.mark.parametrize("catalog", BAD_CATALOGS)
def test_malformed_plan_catalog_is_a_configuration_error(catalog: str) -> None:
    with pytest.raises(ConfigurationError, match="Autoposting plan catalog"):
        load_settings({"GATEWAY_AUTOPOSTING_PLANS": catalog})


@pytest.mark.parametrize("catalog", BAD_CATALOGS)
def test_malformed_plan_catalog_file_is_a_configuration_error(tmp_path: Path, catalog: str) -> None:
    path = tmp_path / "plans.json"
    path.write_text(catalog, encoding="utf-8")

    with pytest.raises(ConfigurationError, match="Autoposting plan catalog"):
        load_settings({"GATEWAY_AUTOPOSTING_PLANS_FILE": str(path)})
