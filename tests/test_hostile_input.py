"""Small hostile requests: each is a clear refusal (a 400 `INVALID_QUERY`, or a typed error for
the one provider concerned), never a 500, never an ERROR log record, always one access line, and
no upstream call it should not make.

Findings of the issue "Safe to expose" covered here:
- 5: malformed input got a masked 500 with an ERROR traceback: a huge integer, deep nesting or a
  lone surrogate in the JSON of a POST body or a GET parameter, a non-ASCII byte in a credential
  header (remembered, in a keyed checkout, as an unknown outcome though nothing was sent); deep
  nesting also skipped the access line.
(Finding 3, cookies, is tests/test_cookies.py.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jsonfast
from gateway.checkout.idempotency import Acquired, MemoryIdempotencyStore, checkout_scope
from gateway.checkout.start import CheckoutRequest, start_checkout
from gateway.credentials import Credential
from gateway.endpoint import MAX_JSON_DEPTH
from gateway.errors import InvalidInput
from gateway.provider import Provider
from gateway.sandbox import ALMANAC_OWNER_TOKEN, AUTOPOSTING_PRO_KEY, SandboxState
from tests.support import TEST_API_KEY, Gateway, make_settings, sandbox_transports, serve

KEY = {"authorization": f"Bearer {TEST_API_KEY}"}
TYPENAME = "query Q { __typename }"
BOTH = """
query Both {
  acme: billingAccount(provider: ALMANAC, accountId: "org_acme") {
    __typename ... on Error { code message }
  }
  social: billingAccount(provider: AUTOPOSTING) {
    __typename ... on Error { code message }
  }
}
"""
KEYED_CHECKOUT = """
mutation {
  startCheckout(input: {provider: ALMANAC, accountId: "org_acme", planId: "plan_team",
                        idempotencyKey: "hostile-1"}) {
    __typename ... on Error { code message }
  }
}
"""
HUGE_INTEGER = "9" * 5000
DEEP = 20_000
NOT_A_TOKEN = "x-almanac-token header is empty or malformed"
NOT_A_KEY = "x-autoposting-api-key header is empty or malformed"


def post(body: str | bytes, **headers: str | bytes) -> dict[str, Any]:
    """A POST of `body` as it is (JSON text, escapes and all)."""
    content = body.encode() if isinstance(body, str) else body
    return {"content": content, "headers": {"content-type": "application/json", **headers}}


def get(query: str, **headers: str | bytes) -> dict[str, Any]:
    """A GET of `/graphql?<query>`, the query string as it is (httpx would refuse to encode 40 kB
    of brackets; a browser sends them as they are)."""
    return {"url": f"/graphql?{query}", "headers": headers}


def graphql(query: str, **headers: str | bytes) -> dict[str, Any]:
    return {"json": {"query": query}, "headers": headers}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def request_id_replaced(response: httpx.Response, state: SandboxState) -> None:
    """A request id that is not printable ASCII is replaced, and the replacement forwarded."""
    request_id = response.headers["x-request-id"]
    assert request_id.isascii()
    assert request_id.isprintable()
    forwarded = {call.headers.get("x-request-id") for call in state.calls()}
    assert forwarded == {request_id}


@dataclass(frozen=True)
class Case:
    """One hostile request and its refusal.

    `typed`: the refusal is a typed error in `data[typed]` of a 200, and `untouched` names the
    field of the other provider, answered in full; else a top-level error with `code`. `calls`:
    the upstream calls expected per provider. `times`: the request is sent that many times, each
    answered alike (what a first attempt remembered shows on the next).
    """

    finding: str
    request: dict[str, Any]
    status: int
    message: str
    method: str = "POST"
    code: str = "INVALID_QUERY"
    typed: str | None = None
    untouched: str | None = None
    calls: Mapping[str, int] = field(default_factory=lambda: {"almanac": 0, "autoposting": 0})
    times: int = 1
    then: Callable[[httpx.Response, SandboxState], None] | None = None


REFUSED_NUMBER = "The request's JSON is refused: a number is beyond the range of a double"
REFUSED_DEPTH = (
    "The request's JSON is refused: arrays and objects are nested more than "
    f"{MAX_JSON_DEPTH} levels deep"
)
REFUSED_SURROGATE = "The request's JSON is refused: a string holds a lone surrogate"
F5_JSON = "5: malformed JSON got a 500"
F5_HEADER = "5: a non-ASCII credential header got a 500"

CASES = [
    pytest.param(
        Case(F5_JSON, post(f'{{"query": "{TYPENAME}", "variables": {{"n": {HUGE_INTEGER}}}}}'),
             400, REFUSED_NUMBER),
        id="post-integer-of-5000-digits",
    ),
    pytest.param(
        Case(F5_JSON, get(f'query={TYPENAME}&variables={{"n":{HUGE_INTEGER}}}'), 400,
             REFUSED_NUMBER, method="GET"),
        id="get-integer-of-5000-digits",
    ),
    pytest.param(
        Case(F5_JSON, post(f'{{"query": "{TYPENAME}", "variables": {{"n": -1e400}}}}'), 400,
             REFUSED_NUMBER),
        id="post-number-beyond-a-double",
    ),
    pytest.param(
        Case(F5_JSON, post(f'{{"query": "{TYPENAME}", "variables": {{"v": {nested(DEEP)}}}}}'),
             400, REFUSED_DEPTH),
        id="post-nested-20000-deep",
    ),
    pytest.param(
        Case(F5_JSON, get(f"query={TYPENAME}&variables={{\"v\":{nested(DEEP)}}}"), 400,
             REFUSED_DEPTH, method="GET"),
        id="get-nested-20000-deep",
    ),
    pytest.param(
        Case(F5_JSON,
             post(f'{{"query": "{TYPENAME}", "variables": {{"v": {nested(MAX_JSON_DEPTH - 1)}}}}}'),
             400, REFUSED_DEPTH),
        id="post-nested-one-level-past-the-limit",
    ),
    pytest.param(
        Case(F5_JSON, get(f'query={TYPENAME}&extensions={{"v":{nested(MAX_JSON_DEPTH)}}}'), 400,
             REFUSED_DEPTH, method="GET"),
        id="get-extensions-nested-one-level-past-the-limit",
    ),
    pytest.param(
        Case(F5_JSON, post(f'{{"query": "{TYPENAME}", "operationName": "Q\\ud800"}}'), 400,
             REFUSED_SURROGATE),
        id="post-lone-surrogate-in-operationName",
    ),
    pytest.param(
        Case(F5_JSON, post(f'{{"query": "{TYPENAME}", "variables": {{"\\udc00": "low"}}}}'), 400,
             REFUSED_SURROGATE),
        id="post-lone-surrogate-in-a-key",
    ),
    pytest.param(
        Case(F5_JSON, get(f'query={TYPENAME}&variables={{"s":"\\ud800"}}'), 400,
             REFUSED_SURROGATE, method="GET"),
        id="get-lone-surrogate-in-variables",
    ),
    pytest.param(
        Case(F5_HEADER, graphql(BOTH, **{"x-almanac-token": b"alm_owner_\xe9"}), 200,
             NOT_A_TOKEN, code="UNAUTHENTICATED", typed="acme", untouched="social",
             calls={"almanac": 0, "autoposting": 1}),
        id="post-almanac-token-with-a-non-ascii-byte",
    ),
    pytest.param(
        Case(F5_HEADER, get("query=" + BOTH.replace("\n", " "),
                            **{"x-almanac-token": b"alm_owner_\xe9"}),
             200, NOT_A_TOKEN, method="GET", code="UNAUTHENTICATED", typed="acme",
             untouched="social", calls={"almanac": 0, "autoposting": 1}),
        id="get-almanac-token-with-a-non-ascii-byte",
    ),
    pytest.param(
        Case(F5_HEADER, graphql(BOTH, **{"x-almanac-token": b"alm_owner\x7f"}), 200,
             NOT_A_TOKEN, code="UNAUTHENTICATED", typed="acme", untouched="social",
             calls={"almanac": 0, "autoposting": 1}),
        id="post-almanac-token-with-a-control-byte",
    ),
    pytest.param(
        Case(F5_HEADER, graphql(BOTH, **{"x-autoposting-api-key": b"sk-social-\xff"}), 200,
             NOT_A_KEY, code="UNAUTHENTICATED", typed="social", untouched="acme",
             calls={"almanac": 1, "autoposting": 0}),
        id="post-autoposting-key-with-a-non-ascii-byte",
    ),
    pytest.param(
        Case(F5_HEADER + ", and a keyed checkout remembered it as an unknown outcome",
             graphql(KEYED_CHECKOUT, **{"x-almanac-token": b"alm_owner_\xe9"}), 200, NOT_A_TOKEN,
             code="UNAUTHENTICATED", typed="startCheckout", times=2),
        id="keyed-checkout-with-a-non-ascii-token-twice",
    ),
    pytest.param(
        Case(F5_HEADER + " (a forwarded header: the request id)",
             graphql(BOTH, **{"x-request-id": b"req-\xe9"}), 200, "", code="",
             calls={"almanac": 1, "autoposting": 1}, then=request_id_replaced),
        id="request-id-with-a-non-ascii-byte",
    ),
    pytest.param(
        Case(F5_HEADER + " (the gateway key)", graphql(TYPENAME, authorization=b"Bearer k\xe9y"),
             401, "The gateway key is not valid", code="UNAUTHENTICATED"),
        id="gateway-key-with-a-non-ascii-byte",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
async def test_a_hostile_request_is_refused_clearly_and_logged_once(
    case: Case, state: SandboxState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = dict(case.request)
    url = request.pop("url", "/graphql")
    headers = {**KEY, **request.pop("headers", {})}
    async with serve(make_settings(), sandbox_transports(state)) as client:
        responses = [
            await client.request(case.method, url, headers=headers, **request)
            for _ in range(case.times)
        ]

    for response in responses:
        assert response.status_code == case.status, (case.finding, response.text)
        body: dict[str, Any] = response.json()
        if case.typed is not None:
            error = body["data"][case.typed]
            assert error["__typename"] == "NotAllowedError", (case.finding, body)
            assert error["code"] == case.code
            assert case.message in error["message"]
            assert "may have been created" not in error["message"]
            assert "errors" not in body
        elif case.code:
            [error] = body["errors"]
            assert error["extensions"]["code"] == case.code, (case.finding, body)
            assert case.message.lower() in error["message"].lower(), (case.finding, body)
        if case.untouched is not None:
            assert body["data"][case.untouched]["__typename"] == "BillingAccount", body
        if case.then is not None:
            case.then(response, state)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    access = [r for r in caplog.records if r.name == "gateway.access"]
    statuses = [record.access["status"] for record in access]  # type: ignore[attr-defined]
    assert statuses == [case.status] * case.times
    calls = {provider: state.count(provider) for provider in case.calls}
    assert calls == dict(case.calls), case.finding


async def test_json_nested_exactly_to_the_limit_is_accepted(state: SandboxState) -> None:
    """The boundary of the depth rows: the request's own object is a level, so `variables` holds
    one fewer."""
    body = f'{{"query": "{TYPENAME}", "variables": {{"v": {nested(MAX_JSON_DEPTH - 2)}}}}}'
    async with serve(make_settings(), sandbox_transports(state)) as client:
        response = await client.post("/graphql", **post(body, **KEY))

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_keyed_checkout_whose_request_cannot_be_built_frees_its_key(
    state: SandboxState,
) -> None:
    """Finding 5: a failure before the POST was sent (here a credential no header can carry,
    which the header check now stops earlier) is `InvalidInput`, and the key is released, never
    remembered as an unknown outcome."""
    gateway = Gateway(settings=make_settings(), state=state)
    assert gateway.clients is not None
    store = MemoryIdempotencyStore(60.0)
    unsendable = Credential(ALMANAC_OWNER_TOKEN)
    object.__setattr__(unsendable, "value", ALMANAC_OWNER_TOKEN + "\xe9")  # past the check
    checkout = CheckoutRequest(
        provider=Provider.ALMANAC,
        account_id="org_acme",
        plan_id="plan_team",
        success_url=None,
        cancel_url=None,
        idempotency_key="unsendable-1",
    )
    try:
        with pytest.raises(InvalidInput) as refused:
            await start_checkout(
                checkout,
                clients=gateway.clients,
                loaders=None,  # type: ignore[arg-type]  # Almanac checks no account first
                settings=gateway.settings,
                credential=unsendable,
                idempotency=store,
            )
    finally:
        await gateway.aclose()

    assert "could not be built" in refused.value.message
    assert refused.value.provider is Provider.ALMANAC
    assert state.count() == 0
    scope = checkout_scope(Provider.ALMANAC, unsendable, None)
    reservation = await store.reserve(scope, "unsendable-1", "any")
    assert isinstance(reservation, Acquired)


async def test_an_upstream_body_json_cannot_encode_is_not_sent(state: SandboxState) -> None:
    """Finding 5, below the checkout: `_base.py` turns a request it cannot build into
    `InvalidInput` for its provider, with no call made."""
    gateway = Gateway(settings=make_settings(), state=state)
    assert gateway.clients is not None
    try:
        with pytest.raises(InvalidInput) as refused:
            await gateway.clients.autoposting.post(
                "/billing/checkout",
                credential=Credential(AUTOPOSTING_PRO_KEY),
                json={"planId": float("nan")},
            )
    finally:
        await gateway.aclose()

    assert refused.value.provider is Provider.AUTOPOSTING
    assert state.count() == 0


# --- the JSON checks against the decoded value ---------------------------------------------------

# Strings full of what the text-level depth check must see through: brackets, quotes, backslashes,
# multi-byte characters and a lone surrogate.
_TEXT = st.text(alphabet='[]{}"\\:,aé😀\ud800', max_size=6)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _holds_surrogate(value: object) -> bool:
    if isinstance(value, dict):
        return any(map(_holds_surrogate, [*value, *value.values()]))
    if isinstance(value, list):
        return any(map(_holds_surrogate, value))
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


@given(
    value=JSON_VALUES,
    limit=st.integers(0, 8),
    form=st.sampled_from(["utf-8", "ascii-escaped", "utf-16", "str"]),
)
@settings(max_examples=400, deadline=None)
def test_the_json_checks_refuse_exactly_what_the_decoded_value_holds(
    value: object, limit: int, form: str
) -> None:
    """Finding 5: the depth is read from the text (fast, no recursion), yet must agree with the
    value's own nesting whatever its strings hold, in every encoding `json` reads."""
    text = json.dumps(value, ensure_ascii=form == "ascii-escaped")
    data: str | bytes = (
        text
        if form == "str"
        else text.encode("utf-16" if form == "utf-16" else "utf-8", "surrogatepass")
    )
    if _holds_surrogate(value):
        with pytest.raises(jsonfast.JSONRefusedError, match="lone surrogate"):
            jsonfast.loads(data, max_depth=limit)
    elif _depth(value) > limit:
        with pytest.raises(jsonfast.JSONRefusedError, match=f"more than {limit} levels deep"):
            jsonfast.loads(data, max_depth=limit)
    else:
        assert jsonfast.loads(data, max_depth=limit) == value
