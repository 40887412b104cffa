"""The parser cache is bounded by what its documents hold, not only by their number: a caller
with a key could otherwise keep 512 documents at the token limit (about 600 MB) in a worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.schema import ReportingParserCache


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    saved, tokens = ReportingParserCache._entries.copy(), ReportingParserCache._tokens
    ReportingParserCache._entries.clear()
    ReportingParserCache._tokens = 0
    yield
    ReportingParserCache._entries.clear()
    ReportingParserCache._entries.update(saved)
    ReportingParserCache._tokens = tokens


def _wide(fields: int, name: str = "a") -> str:
    return "{" + " ".join(f"{name}{i}" for i in range(fields)) + "}"


def test_documents_past_the_token_budget_push_out_the_least_recently_used() -> None:
    cache = ReportingParserCache(maxsize=512, max_tokens=1_000)
    for n in range(10):
        cache.parse(_wide(400, f"f{n}_"), {})  # 402 tokens each, with <SOF>/<EOF> and braces

    assert ReportingParserCache._tokens <= 1_000
    assert len(ReportingParserCache._entries) == 2


def test_a_cached_document_is_returned_as_the_same_object() -> None:
    cache = ReportingParserCache(maxsize=4, max_tokens=1_000)

    assert cache.parse("{ a }", {}) is cache.parse("{ a }", {})


def test_the_count_of_documents_stays_bounded_too() -> None:
    cache = ReportingParserCache(maxsize=3, max_tokens=1_000_000)
    for n in range(10):
        cache.parse(f"{{ a{n} }}", {})

    assert len(ReportingParserCache._entries) == 3


def test_parse_options_key_their_own_entries() -> None:
    cache = ReportingParserCache(maxsize=4, max_tokens=1_000)
    cache.parse("{ a }", {})
    cache.parse("{ a }", {"max_tokens": 10})

    assert len(ReportingParserCache._entries) == 2
