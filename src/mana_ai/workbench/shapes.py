"""The web app's records for the workbench's executors: where they live, what they look like, what is encrypted.

Every record an approved step writes must be one the mana web app reads as its own, so the two can share one
database. App ids, tables and field shapes follow SPEC §6.1/§23 where it names them and the public mana
repository (``apps/mana/apps/web/src/lib/modules/*``: ``module.config.ts``, ``types.ts``, the stores) for the
rest. What the app's stores and its Dexie ``creating`` hook add, verified by running its scope filters under
Bun on records we wrote (``docs/next-to-mana.md``):

* **tenancy** on every record (:func:`tenancy`): ``spaceId``, ``authorId`` (the user) and ``visibility``
  (``'space'``, ``packages/shared-privacy/src/defaults.ts``). The app keeps a record only when its ``spaceId``
  is in scope (``WEB/data/scope/scoped-db.ts``) and a ``private`` one only for its author
  (``scope/visibility.ts``). The real personal-space id lives in mana-auth (an organisation id), out of our
  reach; the app itself stamps the personal sentinel ``_personal:<userId>`` until it knows it, keeps that
  sentinel in scope in every space (``getInScopeSpaceIds``), and rewrites it to the real id on each device
  (``reconcileSentinels``). We write the same sentinel.
* **calendar** events keep their time on a ``timeblocks/timeBlocks`` row (``eventsStore.createEvent`` →
  ``createBlock``; the calendar view reads blocks and joins events, ``modules/calendar/queries.ts``) and go
  into the default calendar (``isDefault``, else the first; without one the app's tool fails with
  ``Kein Kalender vorhanden``, and so do we).
* **habits** logs get a ``logged`` timeBlock of type ``habit`` (``habitsStore.logHabit``).
* **food** ``log_meal`` writes the full ``nutrition`` object the app's tool builds (missing values 0) when
  calories or protein are given.
* **tasks**, **habits** and **notes** get ``order: 0`` (the web app appends at the end of its local list).
* **drink** and **mood** entries take today's date and the time of day in the user's zone.

Encrypted fields (:data:`ENCRYPTED_FIELDS`) are SPEC §17.5's registry plus the registry entries of the public
repository for the tables we write (``drinkEntries``, ``moodEntries``, ``meals``); ``habits``, ``habitLogs``
and ``companionGoals`` are plaintext there. Pure: no I/O, times are arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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
CALENDARS: Final = Target("calendar", "calendars")
TIME_BLOCKS: Final = Target("timeblocks", "timeBlocks")
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
    "timeBlocks": ("title", "description"),
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
        "visibility": "space",
        **_stamps(now),
    }
    if _opt(params, "description") is not None:
        record["description"] = params["description"]
    return record


def personal_space(user_id: str) -> str:
    """The app's personal-space sentinel for ``user_id`` (``WEB/data/scope/bootstrap.ts``)."""
    return "_personal:" + user_id


def tenancy(record: Mapping[str, Any], user_id: str) -> dict[str, Any]:
    """``record`` with the fields the app's ``creating`` hook stamps where the store left them unset."""
    out = dict(record)
    if out.get("spaceId") is None:
        out["spaceId"] = personal_space(user_id)
    if out.get("authorId") is None:
        out["authorId"] = user_id
    if out.get("visibility") is None:
        out["visibility"] = "space"
    return out


def default_calendar(calendars: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The calendar the app's ``create_event`` tool picks: the live default, else the first live one."""
    live = [c for c in calendars if not c.get("deletedAt")]
    return next((c for c in live if c.get("isDefault")), live[0] if live else None)


def time_block_record(
    record_id: str,
    *,
    start: str,
    end: str | None,
    all_day: bool,
    kind: str,
    block_type: str,
    source_module: str,
    source_id: str,
    title: str,
    description: Any = None,
    color: Any = None,
    icon: Any = None,
    now: dt.datetime,
) -> dict[str, Any]:
    """``timeblocks/timeBlocks`` as ``createBlock`` (``WEB/data/time-blocks/service.ts``) writes it."""
    return {
        "id": record_id,
        "startDate": start,
        "endDate": end,
        "allDay": all_day,
        "isLive": False,
        "timezone": None,
        "recurrenceRule": None,
        "kind": kind,
        "type": block_type,
        "sourceModule": source_module,
        "sourceId": source_id,
        "linkedBlockId": None,
        "title": title,
        "description": description,
        "color": color,
        "icon": icon,
        "projectId": None,
        "createdAt": to_js_iso(now),
    }


def event_record(
    record_id: str, params: Mapping[str, Any], now: dt.datetime, *, calendar_id: str, time_block_id: str
) -> dict[str, Any]:
    """``calendar/events`` for ``create_event`` (``eventsStore.createEvent``: the time is on the block)."""
    return {
        "id": record_id,
        "calendarId": calendar_id,
        "timeBlockId": time_block_id,
        "title": str(params["title"]).strip(),
        "description": _opt(params, "description"),
        "location": _opt(params, "location"),
        "color": None,
        "reminders": None,
        "visibility": "space",
        "createdAt": to_js_iso(now),
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


def habit_log_record(record_id: str, habit_id: str, note: Any, time_block_id: str) -> dict[str, Any]:
    """``habits/habitLogs`` for ``log_habit`` (``habitsStore.logHabit``: the time is on the block)."""
    return {
        "id": record_id,
        "habitId": habit_id,
        "timeBlockId": time_block_id,
        "note": note if note not in ("", None) else None,
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
    nutrition: dict[str, Any] | None = None
    if params.get("calories") or params.get("protein"):  # the app's tool: truthy calories or protein
        nutrition = {"calories": 0, "protein": 0, "carbohydrates": 0, "fat": 0, "fiber": 0, "sugar": 0}
        nutrition.update({k: params[k] for k in ("calories", "protein") if params.get(k) is not None})
    return {
        "id": record_id,
        "date": day_of(now, tz),
        "mealType": params["mealType"],
        "inputType": "text",
        "description": str(params["description"]).strip(),
        "portionSize": None,
        "confidence": 0.8 if nutrition else 0,
        "nutrition": nutrition,
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
