"""Snapshot refresh against real Postgres, as the plain application role."""

from __future__ import annotations

import asyncio

import psycopg

from mana_ai.synclog.snapshots import prune_feed, refresh_snapshots
from tests.integration.helpers import backdate, mission, put_row


async def snapshot(db, user, mission_id):
    return await db.fetchrow(
        "SELECT record, deleted FROM mana_ai.mission_snapshots WHERE user_id=%s AND mission_id=%s",
        (user, mission_id),
    )


async def test_insert_and_update_are_folded(db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", title="old"))
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_applied == 1 and stats.missions.new_snapshots == 1
    await put_row(
        db, "u1", "aiMissions", "m1", "update", {"title": "new"}, {"title": "2026-04-15T01:00:00.000Z"}
    )
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_applied == 1 and stats.missions.updated_snapshots == 1
    snap = await snapshot(db, "u1", "m1")
    assert snap["record"]["title"] == "new"
    assert snap["record"]["__fieldMeta"]["title"] == "2026-04-15T01:00:00.000Z"


async def test_ten_refreshes_without_new_rows_apply_nothing(db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    assert (await refresh_snapshots(db)).rows_applied == 1
    for _ in range(10):
        assert (await refresh_snapshots(db)).rows_applied == 0


async def test_row_with_created_at_older_than_cursor_is_applied(db, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await refresh_snapshots(db)
    late = await put_row(
        db,
        "u1",
        "aiMissions",
        "m1",
        "update",
        {"objective": "late"},
        {"objective": "2026-04-15T09:00:00.000Z"},
    )
    await backdate(admin_db, late, "2001-01-01T00:00:00Z")
    assert (await refresh_snapshots(db)).rows_applied == 1
    assert (await snapshot(db, "u1", "m1"))["record"]["objective"] == "late"


async def test_row_committed_after_a_refresh_started_is_not_lost(db, app_db_url):
    # A writer opens its transaction (and gets its xid) before the refresh, commits after it.
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    writer = await psycopg.AsyncConnection.connect(app_db_url)
    try:
        await writer.execute("SELECT set_config('app.current_user_id', 'u1', true)")
        await writer.execute(
            "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)"
            " VALUES ('ai','aiMissions','m1','u1','update', '{\"title\":\"slow\"}',"
            " '{\"title\":\"2026-04-15T02:00:00.000Z\"}', 'slow-client')"
        )
        first = await refresh_snapshots(db)  # sees the insert, must not move past the open writer
        assert first.rows_applied == 1
        await writer.commit()
    finally:
        await writer.close()
    second = await refresh_snapshots(db)
    assert second.rows_applied == 1
    assert (await snapshot(db, "u1", "m1"))["record"]["title"] == "slow"


async def test_soft_delete_keeps_the_record_and_a_hard_delete_leaves_a_tombstone(db):
    # As the web app replays them (WEB/data/sync.ts): deletedAt → soft delete, none → the record is removed.
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await put_row(db, "u1", "aiMissions", "m1", "delete", {"deletedAt": "2026-04-15T03:00:00.000Z"})
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2"))
    await put_row(db, "u1", "aiMissions", "m2", "delete", None)
    await refresh_snapshots(db)
    soft = await snapshot(db, "u1", "m1")
    assert soft["deleted"] is False and soft["record"]["deletedAt"] == "2026-04-15T03:00:00.000Z"
    assert (await snapshot(db, "u1", "m2"))["deleted"] is True


async def test_malformed_rows_are_skipped_and_others_applied(db, caplog):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2", nextRunAt="not a date"))
    await put_row(
        db,
        "u1",
        "aiMissions",
        "m3",
        "update",
        {"iterations": "nope"},
        {"iterations": "2026-04-15T03:00:00.000Z"},
    )
    await put_row(db, "u2", "agents", "a1", "insert", {"id": "a1", "name": "Ok", "state": "active"})
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_applied == 1 and stats.missions.rows_skipped == 2
    assert stats.agents.rows_applied == 1
    skipped = [r for r in caplog.records if getattr(r, "action", "") == "snapshots.row_skipped"]
    assert {r.record_id for r in skipped} == {"m2", "m3"}
    assert await snapshot(db, "u1", "m2") is None


async def test_concurrent_refreshes_apply_each_row_once(db):
    for i in range(50):
        await put_row(db, f"u{i % 5}", "aiMissions", f"m{i}", "insert", mission(f"m{i}"))
    results = await asyncio.gather(*(refresh_snapshots(db) for _ in range(4)))
    assert sum(r.rows_applied for r in results) == 50
    count = await db.fetchrow("SELECT count(*) AS n FROM mana_ai.mission_snapshots")
    assert count["n"] == 50


async def test_prune_feed_removes_only_applied_rows(db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await refresh_snapshots(db)
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2"))
    assert await prune_feed(db) == 1
    assert (await refresh_snapshots(db)).rows_applied == 1


async def test_next_run_at_is_normalised_for_string_comparison(db):
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", nextRunAt="2026-04-15T10:00:00+02:00")
    )
    await refresh_snapshots(db)
    assert (await snapshot(db, "u1", "m1"))["record"]["nextRunAt"] == "2026-04-15T08:00:00.000Z"


async def test_row_with_infinite_created_at_is_skipped_not_blocking(db, admin_db):
    bad = await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await admin_db.execute(
        "UPDATE mana_ai.sync_feed SET created_at = 'infinity' WHERE change_id = %s", (bad,)
    )
    await put_row(db, "u2", "aiMissions", "m2", "insert", mission("m2"))
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_skipped == 1 and stats.missions.rows_applied == 1
