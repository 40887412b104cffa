"""`checkoutPreview` through the schema, against the sandbox upstreams in process."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import UpstreamBadResponse
from gateway.normalize import Drift, DriftKind, almanac_preview
from gateway.sandbox import Fault, SandboxState
from tests.support import Gateway

PREVIEW = """
query($input: CheckoutPreviewInput!) {
  checkoutPreview(input: $input) {
    __typename
    ... on CheckoutPreview {
      id provider accountId planId currency hostedCheckoutRequired checkoutType
      subtotal { amount currency } total { amount currency }
      lineItems { name description quantity subtotal { amount } total { amount currency } }
    }
    ... on Error { code message provider }
    ... on InvalidInputError { field }
  }
}
"""


async def preview(gateway: Gateway, **fields: Any) -> Any:
    data = await gateway.execute(PREVIEW, {"input": fields})
    return data["checkoutPreview"]


async def test_an_almanac_preview_prices_the_plan_change_with_one_call_and_no_checkout(
    gateway: Gateway, state: SandboxState
) -> None:
    result = await preview(gateway, provider="ALMANAC", accountId="org_globex", planId="team")

    assert result["__typename"] == "CheckoutPreview"
    assert result["accountId"] == "org_globex"
    assert result["planId"] == "team"
    assert result["currency"] == "USD"
    assert result["hostedCheckoutRequired"] is True
    assert result["lineItems"]
    assert result["total"]["currency"] == "USD"
    [call] = state.calls("almanac", "POST", "/v1/organizations/org_globex/billing/preview")
    assert call.body == {"plan_id": "team"}
    assert state.checkouts == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider": "AUTOPOSTING", "planId": "plan_pro"}, "provider"),
        ({"provider": "ALMANAC", "planId": "team"}, "accountId"),
        ({"provider": "ALMANAC", "accountId": "org_acme", "planId": ""}, "planId"),
    ],
    ids=["autoposting-has-no-preview", "almanac-without-account", "empty-plan"],
)
async def test_a_preview_that_cannot_be_asked_is_invalid_input_and_calls_no_upstream(
    gateway: Gateway, state: SandboxState, fields: dict[str, str], field: str
) -> None:
    result = await preview(gateway, **fields)

    assert result["__typename"] == "InvalidInputError"
    assert result["field"] == field
    assert state.count() == 0


async def test_a_failed_preview_is_a_typed_provider_error_sent_once(
    gateway: Gateway, state: SandboxState
) -> None:
    state.add_fault("almanac", Fault(status=503))

    result = await preview(gateway, provider="ALMANAC", accountId="org_acme", planId="team")

    assert result["__typename"] == "ProviderError"
    assert result["code"] == "UPSTREAM_UNAVAILABLE"
    assert state.count("almanac", "POST") == 1


@pytest.mark.parametrize(
    ("payload", "currency", "total"),
    [
        ({"plan_id": "p", "total": 29.99}, "USD", "29.99"),
        ({"plan_id": "p", "total": 10, "currency": "eur", "extra": 1}, "EUR", "10"),
        ({"plan_id": "p"}, "USD", None),
    ],
    ids=["configured-currency", "upstream-currency-and-extra-field", "no-total"],
)
def test_preview_normalization_keeps_exact_amounts_in_the_right_currency(
    payload: dict[str, Any], currency: str, total: str | None
) -> None:
    drifts: list[Drift] = []
    result = almanac_preview(payload, organization_id="org", currency="USD", drift=drifts.append)

    assert result.currency == currency
    assert (str(result.total.amount) if result.total else None) == total
    assert result.hosted_checkout_required is False
    assert result.lines == ()
    assert drifts == []


@pytest.mark.parametrize("payload", [{}, {"plan_id": 3}], ids=["no-plan", "plan-not-string"])
def test_a_preview_that_breaks_the_contract_is_a_bad_response(payload: dict[str, Any]) -> None:
    with pytest.raises(UpstreamBadResponse):
        almanac_preview(payload, organization_id="org", currency="USD", drift=_unexpected)


def _unexpected(drift: Drift) -> None:
    raise AssertionError(drift)


@pytest.mark.parametrize(
    ("payload", "field", "read", "expected"),
    [
        ({"plan_id": "p", "line_items": "x"}, "line_items", "lines", ()),
        ({"plan_id": "p", "total": "9"}, "total", "total", None),
        ({"plan_id": "p", "currency": 978}, "currency", "currency", "USD"),
        ({"plan_id": "p", "redirect_to_checkout": "yes"}, "redirect_to_checkout",
         "hosted_checkout_required", False),
    ],
    ids=["lines-not-list", "total-not-number", "currency-number", "redirect-string"],
)  # fmt: skip
def test_a_preview_with_a_malformed_descriptive_field_degrades_it_with_one_drift(
    payload: dict[str, Any], field: str, read: str, expected: object
) -> None:
    drifts: list[Drift] = []
    result = almanac_preview(payload, organization_id="org", currency="USD", drift=drifts.append)
    assert getattr(result, read) == expected
    assert [(d.field, d.kind) for d in drifts] == [(field, DriftKind.MALFORMED)]
