"""Executors on real Postgres: the web app's record shapes per module, encryption with the master key."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mana_ai.crypto.aead import decrypt_value, encrypt_value, is_encrypted
from mana_ai.db.connector import Database
from mana_ai.synclog.store import replay_record
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.decide import Decider, DecisionResult
from mana_ai.workbench.shapes import ENCRYPTED_FIELDS
from tests.integration.helpers import put_row
from tests.integration.test_workbench_logic import ref, seed, server_iteration

MASTER = bytes(range(40, 72))
TTL = dt.timedelta(days=7)


async def run_steps(
    db: Database, steps: list[tuple[str, dict[str, Any]]], *, key: bytes | None = None, mission_id: str = "m1"
) -> list[DecisionResult]:
    it = server_iteration("it-" + mission_id, steps)
    await seed(db, mission_id=mission_id, iterations=[it], agent_id="a-" + mission_id)
    decider = Decider(db, ttl=TTL, tz="Europe/Berlin", master_key=key)
    return [await decider.approve("u1", ref(it, i, mission_id)) for i in range(len(steps))]


async def record(db: Database, app_id: str, table: str, record_id: str) -> dict[str, Any]:
    async with db.with_user("u1") as conn:
        state = await replay_record(conn, user_id="u1", app_id=app_id, table=table, record_id=record_id)
    assert state is not None
    return state.record


def written(result: DecisionResult, table: str) -> str:
    return next(r["id"] for r in result.records if r["table"] == table)


async def put_calendars(db: Database) -> None:
    """Two calendars as the app's calendarsStore writes them; the default one is not the first."""
    for cal_id, default in (("cal-a", False), ("cal-b", True)):
        cal = {
            "id": cal_id,
            "name": cal_id,
            "isDefault": default,
            "isVisible": True,
            "timezone": "Europe/Berlin",
        }
        await put_row(db, "u1", "calendars", cal_id, "insert", cal, app_id="calendar")


async def test_every_core_module_writes_web_app_records(db: Database) -> None:
    await put_calendars(db)
    results = await run_steps(
        db,
        [
            ("create_task", {"title": "Steuer", "dueDate": "2026-04-30", "description": "Belege"}),
            (
                "create_event",
                {
                    "title": "Zahnarzt",
                    "startTime": "2026-04-02T09:00:00Z",
                    "endTime": "2026-04-02T10:00:00+00:00",
                },
            ),
            ("create_note", {"title": "Ideen", "content": "Garten"}),
            ("create_journal_entry", {"content": "Heute war ein guter Tag", "mood": "zufrieden"}),
            ("create_habit", {"title": "Lesen", "icon": "📚", "color": "#22c55e"}),
            ("log_drink", {"drinkType": "coffee", "quantityMl": 200, "name": "Flat White"}),
            ("log_mood", {"level": 7, "emotion": "calm", "activity": "outdoors"}),
            ("create_goal", {"templateId": "tpl-tasks-daily"}),
            ("log_meal", {"mealType": "lunch", "description": "Salat", "calories": 450}),
        ],
    )
    assert [r.outcome for r in results] == ["done"] * 9, [r.error for r in results]
    task = await record(db, "todo", "tasks", written(results[0], "tasks"))
    assert {k: task[k] for k in ("title", "description", "dueDate", "priority", "isCompleted")} == {
        "title": "Steuer",
        "description": "Belege",
        "dueDate": "2026-04-30",
        "priority": "medium",
        "isCompleted": False,
    }
    # calendar: the time lives on a timeblocks/timeBlocks row, the event sits in the default calendar.
    event = await record(db, "calendar", "events", written(results[1], "events"))
    block = await record(db, "timeblocks", "timeBlocks", written(results[1], "timeBlocks"))
    assert (event["calendarId"], event["timeBlockId"], "startIso" in event) == ("cal-b", block["id"], False)
    assert {
        k: block[k] for k in ("startDate", "endDate", "allDay", "kind", "type", "sourceModule", "sourceId")
    } == {
        "startDate": "2026-04-02T09:00:00.000Z",
        "endDate": "2026-04-02T10:00:00.000Z",
        "allDay": False,
        "kind": "scheduled",
        "type": "event",
        "sourceModule": "calendar",
        "sourceId": event["id"],
    }
    assert block["title"] == "Zahnarzt"
    # Every record carries the tenancy the app's creating hook stamps.
    for result in results:
        for ref_ in result.records:
            if ref_["op"] == "insert":
                rec = await record(db, ref_["appId"], ref_["table"], ref_["id"])
                assert (rec["spaceId"], rec["authorId"], rec["visibility"]) == (
                    "_personal:u1",
                    "u1",
                    "space",
                ), ref_
    note = await record(db, "notes", "notes", written(results[2], "notes"))
    assert (note["title"], note["content"], note["isPinned"]) == ("Ideen", "Garten", False)
    entry = await record(db, "journal", "journalEntries", written(results[3], "journalEntries"))
    assert (entry["mood"], entry["wordCount"], entry["tags"]) == ("zufrieden", 5, [])
    habit = await record(db, "habits", "habits", written(results[4], "habits"))
    assert (habit["title"], habit["icon"], habit["isArchived"]) == ("Lesen", "📚", False)
    drink = await record(db, "drink", "drinkEntries", written(results[5], "drinkEntries"))
    assert (drink["name"], drink["drinkType"], drink["quantityMl"], drink["presetId"]) == (
        "Flat White",
        "coffee",
        200,
        None,
    )
    mood = await record(db, "mood", "moodEntries", written(results[6], "moodEntries"))
    assert (mood["level"], mood["emotion"], mood["activity"], mood["secondaryEmotions"]) == (
        7,
        "calm",
        "outdoors",
        [],
    )
    goal = await record(db, "companion", "companionGoals", written(results[7], "companionGoals"))
    assert (
        goal["metric"] == {"source": "event_count", "eventType": "TaskCompleted"}
        and goal["status"] == "active"
    )
    meal = await record(db, "food", "meals", written(results[8], "meals"))
    assert meal["nutrition"] == {
        "calories": 450,
        "protein": 0,
        "carbohydrates": 0,
        "fat": 0,
        "fiber": 0,
        "sugar": 0,
    }
    assert meal["inputType"] == "text" and meal["confidence"] == 0.8
    # Only event names from the app's catalog (its mood store and goal creation emit none).
    assert [r.events for r in results] == [
        ("TaskCreated",),
        ("CalendarEventCreated",),
        ("NoteCreated",),
        ("JournalEntryCreated",),
        ("HabitCreated",),
        ("DrinkLogged",),
        (),
        (),
        ("MealLogged",),
    ]


