"""The root types: `Query` (billing accounts) and `Mutation` (`startCheckout`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import strawberry

from gateway.checkout.preview import preview_checkout
from gateway.checkout.start import CheckoutRequest, start_checkout
from gateway.context import Info
from gateway.errors import GatewayError, attributed_to
from gateway.keys import Permission
from gateway.provider import Provider
from gateway.schema.account import BillingAccount
from gateway.schema.checkout import CheckoutPreview, CheckoutSession
from gateway.schema.enums import ProviderEnum
from gateway.schema.errors import (
    BillingSuspendedError,
    CheckoutLimitError,
    GatewayUnavailableError,
    InvalidInputError,
    NotAllowedError,
    ProviderError,
    to_graphql_error,
)
from gateway.schema.inputs import leaf_input
from gateway.schema.selection import selection_needs

BillingAccountResult = Annotated[
    BillingAccount | InvalidInputError | NotAllowedError | BillingSuspendedError | ProviderError,
    strawberry.union(
        "BillingAccountResult",
        description="An account's billing, or why it could not be read. A failure of one "
        "account never hides the others.",
    ),
]

CheckoutPreviewResult = Annotated[
    CheckoutPreview | InvalidInputError | NotAllowedError | BillingSuspendedError | ProviderError,
    strawberry.union(
        "CheckoutPreviewResult",
        description="The price of a plan change, or why it could not be previewed.",
    ),
]

StartCheckoutPayload = Annotated[
    CheckoutSession
    | InvalidInputError
    | NotAllowedError
    | BillingSuspendedError
    | ProviderError
    | CheckoutLimitError
    | GatewayUnavailableError,
    strawberry.union(
        "StartCheckoutPayload",
        description="The checkout session, or why none was started.",
    ),
]

PROVIDER_ARGUMENT = "The provider of the account."
ACCOUNT_ID_ARGUMENT = (
    "The account: the Almanac organization id (required for Almanac). For Autoposting the "
    "account is the API key's organization: omit it, or give that organization's id."
)


@leaf_input
@strawberry.input(description="One account to read.")
class AccountInput:
    provider: ProviderEnum = strawberry.field(description=PROVIDER_ARGUMENT)
    account_id: strawberry.ID | None = strawberry.field(
        default=None, description=ACCOUNT_ID_ARGUMENT
    )


@leaf_input
@strawberry.input(description="What to buy, for which account, and where to return afterwards.")
class StartCheckoutInput:
    provider: ProviderEnum = strawberry.field(description=PROVIDER_ARGUMENT)
    plan_id: strawberry.ID = strawberry.field(
        description="The provider's id of the plan to buy (`Plan.planId`)."
    )
    account_id: strawberry.ID | None = strawberry.field(
        default=None, description=ACCOUNT_ID_ARGUMENT
    )
    success_url: str | None = strawberry.field(
        default=None,
        description="Absolute http(s) URL to return to after paying, on a host the gateway "
        "allows redirects to; the configured default when omitted.",
    )
    cancel_url: str | None = strawberry.field(
        default=None,
        description="Absolute http(s) URL to return to when the customer cancels, on a host "
        "the gateway allows redirects to; the configured default when omitted. Almanac has no "
        "cancel URL: checked, not sent.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Makes the checkout safe to retry: 1 to 255 printable characters, such as a "
        "UUID. The same key with the same input, within the gateway's idempotency TTL, returns "
        "the same session (or the same failure, when the first call's outcome is unknown) "
        "without a second upstream call; a call still in flight is waited for. The same key "
        "with different input is an `InvalidInputError` with code IDEMPOTENCY_CONFLICT and "
        "field `idempotencyKey`. Keys are scoped to the caller and credential. A new key counts "
        "against the caller's and the credential's quotas of live keys: when one is full, a "
        "`CheckoutLimitError` (keys already used still answer). When the gateway cannot reach "
        "its idempotency store, a `GatewayUnavailableError`, with nothing sent. Omitted: every "
        "call starts a new checkout.",
    )


async def _billing_account(
    info: Info, provider_enum: ProviderEnum, account_id: str | None
) -> BillingAccount:
    provider = Provider(provider_enum.value)
    with attributed_to(provider):
        ref = info.context.account(provider, account_id)
        source = info.context.loaders.source(provider)
        await source.ensure(ref, selection_needs(info))
        return await BillingAccount.of(ref, source)


@leaf_input
@strawberry.input(description="The plan change to price.")
class CheckoutPreviewInput:
    provider: ProviderEnum = strawberry.field(
        description="The provider of the account (only Almanac offers a preview)."
    )
    plan_id: strawberry.ID = strawberry.field(
        description="The provider's id of the plan to change to (`Plan.planId`)."
    )
    account_id: strawberry.ID | None = strawberry.field(
        default=None, description=ACCOUNT_ID_ARGUMENT
    )


@strawberry.type(description="Read billing accounts of both providers.")
class Query:
    @strawberry.field(
        description="The billing of one account. Null only on an unexpected failure, which "
        "`errors` then describes; expected ones are typed members of the result."
    )
    async def billing_account(
        self,
        info: Info,
        provider: Annotated[ProviderEnum, strawberry.argument(description=PROVIDER_ARGUMENT)],
        account_id: Annotated[
            strawberry.ID | None, strawberry.argument(description=ACCOUNT_ID_ARGUMENT)
        ] = None,
    ) -> BillingAccountResult | None:
        return await _billing_account(info, provider, account_id)

    @strawberry.field(
        description="The billing of several accounts of either provider, fetched concurrently, "
        "in the order asked; each item is the account or its own typed error. An item is null "
        "only on an unexpected failure, which `errors` then describes: it never blanks the others."
    )
    async def billing_accounts(
        self,
        info: Info,
        accounts: Annotated[
            list[AccountInput], strawberry.argument(description="The accounts to read.")
        ],
    ) -> list[BillingAccountResult | None]:
        async def one(account: AccountInput) -> BillingAccountResult | None:
            try:
                return await _billing_account(info, account.provider, account.account_id)
            except GatewayError as exc:
                return to_graphql_error(exc)

        return list(await asyncio.gather(*(one(account) for account in accounts)))

    @strawberry.field(
        description="What a plan change will cost before `startCheckout`: line items, totals, "
        "currency and whether a hosted checkout is needed. Almanac only; asks the provider "
        "once, never retried. A scoped gateway key needs checkout:write."
    )
    async def checkout_preview(
        self,
        info: Info,
        input: Annotated[
            CheckoutPreviewInput, strawberry.argument(description="The plan change to price.")
        ],
    ) -> CheckoutPreviewResult:
        provider = Provider(input.provider.value)
        with attributed_to(provider):
            # Pricing a change is the first step of a checkout: the same permission.
            ref = info.context.account(provider, input.account_id, Permission.CHECKOUT_WRITE)
            preview = await preview_checkout(
                provider,
                account_id=input.account_id,
                plan_id=input.plan_id,
                clients=info.context.clients,
                settings=info.context.settings,
                credential=ref.credential,
            )
        return CheckoutPreview.of(preview)


@strawberry.type(description="Start checkouts.")
class Mutation:
    @strawberry.mutation(
        description="Start a hosted checkout at the provider: one upstream call, never retried "
        "by the gateway. Send the customer to the returned `url`. A scoped gateway key needs "
        "checkout:write and must reach the account."
    )
    async def start_checkout(
        self,
        info: Info,
        input: Annotated[
            StartCheckoutInput, strawberry.argument(description="What to buy and for whom.")
        ],
    ) -> StartCheckoutPayload:
        context = info.context
        provider = Provider(input.provider.value)
        with attributed_to(provider):
            ref = context.account(provider, input.account_id, Permission.CHECKOUT_WRITE)
            session = await start_checkout(
                CheckoutRequest(
                    provider=provider,
                    account_id=input.account_id,
                    plan_id=input.plan_id,
                    success_url=input.success_url,
                    cancel_url=input.cancel_url,
                    idempotency_key=input.idempotency_key,
                ),
                clients=context.clients,
                loaders=context.loaders,
                settings=context.settings,
                credential=ref.credential,
                idempotency=context.idempotency,
                caller=context.caller,
            )
        return CheckoutSession.of(session, ref)
