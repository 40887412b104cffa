"""Log formatting: one JSON object per line (`GATEWAY_LOG_FORMAT=json`) or plain text.

Every line carries the id of the request being served, if any. An access line's fields (see
`telemetry.observability`) are top-level keys of its JSON object, or `key=value` pairs in text.
Nothing here adds request headers or bodies: no credential reaches a log line through this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.telemetry.request_id import REQUEST_ID

LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
HANDLER_NAME = "gateway"


class JSONFormatter(logging.Formatter):
    """A log record as one line of JSON: time, level, logger, message, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format of `TEXT_FORMAT`, with the request id and an access line's fields."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib's name
        text = super().formatMessage(record)
        fields = dict(_fields(record))
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields.setdefault("request_id", request_id)
        extra = " ".join(f"{key}={_text(value)}" for key, value in fields.items() if value != [])
        return f"{text} {extra}" if extra else text


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "access", None)
    return fields if isinstance(fields, Mapping) else {}


def _text(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def configure_logging(log_format: str, level: str = "INFO") -> None:
    """Send every log record to stderr in `log_format` ("json" or "text") at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:  # configured before, in this process
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; the gateway's own upstream log says what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
