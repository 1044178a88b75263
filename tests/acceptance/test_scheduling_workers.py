"""Scheduling with real worker processes (issue 15, 14.3, 16): on time, fair, inside budgets and provider
limits, killed and interrupted workers. Assertions are on what the database recorded (claim times, writes),
not on how long the test took."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import pytest

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.acceptance.processes import start_worker
from tests.acceptance.test_workers import stop, wait_for_claims, wait_until, written_per_mission
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record
from tests.integration.test_scheduling import (
    RACE_CAP,
    ROUND_TOKENS,
    seed_budget_race,
    seed_noisy_neighbour,
    several_rounds,
    tokens_recorded_24h,
)

pytestmark = pytest.mark.slow


async def claim_delays(admin_db, mission_ids: list[str]) -> dict[str, float]:
    """Seconds from each mission's due time to its claim, as recorded in mission_runs."""
    rows = await admin_db.fetch(
        "SELECT mission_id, extract(epoch FROM started_at - due_at::timestamptz)::float8 AS delay"
        " FROM mana_ai.mission_runs WHERE mission_id = ANY(%s)",
        (mission_ids,),
    )
    return {r["mission_id"]: r["delay"] for r in rows}


async def test_due_mission_is_claimed_within_two_seconds_by_the_cluster_alone(db, app_db_url, admin_db):
    # The periodic tick runs once a minute (the default); nothing calls /internal/tick.
    async with FakeLlmServer(default=conversation_responder()) as llm:
        proc = await start_worker(app_db_url, llm.url, TICK_INTERVAL_MS="60000")
        try:
            # A probe proves the worker runs, then a mission falls due a few seconds later.
            await put_row(db, "u1", "aiMissions", "probe", "insert", mission("probe"))
            await wait_until(lambda: _written(admin_db, {"probe"}), 60)
            due = utcnow() + timedelta(seconds=3)
            await put_row(
                db, "u1", "aiMissions", "later", "insert", mission("later", nextRunAt=to_js_iso(due))
            )
            # Created in the app already due: seen without waiting for the minute tick.
            await put_row(
                db, "u2", "aiMissions", "now", "insert", mission("now", nextRunAt=to_js_iso(utcnow()))
            )
            await wait_until(lambda: _written(admin_db, {"later", "now"}), 60)
        finally:
            await stop([proc])
    delays = await claim_delays(admin_db, ["later", "now"])
    assert 0 <= delays["later"] <= 2.0, delays
    assert delays["now"] <= 2.0, delays
    assert set((await written_per_mission(admin_db)).values()) == {1}


async def _written(admin_db, ids: set[str]) -> bool:
    return ids <= set(await written_per_mission(admin_db))


async def test_noisy_neighbour_does_not_delay_fifty_small_users(db, app_db_url, admin_db):
    # One user with 2,000 due missions, fifty users with one each, 200 ms LLM latency, default concurrency
    # (64 missions at once): every small user starts in the first wave, before the big user's 65th mission.
    async with FakeLlmServer(default=conversation_responder(), latency_s=0.2, record=False) as llm:
        proc = await start_worker(app_db_url, llm.url, TICK_INTERVAL_MS="60000", MANA_AI_SHUTDOWN_GRACE_S="1")
        try:
            await put_row(db, "probe", "aiMissions", "probe", "insert", mission("probe"))
            await wait_until(lambda: _written(admin_db, {"probe"}), 60)
            await seed_noisy_neighbour(admin_db, to_js_iso(utcnow() + timedelta(seconds=3)))
            small = {f"s{u:02d}-m" for u in range(50)}
            await wait_until(lambda: _written(admin_db, small), 120)

            async def second_wave_started() -> bool:
                row = await admin_db.fetchrow(
                    "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE user_id = 'noisy'"
                )
                return row["n"] > 64

            await wait_until(second_wave_started, 120)
        finally:
            await stop([proc])
    rows = await admin_db.fetch(
        "SELECT user_id, started_at FROM mana_ai.mission_runs WHERE user_id <> 'probe' ORDER BY started_at"
    )
    noisy_65th = [r["started_at"] for r in rows if r["user_id"] == "noisy"][64]
    late = [r["user_id"] for r in rows if r["user_id"] != "noisy" and r["started_at"] > noisy_65th]
    assert late == [], late
    assert len([r for r in rows if r["user_id"] != "noisy"]) == 50


async def _seed_small_budget(db, admin_db) -> None:
    # 300 tokens a day, a one-round plan costs 350: before claims reserved budget, all five ran at once.
    await put_row(
        db, "u1", "agents", "a1", "insert", agent_record("a1", maxConcurrentMissions=5, maxTokensPerDay=300)
    )
    for i in range(5):
        await put_row(db, "u1", "aiMissions", f"b{i}", "insert", mission(f"b{i}", agentId="a1"))


