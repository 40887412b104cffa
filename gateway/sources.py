"""Account sources: what the GraphQL layer can ask of one provider's account, read through the
request's loaders (`gateway.loaders`)."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.credentials import Credential
from gateway.models import (
    AlmanacBilling,
    Freshness,
    ManagePermission,
    Plan,
    Subscription,
    UsageMeter,
)
from gateway.provider import Provider
from gateway.validation import account_mismatch

if TYPE_CHECKING:
    from gateway.loaders import (
        AlmanacBillingByOrganizationLoader,
        AutopostingBillingByCredentialLoader,
        AutopostingCreditsByCredentialLoader,
        AutopostingProfileByCredentialLoader,
        AutopostingTokensByCredentialLoader,
    )


@dataclass(frozen=True, slots=True)
class AccountRef:
    """One account of one provider, as seen with one credential."""

    provider: Provider
    account_id: str | None
    credential: Credential


@dataclass(frozen=True, slots=True)
class AlmanacKey:
    """Key of the Almanac billing loader."""

    organization_id: str
    credential: Credential


class Need(enum.Flag):
    """Parts of an account a request will read, beyond the primary resource."""

    NONE = 0
    ACCOUNT_ID = enum.auto()
    USAGE = enum.auto()


class AccountSource(Protocol):
    """What the GraphQL layer can ask of one provider's account; each answer reads a loader."""

    async def ensure(self, ref: AccountRef, needs: Need = Need.NONE) -> None:
        """Load the account's primary resource, raising its failure; start loading what `needs`
        names at the same time, so that it costs no second round trip."""

    async def account_id(self, ref: AccountRef) -> str:
        """The provider's own id of the account."""

    async def plans(self, ref: AccountRef) -> tuple[Plan, ...]:
        """The plan catalog offered to the account, the current plan marked."""

    async def subscription(self, ref: AccountRef) -> Subscription | None:
        """The subscription state, when the provider reports one."""

    async def manage(self, ref: AccountRef) -> ManagePermission | None:
        """Whether the caller may manage billing, when the provider says."""

    async def usage_meters(self, ref: AccountRef) -> tuple[UsageMeter, ...]:
        """The account's usage meters."""

    async def raw(self, ref: AccountRef) -> Mapping[str, Any]:
        """The upstream JSON of the primary resource."""

    async def freshness(self, ref: AccountRef) -> Freshness:
        """When the account's answers were fetched, and whether any is a stale one standing in
        for a failed read (the stalest of those read so far)."""


class AlmanacAccounts:
    """Almanac: one billing call per organization answers everything."""

    def __init__(self, billing: AlmanacBillingByOrganizationLoader) -> None:
        self.billing = billing

    async def _load(self, ref: AccountRef) -> AlmanacBilling:
        return await self.billing.get(self._key(ref))

    async def ensure(self, ref: AccountRef, needs: Need = Need.NONE) -> None:
        await self._load(ref)

    async def account_id(self, ref: AccountRef) -> str:
        assert ref.account_id is not None
        return ref.account_id

    async def plans(self, ref: AccountRef) -> tuple[Plan, ...]:
        return (await self._load(ref)).plans

    async def subscription(self, ref: AccountRef) -> Subscription | None:
        return None

    async def manage(self, ref: AccountRef) -> ManagePermission | None:
        return (await self._load(ref)).manage

    async def usage_meters(self, ref: AccountRef) -> tuple[UsageMeter, ...]:
        billing = await self._load(ref)
        withheld = self.billing.withheld_usage(self._key(ref))
        if withheld is not None:
            raise withheld  # usage meters are not served stale unless configured
        return billing.usage

    async def raw(self, ref: AccountRef) -> Mapping[str, Any]:
        return (await self._load(ref)).raw

    async def freshness(self, ref: AccountRef) -> Freshness:
        await self._load(ref)
        return self.billing.freshness[self._key(ref)]

    @staticmethod
    def _key(ref: AccountRef) -> AlmanacKey:
        assert ref.account_id is not None
        return AlmanacKey(ref.account_id, ref.credential)


class AutopostingAccounts:
    """Autoposting: billing status first; profile, credits and tokens only when asked for."""

    def __init__(
        self,
        billing: AutopostingBillingByCredentialLoader,
        credits: AutopostingCreditsByCredentialLoader,
        tokens: AutopostingTokensByCredentialLoader,
        profiles: AutopostingProfileByCredentialLoader,
    ) -> None:
        self.billing = billing
        self.credits = credits
        self.tokens = tokens
        self.profiles = profiles

    async def ensure(self, ref: AccountRef, needs: Need = Need.NONE) -> None:
        key = ref.credential
        needs_profile = Need.ACCOUNT_ID in needs or ref.account_id is not None
        ahead: list[Awaitable[object]] = [self.profiles.load(key)] if needs_profile else []
        if Need.USAGE in needs:
            ahead += [self.credits.load(key), self.tokens.load(key)]
        # All in one batch. The usage parts may fail without failing the account (their field
        # is nullable and raises their error); the account's ids need the profile, so a profile
        # failure fails the account as its status would.
        results = await asyncio.gather(self.billing.load(key), *ahead, return_exceptions=True)
        for result in results[: 2 if needs_profile else 1]:
            if isinstance(result, BaseException):
                raise result
        if ref.account_id is not None:
            profile = await self.profiles.get(key)
            if profile.organization_id != ref.account_id:
                raise account_mismatch(ref.provider)

    async def account_id(self, ref: AccountRef) -> str:
        profile = await self.profiles.get(ref.credential)
        return profile.organization_id

    async def plans(self, ref: AccountRef) -> tuple[Plan, ...]:
        return (await self.billing.get(ref.credential)).plans

    async def subscription(self, ref: AccountRef) -> Subscription | None:
        return (await self.billing.get(ref.credential)).status.subscription

    async def manage(self, ref: AccountRef) -> ManagePermission | None:
        return None

    async def usage_meters(self, ref: AccountRef) -> tuple[UsageMeter, ...]:
        billing, credits, tokens = await asyncio.gather(
            self.billing.get(ref.credential),
            self.credits.get(ref.credential),
            self.tokens.get(ref.credential),
        )
        withheld = self.billing.withheld_usage(ref.credential)
        if withheld is not None:
            raise withheld  # the account meter of a stale status is a usage meter too
        accounts = billing.status.accounts_meter
        return (credits,) + ((accounts,) if accounts is not None else ()) + (tokens,)

    async def raw(self, ref: AccountRef) -> Mapping[str, Any]:
        return (await self.billing.get(ref.credential)).status.raw

    async def freshness(self, ref: AccountRef) -> Freshness:
        key = ref.credential
        await self.billing.load(key)
        fresh = self.billing.freshness[key]
        # The other parts this request read of the account: its id, and its usage meters.
        for part in (self.profiles, self.credits, self.tokens):
            other = part.freshness.get(key)
            if other is not None:
                fresh = fresh.older(other)
        return fresh
