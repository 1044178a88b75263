"""The web app's records for the workbench's executors: where they live, what they look like, what is encrypted.

Every record an approved step writes must be one the mana web app reads as its own, so the two can share one
database. App ids, tables and field shapes follow SPEC §6.1/§23 where it names them and the public mana
repository (``apps/mana/apps/web/src/lib/modules/*``: ``module.config.ts``, ``types.ts``, the stores) for the
rest. Our choices where the web app does more than a synced record can:

* **calendar** events carry their time on the event as ``startIso`` / ``endIso`` / ``isAllDay`` (what the
  ``calendar`` resolver reads). The web app additionally keeps a ``timeBlocks`` row per event; we write none,
  so ``timeBlockId`` is ``null``.
* **habits** logs (``habits/habitLogs``) carry a ``timestamp`` instead of a TimeBlock (``timeBlockId: null``).
* **tasks**, **habits** and **notes** get ``order: 0`` (the web app appends at the end of its local list).
* **drink** and **mood** entries take today's date and the time of day in ``MANA_AI_DEFAULT_TZ``.

Encrypted fields (:data:`ENCRYPTED_FIELDS`) are SPEC §17.5's registry plus the registry entries of the public
repository for the tables we write (``drinkEntries``, ``moodEntries``, ``meals``); ``habits``, ``habitLogs``
and ``companionGoals`` are plaintext there. Pure: no I/O, times are arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mana_ai.scheduler.cadence import zone
from mana_ai.timefmt import to_js_iso


@dataclass(frozen=True, slots=True)
class Target:
    """A synced table: the sync app it belongs to and its name."""

    app_id: str
    table: str


TASKS: Final = Target("todo", "tasks")
NOTES: Final = Target("notes", "notes")
EVENTS: Final = Target("calendar", "events")
JOURNAL: Final = Target("journal", "journalEntries")
HABITS: Final = Target("habits", "habits")
HABIT_LOGS: Final = Target("habits", "habitLogs")
GOALS: Final = Target("companion", "companionGoals")
DRINKS: Final = Target("drink", "drinkEntries")
MOODS: Final = Target("mood", "moodEntries")
MEALS: Final = Target("food", "meals")

ENCRYPTED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "tasks": ("title", "description", "subtasks", "metadata"),
    "notes": ("title", "content"),
    "events": ("title", "description", "location"),
    "journalEntries": ("title", "content"),
    "drinkEntries": ("name", "note"),
    "moodEntries": ("withWhom", "notes"),
    "meals": ("description", "portionSize", "foods"),
}
"""Fields the web app encrypts with the user's master key, per table (tables not listed are plaintext)."""


def local_now(now: dt.datetime, tz: str) -> dt.datetime:
    """``now`` in the zone ``tz`` (an IANA name; unknown names raise ``InvalidCadence``)."""
    return now.astimezone(zone(tz))


def day_of(now: dt.datetime, tz: str) -> str:
    """``YYYY-MM-DD`` of ``now`` in ``tz``."""
    return local_now(now, tz).date().isoformat()


def clock_of(now: dt.datetime, tz: str) -> str:
    """``HH:MM`` of ``now`` in ``tz``."""
    return local_now(now, tz).strftime("%H:%M")


def _stamps(now: dt.datetime) -> dict[str, str]:
    iso = to_js_iso(now)
    return {"createdAt": iso, "updatedAt": iso}


