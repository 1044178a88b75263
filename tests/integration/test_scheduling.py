"""Scheduling on real Postgres (issue 15, 14.3, 16): budget reservations, fair dispatch, re-checks at claim
time, missed runs, leases with a heartbeat, skip details."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from mana_ai.metrics import Metrics
from mana_ai.runner.limits import PACE_FACTOR, ClusterPacer
from mana_ai.runner.scheduling import update_budget_gauges
from mana_ai.runner.tick import DISPATCH_HOLD
from mana_ai.synclog.records import ServerMission
from mana_ai.testing.fake_llm import FakeLlmServer, FakeResponse, conversation_responder
from mana_ai.timefmt import parse_iso, to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import (
    agent_record,
    capped_agent_with_mission,
    running_app,
)


async def runner_rows(admin_db, mission_id: str) -> list[dict]:
    return await admin_db.fetch(
        "SELECT data FROM public.sync_changes WHERE client_id = 'mana-ai-runner' AND record_id = %s"
        " ORDER BY created_at",
        (mission_id,),
    )


async def planned_missions(admin_db) -> set[str]:
    rows = await admin_db.fetch(
        "SELECT DISTINCT record_id FROM public.sync_changes WHERE client_id = 'mana-ai-runner'"
    )
    return {r["record_id"] for r in rows}


def refresh_stats():
    return type("S", (), {"errors": []})()


# --- budget ---------------------------------------------------------------------------------------------


async def test_concurrent_claims_cannot_overshoot_a_small_budget(db, app_db_url, admin_db):
    # Concurrency 5, 300 tokens a day; a round costs 350 (more than the whole budget). Before reservations
    # all five were planned at once: each claim saw 0 tokens used.
    await put_row(
        db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=5, maxTokensPerDay=300)
    )
    for i in range(5):
        await put_row(db, "u1", "aiMissions", f"m{i}", "insert", mission(f"m{i}", agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "t"}, usage=(250, 100))
    async with (
        FakeLlmServer(default=responder, latency_s=0.2) as llm,
        running_app(app_db_url, llm) as app,
    ):
        stats = await app.ticker.tick()
        assert stats.decisions == {"ran": 1, "skipped-budget": 4}, stats.to_json()
        skipped = [r for r in stats.results if r.decision == "skipped-budget"]
        assert all("reserved" in r.detail and "300" in r.detail for r in skipped), [r.detail for r in skipped]
        # The run stopped at its share: one round of 350 tokens, not two.
        assert llm.request_count == 1
        # Next tick: the recorded usage is over the cap, nothing more is planned.
        assert (await app.ticker.tick()).decisions == {"skipped-budget": 4}
        used, reserved = await app.ticker.store.agent_budget("u1", "a1")
        assert (used, reserved) == (350, 0)
        text = app.metrics.render().decode()
        # Recorded usage over the cap (350 of 300); the one run that crossed 80 % warned once.
        assert f'mana_ai_agent_budget_ratio{{agent_id="a1",service="mana-ai"}} {350 / 300}' in text
        assert 'mana_ai_agent_budget_warnings_total{service="mana-ai"} 1.0' in text
    assert len(await planned_missions(admin_db)) == 1


async def test_a_new_agents_first_run_is_no_budget_warning(db, app_db_url):
    # No history: the first claim reserves the whole cap, but 240 of 100,000 tokens is far from the cap.
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=100_000))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "t"}, usage=(100, 20))
    async with FakeLlmServer(default=responder) as llm, running_app(app_db_url, llm) as app:
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        text = app.metrics.render().decode()
        assert f'mana_ai_agent_budget_ratio{{agent_id="a1",service="mana-ai"}} {240 / 100_000}' in text
        assert 'mana_ai_agent_budget_warnings_total{service="mana-ai"} 0.0' in text


async def test_overlapping_runs_of_one_agent_warn_once_on_their_total(db, app_db_url, admin_db):
    # 799,600 of 1,000,000 used; two runs of 240 tokens each plan at once. Each one alone stays under 80 %
    # (799,840), together they cross it (800,080): the warning must fire once, the gauge show the total.
    agent = agent_record("a1", maxConcurrentMissions=2, maxTokensPerDay=1_000_000)
    await put_row(db, "u1", "agents", "a1", "insert", agent)
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)"
        " SELECT 'u1', 'a1', 'old' || g, CASE WHEN g = 1 THEN 9600 ELSE 10000 END FROM generate_series(1, 80) g"
    )
    for i in range(2):
        await put_row(db, "u1", "aiMissions", f"m{i}", "insert", mission(f"m{i}", agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "t"}, usage=(100, 20))
    async with FakeLlmServer(default=responder, latency_s=0.2) as llm, running_app(app_db_url, llm) as app:
        assert (await app.ticker.tick()).decisions == {"ran": 2}
        assert llm.peak_in_flight == 2  # the runs really overlapped
        text = app.metrics.render().decode()
        assert f'mana_ai_agent_budget_ratio{{agent_id="a1",service="mana-ai"}} {800_080 / 1_000_000}' in text
        assert 'mana_ai_agent_budget_warnings_total{service="mana-ai"} 1.0' in text


def budget_ratio(app) -> float | None:
    return app.metrics.registry.get_sample_value("mana_ai_agent_budget_ratio", {"agent_id": "a1"})


@asynccontextmanager
async def agent_at_85_percent(db, app_db_url, admin_db):
    """An app whose agent ``a1`` (cap 1,000) is at 850 tokens after one run of 240 and earlier usage of 610."""
    await capped_agent_with_mission(db, admin_db, agent_id="a1", cap=1000, used=610)
    responder = conversation_responder(tool_name="create_task", arguments={"title": "t"}, usage=(100, 20))
    async with FakeLlmServer(default=responder) as llm, running_app(app_db_url, llm) as app:
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        assert budget_ratio(app) == 850 / 1000
        assert app.ticker.ctx.budget_gauges.shown() == [("u1", "a1")]
        yield app


async def test_the_budget_gauge_follows_an_agent_that_stopped_running(db, app_db_url, admin_db):
    # An agent at 85 % stops running. Its usage leaves the 24 h window; the gauge (and the alert on it) must
    # follow, not keep the value of the agent's last run.
    async with agent_at_85_percent(db, app_db_url, admin_db) as app:
        await update_budget_gauges(app.ticker)  # nothing changed: the same value
        assert budget_ratio(app) == 850 / 1000
        # The older tokens leave the window.
        await admin_db.execute(
            "UPDATE mana_ai.token_usage SET ts = now() - interval '25 hours' WHERE mission_id = 'old'"
        )
        await update_budget_gauges(app.ticker)
        assert budget_ratio(app) == 240 / 1000  # the run's two rounds
        # Then the last run's too: the gauge reads 0 and the agent costs no more queries.
        await admin_db.execute("UPDATE mana_ai.token_usage SET ts = now() - interval '25 hours'")
        await update_budget_gauges(app.ticker)
        assert budget_ratio(app) == 0.0 and app.ticker.ctx.budget_gauges.shown() == []


async def test_the_budget_gauge_follows_a_changed_cap(db, app_db_url, admin_db):
    # The user raises the cap of an agent at 85 %, then removes it. The heartbeat must divide by the cap the
    # agent has now, not by the one this process saw at its last claim: with the old one the gauge stayed at
    # 85 % (and grew past 100 % while the uncapped agent ran on), and another process that claimed the agent
    # since would be overwritten at every heartbeat.
    async with agent_at_85_percent(db, app_db_url, admin_db) as app:
        await put_row(db, "u1", "agents", "a1", "update", {"maxTokensPerDay": 10_000})
        await app.ticker.refresh(refresh_stats())
        await update_budget_gauges(app.ticker)
        assert budget_ratio(app) == 850 / 10_000
        await put_row(db, "u1", "agents", "a1", "update", {"maxTokensPerDay": None})
        await app.ticker.refresh(refresh_stats())
        await update_budget_gauges(app.ticker)
        assert budget_ratio(app) == 0.0 and app.ticker.ctx.budget_gauges.shown() == []


async def test_reservation_follows_the_agents_recent_runs(db, app_db_url, admin_db):
    # Recent runs cost ~100 tokens: a run reserves 200, so a 1,000-token budget admits runs while it lasts.
    await put_row(
        db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=10, maxTokensPerDay=1000)
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)"
        " SELECT 'u1', 'a1', 'old' || g, 100 FROM generate_series(1, 3) g"
    )
    for i in range(6):
        await put_row(db, "u1", "aiMissions", f"m{i}", "insert", mission(f"m{i}", agentId="a1"))
    async with FakeLlmServer(default=conversation_responder(usage=(40, 10))) as llm:
        async with running_app(app_db_url, llm) as app:
            await app.ticker.refresh(refresh_stats())
            store = app.ticker.store
            agents = await store.agents_for_users(["u1"])
            agent = agents[("u1", "a1")]
            due = await store.due_missions(to_js_iso(utcnow()), 100)
            claims = [await store.claim(m, m.next_run_at or "", agent, timedelta(seconds=30)) for m in due]
    # 700 left after 300 used: shares of 200, 200, 200, then the last 100 (it covers one average run).
    assert [c.decision for c in claims] == ["claimed"] * 4 + ["skipped-budget"] * 2
    assert [c.token_share for c in claims[:4]] == [200, 200, 200, 100]
    assert claims[4].tokens_reserved == 700 and claims[4].tokens_used_24h == 300
    assert "300 tokens used and 700 reserved of the agent's 1000" in claims[4].detail


ROUND_TOKENS = 350
"""What one request of :func:`several_rounds` costs (250 prompt + 100 completion tokens)."""
RACE_CAP = 800
"""A daily cap of about two rounds."""


def several_rounds():
    """Plans of three rounds (a tool call in each, then a final answer), 350 tokens a request."""
    return conversation_responder(
        tool_name="create_task", arguments={"title": "t"}, usage=(250, 100), tool_rounds=3
    )


async def seed_budget_race(db, admin_db, *, missions: int = 5) -> None:
    """An agent allowing 5 runs at once with a cap of about two rounds, ``missions`` due missions, and ten
    cheap earlier runs older than 24 h: they do not count against today's cap but make the agent's recent
    average small (50), so every claim reserves a small share (100) and all five runs are claimed at once."""
    await put_row(
        db,
        "u1",
        "agents",
        "a1",
        "insert",
        agent_record("a1", maxConcurrentMissions=5, maxTokensPerDay=RACE_CAP),
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used, ts)"
        " SELECT 'u1', 'a1', 'old' || g, 50, now() - interval '25 hours' - g * interval '1 minute'"
        " FROM generate_series(1, 10) g"
    )
    for i in range(missions):
        await put_row(db, "u1", "aiMissions", f"b{i}", "insert", mission(f"b{i}", agentId="a1"))


async def tokens_recorded_24h(admin_db, agent_id: str = "a1") -> int:
    row = await admin_db.fetchrow(
        "SELECT coalesce(sum(tokens_used), 0)::bigint AS t FROM mana_ai.token_usage"
        " WHERE agent_id = %s AND ts > now() - interval '24 hours'",
        (agent_id,),
    )
    return int(row["t"])


async def test_concurrent_runs_overshoot_the_cap_by_at_most_one_round_in_total(db, app_db_url, admin_db):
    # Before round reservations every one of the five runs could cross its share by a round: 1,750 tokens
    # against a cap of 800. Now a round is sent only when its worst case fits next to everything recorded and
    # in flight, or when it is the agent's only round in flight: the cap plus one round at most.
    await seed_budget_race(db, admin_db)
    async with FakeLlmServer(default=several_rounds()) as llm, running_app(app_db_url, llm) as app:
        for _ in range(6):
            await app.ticker.tick()
        in_flight = await admin_db.fetchrow(
            "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state = 'running'"
        )
    assert in_flight["n"] == 0
    used = await tokens_recorded_24h(admin_db)
    assert RACE_CAP <= used <= RACE_CAP + ROUND_TOKENS, used


async def test_a_refused_round_ends_the_run_with_stop_reason_budget_and_keeps_its_steps(
    db, app_db_url, admin_db
):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=1000))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    # Another run of the agent in flight has spent 700 tokens (no round of it is in flight right now).
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, agent_id, state, owner, lease_until,"
        " started_at, tokens_spent, round_at) VALUES ('u1', 'other', 'x', 'a1', 'running', 'elsewhere',"
        " now() + interval '1 minute', now() - interval '1 second', 700, now())"
    )
    async with FakeLlmServer(default=several_rounds()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        # Round 1 goes alone (700 + 0 < 1,000); round 2 would start at 700 + 350: refused before sending.
        assert stats.decisions == {"ran": 1}, stats.to_json()
        assert llm.request_count == 1
    it = (await runner_rows(admin_db, "m1"))[-1]["data"]["iterations"][-1]
    assert it["stopReason"] == "budget"
    assert [s["intent"]["toolName"] for s in it["plan"]] == ["create_task"]
    assert "another round could take the agent past its daily token budget" in it["summary"]
    assert await tokens_recorded_24h(admin_db) == ROUND_TOKENS


async def claimed_run(admin_db, mission_id: str, *, owner: str = "w1") -> None:
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, agent_id, state, owner, lease_until,"
        " started_at) VALUES ('u1', %s, 'x', 'a1', 'running', %s, now() + interval '1 minute', now())"
        " ON CONFLICT (user_id, mission_id) DO UPDATE SET state = 'running', owner = EXCLUDED.owner,"
        " lease_until = EXCLUDED.lease_until, started_at = now()",
        (mission_id, owner),
    )


async def finished_run(admin_db, mission_id: str, tokens: int) -> None:
    """The write-back's effect on the budget: the run's usage recorded, the run no longer in flight."""
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used) VALUES ('u1', 'a1', %s, %s)",
        (mission_id, tokens),
    )
    await admin_db.execute(
        "UPDATE mana_ai.mission_runs SET state = 'done' WHERE mission_id = %s", (mission_id,)
    )


async def reserve_round(db, mission_id: str, *, worst: int, spent: int = 0, owner: str = "w1"):
    from mana_ai.db.queries import q

    return await db.fetchrow(
        q("budget_round"),
        {
            "user_id": "u1",
            "mission_id": mission_id,
            "agent_id": "a1",
            "owner": owner,
            "cap": 1000,
            "spent": spent,
            "worst": worst,
        },
    )


async def test_a_round_is_admitted_when_it_fits_or_is_the_agents_only_round_in_flight(db, admin_db):
    # As the service's role (grants), against a cap of 1,000.
    for m in ("r1", "r2", "r3", "r4"):
        await claimed_run(admin_db, m)
    # Two rounds of at most 400 fit; a third does not while both are in flight.
    assert (await reserve_round(db, "r1", worst=400))["admitted"]
    assert (await reserve_round(db, "r2", worst=400))["admitted"]
    refused = await reserve_round(db, "r3", worst=400)
    assert not refused["admitted"] and refused["tokens_held"] == 800
    assert "up to 400 tokens, 200 of the agent's 1000 per 24 h are left" in refused["detail"]
    assert "2 other round(s)" in refused["detail"]
    # r1's round cost 100: its next reservation settles it (100 + 400 next to r2's 400 still fits).
    assert (await reserve_round(db, "r1", spent=100, worst=400))["admitted"]
    await finished_run(admin_db, "r1", 300)
    await finished_run(admin_db, "r2", 300)
    # 600 used, nothing in flight: a round larger than what is left goes, as the only one...
    assert (await reserve_round(db, "r3", worst=5000))["admitted"]
    # ...and no other round goes while it is in flight, however small.
    assert not (await reserve_round(db, "r4", worst=10))["admitted"]
    # A dead process's reservation stops counting when its lease runs out.
    await admin_db.execute(
        "UPDATE mana_ai.mission_runs SET lease_until = now() - interval '1 second' WHERE mission_id = 'r3'"
    )
    row = await reserve_round(db, "r4", worst=5000)
    assert row["admitted"] and row["tokens_held"] == 0 and row["tokens_used_24h"] == 600
    # Once used and held reach the cap, not even a round alone goes.
    await finished_run(admin_db, "r4", 400)
    await claimed_run(admin_db, "r5")
    row = await reserve_round(db, "r5", worst=10)
    assert not row["admitted"]
    assert row["detail"] == (
        "1000 tokens used, 0 held by runs in flight and 0 spent by this run: the agent's 1000 per 24 h are taken"
    )
    # The run whose lease expired is refused too: its claim is lost.
    row = await reserve_round(db, "r3", spent=50, worst=10)
    assert not row["admitted"] and row["detail"] == "the run's claim was lost"


async def test_a_reclaimed_mission_does_not_carry_its_last_runs_reservation(db, admin_db):
    await claimed_run(admin_db, "r1")
    assert (await reserve_round(db, "r1", spent=300, worst=400))["admitted"]
    await finished_run(admin_db, "r1", 500)
    await claimed_run(admin_db, "r1")  # the next due run of the same mission, claimed again
    await claimed_run(admin_db, "r2")
    row = await reserve_round(db, "r2", worst=400)
    assert row["admitted"] and row["tokens_held"] == 0 and row["tokens_used_24h"] == 500


# --- fairness -------------------------------------------------------------------------------------------


async def seed_noisy_neighbour(admin_db, due_iso: str, *, noisy: int = 2000, small: int = 50) -> None:
    """One user with ``noisy`` due missions, ``small`` users with one each (rows as the web app writes)."""
    rows = [("noisy", f"n{i:04d}") for i in range(noisy)] + [
        (f"s{u:02d}", f"s{u:02d}-m") for u in range(small)
    ]
    import orjson

    await admin_db.execute(
        "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,"
        " client_id, actor, origin)"
        " SELECT 'ai', 'aiMissions', r.mission_id, r.user_id, 'insert', r.data::jsonb, '{}'::jsonb, 'web',"
        " jsonb_build_object('kind', 'user', 'principalId', r.user_id), 'user'"
        " FROM jsonb_to_recordset(%s::jsonb) AS r(user_id text, mission_id text, data text)",
        (
            orjson.dumps(
                [
                    {
                        "user_id": user,
                        "mission_id": mid,
                        "data": orjson.dumps(mission(mid, nextRunAt=due_iso)).decode(),
                    }
                    for user, mid in rows
                ]
            ).decode(),
        ),
    )


async def test_dispatch_is_round_robin_across_users(db, app_db_url, admin_db):
    await seed_noisy_neighbour(admin_db, to_js_iso(utcnow() - timedelta(seconds=5)))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(refresh_stats())
        store = app.ticker.store
        keys = await store.dispatch_due(to_js_iso(utcnow()), 5000, DISPATCH_HOLD)
        # Every small user is in the first wave: the first 51 picks are one per user.
        first = keys[:51]
        assert len({user for user, _ in first}) == 51
        assert len(keys) == 2050
        # Dispatched missions are held: a second dispatcher (or the next second) gets none of them again.
        assert await store.dispatch_due(to_js_iso(utcnow()), 5000, DISPATCH_HOLD) == []
        # In-process tick order is fair too.
        due = await store.due_missions(to_js_iso(utcnow()), 51)
        assert len({m.user_id for m in due}) == 51


async def test_dispatch_round_robins_a_users_agents_and_respects_free_slots(db, app_db_url, admin_db):
    for agent in ("a", "b"):
        await put_row(db, "u1", "agents", agent, "insert", agent_record(agent, maxConcurrentMissions=2))
    past = utcnow() - timedelta(minutes=1)
    for i in range(5):
        for agent in ("a", "b"):
            due = to_js_iso(past + timedelta(seconds=i))
            await put_row(
                db,
                "u1",
                "aiMissions",
                f"{agent}{i}",
                "insert",
                mission(f"{agent}{i}", agentId=agent, nextRunAt=due),
            )
    await put_row(db, "u1", "agents", "p", "insert", agent_record("p", state="paused"))
    await put_row(db, "u1", "aiMissions", "p0", "insert", mission("p0", agentId="p"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(refresh_stats())
        keys = await app.ticker.store.dispatch_due(to_js_iso(utcnow()), 100, DISPATCH_HOLD)
    # Two free slots per agent: the two oldest of each, alternating; the paused agent's mission waits.
    assert [k[1] for k in keys] == ["a0", "b0", "a1", "b1"]


# --- state re-checked at claim time ---------------------------------------------------------------------


async def test_a_mission_paused_while_its_batch_waited_is_not_planned(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(refresh_stats())
        stale_copy = (await app.ticker.store.missions_by_key([("u1", "m1")]))[0]
        await put_row(db, "u1", "aiMissions", "m1", "update", {"state": "paused"})
        await app.ticker.refresh(refresh_stats())
        # The job still carries the active copy it was given.
        results = await app.ticker.dispatcher.run_all([stale_copy], {})
        assert [(r.decision, r.detail) for r in results] == [("stale", "the mission is paused")]
        assert llm.request_count == 0


async def test_an_agent_paused_after_dispatch_is_rechecked(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(refresh_stats())
        store = app.ticker.store
        agents = await store.agents_for_users(["u1"])
        await put_row(db, "u1", "agents", "a1", "update", {"state": "paused"})
        await app.ticker.refresh(refresh_stats())
        results = await app.ticker.dispatcher.run_all(await store.missions_by_key([("u1", "m1")]), agents)
        assert [(r.decision, r.detail) for r in results] == [("skipped-paused", "the agent is paused")]
        assert llm.request_count == 0


async def test_every_skip_has_a_detail(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "solo", "insert", agent_record("solo", maxConcurrentMissions=1))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="solo"))
    await put_row(db, "u1", "aiMissions", "m2", "insert", mission("m2"))
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, agent_id, state, owner, lease_until)"
        " VALUES ('u1', 'other', 'x', 'solo', 'running', 'w2', now() + interval '5 minutes')"
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, state, owner, lease_until,"
        " consecutive_failures, not_before, last_error)"
        " VALUES ('u1', 'm2', 'y', 'failed', 'w2', now(), 2, now() + interval '5 minutes', 'provider-timeout')"
    )
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
    details = {r.mission_id: (r.decision, r.detail) for r in stats.results}
    assert details["m1"][0] == "skipped-concurrency" and "1 of the agent's 1" in details["m1"][1]
    assert (
        details["m2"][0] == "backoff" and "2 failed attempt(s) in a row: provider-timeout" in details["m2"][1]
    )


# --- missed runs ----------------------------------------------------------------------------------------


async def test_missed_runs_are_coalesced_into_one(db, app_db_url, admin_db):
    # Every 10 minutes, last due 4 minutes ago and several occurrences before it: planned once, next run
    # counted from now.
    due = utcnow() - timedelta(minutes=4)
    cadence = {"kind": "interval", "everyMinutes": 10}
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=cadence, nextRunAt=to_js_iso(due))
    )
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        before = utcnow()
        assert (await app.ticker.tick()).decisions == {"ran": 1}
        assert (await app.ticker.tick()).decisions == {}
        assert 'mana_ai_due_delay_seconds_count{service="mana-ai"} 1.0' in app.metrics.render().decode()
    rows = await runner_rows(admin_db, "m1")
    assert len(rows) == 1
    assert parse_iso(rows[0]["data"]["nextRunAt"]) >= before + timedelta(minutes=10)


async def test_a_run_missed_beyond_the_grace_window_is_skipped_with_a_note(db, app_db_url, admin_db):
    # A daily 07:30 briefing found 14 hours late (grace: 12 h) is not planned at 21:30.
    due = utcnow() - timedelta(hours=14)
    cadence = {"kind": "daily", "atHour": due.hour, "atMinute": due.minute}
    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", cadence=cadence, nextRunAt=to_js_iso(due))
    )
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions == {"skipped-missed": 1}
        assert llm.request_count == 0
    data = (await runner_rows(admin_db, "m1"))[0]["data"]
    note = data["iterations"][-1]
    assert note["summary"].startswith("skipped, missed while the runner was down")
    assert note["plan"] == [] and note["overallStatus"] == "approved"
    nxt = parse_iso(data["nextRunAt"])
    assert utcnow() < nxt <= utcnow() + timedelta(days=1)
    assert (nxt.hour, nxt.minute) == (due.hour, due.minute)


async def test_the_grace_window_is_configurable(db, app_db_url, admin_db):
    due = utcnow() - timedelta(minutes=3)
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", nextRunAt=to_js_iso(due)))
    async with FakeLlmServer(default=conversation_responder()) as llm:
        async with running_app(app_db_url, llm, missed_run_grace=timedelta(minutes=2)) as app:
            assert (await app.ticker.tick()).decisions == {"skipped-missed": 1}


# --- leases ---------------------------------------------------------------------------------------------


async def test_heartbeat_renews_the_leases_this_process_holds(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(refresh_stats())
        store = app.ticker.store
        m: ServerMission = (await store.missions_by_key([("u1", "m1")]))[0]
        claim = await store.claim(m, m.next_run_at or "", None, timedelta(seconds=5))
        assert claim.decision == "claimed"
        await admin_db.execute("UPDATE mana_ai.mission_runs SET lease_until = now() + interval '1 second'")
        # Only what the process is planning right now is renewed (a run it lost track of expires).
        assert await store.heartbeat(timedelta(seconds=30)) == (0, 0)
        store.planning.add(("u1", "m1"))
        assert await store.heartbeat(timedelta(seconds=30)) == (1, 0)
        row = await admin_db.fetchrow(
            "SELECT lease_until - now() > interval '25 seconds' AS renewed FROM mana_ai.mission_runs"
        )
        assert row["renewed"]
        # Closing the process gives back what it still holds.
    row = await admin_db.fetchrow("SELECT state FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
    assert row["state"] == "released"


# --- budget shown ---------------------------------------------------------------------------------------


async def test_agents_show_and_the_agent_page_show_used_reserved_and_cap(db, app_db_url, admin_db):
    import asyncio

    import click
    from click.testing import CliRunner

    from mana_ai.cli import data as data_cli
    from tests.integration.test_workbench_web import page, workbench

    await put_row(
        db, "local", "agents", "a1", "insert", agent_record("a1", name="Koch", maxTokensPerDay=2000)
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)"
        " VALUES ('local', 'a1', 'm0', 1200)"
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, agent_id, state, owner, lease_until,"
        " token_share) VALUES ('local', 'm1', 'x', 'a1', 'running', 'w', now() + interval '1 minute', 400)"
    )
    expected = "1,200 used + 400 reserved of 2,000 tokens per 24 h (80 %) — running out"

    def run() -> str:
        group = click.Group("mana-ai")
        data_cli.register(group)
        env = {"SYNC_DATABASE_URL": app_db_url, "MANA_AI_USER": "local", "COLUMNS": "200", "NO_COLOR": "1"}
        # The CLI configures logging for the process: leave it as the other tests expect it.
        package_logger, root = logging.getLogger("mana_ai"), logging.getLogger()
        saved = (package_logger.level, package_logger.propagate, list(package_logger.handlers))
        root_saved = (root.level, list(root.handlers))
        try:
            result = CliRunner().invoke(group, ["agents", "show", "Koch"], env=env)
        finally:
            package_logger.setLevel(saved[0])
            package_logger.propagate = saved[1]
            package_logger.handlers[:] = saved[2]
            root.setLevel(root_saved[0])
            root.handlers[:] = root_saved[1]
        assert result.exit_code == 0, result.output
        return result.output

    assert "budget: " + expected in await asyncio.to_thread(run)
    async with workbench(app_db_url) as (_app, _base, client):
        status, html, _ = await page(client, "/workbench/agents/a1")
    assert status == 200 and expected in html


async def test_auto_pause_says_why(db, app_db_url, admin_db):
    from mana_ai.testing.fake_llm import FakeResponse

    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    always_down = lambda _req: FakeResponse(status=500, body=b'{"detail":"down"}')  # noqa: E731
    async with (
        FakeLlmServer(default=always_down) as llm,
        running_app(app_db_url, llm, retry_backoff=0, max_consecutive_failures=2) as app,
    ):
        await app.ticker.tick()
        stats = await app.ticker.tick()
    [result] = stats.results
    assert result.decision == "paused-after-failures"
    assert "paused after 2 failed attempts in a row" in result.detail and "500" in result.detail
    run = await admin_db.fetchrow("SELECT last_error FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
    assert "paused after 2 failed attempts" in run["last_error"]


def always_down(_req: object) -> FakeResponse:
    return FakeResponse(status=500, body=b'{"detail":"down"}')


async def test_a_skipped_missed_run_does_not_reset_the_failure_streak(db, app_db_url, admin_db):
    # A mission whose model calls keep failing pauses itself after max_consecutive_failures attempts in a
    # row. A retryable failure keeps its due time, so its retries (after a backoff, or after the runner was
    # down) can be found past the grace window and skipped as missed. The skip plans nothing and is no
    # success: it must not wipe the streak, or a mission that always fails (an hourly one that always times
    # out: three 10-minute attempts, then the fourth is past the 30-minute grace) never pauses and burns
    # model calls for ever.
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with FakeLlmServer(default=always_down) as llm:
        async with running_app(app_db_url, llm, max_consecutive_failures=3) as app:
            assert (await app.ticker.tick()).decisions == {"failed": 1}
            assert (await app.ticker.tick()).decisions == {"failed": 1}
        # Found later than the grace window: skipped to the next occurrence with a note.
        async with running_app(
            app_db_url, llm, max_consecutive_failures=3, missed_run_grace=timedelta(milliseconds=1)
        ) as app:
            assert (await app.ticker.tick()).decisions == {"skipped-missed": 1}
        run = await admin_db.fetchrow(
            "SELECT consecutive_failures FROM mana_ai.mission_runs WHERE mission_id = 'm1'"
        )
        assert run["consecutive_failures"] == 2
        # The next occurrence comes due and fails as well: the third failed attempt in a row.
        await put_row(
            db, "u1", "aiMissions", "m1", "update", {"nextRunAt": to_js_iso(utcnow() - timedelta(seconds=1))}
        )
        async with running_app(app_db_url, llm, max_consecutive_failures=3) as app:
            stats = await app.ticker.tick()
        assert stats.decisions == {"paused-after-failures": 1}, stats.to_json()


async def test_the_cluster_dispatcher_hands_out_a_mission_with_an_empty_agent_id(db, app_db_url, admin_db):
    # ServerMission reads an agentId that is an empty string as "no agent" (as the original: `m.agentId ?`),
    # so the in-process tick plans such a mission as an agent-less one. dispatch_due read it as an agent id
    # '' that has no agent row and left the mission out: with planning workers (serve) it was never planned.
    await put_row(db, "u1", "aiMissions", "m-empty", "insert", mission("m-empty", agentId=""))
    async with FakeLlmServer(default=conversation_responder()) as llm, running_app(app_db_url, llm) as app:
        await app.ticker.refresh(type("S", (), {"errors": []})())
        store = app.ticker.store
        dispatched = await store.dispatch_due(to_js_iso(utcnow()), 100, DISPATCH_HOLD)
        await store.dispatch_done(dispatched)
        planned = await app.ticker.tick()
    assert planned.decisions == {"ran": 1}, [(r.mission_id, r.decision, r.detail) for r in planned.results]
    assert dispatched == [("u1", "m-empty")]


# --- provider limits ------------------------------------------------------------------------------------


async def test_requests_are_paced_one_slot_apart_with_no_burst_of_our_own(db):
    # 600 requests a minute, paced at 95 %: one slot is 60 / 570 s. Six requests at once: the first goes,
    # every later one waits its slot. A burst of our own (it was a second's worth) let all six go at once and
    # used up the provider's burst, which must absorb requests that arrive bunched up.
    metrics = Metrics(process=False)
    pacer = ClusterPacer(db, rpm=600, tpm=None, metrics=metrics)
    slot = 60 / (600 * PACE_FACTOR)
    for _ in range(6):
        await pacer.take(100)
    waits = metrics.registry.get_sample_value("mana_ai_llm_pacing_wait_seconds_bucket", {"le": "0.01"})
    assert waits == 1
    waited = metrics.registry.get_sample_value("mana_ai_llm_pacing_wait_seconds_sum")
    assert waited is not None and waited >= 5 * slot * 0.9
