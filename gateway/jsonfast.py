"""JSON in and out with orjson, falling back to the standard library where orjson refuses.

orjson is several times faster than `json` at both ends (bench/, BENCHMARKS.md). Where it refuses
what `json` accepts (NaN or Infinity literals, text that is not UTF-8 on input; integers beyond 64
bits on output) the call falls back to `json`, so nothing that parsed before is refused now. One
difference stays: an integer beyond 64 bits is read as a float, as JavaScript reads it. Output is
compact UTF-8 bytes, not ASCII-escaped: both are valid JSON.
"""

from __future__ import annotations

import json

import orjson


def loads(data: str | bytes | bytearray | memoryview) -> object:
    """The decoded JSON of `data`; a ValueError (JSONDecodeError) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        if isinstance(data, memoryview):
            data = bytes(data)
        return json.loads(data)


def dumps(value: object) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