async def test_an_event_needs_a_calendar_as_in_the_app(db: Database) -> None:
    results = await run_steps(
        db,
        [
            (
                "create_event",
                {"title": "X", "startTime": "2026-04-02T09:00:00Z", "endTime": "2026-04-02T10:00:00Z"},
            )
        ],
    )
    assert (results[0].status, results[0].error) == ("failed", "Kein Kalender vorhanden")


async def test_with_a_master_key_the_web_apps_fields_are_encrypted(db: Database, admin_db: Database) -> None:
    results = await run_steps(
        db,
        [
            ("create_task", {"title": "Geheim", "description": "Nur für mich"}),
            ("log_drink", {"drinkType": "water", "quantityMl": 300}),
        ],
        key=MASTER,
    )
    task_id = written(results[0], "tasks")
    raw = await admin_db.fetchrow("SELECT data FROM public.sync_changes WHERE record_id = %s", (task_id,))
    assert raw is not None
    data = raw["data"]
    for field in ENCRYPTED_FIELDS["tasks"]:
        if field in data:
            assert is_encrypted(data[field]), field
    assert decrypt_value(data["title"], MASTER) == "Geheim"
    assert data["priority"] == "medium" and data["isCompleted"] is False  # structural fields stay plaintext
    drink = await record(db, "drink", "drinkEntries", written(results[1], "drinkEntries"))
    assert is_encrypted(drink["name"]) and drink["quantityMl"] == 300 and drink["drinkType"] == "water"
    # The stored event keeps no text of an encrypted table.
    events = await admin_db.fetch(
        "SELECT payload FROM mana_ai.domain_events WHERE event_type = 'TaskCreated'"
    )
    assert "title" not in events[0]["payload"]


async def test_without_a_key_encrypted_records_are_not_overwritten(db: Database) -> None:
    await put_row(
        db,
        "u1",
        "notes",
        "n1",
        "insert",
        {"id": "n1", "title": encrypt_value("T", MASTER), "content": encrypt_value("alt", MASTER)},
        app_id="notes",
    )
    no_key = await run_steps(db, [("append_to_note", {"noteId": "n1", "content": "neu"})], mission_id="m1")
    assert no_key[0].status == "failed" and "--master-key-file" in (no_key[0].error or "")
    with_key = await run_steps(
        db, [("append_to_note", {"noteId": "n1", "content": "neu"})], key=MASTER, mission_id="m2"
    )
    assert with_key[0].outcome == "done"
    note = await record(db, "notes", "notes", "n1")
    assert decrypt_value(note["content"], MASTER) == "alt\nneu"


async def test_without_a_key_encrypted_task_titles_point_to_the_cli(db: Database) -> None:
    # The service never reads a master key (docs/privacy.md): the step says where one can be given.
    task = {"id": "t1", "title": encrypt_value("Steuer", MASTER), "isCompleted": False}
    await put_row(db, "u1", "tasks", "t1", "insert", task, app_id="todo")
    no_key = await run_steps(db, [("complete_tasks_by_title", {"titleMatch": "steuer"})], mission_id="m1")
    assert no_key[0].status == "failed"
    assert "mana-ai proposals approve --master-key-file" in (no_key[0].error or ""), no_key[0].error
    with_key = await run_steps(
        db, [("complete_tasks_by_title", {"titleMatch": "steuer"})], key=MASTER, mission_id="m2"
    )
    assert with_key[0].message == "1 task(s) completed"


