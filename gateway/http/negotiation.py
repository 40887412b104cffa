"""Content negotiation (the GraphQL-over-HTTP spec): which JSON media type a caller gets.

A client whose Accept prefers `application/graphql-response+json` gets its responses, refusals
included, in that media type, and the status codes that media type calls for; any other client
gets `application/json`.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Send

JSON_MEDIA_TYPE = "application/json"
GRAPHQL_RESPONSE_MEDIA_TYPE = "application/graphql-response+json"


def preferred_media_type(accept: str | None) -> str | None:
    """The response media type for an `Accept` header value; None: neither JSON type is acceptable.

    `application/graphql-response+json` when the client prefers it (by quality, then by naming it
    exactly); otherwise `application/json`, which is also the answer to no Accept header, to
    `*/*` and to `application/*` (the spec's rule while clients move to the new type).
    """
    if not accept or not accept.strip():
        return JSON_MEDIA_TYPE
    ranks = {GRAPHQL_RESPONSE_MEDIA_TYPE: (0.0, -1), JSON_MEDIA_TYPE: (0.0, -1)}
    for item in accept.split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        media_range = media_range.lower()
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        for media_type in ranks:
            specificity = _specificity(media_range, media_type)
            # The most specific range matching a media type sets its quality.
            if specificity > ranks[media_type][1]:
                ranks[media_type] = (quality, specificity)
    new, legacy = ranks[GRAPHQL_RESPONSE_MEDIA_TYPE], ranks[JSON_MEDIA_TYPE]
    if new[0] > 0 and (new[0] > legacy[0] or (new[0] == legacy[0] and new[1] == 2)):
        return GRAPHQL_RESPONSE_MEDIA_TYPE
    if legacy[0] > 0:
        return JSON_MEDIA_TYPE
    return None


def _specificity(media_range: str, media_type: str) -> int:
    """2 for the exact type, 1 for `type/*`, 0 for `*/*`, -1 for no match."""
    if media_range == media_type:
        return 2
    if media_range == media_type.partition("/")[0] + "/*":
        return 1
    return 0 if media_range == "*/*" else -1


def negotiated(send: Send, media_type: str | None) -> Send:
    """A `send` labelling JSON responses with the negotiated media type, varying on Accept."""

    async def negotiated(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            if media_type and headers.get("content-type") == JSON_MEDIA_TYPE:
                headers["content-type"] = media_type
            # The body's media type, and GraphiQL's page versus JSON, depend on Accept.
            headers.add_vary_header("Accept")
        await send(message)

    return negotiated
