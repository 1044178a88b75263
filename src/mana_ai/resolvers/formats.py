"""Prompt text of each resolver family, from the record shapes the web app really syncs (W17).

Pure functions over a decrypted record. Where the original read fields the web app does not write, we read
the web app's fields first and keep the original's as a fallback:

* tasks: ``isCompleted`` (boolean) gives ``[erledigt]`` / ``[offen]``; a string ``status`` is the fallback;
* calendar events: ``startDate`` of the event's timeBlock (the web app keeps an event's time there; the
  resolver adds it to the record), fallback ``startIso``;
* goals: ``target.period`` (fallback a top-level ``period``), ``target.value``, ``currentValue``.

Text longer than a family's limit is cut to the limit plus ``…``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mana_ai.crypto.aead import js_json_stringify
from mana_ai.errors import CryptoError

NO_TITLE: Final = "(ohne Titel)"
PROFILE_KEYS: Final = ("about", "interests", "routine", "nutrition", "goals", "social", "freeform")


def truncate(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters plus ``…`` when longer."""
    return text if len(text) <= limit else text[:limit] + "…"


def _json(value: Any) -> str:
    try:
        return js_json_stringify(value)
    except CryptoError:
        return str(value)


def _text_or_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _json(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def note_content(record: Mapping[str, Any]) -> str:
    """Notes: the content (JSON for structured content), max 500."""
    return truncate(_text_or_json(record.get("content")), 500)


def task_content(record: Mapping[str, Any]) -> str:
    """Tasks: ``[offen|erledigt] <title> — <description> (faellig: <dueDate>)``, max 500."""
    done = record.get("isCompleted")
    status = ("erledigt" if done else "offen") if isinstance(done, bool) else _str(record.get("status"))
    description = _str(record.get("description"))
    due = _str(record.get("dueDate"))
    parts = [
        "[" + status + "]" if status else None,
        _str(record.get("title")) or NO_TITLE,
        "— " + description if description else None,
        "(faellig: " + due + ")" if due else None,
    ]
    return truncate(" ".join(p for p in parts if p), 500)


def event_content(record: Mapping[str, Any]) -> str:
    """Calendar events: ``<title> @ <start> in <location>``, max 500."""
    start = _str(record.get("startDate")) or _str(record.get("startIso"))
    location = _str(record.get("location"))
    parts = [
        _str(record.get("title")) or NO_TITLE,
        "@ " + start if start else None,
        "in " + location if location else None,
    ]
    return truncate(" ".join(p for p in parts if p), 500)


def journal_content(record: Mapping[str, Any]) -> str:
    """Journal entries: the content, max 500."""
    content = record.get("content")
    return truncate(content if isinstance(content, str) else "", 500)


def kontext_content(record: Mapping[str, Any]) -> str:
    """The kontext document: content (JSON for structured content), max 1500."""
    return truncate(_text_or_json(record.get("content")), 1500)


def profile_content(record: Mapping[str, Any]) -> str:
    """The user profile: the known sections, one per line, max 2000."""
    lines: list[str] = []
    for key in PROFILE_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            if value.strip():
                lines.append(value.strip())
        elif isinstance(value, Mapping | list):
            lines.append(_json(value))
    return truncate("\n".join(lines), 2000)


def goal_content(record: Mapping[str, Any]) -> str:
    """Goals: ``Fortschritt: <currentValue> / <target.value> (<target.period>)``."""
    target = record.get("target")
    target = target if isinstance(target, Mapping) else {}
    current = record.get("currentValue")
    value = target.get("value")
    period = _str(target.get("period")) or _str(record.get("period")) or "unbekannt"
    current_text = _number(current) if _is_number(current) else "0"
    value_text = _number(value) if _is_number(value) else "?"
    return "Fortschritt: " + current_text + " / " + value_text + " (" + period + ")"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> str:
    # As JavaScript prints numbers: 3.0 → "3".
    return _json(value)
