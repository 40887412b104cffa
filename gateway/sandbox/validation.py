"""Strict request-body validation with FastAPI's 422 error shape, as Almanac answers it."""

from __future__ import annotations

import json
from typing import Any

# field name -> may it be null
FieldSpec = dict[str, bool]


def validate_body(content: bytes, fields: FieldSpec, required: tuple[str, ...]) -> list[Any]:
    """The FastAPI/pydantic v2 error list for a JSON body (empty when valid).

    Bodies are models with `extra="forbid"` and string fields, errors in pydantic's order: declared
    fields first, then unknown ones.
    """
    if not content.strip():
        return [_error("missing", ["body"], "Field required", None)]
    try:
        body = json.loads(content)
    except ValueError as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        error = _error("json_invalid", ["body", pos], "JSON decode error", {})
        return [error | {"ctx": {"error": msg}}]
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return [_error("model_attributes_type", ["body"], msg, body)]
    errors: list[Any] = []
    for name, nullable in fields.items():
        if name not in body:
            if name in required:
                errors.append(_error("missing", ["body", name], "Field required", body))
            continue
        value = body[name]
        if not isinstance(value, str) and not (nullable and value is None):
            msg = "Input should be a valid string"
            errors.append(_error("string_type", ["body", name], msg, value))
    errors += [
        _error("extra_forbidden", ["body", name], "Extra inputs are not permitted", value)
        for name, value in body.items()
        if name not in fields
    ]
    return errors


def _error(type_: str, loc: list[str | int], msg: str, input_: Any) -> dict[str, Any]:
    return {"type": type_, "loc": loc, "msg": msg, "input": input_}
