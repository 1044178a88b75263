"""The tick end to end: real Postgres (plain role), real LLM client against the fake OpenAI server."""

from __future__ import annotations

import datetime as dt

import pytest

from mana_ai.scheduler.cadence import next_run, parse_cadence
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import parse_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import (
    agent_record,
    capped_agent_with_mission,
    running_app,
)


async def latest_rows(admin_db, mission_id):
    return await admin_db.fetch(
        "SELECT data, field_meta, actor, origin, client_id, op, app_id, table_name, record_id, user_id"
        " FROM public.sync_changes WHERE record_id = %s AND client_id = 'mana-ai-runner' ORDER BY created_at",
        (mission_id,),
    )


async def test_due_mission_is_planned_and_written_back(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", name="Planner"))
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1", objective="Ordne meine Woche")
    )
    responder = conversation_responder(
        tool_name="create_task", arguments={"title": "Wochenplan"}, usage=(100, 20)
    )
    async with FakeLlmServer(default=responder) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.due_mission_count == 1, stats.to_json()
        assert stats.plans_written_back == 1, stats.to_json()
        rows = await latest_rows(admin_db, "m1")
        assert len(rows) == 1
        row = rows[0]
        assert (row["app_id"], row["table_name"], row["user_id"], row["op"]) == (
            "ai",
            "aiMissions",
            "u1",
            "update",
        )
        assert row["origin"] == "agent"
        iterations = row["data"]["iterations"]
        assert len(iterations) == 1
        it = iterations[0]
        assert it["source"] == "server" and it["overallStatus"] == "awaiting-review"
        assert it["plan"][0]["intent"] == {
            "kind": "toolCall",
            "toolName": "create_task",
            "params": {"title": "Wochenplan"},
        }
        assert it["plan"][0]["id"] == f"{it['id']}-0" and it["plan"][0]["status"] == "staged"
        assert set(row["field_meta"]) == {"iterations", "nextRunAt"}
        assert row["field_meta"]["iterations"] == it["startedAt"]
        assert row["actor"] == {
            "kind": "ai",
            "principalId": "a1",
            "displayName": "Planner",
            "missionId": "m1",
            "iterationId": it["id"],
            "rationale": "Ordne meine Woche",
        }
        # nextRunAt advanced by the interval (60 min) from now: the mission is no longer due (W1).
        nxt = parse_iso(row["data"]["nextRunAt"])
        assert 59 * 60 <= (nxt - utcnow()).total_seconds() <= 61 * 60
        again = await app.ticker.tick()
        assert again.due_mission_count == 0
        usage = await admin_db.fetchrow("SELECT sum(tokens_used) AS t FROM mana_ai.token_usage")
        assert usage["t"] == 240  # two LLM rounds of 120 tokens


