"""The refresh's snapshots and the write-back's replay agree on a mission, or converge after one write-back.

The refresh folds a window's rows in arrival order (the feed's seq); the replay folds a record's whole log
in ``created_at`` order, as mana-sync serves a pull, and rows of one transaction in the order they were
written. Deletes make the merge order-dependent, so where the two orders differ a snapshot could find a
mission due that the log says is deleted: every tick planned it (an LLM call) and every write-back was
refused as stale.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from mana_ai.db.connector import Database
from mana_ai.runner import writeback
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.store import append_change, replay_record
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app


async def snapshot_deleted(admin_db: Database) -> bool:
    row = await admin_db.fetchrow("SELECT deleted FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert row is not None
    return bool(row["deleted"])


async def replay_live(db: Database) -> bool:
    async with db.with_user("u1") as conn:
        state = await replay_record(conn, user_id="u1", app_id="ai", table="aiMissions", record_id="m1")
    return state is not None and state.is_live()


async def ticks(app_db_url: str, count: int) -> tuple[list[Any], int]:
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        decisions = [dict((await app.ticker.tick()).decisions) for _ in range(count)]
        return decisions, len(llm.requests)


async def test_a_delete_and_re_creation_in_one_push_replay_in_the_order_written(
    db: Database, admin_db: Database, app_db_url: str
) -> None:
    # One transaction, one created_at: the replay broke the tie by the rows' random ids, which can put the
    # insert before the delete.
    m = mission("m1")
    await put_row(db, "u1", "aiMissions", "m1", "insert", m)
    async with admin_db.transaction() as conn:
        for row_id, op, data in (
            ("ffffffff-0000-4000-8000-000000000000", "delete", None),
            ("00000000-0000-4000-8000-000000000000", "insert", json.dumps(m)),
        ):
            await conn.execute(
                "INSERT INTO public.sync_changes (id, app_id, table_name, record_id, user_id, op, data,"
                " field_meta, client_id) VALUES (%s, 'ai', 'aiMissions', 'm1', 'u1', %s, %s, '{}', 'device')",
                (row_id, op, data),
            )
    await refresh_snapshots(db)
    assert not await snapshot_deleted(admin_db) and await replay_live(db)
    decisions, _ = await ticks(app_db_url, 1)
    assert decisions == [{"ran": 1}]


async def test_a_hard_delete_between_transactions_committing_out_of_order_costs_one_call_not_one_a_tick(
    db: Database, admin_db: Database, app_db_url: str
) -> None:
    m = mission("m1")
    await put_row(db, "u1", "aiMissions", "m1", "insert", m)
    await refresh_snapshots(db)
    stamp = m["nextRunAt"]
    async with db.with_user("u1") as first:  # starts first: its rows get the earlier created_at
        await first.execute("SELECT 1")
        await asyncio.sleep(0.01)
        async with db.with_user("u1") as second:  # a device's hard delete, committed in between
            await append_change(
                second, user_id="u1", app_id="ai", table="aiMissions", record_id="m1", op="delete",
                data=None, field_meta=None, client_id="device", actor=user_actor("u1"),
            )  # fmt: skip
        await append_change(
            first, user_id="u1", app_id="ai", table="aiMissions", record_id="m1", op="update",
            data=m, field_meta={name: stamp for name in m}, client_id="other-device",
            actor=user_actor("u1"),
        )  # fmt: skip
    await refresh_snapshots(db)
    # Arrival order re-creates the mission from the update; created_at order ends with the delete.
    assert not await snapshot_deleted(admin_db) and not await replay_live(db)
    decisions, calls = await ticks(app_db_url, 3)
    assert decisions == [{"stale": 1}, {}, {}]
    assert calls == 2  # the one run's tool round and final answer, then never again
    assert await snapshot_deleted(admin_db)  # the snapshot took the log's state


async def test_a_device_edit_refreshed_during_a_stale_write_back_is_not_lost(
    db: Database, admin_db: Database, app_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await refresh_snapshots(db)
    later = to_js_iso(utcnow() + timedelta(hours=1))
    real_read = writeback._read
    calls = 0

    async def read(cur: Any, groups: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The user reschedules the mission while it is planned: the write-back finds it stale.
            await put_row(db, "u1", "aiMissions", "m1", "update", {"nextRunAt": later},
                          {"nextRunAt": to_js_iso(utcnow())})  # fmt: skip
        latest = await real_read(cur, groups)
        if calls == 1:
            # Between the write-back's read and its commit: a device edit, and a refresh that folds it.
            await put_row(db, "u1", "aiMissions", "m1", "update", {"title": "edited"},
                          {"title": to_js_iso(utcnow())})  # fmt: skip
            await refresh_snapshots(db)
        return latest

    monkeypatch.setattr(writeback, "_read", read)
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
    assert dict(stats.decisions) == {"stale": 1}
    await refresh_snapshots(db)
    async with db.with_user("u1") as conn:
        state = await replay_record(conn, user_id="u1", app_id="ai", table="aiMissions", record_id="m1")
    assert state is not None and state.record["title"] == "edited"
    row = await admin_db.fetchrow("SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert row is not None
    assert row["record"]["title"] == "edited", "the snapshot lost an edit the log and the refresh had"
