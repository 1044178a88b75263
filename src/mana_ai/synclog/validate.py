"""Checks on incoming sync rows before they reach a snapshot.

Rows come from user devices and may be malformed. A row with a known field of the wrong type, an unknown
op, an unparseable timestamp or an oversized string is rejected as a whole (the caller logs one warning
naming the row and moves on), so a snapshot never holds values the runner cannot use and one bad row never
blocks the others. Unknown fields are kept: newer web apps may add some.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mana_ai.timefmt import is_js_iso, normalize_iso

MAX_STRING = 200_000
MAX_ROW_BYTES_HINT = 5_000_000

Check = Callable[[Any], str | None]


def _string(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_STRING:
        return f"is longer than {MAX_STRING} characters"
    return None


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _enum(*allowed: str) -> Check:
    return lambda value: None if value in allowed else f"must be one of {', '.join(allowed)}"


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be an ISO timestamp string"
    if is_js_iso(value):
        return None
    try:
        normalize_iso(value)
    except ValueError:
        return "is not a valid timestamp"
    return None


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
    "title": _optional(_string),
    "objective": _optional(_string),
    "conceptMarkdown": _optional(_string),
    "state": _enum("active", "paused", "done", "archived"),
    "nextRunAt": _optional(_timestamp),
    "inputs": _optional(_array),
    "iterations": _optional(_array),
    "cadence": _optional(_object),
    "agentId": _optional(_string),
    "grant": _optional(_object),
    "deletedAt": _optional(_timestamp),
    "createdAt": _optional(_timestamp),
    "updatedAt": _optional(_timestamp),
}

AGENT_FIELDS: dict[str, Check] = {
    "name": _optional(_string),
    "role": _optional(_string),
    "avatar": _optional(_string),
    "systemPrompt": _optional(_string),
    "memory": _optional(_string),
    "policy": _optional(_object),
    "state": _enum("active", "paused", "archived"),
    "maxConcurrentMissions": _optional(_positive_int),
    "maxTokensPerDay": _optional(_number),
    "scopeTagIds": _optional(_string_list),
    "deletedAt": _optional(_timestamp),
    "createdAt": _optional(_timestamp),
    "updatedAt": _optional(_timestamp),
}

FIELDS_BY_TABLE: dict[str, dict[str, Check]] = {"aiMissions": MISSION_FIELDS, "agents": AGENT_FIELDS}
TIMESTAMP_FIELDS = frozenset({"nextRunAt"})


def check_row(table: str, op: Any, data: Any, field_meta: Any) -> str | None:
    """Why a row must be skipped, or ``None`` when it is usable."""
    if op not in ("insert", "update", "delete"):
        return f"unknown op {str(op)[:20]!r}"
    if op == "delete":
        return None
    if data is not None and not isinstance(data, Mapping):
        return "data is not a JSON object"
    if field_meta is not None and not isinstance(field_meta, Mapping):
        return "field_meta is not a JSON object"
    for key, stamp in (field_meta or {}).items():
        if _timestamp(stamp) is not None:
            return f"field_meta[{str(key)[:40]!r}] is not a valid timestamp"
    checks = FIELDS_BY_TABLE.get(table, {})
    for key, value in (data or {}).items():
        check = checks.get(key)
        problem = check(value) if check else (_string(value) if isinstance(value, str) else None)
        if problem:
            return f"field {str(key)[:40]!r} {problem}"
    return None


def clean_data(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Normalise the timestamp fields the runner compares as strings (``nextRunAt``) to JS-ISO form."""
    if not data or not any(k in data for k in TIMESTAMP_FIELDS):
        return data
    cleaned = dict(data)
    for key in TIMESTAMP_FIELDS:
        value = cleaned.get(key)
        if isinstance(value, str):
            cleaned[key] = normalize_iso(value)
    return cleaned


def clean_field_meta(field_meta: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """Field timestamps in JS-ISO form, so ``"…00Z"`` and ``"…00.000Z"`` compare as equal instants."""
    if not field_meta:
        return field_meta
    if all(isinstance(v, str) and is_js_iso(v) for v in field_meta.values()):
        return field_meta
    return {k: normalize_iso(v) if isinstance(v, str) else v for k, v in field_meta.items()}
