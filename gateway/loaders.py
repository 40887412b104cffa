"""Per-request dataloaders, and the account sources that read through them.

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
import enum
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from aiodataloader import DataLoader

if TYPE_CHECKING:
    import httpx

from gateway import normalize
from gateway.models import (
    AlmanacBilling,
    AutopostingBilling,
    AutopostingProfile,
    ManagePermission,
    Plan,
    Subscription,
    UsageMeter,
)
from gateway.provider import Provider
from gateway.settings import Credential, Settings
from gateway.upstreams import AlmanacClient, AutopostingClient
from gateway.upstreams.reuse import CachePolicy, MemoryResponseCache, ResponseCache
from gateway.validation import account_mismatch

K = TypeVar("K")
V = TypeVar("V")

# Normalized answers kept for reuse (`NormalizedAnswers`): a few hundred small models.
DEFAULT_NORMALIZED_ENTRIES = 256


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


class NormalizedAnswers:
    """Normalized models by the identity of the upstream JSON they were made from.

    Coalesced and cached GETs hand one decoded answer to every request that shares them; each
    request normalized it again, which cost more than the rest of its loads. Models are frozen,
    so one normalization serves them all. An entry holds its answer, so the id it is keyed by
    cannot be reused while it is kept; least recently used entries go beyond `max_entries`.
    Each loader keys its own kind: one answer may be normalized differently by two loaders.
    """

    def __init__(self, max_entries: int = DEFAULT_NORMALIZED_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, str], tuple[object, object]] = OrderedDict()

    def get(self, kind: str, payload: object, normalize: Callable[[], V]) -> V:
        """`normalize()` of `payload`, made once while `payload` is kept."""
        key = (id(payload), kind)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is payload:
            self._entries.move_to_end(key)
            return cast(V, entry[1])
        value = normalize()
        self._entries[key] = (payload, value)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


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


class AlmanacAccounts:
    """Almanac: one billing call per organization answers everything."""

    def __init__(self, billing: AlmanacBillingByOrganizationLoader) -> None:
        self.billing = billing

    async def _load(self, ref: AccountRef) -> AlmanacBilling:
        assert ref.account_id is not None
        return await self.billing.get(AlmanacKey(ref.account_id, ref.credential))

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
        return (await self._load(ref)).usage

    async def raw(self, ref: AccountRef) -> Mapping[str, Any]:
        return (await self._load(ref)).raw


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
        accounts = billing.status.accounts_meter
        return (credits,) + ((accounts,) if accounts is not None else ()) + (tokens,)

    async def raw(self, ref: AccountRef) -> Mapping[str, Any]:
        return (await self.billing.get(ref.credential)).status.raw


@dataclass(frozen=True, slots=True)
class Clients:
    """The upstream clients, shared by all requests for the life of the app, and the models
    normalized from the answers they share between requests."""

    almanac: AlmanacClient
    autoposting: AutopostingClient
    normalized: NormalizedAnswers = field(default_factory=lambda: NormalizedAnswers())

    @classmethod
    def create(
        cls,
        settings: Settings,
        transports: Mapping[Provider, httpx.AsyncBaseTransport] | None = None,
        *,
        cache: ResponseCache | None = None,
    ) -> Clients:
        """Clients for both providers; `transports` replaces the network (tests, benchmarks),
        `cache` the in-process cache of upstream answers (a shared one: `RedisResponseCache`).
        Either is used only when the settings cache some answers."""
        transports = transports or {}
        policy = CachePolicy(
            state_seconds=settings.cache_seconds, usage_seconds=settings.cache_usage_seconds
        )
        if cache is None and policy.enabled:
            cache = MemoryResponseCache(max_entries=settings.cache_max_entries)
        common: dict[str, Any] = {
            "max_connections": settings.upstream_max_connections,
            "coalesce": settings.coalesce,
            "cache": cache,
            "cache_policy": policy,
        }
        return cls(
            almanac=AlmanacClient(
                settings.almanac, transport=transports.get(Provider.ALMANAC), **common
            ),
            autoposting=AutopostingClient(
                settings.autoposting, transport=transports.get(Provider.AUTOPOSTING), **common
            ),
        )

    async def aclose(self) -> None:
        """Close both connection pools."""
        await asyncio.gather(self.almanac.aclose(), self.autoposting.aclose())


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


__all__ = ["AccountRef", "AccountSource", "Clients", "Loaders", "Need"]
