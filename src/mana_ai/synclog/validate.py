"""Checks on incoming sync rows before they reach a snapshot.

Rows come from user devices and may be malformed. A row with a known field of the wrong type, an unknown
op, an unparseable timestamp or an oversized string is rejected as a whole (the caller logs one warning
naming the row and moves on), so a snapshot never holds values the runner cannot use and one bad row never
blocks the others. Unknown fields are kept: newer web apps may add some.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import orjson

from mana_ai.timefmt import JS_ISO_SHAPE, is_js_iso, js_iso_shape, normalize_iso, parse_iso

MAX_STRING = 200_000
MAX_ROW_BYTES = 5_000_000
"""A row whose data or field_meta is longer than this as JSON text in UTF-8 bytes is skipped before it is parsed."""
SHORT_ROW_CHARS = MAX_ROW_BYTES // 4
"""JSON text of at most this many characters is at most MAX_ROW_BYTES in UTF-8 (four bytes a character)."""
MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a row may carry. Records are written back and serialised again
(orjson refuses beyond 254 levels, recursive code beyond about 1000), so one deeper row would otherwise
fail every later refresh; the web app's records nest less than ten deep."""

Check = Callable[[Any], str | None]


def _string(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_STRING:
        return f"is longer than {MAX_STRING} characters"
    return None


def _optional(check: Check) -> Check:
    def optional(value: Any) -> str | None:
        return None if value is None else check(value)

    return optional


def _opt_string(value: Any) -> str | None:
    # The most common field kind, checked without the generic wrappers (refresh hot path).
    if value is None or (type(value) is str and len(value) <= MAX_STRING):
        return None
    return _string(value)


def _opt_timestamp(value: Any) -> str | None:
    if value is None or (type(value) is str and _real_js_iso(value)):
        return None
    return _timestamp(value)


_REAL_JS_ISO = re.compile(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z",
    re.ASCII,  # \d is [0-9], as in JavaScript: "٢٠٢٦-…" is no timestamp
)


def _real_js_iso(value: str) -> bool:
    """The exact JS form *and* a real instant: the form alone admits month 13 or February 30th, which the
    runner could not parse when the mission falls due. As cheap as the form check except on days 29-31."""
    if len(value) != 24 or _REAL_JS_ISO.fullmatch(value) is None:
        return False
    if value[8:10] < "29":
        return True
    try:
        parse_iso(value)
    except ValueError:
        return False
    return True


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels deep (iterative: any depth is safe)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _enum(*allowed: str) -> Check:
    return lambda value: None if value in allowed else f"must be one of {', '.join(allowed)}"


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be an ISO timestamp string"
    if is_js_iso(value):
        return None if _real_js_iso(value) else "is not a valid timestamp"
    try:
        normalized = normalize_iso(value)
    except (ValueError, OverflowError):  # overflow: a real date whose UTC instant is outside years 1-9999
        return "is not a valid timestamp"
    # normalize_iso writes the JS form (a year before 1000 padded to four digits, as JavaScript does, so that
    # stamps compare as strings); anything else would sort wrongly and is refused.
    return None if is_js_iso(normalized) else "is not a valid timestamp"


def _array(value: Any) -> str | None:
    return None if isinstance(value, list) else "must be an array"


def _object(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "must be an object"


def _number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    return None if ok else "must be a number"


def _positive_int(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 and value == int(value)
    return None if ok else "must be a non-negative integer"


def _string_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be an array of strings"
    return None


MISSION_FIELDS: dict[str, Check] = {
    "title": _opt_string,
    "objective": _opt_string,
    "conceptMarkdown": _opt_string,
    "state": _enum("active", "paused", "done", "archived"),
    "nextRunAt": _opt_timestamp,
    "inputs": _optional(_array),
    "iterations": _optional(_array),
    "cadence": _optional(_object),
    "agentId": _opt_string,
    "grant": _optional(_object),
    "deletedAt": _opt_timestamp,
    "createdAt": _opt_timestamp,
    "updatedAt": _opt_timestamp,
}

AGENT_FIELDS: dict[str, Check] = {
    "name": _opt_string,
    "role": _opt_string,
    "avatar": _opt_string,
    "systemPrompt": _opt_string,
    "memory": _opt_string,
    "policy": _optional(_object),
    "state": _enum("active", "paused", "archived"),
    "maxConcurrentMissions": _optional(_positive_int),
    "maxTokensPerDay": _optional(_number),
    "scopeTagIds": _optional(_string_list),
    "deletedAt": _opt_timestamp,
    "createdAt": _opt_timestamp,
    "updatedAt": _opt_timestamp,
}

FIELDS_BY_TABLE: dict[str, dict[str, Check]] = {"aiMissions": MISSION_FIELDS, "agents": AGENT_FIELDS}


_STAMPS_SHAPES = [b"|".join([JS_ISO_SHAPE] * n) for n in range(17)]
"""The shape of 0..16 JS-ISO stamps joined by ``|``: one comparison checks a whole field_meta (hot path)."""


def _all_js_iso(stamps: Any) -> bool:
    """Whether every value of ``stamps`` (a field_meta) is a string in the exact JS-ISO form."""
    try:
        joined = "|".join(stamps.values())
    except TypeError:  # a stamp that is not a string
        return False
    # 24 characters each and the separators: a length that differs needs no closer look.
    if stamps and len(joined) != 25 * len(stamps) - 1:
        return False
    if len(stamps) < len(_STAMPS_SHAPES):
        return js_iso_shape(joined) == _STAMPS_SHAPES[len(stamps)]
    return all(is_js_iso(stamp) for stamp in stamps.values())


Prepared = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]
_NO_CHECKS: dict[str, Check] = {}


def shallow_text(text: str) -> bool:
    """Whether JSON ``text`` certainly nests no deeper than :data:`MAX_DEPTH` (it has no more brackets than
    that): two C-speed counts that spare the refresh's hot path the walk of :func:`too_deep`."""
    return text.count("{") + text.count("[") <= MAX_DEPTH


def too_long(text: str) -> bool:
    """Whether JSON ``text`` is longer than :data:`MAX_ROW_BYTES` bytes in UTF-8, as the write-back's reader
    measures it (it gets bytes): counted in bytes only when the characters alone cannot decide."""
    if len(text) <= SHORT_ROW_CHARS:
        return False
    return len(text) > MAX_ROW_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_ROW_BYTES


def prepare_row(table: str, op: Any, data: Any, field_meta: Any, *, shallow: bool = False) -> Prepared | str:
    """Check a row and normalise its timestamps in one pass.

    Args:
        shallow: the caller knows the data nests no deeper than :data:`MAX_DEPTH` (see
            :func:`shallow_text`), so the walk is skipped.

    Returns ``(data, field_meta)`` ready for the merge, or the reason the row must be skipped (also when a
    check trips over a value: one row, never the refresh or a write-back, pays for it).
    """
    try:
        return _prepare_row(table, op, data, field_meta, shallow)
    except Exception as exc:
        return f"check failed: {exc.__class__.__name__}"


def _prepare_row(table: str, op: Any, data: Any, field_meta: Any, shallow: bool) -> Prepared | str:
    if op not in ("insert", "update", "delete"):
        return f"unknown op {str(op)[:20]!r}"
    if op == "delete":
        return data if isinstance(data, Mapping) else None, None
    if data is not None and type(data) is not dict and not isinstance(data, Mapping):
        return "data is not a JSON object"
    if field_meta:
        if type(field_meta) is not dict and not isinstance(field_meta, Mapping):
            return "field_meta is not a JSON object"
        if not _all_js_iso(field_meta):
            for key, stamp in field_meta.items():
                if _timestamp(stamp) is not None:
                    return f"field_meta[{str(key)[:40]!r}] is not a valid timestamp"
            field_meta = {k: normalize_iso(v) for k, v in field_meta.items()}
    elif field_meta is not None and not isinstance(field_meta, Mapping):
        return "field_meta is not a JSON object"
    if data:
        if not shallow and too_deep(data):
            return f"data nests deeper than {MAX_DEPTH} levels"
        checks = FIELDS_BY_TABLE.get(table, _NO_CHECKS)
        for key, value in data.items():
            check = checks.get(key)
            if check is not None:
                problem = check(value)
            elif type(value) is str and len(value) > MAX_STRING:
                problem = _string(value)
            else:
                continue
            if problem:
                return f"field {str(key)[:40]!r} {problem}"
        if "nextRunAt" in data:
            data = clean_data(data)
    return data, field_meta


def check_row(table: str, op: Any, data: Any, field_meta: Any) -> str | None:
    """Why a row must be skipped, or ``None`` when it is usable."""
    prepared = prepare_row(table, op, data, field_meta)
    return prepared if isinstance(prepared, str) else None


def clean_data(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Normalise the timestamp fields the runner compares as strings (``nextRunAt``) to JS-ISO form."""
    if not data or "nextRunAt" not in data:
        return data
    value = data["nextRunAt"]
    if not isinstance(value, str) or is_js_iso(value):
        return data
    cleaned = dict(data)
    cleaned["nextRunAt"] = normalize_iso(value)
    return cleaned


def _plain_length(text: bytes) -> int:
    """Length of the JSON number ``text`` as PostgreSQL prints it: without an exponent."""
    sign, digits, exponent = Decimal(text.decode()).as_tuple()
    assert isinstance(exponent, int)  # orjson writes no NaN or Infinity
    n = len(digits)
    body = n + exponent if exponent >= 0 else (n + 1 if -exponent < n else 2 - exponent)
    return body + sign


def _number_excess(value: Any) -> int:
    """Bytes PostgreSQL prints beyond orjson for the floats in ``value`` (orjson writes ``1e300``, PostgreSQL
    301 digits). Only floats: integers and strings print alike."""
    extra = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
        elif type(node) is float:
            text = orjson.dumps(node)
            if b"e" in text:
                extra += _plain_length(text) - len(text)
    return extra


_GROWTH: Final = 64
"""More than a JSON text can grow when PostgreSQL prints it as ``jsonb`` (``1e300,`` becomes 302 bytes)."""


def fits_printed(value: Mapping[str, Any], limit: int) -> bool:
    """Whether ``value`` stored as ``jsonb`` prints (``data::text``, what :func:`too_long` measures) in at most
    ``limit`` bytes. An upper bound: PostgreSQL puts a space after every ``:`` and ``,`` (counted inside
    strings too) and writes numbers without an exponent."""
    raw = orjson.dumps(value)
    size = len(raw) + raw.count(b":") + raw.count(b",")
    if size * _GROWTH <= limit:
        return True  # the common case: no walk over the value
    return size + _number_excess(value) <= limit