@pytest.mark.parametrize(
    ("case", "cap"),
    [
        # The example: at most one mission is planned.
        ("one-round-over", 300),
        # Plans of several rounds, a cap of about two, shares made small by cheap earlier runs: before
        # round reservations each of the five runs crossed its share by a round (1,750 tokens).
        ("several-rounds", RACE_CAP),
    ],
)
async def test_small_budget_with_three_worker_processes(db, app_db_url, admin_db, case, cap):
    if case == "one-round-over":
        await _seed_small_budget(db, admin_db)
        responder = conversation_responder(
            tool_name="create_task", arguments={"title": "t"}, usage=(250, 100)
        )
    else:
        await seed_budget_race(db, admin_db)
        responder = several_rounds()
    await put_row(db, "u2", "aiMissions", "other", "insert", mission("other"))
    async with FakeLlmServer(default=responder, latency_s=0.3) as llm:
        procs = [await start_worker(app_db_url, llm.url, TICK_INTERVAL_MS="1000") for _ in range(3)]
        try:
            await wait_until(lambda: _written(admin_db, {"other"}), 60)

            async def settled() -> bool:
                return await tokens_recorded_24h(admin_db) >= cap

            await wait_until(settled, 90)
            await asyncio.sleep(3)  # several dispatch rounds of every process: nothing more may run
        finally:
            await stop(procs)
    planned = [m for m in await written_per_mission(admin_db) if m.startswith("b")]
    if case == "one-round-over":
        assert len(planned) == 1, planned
    assert await tokens_recorded_24h(admin_db) <= cap + ROUND_TOKENS  # the cap plus at most one round
    # The dispatch marks and claims of all three processes are gone: nothing was left running.
    row = await admin_db.fetchrow("SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state = 'running'")
    assert row["n"] == 0


async def test_sigkilled_workers_missions_are_planned_by_another_within_90_s(db, app_db_url, admin_db):
    for i in range(4):
        await put_row(db, "u1", "aiMissions", f"k{i}", "insert", mission(f"k{i}"))
    # The default mission timeout (10 min); the LLM never answers the first worker.
    async with FakeLlmServer(default=conversation_responder(), latency_s=3600) as hanging:
        victim = await start_worker(app_db_url, hanging.url, TICK_INTERVAL_MS="1000")

        await wait_for_claims(admin_db, 4)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = (await admin_db.fetchrow("SELECT now() AS t"))["t"]
    async with FakeLlmServer(default=conversation_responder()) as fast:
        rescuer = await start_worker(app_db_url, fast.url, TICK_INTERVAL_MS="1000")
        try:
            await wait_until(lambda: _written(admin_db, {f"k{i}" for i in range(4)}), 150)
        finally:
            await stop([rescuer])
    rows = await admin_db.fetch(
        "SELECT extract(epoch FROM started_at - %s)::float8 AS after_kill FROM mana_ai.mission_runs",
        (killed_at,),
    )
    assert len(rows) == 4 and all(r["after_kill"] <= 90 for r in rows), rows
    assert set((await written_per_mission(admin_db)).values()) == {1}


async def test_sigint_releases_claims_that_will_not_finish(db, app_db_url, admin_db):
    for i in range(3):
        await put_row(db, "u1", "aiMissions", f"i{i}", "insert", mission(f"i{i}"))
    async with FakeLlmServer(default=conversation_responder(), latency_s=3600) as hanging:
        proc = await start_worker(app_db_url, hanging.url, MANA_AI_SHUTDOWN_GRACE_S="1")

        await wait_for_claims(admin_db, 3)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 0
    states = await admin_db.fetch("SELECT state, lease_until <= now() AS free FROM mana_ai.mission_runs")
    assert [(r["state"], r["free"]) for r in states] == [("released", True)] * 3
    assert await written_per_mission(admin_db) == {}


async def test_the_tick_is_not_starved_by_planning_jobs(db, app_db_url, admin_db):
    # Two planning slots, both held by batches whose LLM never answers; only the periodic tick refreshes
    # (no due dispatcher). A mission created meanwhile must still reach the snapshots.
    for i in range(24):
        await put_row(db, "u1", "aiMissions", f"h{i:02d}", "insert", mission(f"h{i:02d}"))
    async with FakeLlmServer(default=conversation_responder(), latency_s=3600) as hanging:
        proc = await start_worker(
            app_db_url,
            hanging.url,
            "--concurrency",
            "2",
            TICK_INTERVAL_MS="1000",
            MANA_AI_DUE_POLL_MS="0",
            MANA_AI_SHUTDOWN_GRACE_S="1",
        )
        try:

            async def slots_full() -> bool:
                row = await admin_db.fetchrow(
                    "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state = 'running'"
                )
                return row["n"] >= 16

            await wait_until(slots_full, 60)
            await put_row(db, "u2", "aiMissions", "fresh", "insert", mission("fresh"))

            async def refreshed() -> bool:
                row = await admin_db.fetchrow(
                    "SELECT count(*) AS n FROM mana_ai.mission_snapshots WHERE mission_id = 'fresh'"
                )
                return row["n"] == 1

            await wait_until(refreshed, 30)
        finally:
            await stop([proc])


async def test_provider_limit_is_shared_by_three_processes(db, app_db_url, admin_db):
    # The fake enforces 600 requests/min (bucket of one second, 429 + Retry-After beyond it).
    missions = 100
    for i in range(missions):
        await put_row(db, f"u{i % 10}", "aiMissions", f"r{i:03d}", "insert", mission(f"r{i:03d}"))
    async with FakeLlmServer(
        default=conversation_responder(), latency_s=0.05, max_rpm=600, record=False
    ) as llm:
        procs = [
            await start_worker(app_db_url, llm.url, TICK_INTERVAL_MS="1000", MANA_LLM_MAX_RPM="600")
            for _ in range(3)
        ]
        try:

            async def all_written() -> bool:
                return len(await written_per_mission(admin_db)) == missions

            await wait_until(all_written, 180)
        finally:
            await stop(procs)
        accepted = llm.accepted_at
        limited = llm.rate_limited
    assert len(accepted) == 2 * missions
    assert limited / (len(accepted) + limited) < 0.01, (limited, llm.limited_at, accepted[:30])
    per_second = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    assert per_second >= 0.9 * 10, per_second
    assert set((await written_per_mission(admin_db)).values()) == {1}
