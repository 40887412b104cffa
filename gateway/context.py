"""The context of one GraphQL request: settings, shared clients, this request's loaders and
credentials."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import strawberry

from gateway.checkout.idempotency import IdempotencyStore, digest
from gateway.clients import Clients
from gateway.credentials import Credential, MalformedCredential
from gateway.errors import InvalidInput, MissingCredentials
from gateway.keys import FULL_SCOPE, GatewayKey, KeyScope, Permission
from gateway.loaders import Loaders
from gateway.provider import Provider
from gateway.settings import Settings
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
    # The gateway key the guard accepted (None: none is configured) and what it may do.
    gateway_key: GatewayKey | None = None
    scope: KeyScope = FULL_SCOPE
    # Accounts asked for so far, every one counted (the same account twice is two).
    accounts_asked: int = 0

    def credential(self, provider: Provider) -> Credential:
        """The request's own credential for `provider`, else the configured service credential."""
        header = CREDENTIAL_HEADERS[provider]
        raw = self.request_credentials.get(provider)
        if raw is not None:
            try:
                return Credential(raw)
            except MalformedCredential:
                raise MissingCredentials(
                    f"The {header} header is empty or malformed: it must be a token of visible "
                    "ASCII characters.",
                    provider=provider,
                ) from None
        configured = self.settings.upstream(provider).credential
        if configured is None:
            raise MissingCredentials(
                f"No {provider.label} credential: send the {header} header.", provider=provider
            )
        return configured

    def permit(self, permission: Permission, provider: Provider) -> None:
        """Raise `OutOfScope` unless the caller's gateway key holds `permission`."""
        self.scope.require(permission, provider)

    def account(
        self,
        provider: Provider,
        account_id: str | None,
        permission: Permission = Permission.BILLING_READ,
    ) -> AccountRef:
        """A checked reference to an account for `permission`, within the gateway key's scope
        (else `OutOfScope`) and counted against the per-request account limit.

        The limit is checked before execution (gateway/schema/limits.py), every entry counted,
        duplicates included; this count, made the same way, is the backstop."""
        account_id = check_account_id(provider, account_id)
        self.scope.check(provider, account_id, permission)
        if self.accounts_asked >= self.settings.max_accounts_per_request:
            raise InvalidInput(
                f"A request may ask for at most {self.settings.max_accounts_per_request} accounts.",
                field="accountId",
            )
        self.accounts_asked += 1
        return AccountRef(provider, account_id, self.credential(provider))


def build_context(
    settings: Settings,
    clients: Clients,
    headers: Mapping[str, str],
    *,
    idempotency: IdempotencyStore,
    gateway_key: GatewayKey | None = None,
    scope: KeyScope | None = None,
) -> Context:
    """A fresh context for one request, with loaders that live only as long as it.

    `clients` and `idempotency` are the app's own, shared by all its requests. `scope` is what
    the caller may do: by default `gateway_key`'s, or everything when no key is given.
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
        gateway_key=gateway_key,
        scope=scope
        if scope is not None
        else (gateway_key.scope if gateway_key is not None else FULL_SCOPE),
    )


def caller_digest(authorization: str | None) -> str | None:
    """A digest of the bearer token of an `Authorization` header: who the caller is, not the key."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else authorization.strip()
    return digest(token) if token else None


Info = strawberry.Info[Context, None]
