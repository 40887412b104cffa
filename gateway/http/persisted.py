"""Persisted operations: Apollo's automatic persisted queries and an optional allow-list.

A request names its document by hash in `extensions.persistedQuery`
(`{"version": 1, "sha256Hash": "<hex sha256 of the document>"}`)::

    hash only, known             the document is run
    hash only, unknown           200 PERSISTED_QUERY_NOT_FOUND (the client resends with the query)
    query + hash                 the hash is checked (400 INVALID_QUERY if wrong), the document
                                 kept (a bounded LRU, per process) and run
    query only                   run as it is

With `persisted_only` (production), only documents of the manifest run: by hash, or as a full
query whose hash is in the manifest; anything else is refused with 400 PERSISTED_QUERY_REQUIRED,
and nothing a client sends is kept.

The manifest is a JSON file in one of two formats:

- `{"<sha256>": "<document>", ...}`: GraphQL Code Generator's `persisted-documents.json`
  (client preset with `persistedDocuments: {hashAlgorithm: "sha256"}`) or Relay's
  `persisted_queries.json` (relay-compiler's local persisting, with SHA256 ids);
- Apollo's persisted query manifest
  (`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body",
  ...}]}`), as `@apollo/generate-persisted-query-manifest` writes it.

Every id must be the sha256 of its document: a manifest hashed otherwise (md5, sha1) is refused
when the gateway starts.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.errors import ErrorCode

DEFAULT_APQ_CACHE_SIZE = 1000
APOLLO_MANIFEST_FORMAT = "apollo-persisted-query-manifest"


class PersistedQueryError(Exception):
    """A request the persisted-operation rules refuse, with its HTTP status and error code."""

    def __init__(self, status: int, message: str, code: ErrorCode) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class ManifestError(ValueError):
    """The persisted operations manifest is not one of the accepted formats."""


def sha256_hex(document: str) -> str:
    """The hash persisted queries name a document by: lowercase hex sha256 of its UTF-8."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def read_manifest(path: Path) -> Mapping[str, str]:
    """The `{sha256: document}` of a manifest file in either format of the module docstring."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not JSON: {exc}") from exc
    return parse_manifest(raw)


def parse_manifest(raw: object) -> Mapping[str, str]:
    """`{sha256: document}` from a decoded manifest; every id is checked against its document."""
    if not isinstance(raw, dict):
        raise ManifestError("expected a JSON object")
    pairs: list[tuple[object, object]]
    if raw.get("format") == APOLLO_MANIFEST_FORMAT:
        operations = raw.get("operations")
        if raw.get("version") != 1 or not isinstance(operations, list):
            raise ManifestError("an Apollo manifest needs version 1 and a list of operations")
        pairs = [
            (op.get("id"), op.get("body")) if isinstance(op, dict) else (None, None)
            for op in operations
        ]
    else:
        pairs = list(raw.items())
    documents: dict[str, str] = {}
    for key, document in pairs:
        if not isinstance(key, str) or not isinstance(document, str):
            raise ManifestError("every operation needs a string id and a string document")
        if sha256_hex(document) != key.lower():
            raise ManifestError(f"the id {key!r} is not the sha256 of its document")
        documents[key.lower()] = document
    return MappingProxyType(documents)


class PersistedOperations:
    """The rules of the module docstring, for one process: the allow-list and the APQ cache."""

    def __init__(
        self,
        manifest: Mapping[str, str],
        *,
        persisted_only: bool = False,
        cache_size: int = DEFAULT_APQ_CACHE_SIZE,
    ) -> None:
        self.manifest = manifest
        self.persisted_only = persisted_only
        self.cache_size = cache_size
        self._cache: OrderedDict[str, str] = OrderedDict()

    def document(self, query: str | None, extensions: Mapping[str, Any] | None) -> str | None:
        """The document to run for a request's `query` and `extensions`; None: no query at all.

        Raises `PersistedQueryError` for a request these rules refuse.
        """
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if query is not None and self.persisted_only and sha256_hex(query) not in self.manifest:
                raise _required()
            return query
        digest = _requested_hash(persisted)
        if query is None:
            return self._lookup(digest)
        if sha256_hex(query) != digest:
            raise PersistedQueryError(
                400,
                "extensions.persistedQuery.sha256Hash is not the sha256 of the query: hash the "
                "query's exact text (UTF-8, hex digest).",
                ErrorCode.INVALID_QUERY,
            )
        if self.persisted_only:
            if digest not in self.manifest:
                raise _required()
        elif digest not in self.manifest:
            self._store(digest, query)
        return query

    def _lookup(self, digest: str) -> str:
        document = self.manifest.get(digest)
        if document is not None:
            return document
        document = self._cache.get(digest)
        if document is None:
            # Apollo clients resend the operation with its query on this message and code, and
            # turn persisted queries off on a 400: hence a 200.
            raise PersistedQueryError(
                200, "PersistedQueryNotFound", ErrorCode.PERSISTED_QUERY_NOT_FOUND
            )
        self._cache.move_to_end(digest)
        return document

    def _store(self, digest: str, document: str) -> None:
        self._cache[digest] = document
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        """How many documents clients registered (the manifest's not counted)."""
        return len(self._cache)


def _requested_hash(persisted: object) -> str:
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise PersistedQueryError(
            400,
            "extensions.persistedQuery must be {version: 1, sha256Hash: <hex sha256>}: only "
            "version 1 is supported.",
            ErrorCode.INVALID_QUERY,
        )
    digest = persisted.get("sha256Hash")
    if not (
        isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest.lower())
    ):
        raise PersistedQueryError(
            400,
            "extensions.persistedQuery.sha256Hash must be a hex sha256 (64 characters).",
            ErrorCode.INVALID_QUERY,
        )
    return digest.lower()


def _required() -> PersistedQueryError:
    return PersistedQueryError(
        400,
        "This gateway runs persisted operations only: send the operation's sha256Hash in "
        "extensions.persistedQuery, for an operation of the gateway's manifest.",
        ErrorCode.PERSISTED_QUERY_REQUIRED,
    )
