"""Per-request dataloaders; the account sources (`gateway.sources`) read through them.

Loader contract
- A `Loaders` container is built for every GraphQL request and dropped after it, so nothing
  fetched with one caller's credentials is served to another request by a loader. (Below the
  loaders, the clients may share an answer between requests made with the same credential: an
  identical GET in flight, or a cached answer; see the reuse contract in `upstreams/_base.py`.)
- Each loader's key includes the credential the call is made with; a key is fetched at most once
  per request however many fields, aliases or fragments ask for it.
- All keys of a batch are fetched concurrently, one upstream call each (neither provider has a
  batch endpoint); a failure rejects only its own key, with an exception of `gateway.errors`.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Generic, TypeVar, cast

from aiodataloader import DataLoader

from gateway import normalize
from gateway.clients import Clients, NormalizedAnswers
from gateway.models import (
    AlmanacBilling,
    AutopostingBilling,
    AutopostingProfile,
    UsageMeter,
)
from gateway.provider import Provider
from gateway.settings import Credential, Settings
from gateway.sources import AccountSource, AlmanacAccounts, AlmanacKey, AutopostingAccounts
from gateway.upstreams import AlmanacClient, AutopostingClient

K = TypeVar("K")
V = TypeVar("V")


class ConcurrentLoader(DataLoader[K, V], Generic[K, V]):
    """A loader whose batch fetches every key with its own call, all at once."""

    async def batch_load_fn(self, keys: Sequence[K]) -> list[V]:
        results = await asyncio.gather(
            *(self.load_one(key) for key in keys), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        # aiodataloader rejects the load of a key whose item is an Exception instance.
        return cast("list[V]", results)

    @abstractmethod
    async def load_one(self, key: K) -> V:
        """Fetch and normalize one key."""

    async def get(self, key: K) -> V:
        """`load(key)`, typed."""
        value: V = await self.load(key)
        return value


class AlmanacBillingByOrganizationLoader(ConcurrentLoader[AlmanacKey, AlmanacBilling]):
    """Almanac billing state (plans, usage, manage) per organization."""

    def __init__(
        self, client: AlmanacClient, *, currency: str, normalized: NormalizedAnswers
    ) -> None:
        super().__init__()
        self.client = client
        self.currency = currency
        self.normalized = normalized

    async def load_one(self, key: AlmanacKey) -> AlmanacBilling:
        payload = await self.client.get_billing_state(
            key.organization_id, credential=key.credential
        )
        return self.normalized.get(
            "almanac billing",
            payload,
            lambda: normalize.almanac_billing(payload, currency=self.currency),
        )


class AutopostingBillingByCredentialLoader(ConcurrentLoader[Credential, AutopostingBilling]):
    """Autoposting billing status, with the configured plan catalog applied, per API key."""

    def __init__(
        self,
        client: AutopostingClient,
        *,
        catalog: Sequence[Mapping[str, Any]],
        currency: str,
        normalized: NormalizedAnswers,
    ) -> None:
        super().__init__()
        self.client = client
        self.catalog = catalog
        self.currency = currency
        self.normalized = normalized

    async def load_one(self, key: Credential) -> AutopostingBilling:
        payload = await self.client.get_billing_status(credential=key)

        def billing() -> AutopostingBilling:
            status = normalize.autoposting_status(payload)
            plans = normalize.autoposting_plans(self.catalog, status, currency=self.currency)
            return AutopostingBilling(status=status, plans=plans)

        return self.normalized.get("autoposting billing", payload, billing)


class AutopostingCreditsByCredentialLoader(ConcurrentLoader[Credential, UsageMeter]):
    """The Autoposting credits meter per API key."""

    def __init__(self, client: AutopostingClient, *, normalized: NormalizedAnswers) -> None:
        super().__init__()
        self.client = client
        self.normalized = normalized

    async def load_one(self, key: Credential) -> UsageMeter:
        payload = await self.client.get_credit_summary(credential=key)
        return self.normalized.get(
            "autoposting credits", payload, lambda: normalize.autoposting_credits_meter(payload)
        )


class AutopostingTokensByCredentialLoader(ConcurrentLoader[Credential, UsageMeter]):
    """The Autoposting AI-token meter per API key, over the configured period."""

    def __init__(
        self, client: AutopostingClient, *, period: str, normalized: NormalizedAnswers
    ) -> None:
        super().__init__()
        self.client = client
        self.period = period
        self.normalized = normalized

    async def load_one(self, key: Credential) -> UsageMeter:
        payload = await self.client.get_token_usage(period=self.period, credential=key)
        return self.normalized.get(
            "autoposting tokens", payload, lambda: normalize.autoposting_tokens_meter(payload)
        )


class AutopostingProfileByCredentialLoader(ConcurrentLoader[Credential, AutopostingProfile]):
    """The organization behind each Autoposting API key."""

    def __init__(self, client: AutopostingClient, *, normalized: NormalizedAnswers) -> None:
        super().__init__()
        self.client = client
        self.normalized = normalized

    async def load_one(self, key: Credential) -> AutopostingProfile:
        payload = await self.client.get_profile(credential=key)
        return self.normalized.get(
            "autoposting profile", payload, lambda: normalize.autoposting_profile(payload)
        )


class Loaders:
    """The loaders of one request, and the account source of each provider over them.

    Each loader is made on first use: most requests read one provider, and a request that
    reads none (a checkout preview, `__typename`) makes none."""

    def __init__(self, clients: Clients, settings: Settings) -> None:
        self._clients = clients
        self._settings = settings
        self._sources: dict[Provider, AccountSource] = {}

    @cached_property
    def almanac_billing(self) -> AlmanacBillingByOrganizationLoader:
        return AlmanacBillingByOrganizationLoader(
            self._clients.almanac,
            currency=self._settings.almanac.currency,
            normalized=self._clients.normalized,
        )

    @cached_property
    def autoposting_billing(self) -> AutopostingBillingByCredentialLoader:
        return AutopostingBillingByCredentialLoader(
            self._clients.autoposting,
            catalog=self._settings.autoposting_plans,
            currency=self._settings.autoposting.currency,
            normalized=self._clients.normalized,
        )

    @cached_property
    def autoposting_credits(self) -> AutopostingCreditsByCredentialLoader:
        return AutopostingCreditsByCredentialLoader(
            self._clients.autoposting, normalized=self._clients.normalized
        )

    @cached_property
    def autoposting_tokens(self) -> AutopostingTokensByCredentialLoader:
        return AutopostingTokensByCredentialLoader(
            self._clients.autoposting,
            period=self._settings.autoposting_tokens_period,
            normalized=self._clients.normalized,
        )

    @cached_property
    def autoposting_profiles(self) -> AutopostingProfileByCredentialLoader:
        return AutopostingProfileByCredentialLoader(
            self._clients.autoposting, normalized=self._clients.normalized
        )

    def source(self, provider: Provider) -> AccountSource:
        """The account source of `provider`."""
        source = self._sources.get(provider)
        if source is None:
            if provider is Provider.ALMANAC:
                source = AlmanacAccounts(self.almanac_billing)
            else:
                source = AutopostingAccounts(
                    self.autoposting_billing,
                    self.autoposting_credits,
                    self.autoposting_tokens,
                    self.autoposting_profiles,
                )
            self._sources[provider] = source
        return source


__all__ = ["Loaders"]
