"""One user's poison row never stops anyone else's refresh (issue 14, item 1).

A row nested hundreds of levels deep, a row larger than the size limit, or an approval whose edited
arguments nest as deep, are refused at validation: the row is skipped, counted and logged with its id, the
cursor advances, and other users' rows are folded as usual. Large batches are folded in bounded chunks.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.store import replay_record
from mana_ai.synclog.validate import MAX_DEPTH, MAX_ROW_BYTES, too_deep
from mana_ai.workbench.decide import InvalidParams
from tests.integration.helpers import mission, put_row
from tests.integration.test_workbench_logic import ref, seed, server_iteration
from tests.integration.test_workbench_proposals import decider


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


async def raw_row(db: Database, user: str, record_id: str, data: dict[str, Any]) -> None:
    """Append a row as a device could, serialised by the standard library (orjson refuses such depth)."""
    async with db.with_user(user) as conn:
        await conn.execute(
            q("insert_change"),
            {
                "app_id": "ai",
                "table": "aiMissions",
                "record_id": record_id,
                "user_id": user,
                "op": "insert",
                "data": Jsonb(data, dumps=json.dumps),
                "field_meta": Jsonb({}),
                "client_id": "device",
                "actor": Jsonb(user_actor(user)),
                "origin": "user",
                "space_id": None,
            },
        )


async def mission_ids(db: Database) -> set[str]:
    rows = await db.fetch("SELECT mission_id FROM mana_ai.mission_snapshots")
    return {r["mission_id"] for r in rows}


def test_depth_walk_is_iterative_and_exact() -> None:
    assert not too_deep(nested(MAX_DEPTH - 1))  # the string leaf adds no level
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep(nested(50_000))  # far beyond the interpreter's recursion limit
    assert too_deep([[] for _ in range(3)], limit=1)
    assert not too_deep({"a": [1, 2], "b": {"c": "d"}}, limit=2)


async def test_deep_row_is_skipped_and_others_are_folded(db: Database, caplog) -> None:
    await raw_row(db, "mallory", "poison", mission("poison", cadence=nested(300)))
    await put_row(db, "alice", "aiMissions", "m1", "insert", mission("m1"))
    with caplog.at_level(logging.WARNING, logger="mana_ai.synclog.snapshots"):
        stats = await refresh_snapshots(db)
    assert stats.missions.rows_skipped == 1 and stats.missions.rows_applied == 1
    skipped = [r for r in caplog.records if getattr(r, "action", "") == "snapshots.row_skipped"]
    assert [(r.user_id, r.record_id) for r in skipped] == [("mallory", "poison")]  # type: ignore[attr-defined]
    assert "deeper" in skipped[0].reason  # type: ignore[attr-defined]
    assert await mission_ids(db) == {"m1"}
    # The cursor moved past the poison row: later rows of anyone are folded, the poison is not retried.
    await put_row(db, "bob", "aiMissions", "m2", "insert", mission("m2"))
    again = await refresh_snapshots(db)
    assert (again.missions.rows_applied, again.missions.rows_skipped) == (1, 0)
    assert await mission_ids(db) == {"m1", "m2"}
    # The record's own replay (used by the write-back) skips the row the same way.
    async with db.with_user("mallory") as conn:
        state = await replay_record(
            conn, user_id="mallory", app_id="ai", table="aiMissions", record_id="poison"
        )
    assert state is None


async def test_update_that_deepens_a_good_record_is_skipped(db: Database) -> None:
    await put_row(db, "alice", "aiMissions", "m1", "insert", mission("m1", title="kept"))
    await raw_row(db, "alice", "m1", {"title": "new", "extra": nested(200)})
    stats = await refresh_snapshots(db)
    assert (stats.missions.rows_applied, stats.missions.rows_skipped) == (1, 1)
    row = await db.fetchrow("SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert row["record"]["title"] == "kept"


async def test_oversized_row_is_skipped(db: Database) -> None:
    await raw_row(
        db, "mallory", "big", mission("big", notes=["y" * 100_000] * (MAX_ROW_BYTES // 100_000 + 1))
    )
    await put_row(db, "alice", "aiMissions", "m1", "insert", mission("m1"))
    stats = await refresh_snapshots(db)
    assert (stats.missions.rows_applied, stats.missions.rows_skipped) == (1, 1)
    assert await mission_ids(db) == {"m1"}


@pytest.mark.parametrize(("flush_records", "fold_slice"), [(2, 500), (1000, 500), (1000, 2)])
async def test_large_batch_is_folded_in_bounded_chunks(
    db: Database, flush_records: int, fold_slice: int
) -> None:
    # Many rows of one record and of many records, read three rows at a time (the next three while these
    # are folded, in slices of two rows when fold_slice is 2) and written out every two records: the same
    # snapshots as one fold, each record counted as new once.
    for i in range(10):
        await put_row(db, "alice", "aiMissions", f"m{i % 4}", "insert", mission(f"m{i % 4}", title=f"t{i}"))
    stats = await refresh_snapshots(db, chunk_rows=3, flush_records=flush_records, fold_slice=fold_slice)
    assert stats.missions.rows_applied == 10
    assert (stats.missions.new_snapshots, stats.missions.updated_snapshots) == (4, 0)
    rows = await db.fetch("SELECT mission_id, record FROM mana_ai.mission_snapshots ORDER BY mission_id")
    assert {r["mission_id"]: r["record"]["title"] for r in rows} == {
        "m0": "t8",
        "m1": "t9",
        "m2": "t6",
        "m3": "t7",
    }


async def test_approval_with_deeply_nested_params_is_refused(db: Database) -> None:
    it = server_iteration("it1", [("create_note", {"content": "x"})])
    await seed(db, iterations=[it])
    with pytest.raises(InvalidParams) as info:
        await decider(db).approve("u1", ref(it, 0), params={"content": "x", "tags": nested(246)})
    assert "deeper" in " ".join(info.value.problems)
    # The proposal is still open and can be approved with sane arguments.
    result = await decider(db).approve("u1", ref(it, 0), params={"content": "fine"})
    assert result.status == "approved"
