"""Planning slots end to end: a mission's write-back does not keep a slot from the next mission."""

from __future__ import annotations

import asyncio
import time

import psycopg

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, running_app

MISSIONS = [f"m{i}" for i in range(6)]


async def _until(predicate, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def _until_rows(admin_db, query: str, limit_s: float = 10.0) -> None:
    """Until ``query`` answers ``ok``: polled, as the database has nothing to wait on."""
    deadline = time.monotonic() + limit_s
    while not (await admin_db.fetchrow(query))["ok"]:
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time: " + query)
        await asyncio.sleep(0.02)  # noqa: ASYNC110


async def test_missions_plan_while_earlier_write_backs_wait(db, db_url, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=10))
    for mission_id in MISSIONS:
        await put_row(db, "u1", "aiMissions", mission_id, "insert", mission(mission_id, agentId="a1"))
    # Another session holds the record locks every write-back of these missions takes first.
    holder = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        for mission_id in MISSIONS:
            await holder.execute(
                "SELECT pg_advisory_lock(hashtextextended('mana_ai.record:u1:' || %s, 0))", (mission_id,)
            )
        responder = conversation_responder(tool_name="create_task", arguments={"title": "x"})
        async with (
            FakeLlmServer(default=responder, latency_s=0.02) as llm,
            running_app(app_db_url, llm, max_concurrency=2) as app,
        ):
            tick = asyncio.ensure_future(app.ticker.tick())
            # Two slots, six missions, no write-back can finish: every mission is still planned.
            await _until(lambda: llm.request_count == 2 * len(MISSIONS))
            assert not tick.done()
            assert llm.peak_in_flight == 2  # never more missions at the LLM than slots
            running = await admin_db.fetchrow(
                "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state = 'running'"
            )
            assert running["n"] == len(MISSIONS)  # each claimed once, waiting to be written back
            await holder.execute("SELECT pg_advisory_unlock_all()")
            stats = await asyncio.wait_for(tick, 30)
        assert stats.decisions == {"ran": len(MISSIONS)}, stats.to_json()
        written = await admin_db.fetch(
            "SELECT record_id, count(*) AS n FROM public.sync_changes WHERE client_id = 'mana-ai-runner'"
            " GROUP BY record_id"
        )
        assert {r["record_id"]: r["n"] for r in written} == dict.fromkeys(MISSIONS, 1)
    finally:
        await holder.close()


async def test_a_mission_claimed_ahead_does_not_start_planning_after_shutdown(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=10))
    for mission_id in MISSIONS:
        await put_row(db, "u1", "aiMissions", mission_id, "insert", mission(mission_id, agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "x"})
    async with (
        FakeLlmServer(default=responder, latency_s=0.5) as llm,
        running_app(app_db_url, llm, max_concurrency=2) as app,
    ):
        tick = asyncio.ensure_future(app.ticker.tick())
        # Two missions plan, a third is claimed ahead and waits for a slot.
        await _until(lambda: llm.request_count == 2)

        await _until_rows(
            admin_db, "SELECT count(*) = 3 AS ok FROM mana_ai.mission_runs WHERE state = 'running'"
        )
        await app.ticker.dispatcher.drain(grace_s=20)  # the two planning finish, nothing new starts
        stats = await asyncio.wait_for(tick, 30)
    assert stats.decisions == {"ran": 2, "skipped-shutdown": 4}, stats.to_json()
    assert llm.request_count == 4  # the mission claimed ahead never reached the LLM
    runs = await admin_db.fetch("SELECT state, lease_until <= now() AS free FROM mana_ai.mission_runs")
    assert sorted(r["state"] for r in runs) == ["done", "done", "released"]
    # Its claim was given back at once, not left to the lease.
    assert [r["free"] for r in runs if r["state"] == "released"] == [True]


async def test_a_raised_agent_limit_is_used_without_a_restart(db, app_db_url, admin_db):
    # The process kept the agent's first-seen limit (its semaphore) for its whole life.
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=1))
    await put_row(db, "u1", "aiMissions", "m0", "insert", mission("m0", agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "x"})
    async with FakeLlmServer(default=responder, latency_s=0.3) as llm, running_app(app_db_url, llm) as app:
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        now = to_js_iso(utcnow())
        await put_row(
            db, "u1", "agents", "a1", "update", {"maxConcurrentMissions": 3}, {"maxConcurrentMissions": now}
        )
        for mission_id in ("m1", "m2", "m3"):
            await put_row(db, "u1", "aiMissions", mission_id, "insert", mission(mission_id, agentId="a1"))
        llm.peak_in_flight = 0
        assert (await app.ticker.tick()).decisions == {"ran": 3}
        assert llm.peak_in_flight == 3
