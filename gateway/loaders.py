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
- Each read goes through the app's stale-if-error policy (`upstreams.stale`): when the provider
  is down, a key may get the last good answer of the same account and credential instead, and
  `freshness[key]` says when what the key got was fetched and which failure it stands in for.
  A live answer is kept only once it normalized.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar, cast

from aiodataloader import DataLoader

from gateway import normalize
from gateway.clients import Clients
from gateway.credentials import Credential
from gateway.models import (
    AlmanacBilling,
    AutopostingBilling,
    AutopostingProfile,
    Freshness,
    UsageMeter,
)
from gateway.normalize import DriftRecorder
from gateway.provider import Provider
from gateway.settings import Settings
from gateway.sources import AccountSource, AlmanacAccounts, AlmanacKey, AutopostingAccounts
from gateway.upstreams.stale import Served, stale_key

logger = logging.getLogger("gateway.loaders")

K = TypeVar("K")
V = TypeVar("V")


class ConcurrentLoader(DataLoader[K, V], Generic[K, V]):
    """A loader whose batch fetches every key with its own call, all at once, each through the
    stale-if-error policy (`fetch`)."""

    # What the loader reads: the provider and a resource name (stale-if-error keys and metrics),
    # and whether it is a usage meter (served stale only when the policy includes usage).
    provider: ClassVar[Provider]
    resource: ClassVar[str]
    usage: ClassVar[bool] = False

    def __init__(self, clients: Clients) -> None:
        super().__init__()
        # App-lifetime parts: models normalized once per shared answer, the drift they show, the
        # stale-if-error policy.
        self.normalized = clients.normalized
        self.drift = clients.drift
        self.stale = clients.stale
        self.freshness: dict[K, Freshness] = {}
        self._reads: dict[K, tuple[str, Served]] = {}

    async def batch_load_fn(self, keys: Sequence[K]) -> list[V]:
        results = await asyncio.gather(
            *(self._load_settled(key) for key in keys), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        # aiodataloader rejects the load of a key whose item is an Exception instance.
        return cast("list[V]", results)

    @abstractmethod
    async def load_one(self, key: K) -> V:
        """Fetch (with `fetch`) and normalize one key."""

    async def fetch(
        self,
        key: K,
        call: Callable[[], Awaitable[object]],
        *,
        account: str | None,
        credential: Credential,
    ) -> object:
        """`call()`'s answer for `key`, or the last good one when the provider is down."""
        where = stale_key(self.provider.value, self.resource, account, credential)
        served = await self.stale.read(where, call, usage=self.usage)
        self._reads[key] = (where, served)
        return served.value

    async def read(
        self,
        key: K,
        call: Callable[[], Awaitable[object]],
        normalize: Callable[[object, DriftRecorder], V],
        *,
        account: str | None,
        credential: Credential,
    ) -> V:
        """`fetch` `key`'s answer, then `normalize` it, reporting drift to the recorder it is
        given: once for every request that shares the answer, or an equal one that showed no
        drift (`NormalizedAnswers`, keyed by this loader's kind)."""
        payload = await self.fetch(key, call, account=account, credential=credential)
        kind = f"{self.provider.value} {self.resource}"
        return self.normalized.get(
            kind, payload, lambda drift: normalize(payload, drift), self.drift
        )

    def withheld_usage(self, key: K) -> Exception | None:
        """The failure to answer instead of usage meters read from `key`'s answer: when that
        answer is a stale one and the policy serves usage meters live only."""
        freshness = self.freshness.get(key)
        if freshness is None or freshness.failure is None or self.stale.usage:
            return None
        return freshness.failure

    async def _load_settled(self, key: K) -> V:
        try:
            value = await self.load_one(key)
        except Exception:
            read = self._reads.pop(key, None)
            if read is not None and read[1].failure is not None:
                # A kept answer this gateway can no longer read: the failure it stood in for.
                logger.warning("a stale %s answer did not normalize", self.resource)
                raise read[1].failure from None
            raise
        read = self._reads.pop(key, None)
        if read is not None:
            where, served = read
            self.freshness[key] = Freshness(
                datetime.fromtimestamp(served.fetched_at, UTC), served.failure
            )
            await self.stale.settle(
                where,
                served,
                provider=self.provider.value,
                resource=self.resource,
                usage=self.usage,
            )
        return value

    async def get(self, key: K) -> V:
        """`load(key)`, typed."""
        value: V = await self.load(key)
        return value


class AlmanacBillingByOrganizationLoader(ConcurrentLoader[AlmanacKey, AlmanacBilling]):
    """Almanac billing state (plans, usage, manage) per organization."""

    provider = Provider.ALMANAC
    resource = "billing"

    def __init__(self, clients: Clients, *, currency: str) -> None:
        super().__init__(clients)
        self.client = clients.almanac
        self.currency = currency

    async def load_one(self, key: AlmanacKey) -> AlmanacBilling:
        return await self.read(
            key,
            lambda: self.client.get_billing_state(key.organization_id, credential=key.credential),
            lambda payload, drift: normalize.almanac_billing(
                payload, currency=self.currency, drift=drift
            ),
            account=key.organization_id,
            credential=key.credential,
        )


class AutopostingBillingByCredentialLoader(ConcurrentLoader[Credential, AutopostingBilling]):
    """Autoposting billing status, with the configured plan catalog applied, per API key."""

    provider = Provider.AUTOPOSTING
    resource = "billing_status"

    def __init__(
        self, clients: Clients, *, catalog: Sequence[Mapping[str, Any]], currency: str
    ) -> None:
        super().__init__(clients)
        self.client = clients.autoposting
        self.catalog = catalog
        self.currency = currency

    async def load_one(self, key: Credential) -> AutopostingBilling:
        def billing(payload: object, drift: DriftRecorder) -> AutopostingBilling:
            status = normalize.autoposting_status(payload, drift=drift)
            plans = normalize.autoposting_plans(self.catalog, status, currency=self.currency)
            return AutopostingBilling(status=status, plans=plans)

        return await self.read(
            key,
            lambda: self.client.get_billing_status(credential=key),
            billing,
            account=None,
            credential=key,
        )


class AutopostingCreditsByCredentialLoader(ConcurrentLoader[Credential, UsageMeter]):
    """The Autoposting credits meter per API key."""

    provider = Provider.AUTOPOSTING
    resource = "credits"
    usage = True

    def __init__(self, clients: Clients) -> None:
        super().__init__(clients)
        self.client = clients.autoposting

    async def load_one(self, key: Credential) -> UsageMeter:
        return await self.read(
            key,
            lambda: self.client.get_credit_summary(credential=key),
            lambda payload, drift: normalize.autoposting_credits_meter(payload, drift=drift),
            account=None,
            credential=key,
        )


class AutopostingTokensByCredentialLoader(ConcurrentLoader[Credential, UsageMeter]):
    """The Autoposting AI-token meter per API key, over the configured period."""

    provider = Provider.AUTOPOSTING
    resource = "tokens"
    usage = True

    def __init__(self, clients: Clients, *, period: str) -> None:
        super().__init__(clients)
        self.client = clients.autoposting
        self.period = period

    async def load_one(self, key: Credential) -> UsageMeter:
        return await self.read(
            key,
            lambda: self.client.get_token_usage(period=self.period, credential=key),
            lambda payload, drift: normalize.autoposting_tokens_meter(payload, drift=drift),
            account=self.period,  # the meter of this period
            credential=key,
        )


class AutopostingProfileByCredentialLoader(ConcurrentLoader[Credential, AutopostingProfile]):
    """The organization behind each Autoposting API key."""

    provider = Provider.AUTOPOSTING
    resource = "profile"

    def __init__(self, clients: Clients) -> None:
        super().__init__(clients)
        self.client = clients.autoposting

    async def load_one(self, key: Credential) -> AutopostingProfile:
        return await self.read(
            key,
            lambda: self.client.get_profile(credential=key),
            lambda payload, drift: normalize.autoposting_profile(payload, drift=drift),
            account=None,
            credential=key,
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
            self._clients, currency=self._settings.almanac.currency
        )

    @cached_property
    def autoposting_billing(self) -> AutopostingBillingByCredentialLoader:
        return AutopostingBillingByCredentialLoader(
            self._clients,
            catalog=self._settings.autoposting_plans,
            currency=self._settings.autoposting.currency,
        )

    @cached_property
    def autoposting_credits(self) -> AutopostingCreditsByCredentialLoader:
        return AutopostingCreditsByCredentialLoader(self._clients)

    @cached_property
    def autoposting_tokens(self) -> AutopostingTokensByCredentialLoader:
        return AutopostingTokensByCredentialLoader(
            self._clients, period=self._settings.autoposting_tokens_period
        )

    @cached_property
    def autoposting_profiles(self) -> AutopostingProfileByCredentialLoader:
        return AutopostingProfileByCredentialLoader(self._clients)

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
