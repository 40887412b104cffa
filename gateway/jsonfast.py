"""JSON in and out with orjson, falling back to the standard library where orjson refuses.

orjson is several times faster than `json` at both ends (bench/, BENCHMARKS.md). Where it refuses
what `json` accepts (NaN or Infinity literals, text that is not UTF-8 on input; integers beyond 64
bits on output) the call falls back to `json`. An integer beyond 64 bits is read as a float, as
JavaScript reads it, on either path. Output is compact UTF-8 bytes, not ASCII-escaped: both are
valid JSON.

Input no caller is handed, on either path (`JSONRefusedError`, a ValueError whose message is safe
to show): a number beyond a double's range (an integer of 5,000 digits, `1e400`), a string holding
a lone surrogate (`"\\ud800"`: it cannot be encoded back to UTF-8), arrays and objects nested too
deeply for the standard library's recursive parser and, with `max_depth`, nested deeper than
that. None of these checks recurses.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate

import orjson

# orjson reads integers of the signed or unsigned 64-bit range exactly, and any other as a float.
_EXACT_INTEGERS = range(-(2**63), 2**64)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_SOURCE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
# For the depth check: a JSON string (valid JSON: escapes are a backslash and one more character),
# runs of one bracket, and the tables that keep brackets only, objects' written as arrays'.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_RUNS = re.compile(rb"\[+|\]+")
_OPEN = ord("[")
_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_PEELED_LEVELS = 8


class JSONRefusedError(ValueError):
    """JSON that parses, but that no caller is handed; the message says why, never what."""


def loads(data: str | bytes | bytearray | memoryview, *, max_depth: int | None = None) -> object:
    """The decoded JSON of `data`; a ValueError (JSONDecodeError) when it is not JSON, a
    `JSONRefusedError` when it is refused (see the module docstring)."""
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = _standard_loads(data)
        except RecursionError:
            raise JSONRefusedError(_too_deep(max_depth)) from None
    if max_depth is not None and _nested_deeper(data, max_depth):
        raise JSONRefusedError(_too_deep(max_depth))
    return value


def dumps(value: object) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _standard_loads(data: str | bytes | bytearray) -> object:
    """What orjson refused, decoded by `json` under orjson's rules for numbers and strings.

    orjson itself refuses lone surrogates, numbers beyond a double and nesting beyond 1024 levels;
    `json` accepts the first two, and raises RecursionError on the third."""
    value = json.loads(data, parse_int=_integer, parse_float=_number)
    # Only a surrogate escape, or a surrogate encoded as such (which `json` reads), makes one.
    if _SURROGATE_SOURCE.search(_utf8(data)) and _holds_lone_surrogate(value):
        raise JSONRefusedError("a string holds a lone surrogate (an unpaired \\ud800-\\udfff)")
    return value


def _too_deep(max_depth: int | None) -> str:
    limit = "too deeply" if max_depth is None else f"more than {max_depth} levels deep"
    return f"arrays and objects are nested {limit}"


def _integer(text: str) -> int | float:
    # A number of many digits is never converted to an int: that costs time quadratic in its
    # length (CPython refuses beyond 4,300 digits with a bare ValueError).
    if len(text) <= 21:
        value = int(text)
        if value in _EXACT_INTEGERS:
            return value
    return _number(text)


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JSONRefusedError("a number is beyond the range of a double")
    return value


def _holds_lone_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return True
        elif isinstance(node, dict):
            pending.extend(node)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def _nested_deeper(data: str | bytes | bytearray, max_depth: int) -> bool:
    """Whether the JSON text `data` (known to be valid) nests arrays and objects deeper than
    `max_depth`: read from the text, at the speed of bytes operations, not from the decoded value.
    """
    text = _utf8(data)
    if text.count(b"[") + text.count(b"{") <= max_depth:
        return False  # each level opens a bracket: most requests stop here
    # Brackets only (none inside strings), objects' as arrays': a forest whose height is the depth.
    brackets = _STRING.sub(b"", text).translate(_AS_ARRAYS, _NOT_BRACKETS)
    # Each pass removes every leaf (an adjacent "[]"): the height drops by one. Broad shapes
    # collapse in a few passes; what remains is read run by run.
    peeled = 0
    while brackets and peeled < _PEELED_LEVELS:
        brackets = brackets.replace(b"[]", b"")
        peeled += 1
    if not brackets:
        return peeled > max_depth
    runs = (len(run) if run[0] == _OPEN else -len(run) for run in _RUNS.findall(brackets))
    return max(accumulate(runs)) > max_depth - peeled


def _utf8(data: str | bytes | bytearray) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    encoding = json.detect_encoding(data)  # the standard library reads UTF-16 and -32 too
    if encoding.startswith("utf-8"):
        return bytes(data)
    return data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
