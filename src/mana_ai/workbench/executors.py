"""Executors: run an approved step's tool on the user's data, one function per tool, grouped by module.

Each executor gets the :class:`~mana_ai.workbench.context.ExecContext` of the approval and the step's
(validated) arguments, writes the records the tool describes in the web app's shape
(:mod:`~mana_ai.workbench.shapes`), emits exactly the domain events the web app's stores emit (names from
``WEB/data/events/catalog.ts``: ``TaskCreated``, ``TaskCompleted``, ``DrinkLogged``, ``MealLogged`` …) and returns a short message for the step. A failure the
user can act on (a record that does not exist, a field that is encrypted without a key) raises
:class:`~mana_ai.workbench.context.StepFailed`; its message is shown on the step.

Modules covered: todo, calendar, notes, journal, habits, goals, drink, mood, and food's ``log_meal`` (the
``MealLogged`` event feeds the meal goals). Every other tool has no executor: its approval is recorded and
the step waits for the mana app (``execution.state = "pending"``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from mana_ai.crypto.aead import is_encrypted
from mana_ai.timefmt import normalize_iso, to_js_iso
from mana_ai.workbench.context import ExecContext, StepFailed
from mana_ai.workbench.goals import InvalidGoal, goal_from_tool
from mana_ai.workbench.shapes import (
    CALENDARS,
    DRINKS,
    EVENTS,
    GOALS,
    HABIT_LOGS,
    HABITS,
    JOURNAL,
    MEALS,
    MOODS,
    NOTES,
    TASKS,
    TIME_BLOCKS,
    day_of,
    default_calendar,
    drink_record,
    event_record,
    habit_log_record,
    habit_record,
    journal_record,
    meal_record,
    mood_record,
    note_record,
    task_record,
    time_block_record,
    with_tag,
)

Executor = Callable[[ExecContext, Mapping[str, Any]], Awaitable[str]]


def _new_id() -> str:
    return str(uuid.uuid4())


def _plain(value: Any) -> str:
    """A text field for an event payload or a message; ciphertext we cannot read becomes empty."""
    return value if isinstance(value, str) and not is_encrypted(value) else ""


async def _existing(ctx: ExecContext, target: Any, record_id: Any, what: str, *, lock: bool = False) -> Any:
    record = await ctx.get(target, str(record_id), lock=lock)
    if record is None:
        raise StepFailed(what + " " + str(record_id) + " not found")
    return record


# --- todo ----------------------------------------------------------------------------------------------


async def create_task(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = task_record(_new_id(), params, ctx.now)
    await ctx.insert(TASKS, record)
    ctx.emit(
        "TaskCreated",
        TASKS,
        record["id"],
        {
            "taskId": record["id"],
            "title": record["title"],
            "dueDate": record["dueDate"],
            "priority": params.get("priority"),
        },
    )
    return "Task created: " + str(record["title"])


async def _complete(ctx: ExecContext, task: Mapping[str, Any]) -> None:
    due = task.get("dueDate")
    today = day_of(ctx.now, ctx.tz)
    await ctx.update(
        TASKS, str(task["id"]), {"isCompleted": True, "completedAt": ctx.now_iso, "updatedAt": ctx.now_iso}
    )
    ctx.emit(
        "TaskCompleted",
        TASKS,
        str(task["id"]),
        {
            "taskId": task["id"],
            "title": _plain(task.get("title")),
            "projectId": task.get("projectId"),
            "wasOverdue": isinstance(due, str) and due[:10] < today,
        },
    )


async def complete_task(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    task = await _existing(ctx, TASKS, params["taskId"], "task", lock=True)
    if task.get("isCompleted") is True:
        return "Task was already done"
    await _complete(ctx, task)
    return "Task completed: " + (_plain(task.get("title")) or str(task["id"]))


async def complete_tasks_by_title(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    needle = str(params["titleMatch"]).strip().casefold()
    open_tasks = [t for t in await ctx.list(TASKS) if t.get("isCompleted") is not True]
    matched = [t for t in open_tasks if needle in _plain(t.get("title")).casefold()]
    if not matched:
        if any(is_encrypted(t.get("title")) for t in open_tasks):
            raise StepFailed(
                "no readable open task matches " + repr(params["titleMatch"]) + "; task titles are "
                "encrypted: approve it with `mana-ai proposals approve --master-key-file` (the service holds no key)"
            )
        raise StepFailed("no open task matches " + repr(params["titleMatch"]))
    done = 0
    for task in sorted(matched, key=lambda t: str(t["id"])):
        # Locked and read again: a concurrent approval may have completed it since the list was read.
        current = await ctx.get(TASKS, str(task["id"]), lock=True)
        if current is None or current.get("isCompleted") is True:
            continue
        await _complete(ctx, current)
        done += 1
    return str(done) + " task(s) completed"


# --- calendar ------------------------------------------------------------------------------------------


async def create_event(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    try:
        start, end = normalize_iso(str(params["startTime"])), normalize_iso(str(params["endTime"]))
    except (ValueError, OverflowError):
        raise StepFailed("startTime and endTime must be ISO 8601 date-times") from None
    if end < start:
        raise StepFailed("the event ends before it starts")
    calendar = default_calendar(await ctx.list(CALENDARS))
    if calendar is None:
        raise StepFailed("Kein Kalender vorhanden")  # the app's create_event tool says the same
    event_id, block_id = _new_id(), _new_id()
    title = str(params["title"]).strip()
    all_day = bool(params.get("isAllDay") or False)
    block = time_block_record(
        block_id,
        start=start,
        end=end,
        all_day=all_day,
        kind="scheduled",
        block_type="event",
        source_module="calendar",
        source_id=event_id,
        title=title,
        description=params.get("description") or None,
        now=ctx.now,
    )
    await ctx.insert(TIME_BLOCKS, block)
    record = event_record(event_id, params, ctx.now, calendar_id=str(calendar["id"]), time_block_id=block_id)
    await ctx.insert(EVENTS, record)
    ctx.emit(
        "CalendarEventCreated",
        EVENTS,
        event_id,
        {
            "eventId": event_id,
            "title": title,
            "startTime": start,
            "endTime": end,
            "isAllDay": all_day,
            "isRecurring": False,
            "calendarId": record["calendarId"],
            "location": record["location"],
        },
    )
    return "Event created: " + title


# --- notes ---------------------------------------------------------------------------------------------


async def create_note(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = note_record(_new_id(), params, ctx.now)
    await ctx.insert(NOTES, record)
    ctx.emit("NoteCreated", NOTES, record["id"], {"noteId": record["id"], "title": record["title"]})
    return "Note created (id " + str(record["id"]) + ")"


async def _change_note(ctx: ExecContext, note_id: str, fields: dict[str, Any]) -> None:
    await ctx.update(NOTES, note_id, {**fields, "updatedAt": ctx.now_iso})
    # The app's notes store emits no event for an update (NoteCreated / NoteDeleted only).


async def update_note(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    fields = {k: params[k] for k in ("title", "content") if params.get(k) is not None}
    if not fields:
        raise StepFailed("update_note needs a new title or content")
    await _existing(ctx, NOTES, params["noteId"], "note", lock=True)
    await _change_note(ctx, str(params["noteId"]), fields)
    return "Note updated"


async def append_to_note(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    note = await _existing(ctx, NOTES, params["noteId"], "note", lock=True)
    ctx.require_plain(NOTES, note, "content")
    content = note.get("content") if isinstance(note.get("content"), str) else ""
    joined = (content.rstrip("\n") + "\n" + str(params["content"])) if content else str(params["content"])
    await _change_note(ctx, str(params["noteId"]), {"content": joined})
    return "Text appended to the note"


async def add_tag_to_note(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    note = await _existing(ctx, NOTES, params["noteId"], "note", lock=True)
    ctx.require_plain(NOTES, note, "content")
    content = note.get("content") if isinstance(note.get("content"), str) else ""
    tagged = with_tag(content, str(params["tag"]))
    if tagged is None:
        return "The note already has the tag"
    await _change_note(ctx, str(params["noteId"]), {"content": tagged})
    return "Tag added"


# --- journal -------------------------------------------------------------------------------------------


async def create_journal_entry(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = journal_record(_new_id(), params, ctx.now, ctx.tz)
    await ctx.insert(JOURNAL, record)
    ctx.emit(
        "JournalEntryCreated",
        JOURNAL,
        record["id"],
        {
            "entryId": record["id"],
            "entryDate": record["entryDate"],
            "mood": record["mood"],
            "wordCount": record["wordCount"],
        },
    )
    return "Journal entry written"


# --- habits --------------------------------------------------------------------------------------------


async def create_habit(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = habit_record(_new_id(), params, ctx.now)
    await ctx.insert(HABITS, record)
    ctx.emit("HabitCreated", HABITS, record["id"], {"habitId": record["id"], "title": record["title"]})
    return "Habit created (id " + str(record["id"]) + ")"


async def log_habit(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    habit = await _existing(ctx, HABITS, params["habitId"], "habit")
    if habit.get("isArchived") is True:
        raise StepFailed("habit " + str(params["habitId"]) + " is archived")
    log_id, block_id = _new_id(), _new_id()
    duration = habit.get("defaultDuration")
    end = (
        to_js_iso(ctx.now + dt.timedelta(seconds=duration))
        if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0
        else None
    )
    title = _plain(habit.get("title")) or "Habit"
    block = time_block_record(
        block_id,
        start=ctx.now_iso,
        end=end,
        all_day=False,
        kind="logged",
        block_type="habit",
        source_module="habits",
        source_id=log_id,
        title=title,
        color=habit.get("color"),
        icon=habit.get("icon"),
        now=ctx.now,
    )
    await ctx.insert(TIME_BLOCKS, block)
    record = habit_log_record(log_id, str(habit["id"]), params.get("note"), block_id)
    await ctx.insert(HABIT_LOGS, record)
    ctx.emit(
        "HabitLogged",
        HABIT_LOGS,
        log_id,
        {
            "logId": log_id,
            "habitId": habit["id"],
            "habitTitle": _plain(habit.get("title")),
            "note": record["note"],
        },
    )
    return "Habit logged: " + (_plain(habit.get("title")) or str(habit["id"]))


# --- goals ---------------------------------------------------------------------------------------------


async def create_goal(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    try:
        record = goal_from_tool(_new_id(), params, now=ctx.now, tz=ctx.tz)
    except InvalidGoal as exc:
        raise StepFailed(str(exc)) from None
    await ctx.insert(GOALS, record)
    return "Goal created: " + str(record["title"])


def _goal_status(target_status: str, allowed_from: tuple[str, ...]) -> Executor:
    async def run(ctx: ExecContext, params: Mapping[str, Any]) -> str:
        goal = await _existing(ctx, GOALS, params["goalId"], "goal", lock=True)
        status = goal.get("status", "active")
        if status == target_status:
            return "Goal is already " + target_status
        if status not in allowed_from:
            raise StepFailed("goal " + str(params["goalId"]) + " is " + str(status))
        await ctx.update(GOALS, str(goal["id"]), {"status": target_status, "updatedAt": ctx.now_iso})
        return "Goal is now " + target_status

    return run


# --- drink ---------------------------------------------------------------------------------------------


async def log_drink(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = drink_record(_new_id(), params, ctx.now, ctx.tz)
    await ctx.insert(DRINKS, record)
    ctx.emit(
        "DrinkLogged",
        DRINKS,
        record["id"],
        {
            "entryId": record["id"],
            "drinkType": record["drinkType"],
            "quantityMl": record["quantityMl"],
            "name": record["name"],
            "date": record["date"],
            "time": record["time"],
            "fromPreset": False,
        },
    )
    return str(record["quantityMl"]) + " ml " + str(record["name"]) + " logged"


async def undo_drink(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    entries = await ctx.list(DRINKS)
    if not entries:
        raise StepFailed("there is no drink entry to undo")
    latest = max(entries, key=lambda e: (str(e.get("createdAt") or ""), str(e["id"])))
    await ctx.update(DRINKS, str(latest["id"]), {"deletedAt": ctx.now_iso})
    ctx.emit("DrinkEntryUndone", DRINKS, str(latest["id"]), {"entryId": latest["id"]})
    return "Last drink entry undone"


# --- mood ----------------------------------------------------------------------------------------------


async def log_mood(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    level = params["level"]
    if not 1 <= level <= 10:
        raise StepFailed("level must be between 1 and 10")
    record = mood_record(_new_id(), params, ctx.now, ctx.tz)
    await ctx.insert(MOODS, record)
    # The app's mood store emits no domain event (there is none in WEB/data/events/catalog.ts).
    return "Mood logged"


# --- food ----------------------------------------------------------------------------------------------


async def log_meal(ctx: ExecContext, params: Mapping[str, Any]) -> str:
    record = meal_record(_new_id(), params, ctx.now, ctx.tz)
    await ctx.insert(MEALS, record)
    ctx.emit(
        "MealLogged",
        MEALS,
        record["id"],
        {
            "mealId": record["id"],
            "mealType": record["mealType"],
            "inputType": "text",
            "description": record["description"],
            "calories": params.get("calories"),
            "protein": params.get("protein"),
            "date": record["date"],
        },
    )
    return "Meal logged"


EXECUTORS: Final[Mapping[str, Executor]] = {
    "create_task": create_task,
    "complete_task": complete_task,
    "complete_tasks_by_title": complete_tasks_by_title,
    "create_event": create_event,
    "create_note": create_note,
    "update_note": update_note,
    "append_to_note": append_to_note,
    "add_tag_to_note": add_tag_to_note,
    "create_journal_entry": create_journal_entry,
    "create_habit": create_habit,
    "log_habit": log_habit,
    "create_goal": create_goal,
    "pause_goal": _goal_status("paused", ("active",)),
    "resume_goal": _goal_status("active", ("paused",)),
    "complete_goal": _goal_status("completed", ("active", "paused")),
    "log_drink": log_drink,
    "undo_drink": undo_drink,
    "log_mood": log_mood,
    "log_meal": log_meal,
}
"""Tool name → executor. Tools not listed stay approved-and-pending for the mana app."""


def has_executor(tool_name: str) -> bool:
    return tool_name in EXECUTORS