def _opt(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    return None if value == "" else value


def task_record(record_id: str, params: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """``todo/tasks`` for ``create_task`` (``tasksStore.createTask``)."""
    record: dict[str, Any] = {
        "id": record_id,
        "title": str(params["title"]).strip(),
        "priority": _opt(params, "priority") or "medium",
        "isCompleted": False,
        "dueDate": _opt(params, "dueDate"),
        "scheduledBlockId": None,
        "estimatedDuration": None,
        "order": 0,
        "visibility": "private",
        **_stamps(now),
    }
    if _opt(params, "description") is not None:
        record["description"] = params["description"]
    return record


def event_record(record_id: str, params: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """``calendar/events`` for ``create_event`` (times on the event; see the module docstring)."""
    return {
        "id": record_id,
        "calendarId": None,
        "timeBlockId": None,
        "title": str(params["title"]).strip(),
        "description": _opt(params, "description"),
        "location": _opt(params, "location"),
        "startIso": params["startTime"],
        "endIso": params["endTime"],
        "isAllDay": bool(params.get("isAllDay") or False),
        "color": None,
        "reminders": None,
        "visibility": "private",
        **_stamps(now),
    }


def note_record(record_id: str, params: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """``notes/notes`` for ``create_note``."""
    return {
        "id": record_id,
        "title": _opt(params, "title") or "",
        "content": params["content"],
        "color": None,
        "isPinned": False,
        "isArchived": False,
        **_stamps(now),
    }


def journal_record(record_id: str, params: Mapping[str, Any], now: dt.datetime, tz: str) -> dict[str, Any]:
    """``journal/journalEntries`` for ``create_journal_entry``."""
    content = str(params["content"])
    return {
        "id": record_id,
        "title": _opt(params, "title"),
        "content": content,
        "entryDate": day_of(now, tz),
        "mood": _opt(params, "mood"),
        "tags": [],
        "isPinned": False,
        "isArchived": False,
        "isFavorite": False,
        "wordCount": len(content.split()),
        **_stamps(now),
    }


def habit_record(record_id: str, params: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """``habits/habits`` for ``create_habit``."""
    return {
        "id": record_id,
        "title": str(params["title"]).strip(),
        "icon": params["icon"],
        "color": params["color"],
        "targetPerDay": None,
        "defaultDuration": None,
        "schedule": None,
        "order": 0,
        "isArchived": False,
        **_stamps(now),
    }


def habit_log_record(record_id: str, habit_id: str, note: Any, now: dt.datetime) -> dict[str, Any]:
    """``habits/habitLogs`` for ``log_habit`` (a ``timestamp`` instead of a TimeBlock)."""
    return {
        "id": record_id,
        "habitId": habit_id,
        "timeBlockId": None,
        "timestamp": to_js_iso(now),
        "note": note if note not in ("", None) else None,
        **_stamps(now),
    }


def drink_record(record_id: str, params: Mapping[str, Any], now: dt.datetime, tz: str) -> dict[str, Any]:
    """``drink/drinkEntries`` for ``log_drink`` (``drinkStore.logDrink``: the name defaults to the type)."""
    return {
        "id": record_id,
        "name": _opt(params, "name") or params["drinkType"],
        "drinkType": params["drinkType"],
        "quantityMl": params["quantityMl"],
        "date": day_of(now, tz),
        "time": clock_of(now, tz),
        "note": None,
        "presetId": None,
        **_stamps(now),
    }


def mood_record(record_id: str, params: Mapping[str, Any], now: dt.datetime, tz: str) -> dict[str, Any]:
    """``mood/moodEntries`` for ``log_mood`` (``moodStore.logMood``)."""
    return {
        "id": record_id,
        "date": day_of(now, tz),
        "time": clock_of(now, tz),
        "level": params["level"],
        "emotion": params["emotion"],
        "secondaryEmotions": [],
        "activity": _opt(params, "activity"),
        "withWhom": "",
        "notes": _opt(params, "notes") or "",
        "tags": [],
        **_stamps(now),
    }


def meal_record(record_id: str, params: Mapping[str, Any], now: dt.datetime, tz: str) -> dict[str, Any]:
    """``food/meals`` for ``log_meal`` (``mealMutations.create``)."""
    nutrition = {k: params[k] for k in ("calories", "protein") if params.get(k) is not None}
    return {
        "id": record_id,
        "date": day_of(now, tz),
        "mealType": params["mealType"],
        "inputType": "text",
        "description": str(params["description"]).strip(),
        "portionSize": None,
        "confidence": 0.8 if nutrition else 0,
        "nutrition": nutrition or None,
        "photoMediaId": None,
        "photoUrl": None,
        "photoThumbnailUrl": None,
        "foods": None,
        **_stamps(now),
    }


def with_tag(content: str, tag: str) -> str | None:
    """``content`` with ``#tag`` appended on a new line, or ``None`` when the tag is there already.

    The tag's spaces become underscores and a leading ``#`` is dropped, as ``add_tag_to_note`` describes.
    """
    name = tag.strip().lstrip("#").strip().replace(" ", "_")
    mark = "#" + name
    words = content.replace("\n", " ").split(" ")
    if mark in words:
        return None
    return (content.rstrip("\n") + "\n" + mark) if content.strip() else mark
