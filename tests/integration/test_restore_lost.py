"""No lost iterations or decisions (issue 12, finding 5; W11), with the web app's exact behaviour.

The app writes ``iterations`` as one field from the device's local copy: ``startIteration`` writes
``[...mission.iterations, iteration]``, ``addIterationFeedback`` and the server-iteration executor rewrite the
array they read (``WEB/data/ai/missions/store.ts``, ``server-iteration-executor.ts``). A device that synced
before our write-back therefore drops our iteration (or a decision) with its next such edit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.runner.tick import TickStats
from mana_ai.synclog.restore import Mark, merged_history, restored_iterations
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.decide import Decider
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, running_app
from tests.integration.test_workbench_logic import ref, seed, server_iteration
from tests.integration.test_workbench_proposals import mission_state


def browser_iteration(iteration_id: str) -> dict[str, Any]:
    return {
        "id": iteration_id,
        "startedAt": to_js_iso(utcnow()),
        "plan": [],
        "overallStatus": "running",
        "source": "browser",
    }


def later() -> str:
    return to_js_iso(utcnow() + dt.timedelta(seconds=5))


def value(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("mana_ai_iterations_restored_total", {"kind": kind}) or 0.0


async def test_a_device_that_synced_before_the_write_back_drops_nothing(
    db: Database, app_db_url: str
) -> None:
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        llm.reply_tool_calls([("create_task", {"title": "A"}), ("create_task", {"title": "B"})]).reply_text(
            "ok"
        )
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        ours = (await mission_state(db))["iterations"][0]

        # The device still has iterations [] and starts a browser iteration: [...[], new].
        await put_row(
            db,
            "u1",
            "aiMissions",
            "m1",
            "update",
            {"iterations": [browser_iteration("b1")]},
            {"iterations": later()},
        )
        await app.ticker.refresh(_stats())
        after = (await mission_state(db))["iterations"]
        assert [it["id"] for it in after] == ["b1", ours["id"]]  # the device's change kept, ours back
        assert value(app.metrics, "iteration") == 1

        # A decision in the workbench, then a device that synced after the write-back but before the decision
        # adds feedback to its own iteration, re-sending our step as still open.
        decided = await Decider(db, ttl=dt.timedelta(days=7)).approve("u1", ref(ours, 0))
        assert decided.outcome == "done"
        stale = [{**after[0], "userFeedback": "gut"}, after[1]]
        await put_row(db, "u1", "aiMissions", "m1", "update", {"iterations": stale}, {"iterations": later()})
        await app.ticker.refresh(_stats())
        final = (await mission_state(db))["iterations"]
        assert final[0]["userFeedback"] == "gut"
        assert [s["status"] for s in final[1]["plan"]] == ["approved", "staged"]
        assert value(app.metrics, "decision") == 1

        # Nothing lost any more: another refresh writes nothing.
        rows_before = await _row_count(db)
        await app.ticker.refresh(_stats())
        assert await _row_count(db) == rows_before


def _stats() -> TickStats:
    return TickStats(scanned_at=to_js_iso(utcnow()))


async def _row_count(db: Database) -> int:
    async with db.with_user("u1") as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM public.sync_changes")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_deleted_missions_and_unmarked_iterations_are_left_alone(db: Database) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", iterations=[browser_iteration("x")]))
    await put_row(db, "u1", "aiMissions", "m1", "update", {"iterations": []}, {"iterations": later()})
    stats = await refresh_snapshots(db)
    assert (stats.restored_iterations, stats.restored_decisions) == (0, 0)


def test_the_latest_decision_wins_and_decided_beats_open() -> None:
    step = {"id": "s", "status": "staged"}
    approved = {**step, "status": "approved", "decidedAt": "2026-01-01T00:00:01.000Z"}
    rejected = {**step, "status": "rejected", "decidedAt": "2026-01-01T00:00:02.000Z"}
    arrays = [
        [{"id": "i", "plan": [step]}],
        [{"id": "i", "plan": [approved]}],
        [{"id": "i", "plan": [rejected]}],
        [{"id": "i", "plan": [step]}],
    ]
    history = merged_history(arrays)
    assert history["i"]["plan"][0]["status"] == "rejected"
    current = [{"id": "i", "plan": [step], "overallStatus": "awaiting-review"}]
    out, stats = restored_iterations(current, history, [Mark("i", "s", "rejected")])
    assert out[0]["plan"][0]["status"] == "rejected" and out[0]["overallStatus"] == "rejected"
    assert (stats.iterations, stats.decisions) == (0, 1)


async def test_every_written_iteration_is_marked_also_in_batched_write_backs(
    db: Database, app_db_url: str, admin_db: Database
) -> None:
    for i in range(4):
        await put_row(db, f"u{i}", "aiMissions", f"m{i}", "insert", mission(f"m{i}"))
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        for _ in range(4):
            llm.reply_tool_calls([("create_task", {"title": "A"})])
        for _ in range(4):
            llm.reply_text("ok")
        assert (await app.ticker.tick()).decisions == {"ran": 4}
    marks = await admin_db.fetch(
        "SELECT user_id, mission_id, step_id FROM mana_ai.iteration_marks ORDER BY 1"
    )
    assert [(m["user_id"], m["mission_id"], m["step_id"]) for m in marks] == [
        (f"u{i}", f"m{i}", "") for i in range(4)
    ]


POISON = {
    # jsonb accepts it, orjson cannot load it: the refresh skips the row as unparseable.
    "unreadable number": ("update", '{"title": 1e400}'),
    # A soft delete whose deletedAt lies after year 9999 in UTC: the refresh skips it ("merge failed").
    "overflowing deletedAt": ("delete", '{"deletedAt": "9999-12-31T23:59:59.999-01:00"}'),
}


@pytest.mark.parametrize("poison", sorted(POISON))
async def test_a_row_the_refresh_skips_stops_no_restore(
    db: Database, admin_db: Database, poison: str
) -> None:
    # The restore read the log with the plain JSON loader and merged without the refresh's guard: one such
    # row in one user's log raised out of the loop over every changed mission of the refresh.
    users = ["u0", "u1", "u2"]
    for user in users:
        server = {**browser_iteration("s-" + user), "source": "server"}
        await put_row(db, user, "aiMissions", "m1", "insert", mission("m1", iterations=[server]))
        await admin_db.execute(
            "INSERT INTO mana_ai.iteration_marks (user_id, mission_id, iteration_id) VALUES (%s, 'm1', %s)",
            (user, "s-" + user),
        )
    await refresh_snapshots(db)
    op, data = POISON[poison]
    await admin_db.execute(
        "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,"
        " client_id) VALUES ('ai', 'aiMissions', 'm1', 'u0', %s, %s::jsonb, '{}', 'dev')",
        (op, data),
    )
    stamp = later()
    for user in users:  # every device, synced before our write-back, drops the server iteration
        await put_row(db, user, "aiMissions", "m1", "update", {"iterations": []}, {"iterations": stamp})
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_skipped == 1
    assert stats.restored_iterations == len(users)


async def test_a_device_stamp_at_the_end_of_time_is_restored_once_not_rewritten_every_refresh(
    db: Database, admin_db: Database
) -> None:
    server = {**browser_iteration("s1"), "source": "server"}
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", iterations=[server]))
    await admin_db.execute(
        "INSERT INTO mana_ai.iteration_marks (user_id, mission_id, iteration_id) VALUES ('u1', 'm1', 's1')"
    )
    await refresh_snapshots(db)
    last = "9999-12-31T23:59:59.999Z"  # valid JS-ISO: a device clock gone wrong
    await put_row(db, "u1", "aiMissions", "m1", "update", {"iterations": []}, {"iterations": last})
    counts = []
    for _ in range(3):
        await refresh_snapshots(db)
        counts.append((await admin_db.fetchrow("SELECT count(*) AS n FROM public.sync_changes"))["n"])
    snap = await admin_db.fetchrow("SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert counts[0] == counts[1] == counts[2], counts  # one restore row, then nothing
    assert [i["id"] for i in snap["record"]["iterations"]] == ["s1"]


async def test_a_restore_cut_off_by_a_lost_connection_is_made_by_the_next_refresh(
    db: Database, admin_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresh commits its cursor, then restores: a connection lost in between once left the mission
    # unchecked until it changed again (a paused mission: possibly never).
    from mana_ai.errors import ConnectionLostError
    from mana_ai.synclog import restore

    server = {**browser_iteration("s1"), "source": "server"}
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", iterations=[server], state="paused"))
    await admin_db.execute(
        "INSERT INTO mana_ai.iteration_marks (user_id, mission_id, iteration_id) VALUES ('u1', 'm1', 's1')"
    )
    await refresh_snapshots(db)
    await put_row(db, "u1", "aiMissions", "m1", "update", {"iterations": []}, {"iterations": later()})
    real = restore._restore_one

    async def cut_off(*_args: Any) -> Any:
        raise ConnectionLostError("database unreachable or connection lost: the server restarted")

    monkeypatch.setattr(restore, "_restore_one", cut_off)
    assert (await refresh_snapshots(db)).restored_iterations == 0
    monkeypatch.setattr(restore, "_restore_one", real)
    restored = [(await refresh_snapshots(db)).restored_iterations for _ in range(2)]
    assert restored == [1, 0]  # made once by the next refresh, then dequeued
    snap = await admin_db.fetchrow("SELECT record FROM mana_ai.mission_snapshots WHERE mission_id = 'm1'")
    assert [i["id"] for i in snap["record"]["iterations"]] == ["s1"]
    assert await admin_db.fetch("SELECT * FROM mana_ai.restore_pending") == []


async def test_an_expiry_found_by_approve_is_restored_like_one_found_by_the_inbox(db: Database) -> None:
    """Approving an expired proposal marks it skipped in the mission; a stale device edit that drops that
    decision must be undone as for every other decision (expire() marks it, approve()'s expiry does not)."""
    old = utcnow() - dt.timedelta(days=8)
    it = server_iteration("it1", [("create_task", {"title": "A"})], started=old)
    await seed(db, iterations=[it])
    await refresh_snapshots(db)

    result = await Decider(db, ttl=dt.timedelta(days=7)).approve("u1", ref(it, 0))
    assert result.status == "skipped"
    assert (await mission_state(db))["iterations"][0]["plan"][0]["status"] == "skipped"
    await refresh_snapshots(db)

    # A device that synced before the decision re-sends its copy of iterations (the step still staged).
    later = to_js_iso(utcnow() + dt.timedelta(seconds=5))
    await put_row(db, "u1", "aiMissions", "m1", "update", {"iterations": [it]}, {"iterations": later})
    await refresh_snapshots(db)

    step = (await mission_state(db))["iterations"][0]["plan"][0]
    assert step["status"] == "skipped", "the decision is in proposal_decisions but lost from the mission"


async def test_a_check_queued_again_meanwhile_stays_queued(db: Database, admin_db: Database) -> None:
    # One refresh checks a mission while another queues it again for a newer change: the first must not
    # dequeue the second's check (if the second's restore then failed, that change would never be checked).
    from mana_ai.synclog.restore import restore_lost

    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await refresh_snapshots(db)
    await admin_db.execute("INSERT INTO mana_ai.restore_pending (user_id, mission_id) VALUES ('u1', 'm1')")
    first = await admin_db.fetchrow("SELECT queued_at::text AS at FROM mana_ai.restore_pending")
    await admin_db.execute("UPDATE mana_ai.restore_pending SET queued_at = queued_at + interval '1 second'")
    await restore_lost(db, {("u1", "m1"): first["at"]})
    assert len(await admin_db.fetch("SELECT 1 FROM mana_ai.restore_pending")) == 1
    again = await admin_db.fetchrow("SELECT queued_at::text AS at FROM mana_ai.restore_pending")
    await restore_lost(db, {("u1", "m1"): again["at"]})
    assert await admin_db.fetch("SELECT 1 FROM mana_ai.restore_pending") == []