async def test_paused_archived_unknown_agents_are_skipped(db, app_db_url):
    await put_row(db, "u1", "agents", "p", "insert", agent_record("p", state="paused"))
    await put_row(db, "u1", "agents", "x", "insert", agent_record("x", state="archived"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="p"))
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2", agentId="x"))
    await put_row(db, "u1", "aiMissions", "m3", "insert", mission("m3", agentId="ghost"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions == {"skipped-paused": 1, "skipped-archived": 1, "skipped-unknown-agent": 1}
        assert llm.request_count == 0
        text = app.metrics.render().decode()
        assert 'mana_ai_agent_decisions_total{decision="skipped-unknown-agent",service="mana-ai"} 1.0' in text
        assert 'mana_ai_agent_decisions_total{decision="skipped-paused",service="mana-ai"} 1.0' in text


async def test_budget_gate_and_missions_without_agent(db, app_db_url, admin_db):
    await capped_agent_with_mission(db, admin_db, agent_id="b", cap=100, used=150)
    await put_row(db, "u2", "aiMissions", "m2", "insert", mission("m2"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions["skipped-budget"] == 1
        assert stats.decisions["ran"] == 1
        rows = await latest_rows(admin_db, "m2")
        assert rows[0]["actor"]["principalId"] == "legacy:ai-default"
        assert rows[0]["actor"]["displayName"] == "Mana"


async def test_one_corrupt_agent_does_not_stop_other_users(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    await put_row(db, "u2", "agents", "a2", "insert", agent_record("a2"))
    await put_row(db, "u2", "aiMissions", "m2", "insert", mission("m2", agentId="a2"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(type("S", (), {"errors": []})())  # type: ignore[arg-type]
        # Corrupt u1's agent snapshot behind the refresh's back (a bug, a bad migration, a bit flip).
        await admin_db.execute(
            'UPDATE mana_ai.agent_snapshots SET record = \'{"id": 5, "maxConcurrentMissions": "many",'
            ' "policy": [1,2], "state": 7}\' WHERE user_id = \'u1\''
        )
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] >= 1
        assert len(await latest_rows(admin_db, "m2")) == 1


async def test_invalid_cadence_fails_once_with_reason(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence={"kind": "fortnightly"}))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions["failed"] == 1
        rows = await latest_rows(admin_db, "m1")
        assert rows[0]["data"]["nextRunAt"] is None
        it = rows[0]["data"]["iterations"][-1]
        assert it["overallStatus"] == "failed" and "cadence" in it["errorDetails"]["message"]
        assert (await app.ticker.tick()).due_mission_count == 0
        assert llm.request_count == 0


async def test_concurrency_gate_counts_runs_of_other_processes(db, app_db_url, admin_db):
    # Another worker holds a live claim for a mission of the same agent (limit 1): this one must wait.
    await put_row(db, "u1", "agents", "solo", "insert", agent_record("solo", maxConcurrentMissions=1))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="solo"))
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, agent_id, state, owner, lease_until)"
        " VALUES ('u1', 'other', 'x', 'solo', 'running', 'another-worker', now() + interval '5 minutes')"
    )
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions == {"skipped-concurrency": 1}
        assert (
            'mana_ai_agent_decisions_total{decision="skipped-concurrency",service="mana-ai"} 1.0'
            in app.metrics.render().decode()
        )
        await admin_db.execute("UPDATE mana_ai.mission_runs SET state = 'done' WHERE mission_id = 'other'")
        assert (await app.ticker.tick()).decisions == {"ran": 1}  # skipped, not starved: next tick it runs


async def test_budget_cut_off_inside_the_loop(db, app_db_url, admin_db):
    # 150 of 200 tokens used; every round costs 120: one round, then the loop stops (no overshoot by rounds).
    await capped_agent_with_mission(db, admin_db, agent_id="b", cap=200, used=150)
    responder = conversation_responder(tool_name="create_task", arguments={"title": "t"}, usage=(100, 20))
    async with FakeLlmServer(default=responder) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1}
        assert llm.request_count == 1
    rows = await latest_rows(admin_db, "m1")
    it = rows[0]["data"]["iterations"][-1]
    assert [s["intent"]["toolName"] for s in it["plan"]] == ["create_task"]
    assert "budget" in it["summary"]
    used = await admin_db.fetchrow(
        "SELECT sum(tokens_used) AS t FROM mana_ai.token_usage WHERE agent_id = 'b'"
    )
    assert used["t"] == 270  # the run's tokens are recorded too


@pytest.mark.parametrize(
    "cadence",
    [
        {"kind": "interval", "everyMinutes": 90},
        {"kind": "daily", "atHour": 7, "atMinute": 30, "timezone": "Europe/Berlin"},
        {"kind": "weekly", "dayOfWeek": 1, "atHour": 9},
        {"kind": "cron", "expression": "30 2 * * *", "timezone": "Europe/Berlin"},
        {"kind": "manual"},
    ],
    ids=lambda c: c["kind"],
)
async def test_next_run_at_advances_by_the_cadence(db, app_db_url, admin_db, cadence):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=cadence))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        before = utcnow()
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        after = utcnow()
    written = (await latest_rows(admin_db, "m1"))[0]["data"]["nextRunAt"]
    parsed = parse_cadence(cadence)
    expected = {next_run(parsed, after=t, default_tz="UTC") for t in (before, after)}
    if cadence["kind"] == "manual":
        assert written is None
    elif cadence["kind"] == "interval":
        lo, hi = sorted(e for e in expected if e)
        assert lo - dt.timedelta(milliseconds=1) <= parse_iso(written) <= hi
    else:
        # Wall-clock cadences land on the same instant whenever in the tick it was computed.
        (only,) = expected
        assert only is not None and parse_iso(written) == only and only > after


async def test_a_batch_holding_a_mission_planned_meanwhile_does_not_plan_its_next_run(
    db, app_db_url, admin_db
):
    # A planning batch deferred while the mission was due can start after another worker planned it: the
    # fresh snapshot then carries the next, future nextRunAt, which is not due and must not be claimed.
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        first = await app.ticker.tick()
        assert first.plans_written_back == 1, first.to_json()
        again = await app.ticker.tick()  # folds the write-back: nextRunAt is an hour ahead now
        assert again.due_mission_count == 0, again.to_json()
        stale_batch = await app.ticker.store.missions_by_key([("u1", "m1")])
        assert stale_batch and stale_batch[0].next_run_at > first.scanned_at
        agents = await app.ticker.store.agents_for_users(["u1"])
        results = await app.ticker.dispatcher.run_all(stale_batch, agents)
        assert [r.decision for r in results] == ["not-due"]
    assert len(await latest_rows(admin_db, "m1")) == 1
