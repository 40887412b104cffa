"""Configuration: a frozen `Settings`, read from an environment mapping by `load_settings`.

Nothing reads the environment at import time; `create_app(settings)` receives what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.credentials import Credential
from gateway.environment import DEFAULT_AUTOPOSTING_PLANS as DEFAULT_AUTOPOSTING_PLANS
from gateway.environment import ConfigurationError as ConfigurationError
from gateway.environment import (
    Environment,
    load_api_keys,
    load_persisted_operations,
    load_plan_catalog,
)
from gateway.http.persisted import DEFAULT_APQ_CACHE_SIZE
from gateway.keys import GatewayKey
from gateway.provider import Provider

DEFAULT_ALMANAC_URL = "https://almanac-backend-83vc.onrender.com"
DEFAULT_AUTOPOSTING_URL = "https://app.autoposting.ai/api-proxy"
DEFAULT_CONNECT_TIMEOUT = 5.0
# Almanac is hosted on a platform with cold starts: a first call may take several seconds.
DEFAULT_ALMANAC_READ_TIMEOUT = 30.0
DEFAULT_AUTOPOSTING_READ_TIMEOUT = 15.0
DEFAULT_GET_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 0.2
DEFAULT_RETRY_AFTER_CAP = 5.0
DEFAULT_MAX_ACCOUNTS_PER_REQUEST = 25
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_RESET = 30.0
DEFAULT_RETRY_BUDGET_RATIO = 0.2
DEFAULT_RETRY_BUDGET_MIN_PER_SECOND = 1.0
DEFAULT_IDEMPOTENCY_TTL = 24 * 3600.0
# Live (unexpired) idempotency keys: at most this many in the store, per caller (gateway key) and
# per upstream credential. A full quota refuses new keys; a live key is never evicted. Keep
# max keys >= gateway keys x keys per caller, so that no caller can fill the store for another.
# What a live key holds in memory and in Redis: docs/performance.md.
DEFAULT_IDEMPOTENCY_MAX_KEYS = 20_000
DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER = 5_000
DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL = 1_000
# startCheckout calls per gateway key: this many a minute on average, up to the burst at once.
DEFAULT_CHECKOUT_RATE_PER_MINUTE = 60
DEFAULT_CHECKOUT_BURST = 20
DEFAULT_MAX_QUERY_DEPTH = 10
DEFAULT_MAX_ALIASES = 30
DEFAULT_MAX_TOKENS = 2000
# Fields a document expands to (fragments included), pairs of fields validation must compare, and
# the estimated cost of an operation (accounts x fields per account): gateway/schema/limits.py;
# README "Security" says how they were chosen.
DEFAULT_MAX_FIELDS = 500
DEFAULT_MAX_MERGE_PAIRS = 1000
DEFAULT_MAX_QUERY_COST = 1000
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Named, scoped gateway keys (gateway/keys.py); none by default.
DEFAULT_API_KEYS_FILE = ""
DEFAULT_AUTOPOSTING_TOKENS_PERIOD = "30d"
# /readyz probes each upstream at most once per this many seconds, each within the timeout.
DEFAULT_READY_CACHE_SECONDS = 5.0
# Garbage collected every this many seconds instead of by allocation count (gateway/collector.py):
# a longer interval costs less CPU and pauses longer; 0: Python's own schedule.
DEFAULT_GC_INTERVAL_SECONDS = 0.25
DEFAULT_READY_TIMEOUT = 2.0
# `serve`: on SIGTERM, requests in flight get this long to finish before they are cancelled.
DEFAULT_SHUTDOWN_TIMEOUT = 10
# `serve`, per worker process: requests (and open connections) past this many answer 503, so a
# burst sheds load instead of growing without bound (each one may hold a 64 KiB body and fan out to
# 25 accounts; the upstream pools hold 100 connections per provider); and an idle kept-alive
# connection is closed after this many seconds (uvicorn's default; keep it above the idle timeout
# of a proxy that reuses connections, or the proxy's below it).
DEFAULT_MAX_CONCURRENCY = 1000
DEFAULT_KEEP_ALIVE_SECONDS = 5
# Upstream connections per provider (a pool kept alive), and reuse of upstream answers
# (gateway/upstreams/reuse.py): coalescing of identical GETs in flight (on; never across
# credentials), and a cache (off by default).
DEFAULT_UPSTREAM_MAX_CONNECTIONS = 100
DEFAULT_COALESCE = True
# A GET shared by this many callers starts the next one of its key as it ends (0: never): callers
# then stop waiting in step for one call together (gateway/upstreams/reuse.py, BENCHMARKS.md).
DEFAULT_COALESCE_AHEAD = 4
DEFAULT_CACHE_SECONDS = 0.0
DEFAULT_CACHE_USAGE_SECONDS = 0.0
DEFAULT_CACHE_MAX_ENTRIES = 10_000
# Compiled execution (gateway/execution/): an operation that has run this many times runs from a
# plan compiled for it; plans of at most this many documents are kept.
DEFAULT_COMPILED_EXECUTION = True
DEFAULT_COMPILE_THRESHOLD = 3
DEFAULT_PLAN_CACHE_SIZE = 256
# Stale-if-error (gateway/upstreams/stale.py): the last good billing answer of each account and
# credential, served for this many seconds after it was fetched when the provider is down (0: off);
# usage meters too only when asked; kept in Redis with GATEWAY_REDIS_URL, else in at most this
# many bytes per process.
DEFAULT_STALE_IF_ERROR_SECONDS = 0.0
DEFAULT_STALE_IF_ERROR_USAGE = False
DEFAULT_STALE_MAX_BYTES = 32 * 1024 * 1024
AUTOPOSTING_TOKENS_PERIODS = ("7d", "30d", "90d")


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How the gateway reaches one provider."""

    provider: Provider
    base_url: str
    credential: Credential | None
    currency: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_AUTOPOSTING_READ_TIMEOUT
    get_retries: int = DEFAULT_GET_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    # Retries may add at most this fraction of the calls made, over and above a small floor.
    retry_budget_ratio: float = DEFAULT_RETRY_BUDGET_RATIO
    retry_budget_min_per_second: float = DEFAULT_RETRY_BUDGET_MIN_PER_SECOND
    # After this many consecutive failures calls fail fast for `breaker_reset` seconds.
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_reset: float = DEFAULT_BREAKER_RESET


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is configured with."""

    almanac: UpstreamSettings
    autoposting: UpstreamSettings
    autoposting_plans: tuple[Mapping[str, Any], ...] = DEFAULT_AUTOPOSTING_PLANS
    autoposting_tokens_period: str = DEFAULT_AUTOPOSTING_TOKENS_PERIOD
    default_success_url: str | None = None
    default_cancel_url: str | None = None
    max_accounts_per_request: int = DEFAULT_MAX_ACCOUNTS_PER_REQUEST
    graphiql: bool = True
    introspection: bool = True
    # Hosts a checkout may redirect to ("*.example.com" matches subdomains); empty: none.
    redirect_hosts: tuple[str, ...] = ()
    # Keys callers present as `Authorization: Bearer <key>`, known by their SHA-256 only (from
    # GATEWAY_API_KEYS, with every permission, and GATEWAY_API_KEYS_FILE, scoped); empty: no
    # gateway key is asked for.
    api_keys: tuple[GatewayKey, ...] = ()
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL
    # Checkout limits (README "Security"): live idempotency keys in all, per caller and per
    # credential; startCheckout calls per caller a minute, and its burst.
    idempotency_max_keys: int = DEFAULT_IDEMPOTENCY_MAX_KEYS
    idempotency_keys_per_caller: int = DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER
    idempotency_keys_per_credential: int = DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL
    checkout_rate_per_minute: int = DEFAULT_CHECKOUT_RATE_PER_MINUTE
    checkout_burst: int = DEFAULT_CHECKOUT_BURST
    max_query_depth: int = DEFAULT_MAX_QUERY_DEPTH
    max_aliases: int = DEFAULT_MAX_ALIASES
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_fields: int = DEFAULT_MAX_FIELDS
    max_merge_pairs: int = DEFAULT_MAX_MERGE_PAIRS
    max_query_cost: int = DEFAULT_MAX_QUERY_COST
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()
    # Persisted operations (http/persisted.py): the manifest's {sha256: document}, whether only
    # its operations run, and how many documents clients may register (APQ) per process.
    persisted_operations: Mapping[str, str] = field(default_factory=dict)
    persisted_only: bool = False
    apq_cache_size: int = DEFAULT_APQ_CACHE_SIZE
    # Operations (README "Operators"): /readyz caching and probe timeout, /metrics without a key,
    # OpenTelemetry tracing (exported as the standard OTEL_* variables say), `serve`'s drain time.
    ready_cache_seconds: float = DEFAULT_READY_CACHE_SECONDS
    gc_interval_seconds: float = DEFAULT_GC_INTERVAL_SECONDS
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    metrics_open: bool = False
    otel: bool = False
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    # The HTTP edge (README "Security"): Host names the gateway answers to ("*.example.com"
    # matches subdomains; empty: any), and `serve`'s per-worker concurrency and keep-alive limits.
    allowed_hosts: tuple[str, ...] = ()
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE_SECONDS
    # A Redis shared by replicas (docs/replicas.md): idempotency keys live there, and cached
    # upstream answers when the cache is on; /readyz checks it. None: both in this process only.
    redis_url: str | None = None
    # Performance (README "Operators"): upstream pool size; identical GETs in flight shared; billing
    # state and usage answers reused for this many seconds (0: not cached), in Redis with a
    # `redis_url`, else in an LRU this large.
    upstream_max_connections: int = DEFAULT_UPSTREAM_MAX_CONNECTIONS
    coalesce: bool = DEFAULT_COALESCE
    coalesce_ahead: int = DEFAULT_COALESCE_AHEAD
    cache_seconds: float = DEFAULT_CACHE_SECONDS
    cache_usage_seconds: float = DEFAULT_CACHE_USAGE_SECONDS
    cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES
    # Stale-if-error: the window of a kept billing answer (0: off), whether usage meters take
    # part, and the bytes kept in this process without Redis.
    stale_if_error_seconds: float = DEFAULT_STALE_IF_ERROR_SECONDS
    stale_if_error_usage: bool = DEFAULT_STALE_IF_ERROR_USAGE
    stale_max_bytes: int = DEFAULT_STALE_MAX_BYTES
    # Compiled execution: on, after how many runs of an operation, and how many plans are kept.
    compiled_execution: bool = DEFAULT_COMPILED_EXECUTION
    compile_threshold: int = DEFAULT_COMPILE_THRESHOLD
    plan_cache_size: int = DEFAULT_PLAN_CACHE_SIZE

    def upstream(self, provider: Provider) -> UpstreamSettings:
        """The settings of one provider."""
        return self.almanac if provider is Provider.ALMANAC else self.autoposting


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read `Settings` from environment variables (see the README's configuration table)."""
    env = Environment(environ)
    retries = env.integer("GATEWAY_GET_RETRIES", DEFAULT_GET_RETRIES)
    if not 0 <= retries <= 5:
        raise ConfigurationError("GATEWAY_GET_RETRIES must be between 0 and 5")

    period = env.text("GATEWAY_AUTOPOSTING_TOKENS_PERIOD", DEFAULT_AUTOPOSTING_TOKENS_PERIOD)
    if period not in AUTOPOSTING_TOKENS_PERIODS:
        allowed = ", ".join(AUTOPOSTING_TOKENS_PERIODS)
        raise ConfigurationError(f"GATEWAY_AUTOPOSTING_TOKENS_PERIOD must be one of {allowed}")
    default_success_url = env.url("GATEWAY_DEFAULT_SUCCESS_URL")
    default_cancel_url = env.url("GATEWAY_DEFAULT_CANCEL_URL")
    redirect_hosts = env.hosts("GATEWAY_REDIRECT_HOSTS") or tuple(
        dict.fromkeys(
            urlsplit(url).hostname or "" for url in (default_success_url, default_cancel_url) if url
        )
    )
    almanac_credential = env.credential("GATEWAY_ALMANAC_TOKEN")
    autoposting_credential = env.credential("GATEWAY_AUTOPOSTING_API_KEY")
    api_keys = load_api_keys(
        env.credentials("GATEWAY_API_KEYS"),
        env.text("GATEWAY_API_KEYS_FILE", DEFAULT_API_KEYS_FILE),
    )
    if (almanac_credential or autoposting_credential) and not api_keys:
        raise ConfigurationError(
            "service credentials are configured (GATEWAY_ALMANAC_TOKEN or "
            "GATEWAY_AUTOPOSTING_API_KEY): set GATEWAY_API_KEYS or GATEWAY_API_KEYS_FILE too, so "
            "that only your callers can spend them"
        )
    upstream_common: dict[str, Any] = {
        "connect_timeout": env.seconds("GATEWAY_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
        "get_retries": retries,
        "retry_budget_ratio": env.fraction(
            "GATEWAY_RETRY_BUDGET_RATIO", DEFAULT_RETRY_BUDGET_RATIO
        ),
        "retry_budget_min_per_second": env.non_negative(
            "GATEWAY_RETRY_BUDGET_MIN_PER_SECOND", DEFAULT_RETRY_BUDGET_MIN_PER_SECOND
        ),
        "breaker_failures": env.positive_integer(
            "GATEWAY_BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES
        ),
        "breaker_reset": env.seconds("GATEWAY_BREAKER_RESET_SECONDS", DEFAULT_BREAKER_RESET),
    }

    return Settings(
        almanac=UpstreamSettings(
            provider=Provider.ALMANAC,
            base_url=env.base_url("GATEWAY_ALMANAC_URL", DEFAULT_ALMANAC_URL),
            credential=almanac_credential,
            currency=env.currency("GATEWAY_ALMANAC_CURRENCY"),
            read_timeout=env.seconds("GATEWAY_ALMANAC_READ_TIMEOUT", DEFAULT_ALMANAC_READ_TIMEOUT),
            **upstream_common,
        ),
        autoposting=UpstreamSettings(
            provider=Provider.AUTOPOSTING,
            base_url=env.base_url("GATEWAY_AUTOPOSTING_URL", DEFAULT_AUTOPOSTING_URL),
            credential=autoposting_credential,
            currency=env.currency("GATEWAY_AUTOPOSTING_CURRENCY"),
            read_timeout=env.seconds(
                "GATEWAY_AUTOPOSTING_READ_TIMEOUT", DEFAULT_AUTOPOSTING_READ_TIMEOUT
            ),
            **upstream_common,
        ),
        autoposting_plans=load_plan_catalog(
            inline=env.text("GATEWAY_AUTOPOSTING_PLANS"),
            path=env.text("GATEWAY_AUTOPOSTING_PLANS_FILE"),
        ),
        autoposting_tokens_period=period,
        default_success_url=default_success_url,
        default_cancel_url=default_cancel_url,
        max_accounts_per_request=env.positive_integer(
            "GATEWAY_MAX_ACCOUNTS_PER_REQUEST", DEFAULT_MAX_ACCOUNTS_PER_REQUEST
        ),
        graphiql=env.flag("GATEWAY_GRAPHIQL", default=True),
        introspection=env.flag("GATEWAY_INTROSPECTION", default=True),
        redirect_hosts=redirect_hosts,
        api_keys=api_keys,
        idempotency_ttl=env.seconds("GATEWAY_IDEMPOTENCY_TTL_SECONDS", DEFAULT_IDEMPOTENCY_TTL),
        idempotency_max_keys=env.positive_integer(
            "GATEWAY_IDEMPOTENCY_MAX_KEYS", DEFAULT_IDEMPOTENCY_MAX_KEYS
        ),
        idempotency_keys_per_caller=env.positive_integer(
            "GATEWAY_IDEMPOTENCY_KEYS_PER_CALLER", DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER
        ),
        idempotency_keys_per_credential=env.positive_integer(
            "GATEWAY_IDEMPOTENCY_KEYS_PER_CREDENTIAL", DEFAULT_IDEMPOTENCY_KEYS_PER_CREDENTIAL
        ),
        checkout_rate_per_minute=env.positive_integer(
            "GATEWAY_CHECKOUT_RATE_PER_MINUTE", DEFAULT_CHECKOUT_RATE_PER_MINUTE
        ),
        checkout_burst=env.positive_integer("GATEWAY_CHECKOUT_BURST", DEFAULT_CHECKOUT_BURST),
        max_query_depth=env.positive_integer("GATEWAY_MAX_QUERY_DEPTH", DEFAULT_MAX_QUERY_DEPTH),
        max_aliases=env.positive_integer("GATEWAY_MAX_ALIASES", DEFAULT_MAX_ALIASES),
        max_tokens=env.positive_integer("GATEWAY_MAX_TOKENS", DEFAULT_MAX_TOKENS),
        max_fields=env.positive_integer("GATEWAY_MAX_FIELDS", DEFAULT_MAX_FIELDS),
        max_merge_pairs=env.positive_integer("GATEWAY_MAX_MERGE_PAIRS", DEFAULT_MAX_MERGE_PAIRS),
        max_query_cost=env.positive_integer("GATEWAY_MAX_QUERY_COST", DEFAULT_MAX_QUERY_COST),
        max_body_bytes=env.positive_integer("GATEWAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        cors_origins=env.origins("GATEWAY_CORS_ORIGINS"),
        persisted_operations=load_persisted_operations(
            env.text("GATEWAY_PERSISTED_OPERATIONS_FILE"),
            required=env.flag("GATEWAY_PERSISTED_ONLY", default=False),
        ),
        persisted_only=env.flag("GATEWAY_PERSISTED_ONLY", default=False),
        apq_cache_size=env.positive_integer("GATEWAY_APQ_CACHE_SIZE", DEFAULT_APQ_CACHE_SIZE),
        gc_interval_seconds=env.non_negative(
            "GATEWAY_GC_INTERVAL_SECONDS", DEFAULT_GC_INTERVAL_SECONDS
        ),
        ready_cache_seconds=env.non_negative(
            "GATEWAY_READY_CACHE_SECONDS", DEFAULT_READY_CACHE_SECONDS
        ),
        ready_timeout=env.seconds("GATEWAY_READY_TIMEOUT_SECONDS", DEFAULT_READY_TIMEOUT),
        metrics_open=env.flag("GATEWAY_METRICS_OPEN", default=False),
        otel=env.flag("GATEWAY_OTEL", default=False),
        shutdown_timeout=env.positive_integer(
            "GATEWAY_SHUTDOWN_TIMEOUT_SECONDS", DEFAULT_SHUTDOWN_TIMEOUT
        ),
        allowed_hosts=env.hosts("GATEWAY_ALLOWED_HOSTS"),
        max_concurrency=env.positive_integer("GATEWAY_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY),
        keep_alive_seconds=env.positive_integer(
            "GATEWAY_KEEP_ALIVE_SECONDS", DEFAULT_KEEP_ALIVE_SECONDS
        ),
        redis_url=env.redis_url("GATEWAY_REDIS_URL"),
        upstream_max_connections=env.positive_integer(
            "GATEWAY_UPSTREAM_MAX_CONNECTIONS", DEFAULT_UPSTREAM_MAX_CONNECTIONS
        ),
        coalesce=env.flag("GATEWAY_COALESCE", default=DEFAULT_COALESCE),
        coalesce_ahead=env.non_negative_integer("GATEWAY_COALESCE_AHEAD", DEFAULT_COALESCE_AHEAD),
        cache_seconds=env.non_negative("GATEWAY_CACHE_SECONDS", DEFAULT_CACHE_SECONDS),
        cache_usage_seconds=env.non_negative(
            "GATEWAY_CACHE_USAGE_SECONDS", DEFAULT_CACHE_USAGE_SECONDS
        ),
        cache_max_entries=env.positive_integer(
            "GATEWAY_CACHE_MAX_ENTRIES", DEFAULT_CACHE_MAX_ENTRIES
        ),
        stale_if_error_seconds=env.non_negative(
            "GATEWAY_STALE_IF_ERROR_SECONDS", DEFAULT_STALE_IF_ERROR_SECONDS
        ),
        stale_if_error_usage=env.flag(
            "GATEWAY_STALE_IF_ERROR_USAGE", default=DEFAULT_STALE_IF_ERROR_USAGE
        ),
        stale_max_bytes=env.positive_integer("GATEWAY_STALE_MAX_BYTES", DEFAULT_STALE_MAX_BYTES),
        compiled_execution=env.flag(
            "GATEWAY_COMPILED_EXECUTION", default=DEFAULT_COMPILED_EXECUTION
        ),
        compile_threshold=env.positive_integer(
            "GATEWAY_COMPILE_THRESHOLD", DEFAULT_COMPILE_THRESHOLD
        ),
        plan_cache_size=env.positive_integer("GATEWAY_PLAN_CACHE_SIZE", DEFAULT_PLAN_CACHE_SIZE),
    )