async def test_updates_of_existing_records(db: Database) -> None:
    for task_id, title, done in (
        ("t1", "Steuer machen", False),
        ("t2", "Steuerbelege", False),
        ("t3", "Steuer alt", True),
    ):
        await put_row(
            db,
            "u1",
            "tasks",
            task_id,
            "insert",
            {"id": task_id, "title": title, "isCompleted": done},
            app_id="todo",
        )
    await put_row(
        db, "u1", "notes", "n1", "insert", {"id": "n1", "title": "N", "content": "Text"}, app_id="notes"
    )
    await put_row(
        db,
        "u1",
        "habits",
        "h1",
        "insert",
        {"id": "h1", "title": "Lesen", "defaultDuration": 1800},
        app_id="habits",
    )
    for drink_id, created in (("d1", "2026-01-01T08:00:00.000Z"), ("d2", "2026-01-01T09:00:00.000Z")):
        await put_row(
            db,
            "u1",
            "drinkEntries",
            drink_id,
            "insert",
            {"id": drink_id, "createdAt": created},
            app_id="drink",
        )
    results = await run_steps(
        db,
        [
            ("complete_tasks_by_title", {"titleMatch": "steuer"}),
            ("complete_task", {"taskId": "t1"}),
            ("add_tag_to_note", {"noteId": "n1", "tag": "garten"}),
            ("add_tag_to_note", {"noteId": "n1", "tag": "garten"}),
            ("update_note", {"noteId": "n1", "title": "Neu"}),
            ("log_habit", {"habitId": "h1", "note": "20 Seiten"}),
            ("undo_drink", {}),
            ("complete_tasks_by_title", {"titleMatch": "nichts"}),
        ],
    )
    assert [r.status for r in results] == ["approved"] * 7 + ["failed"]
    assert results[0].message == "2 task(s) completed" and results[0].events == (
        "TaskCompleted",
        "TaskCompleted",
    )
    assert results[1].message == "Task was already done"
    assert (await record(db, "todo", "tasks", "t2"))["isCompleted"] is True
    note = await record(db, "notes", "notes", "n1")
    assert (note["title"], note["content"]) == ("Neu", "Text\n#garten")
    assert results[3].message == "The note already has the tag"
    log = await record(db, "habits", "habitLogs", written(results[5], "habitLogs"))
    assert (log["habitId"], log["note"]) == ("h1", "20 Seiten")
    block = await record(db, "timeblocks", "timeBlocks", log["timeBlockId"])
    assert (block["kind"], block["type"], block["sourceModule"], block["sourceId"], block["title"]) == (
        "logged",
        "habit",
        "habits",
        log["id"],
        "Lesen",
    )
    assert block["endDate"] is not None and block["endDate"] > block["startDate"]  # defaultDuration 1800 s
    assert (await record(db, "drink", "drinkEntries", "d2"))["deletedAt"]
    assert "deletedAt" not in await record(db, "drink", "drinkEntries", "d1")
    assert results[7].error == "no open task matches 'nichts'"


def _web_app_apply(rows: list[dict]) -> dict:
    """The web app's applyServerChanges (WEB/data/sync.ts): an insert stamps every field with the record's
    updatedAt ?? createdAt; an update field wins when its ``at`` >= the local stamp."""
    record: dict = {}
    meta: dict[str, str] = {}
    for row in rows:
        data = row["data"] or {}
        if row["op"] == "insert":
            at = data.get("updatedAt") or data.get("createdAt")
            for k, v in data.items():
                if at >= meta.get(k, ""):
                    record[k], meta[k] = v, at
        elif row["op"] == "update":
            for k, at in (row["field_meta"] or {}).items():
                if at >= meta.get(k, ""):
                    record[k], meta[k] = data[k], at
    return record


async def test_a_completion_approved_right_after_a_phone_created_the_task_reaches_the_phone(
    db: Database, admin_db: Database
) -> None:
    """A phone whose clock runs two minutes ahead creates a task (mana-sync stores the insert with
    field_meta {}, the app stamps its fields with the record's updatedAt). A minute later the user approves
    completing it. Our replay says completed; the web app's LWW drops the update, on every device."""
    ahead = to_js_iso(utcnow() + dt.timedelta(minutes=2))
    task = {"id": "t1", "title": "Steuer", "isCompleted": False, "createdAt": ahead, "updatedAt": ahead}
    await put_row(db, "u1", "tasks", "t1", "insert", task, app_id="todo")
    it = server_iteration("it1", [("complete_task", {"taskId": "t1"})])
    await seed(db, iterations=[it])
    result = await Decider(db, ttl=dt.timedelta(days=7)).approve("u1", ref(it, 0))
    assert result.outcome == "done"
    rows = await admin_db.fetch(
        "SELECT op, data, field_meta FROM public.sync_changes WHERE table_name = 'tasks'"
        " ORDER BY created_at, id"
    )
    assert _web_app_apply(rows)["isCompleted"] is True, rows[-1]["field_meta"]
