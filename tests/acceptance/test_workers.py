"""Scale-out on procrastinate: several worker processes, one plan per due run, killed workers recovered."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.acceptance.processes import scrape, seed_agent_missions
from tests.acceptance.processes import start_worker as start_process
from tests.acceptance.test_serve import free_port
from tests.integration.helpers import mission, put_row

pytestmark = pytest.mark.slow


async def start_worker(app_db_url: str, llm_url: str, **env_extra: str) -> asyncio.subprocess.Process:
    env = {"MANA_LLM_MAX_RETRIES": "0", "TICK_INTERVAL_MS": "1000", **env_extra}
    return await start_process(app_db_url, llm_url, **env)


async def written_per_mission(admin_db) -> dict[str, int]:
    rows = await admin_db.fetch(
        "SELECT record_id, count(*) AS n FROM public.sync_changes WHERE client_id = 'mana-ai-runner'"
        " GROUP BY record_id"
    )
    return {r["record_id"]: r["n"] for r in rows}


async def wait_until(predicate, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not reached in time")


async def wait_for_claims(admin_db, count: int, limit_s: float = 60) -> None:
    """Until at least ``count`` runs are claimed and running (a worker is planning them)."""

    async def claimed() -> bool:
        row = await admin_db.fetchrow(
            "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state = 'running'"
        )
        return row["n"] >= count

    await wait_until(claimed, limit_s)


async def stop(procs) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()


async def test_three_workers_plan_each_mission_exactly_once(db, app_db_url, admin_db):
    missions = 300
    await seed_agent_missions(db, users=30, missions=missions, max_concurrent=4)
    ports = [free_port() for _ in range(3)]
    async with FakeLlmServer(default=conversation_responder(), latency_s=0.02) as llm:
        procs = [
            await start_worker(
                app_db_url, llm.url, MANA_AI_MAX_CONCURRENCY="16", MANA_AI_WORKER_METRICS_PORT=str(port)
            )
            for port in ports
        ]
        try:

            async def all_written() -> bool:
                return len(await written_per_mission(admin_db)) >= missions

            await wait_until(all_written, 120)
            await asyncio.sleep(2.5)  # more ticks run meanwhile: nothing may be planned twice
            counts = await written_per_mission(admin_db)
            # Each worker's /metrics counts its own plans; together, every one.
            async with aiohttp.ClientSession() as session:
                counted = [await scrape(session, f"http://127.0.0.1:{port}") for port in ports]
        finally:
            await stop(procs)
    assert sum(c["mana_ai_plans_written_back_total"] for c in counted) == missions
    assert len(counts) == missions
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    owners = await admin_db.fetch("SELECT DISTINCT owner FROM mana_ai.mission_runs WHERE state = 'done'")
    assert len(owners) >= 2  # the work really was spread over processes
    for proc in procs:
        assert proc.returncode == 0, (await proc.stderr.read()).decode()[-2000:]


async def test_killed_worker_leaves_its_missions_to_another(db, app_db_url, admin_db):
    for i in range(6):
        await put_row(db, "u1", "aiMissions", f"k{i}", "insert", mission(f"k{i}"))
    async with FakeLlmServer(default=conversation_responder(), latency_s=3.0) as slow:
        # A short lease: the takeover, not the default's 30 s wait, is what this test is about.
        victim = await start_worker(
            app_db_url, slow.url, MANA_AI_MISSION_TIMEOUT="4s", MANA_AI_CLAIM_LEASE="5s"
        )

        await wait_for_claims(admin_db, 1)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
    assert await written_per_mission(admin_db) == {}
    async with FakeLlmServer(default=conversation_responder()) as fast:
        rescuer = await start_worker(
            app_db_url, fast.url, MANA_AI_MISSION_TIMEOUT="4s", MANA_AI_CLAIM_LEASE="5s"
        )
        try:

            async def all_written() -> bool:
                return len(await written_per_mission(admin_db)) == 6

            await wait_until(all_written, 60)
        finally:
            await stop([rescuer])
    assert set((await written_per_mission(admin_db)).values()) == {1}


async def test_sigterm_drains_in_flight_plans(db, app_db_url, admin_db):
    for i in range(4):
        await put_row(db, "u1", "aiMissions", f"d{i}", "insert", mission(f"d{i}"))
    async with FakeLlmServer(default=conversation_responder(), latency_s=1.0) as llm:
        proc = await start_worker(app_db_url, llm.url, MANA_AI_SHUTDOWN_GRACE_S="20")

        await wait_for_claims(admin_db, 4)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 40)
    assert proc.returncode == 0
    # Every plan that was in flight was finished and written, none half-written.
    assert set((await written_per_mission(admin_db)).values()) == {1}
    assert len(await written_per_mission(admin_db)) == 4
