"""The context of one GraphQL request: settings, shared clients, this request's loaders and
credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import strawberry

from gateway.checkout.idempotency import IdempotencyStore, digest
from gateway.clients import Clients
from gateway.errors import InvalidInput, MissingCredentials
from gateway.loaders import Loaders
from gateway.provider import Provider
from gateway.settings import ConfigurationError, Credential, Settings
from gateway.sources import AccountRef
from gateway.validation import check_account_id

# Request headers that carry a caller's own credential, forwarded to that provider only.
CREDENTIAL_HEADERS: Mapping[Provider, str] = {
    Provider.ALMANAC: "x-almanac-token",
    Provider.AUTOPOSTING: "x-autoposting-api-key",
}


@dataclass
class Context:
    """Everything a resolver may reach; built per request by `build_context`."""

    settings: Settings
    clients: Clients
    loaders: Loaders
    request_credentials: Mapping[Provider, str]
    # Shared by every request of the app: checkout idempotency keys outlive a request.
    idempotency: IdempotencyStore
    # A digest of the caller's gateway key (`Authorization: Bearer ...`), if one was presented.
    caller: str | None = None
    accounts_seen: set[tuple[Provider, str | None]] = field(default_factory=set)

    def credential(self, provider: Provider) -> Credential:
        """The request's own credential for `provider`, else the configured service credential."""
        header = CREDENTIAL_HEADERS[provider]
        raw = self.request_credentials.get(provider)
        if raw is not None:
            try:
                return Credential(raw)
            except ConfigurationError:
                raise MissingCredentials(
                    f"The {header} header is empty or malformed.", provider=provider
                ) from None
        configured = self.settings.upstream(provider).credential
        if configured is None:
            raise MissingCredentials(
                f"No {provider.label} credential: send the {header} header.", provider=provider
            )
        return configured

    def account(self, provider: Provider, account_id: str | None) -> AccountRef:
        """A checked reference to an account, counted against the per-request account limit."""
        account_id = check_account_id(provider, account_id)
        key = (provider, account_id)
        if key not in self.accounts_seen:
            if len(self.accounts_seen) >= self.settings.max_accounts_per_request:
                raise InvalidInput(
                    f"A request may ask for at most {self.settings.max_accounts_per_request} "
                    "accounts.",
                    field="accountId",
                )
            self.accounts_seen.add(key)
        return AccountRef(provider, account_id, self.credential(provider))


def build_context(
    settings: Settings,
    clients: Clients,
    headers: Mapping[str, str],
    *,
    idempotency: IdempotencyStore,
) -> Context:
    """A fresh context for one request, with loaders that live only as long as it.

    `clients` and `idempotency` are the app's own, shared by all its requests.
    """
    return Context(
        settings=settings,
        clients=clients,
        loaders=Loaders(clients, settings),
        request_credentials={
            provider: headers[name]
            for provider, name in CREDENTIAL_HEADERS.items()
            if name in headers
        },
        idempotency=idempotency,
        caller=caller_digest(headers.get("authorization")),
    )


def caller_digest(authorization: str | None) -> str | None:
    """A digest of the bearer token of an `Authorization` header: who the caller is, not the key."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else authorization.strip()
    return digest(token) if token else None


Info = strawberry.Info[Context, None]
