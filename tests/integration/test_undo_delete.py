"""Deletes as the web app means them (issue 12, finding 4), in snapshots and resolvers.

Verified in the real app (``WEB/data/sync.ts`` ``applyServerChanges`` run under Bun on these rows): a
``delete`` row carrying ``deletedAt`` soft-deletes, and the undo (an update ``deletedAt: null`` with a later
field time) brings the record back.
"""

from __future__ import annotations

from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.resolvers.registry import InputRef, default_registry
from mana_ai.runner.store import RunnerStore
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.test_resolvers import context

DELETED_AT = "2026-04-15T10:00:00.000Z"
UNDONE_AT = "2026-04-15T10:00:05.000Z"


async def due_ids(db: Database) -> list[str]:
    await refresh_snapshots(db)
    return [m.id for m in await RunnerStore(db, "test").due_missions(to_js_iso(utcnow()), 100)]


async def test_an_undone_mission_delete_makes_the_mission_due_again(db: Database) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    assert await due_ids(db) == ["m1"]
    await put_row(db, "u1", "aiMissions", "m1", "delete", {"deletedAt": DELETED_AT})
    assert await due_ids(db) == []
    await put_row(db, "u1", "aiMissions", "m1", "update", {"deletedAt": None}, {"deletedAt": UNDONE_AT})
    assert await due_ids(db) == ["m1"]
    # A hard delete (no deletedAt) removes it; only a new write brings it back, as in the app.
    await put_row(db, "u1", "aiMissions", "m1", "delete", None)
    assert await due_ids(db) == []


async def test_resolvers_read_a_restored_record(db: Database) -> None:
    goal = {
        "id": "g1",
        "title": "Wasser trinken",
        "currentValue": 5,
        "status": "active",
        "target": {"value": 8, "period": "day", "comparison": "gte"},
    }
    await put_row(db, "u1", "companionGoals", "g1", "insert", goal, app_id="companion")
    await put_row(db, "u1", "companionGoals", "g1", "delete", {"deletedAt": DELETED_AT}, app_id="companion")
    refs = [InputRef("goals", "companionGoals", "g1")]
    assert await default_registry().resolve_all(refs, context(db, Metrics(process=False), None)) == []
    await put_row(
        db,
        "u1",
        "companionGoals",
        "g1",
        "update",
        {"deletedAt": None},
        {"deletedAt": UNDONE_AT},
        app_id="companion",
    )
    results = await default_registry().resolve_all(refs, context(db, Metrics(process=False), None))
    assert [r.title for r in results] == ["Wasser trinken"]
