"""`mana-ai serve` planning on more than one process (MANA_AI_PLAN_PROCESSES): the tick over HTTP hands the
due missions to every planning process, answers once all are written, and the service owns its children."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.acceptance.processes import scrape, seed_agent_missions
from tests.acceptance.test_serve import free_port, wait_healthy
from tests.acceptance.test_workers import wait_until, written_per_mission

pytestmark = pytest.mark.slow

KEY = "plan-processes-test-key"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not reaped yet still answers; its state says so.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


async def start_serve(app_db_url: str, llm_url: str, port: int, **extra: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **extra,
        "SYNC_DATABASE_URL": app_db_url,
        "MANA_LLM_URL": llm_url,
        "PORT": str(port),
        "MANA_SERVICE_KEY": KEY,
        "TICK_ENABLED": "false",
        "MANA_AI_PLAN_PROCESSES": "2",
        "MANA_AI_MAX_CONCURRENCY": "8",
        "MANA_AI_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mana_ai", "serve", env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_serve_plans_on_two_processes_once_each(db, app_db_url, admin_db, tmp_path):
    missions = 60
    await seed_agent_missions(db, users=6, missions=missions, max_concurrent=3)
    port = free_port()
    shared = tmp_path / "metrics"  # the processes' metric files go into a new directory in here

    def limit_of(pid: int) -> float | None:
        """The concurrency limit a process published in its own metric file (None: none yet)."""
        files = list(shared.glob(f"*/gauge_livesum_{pid}.db"))
        if not files:
            return None
        alone = tmp_path / f"alone-{pid}"
        alone.mkdir(exist_ok=True)
        shutil.copy(files[0], alone / files[0].name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))
        return registry.get_sample_value("mana_ai_llm_concurrency_limit")

    async with FakeLlmServer(default=conversation_responder(), latency_s=0.2) as llm:
        proc = await start_serve(app_db_url, llm.url, port, PROMETHEUS_MULTIPROC_DIR=str(shared))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                health = await wait_healthy(session, f"{base}/health", proc)

                async def child_running() -> bool:
                    async with session.get(f"{base}/health") as resp:
                        return (await resp.json())["planProcesses"]["running"] == 1

                await wait_until(child_running, 60)
                async with session.get(f"{base}/health") as resp:
                    health = await resp.json()
                assert health["planProcesses"]["wanted"] == 1
                child = health["planProcesses"]["pids"][0]
                assert child != proc.pid and alive(child)

                async def workers_listening() -> bool:
                    # The plan and tick workers of both processes (the child needs a moment to start).
                    row = await admin_db.fetchrow(
                        "SELECT count(*) AS n FROM mana_ai_queue.procrastinate_workers"
                    )
                    return row is not None and row["n"] == 4

                await wait_until(workers_listening, 60)

                # Several ticks until every agent's missions are through (3 at once per agent): each
                # answer counts what it handed out and what came back.
                written = 0
                for _ in range(12):
                    async with session.post(f"{base}/internal/tick", headers={"X-Service-Key": KEY}) as resp:
                        assert resp.status == 200
                        body = await resp.json()
                    assert body["errors"] == []
                    assert body["plansWrittenBack"] == body["dueMissionCount"]
                    written += body["plansWrittenBack"]
                    if written >= missions:
                        break
                assert written == missions
                per_mission = await written_per_mission(admin_db)
                assert len(per_mission) == missions
                assert set(per_mission.values()) == {1}  # one iteration per mission: planned once
                owners = await admin_db.fetch("SELECT DISTINCT owner FROM mana_ai.mission_runs")
                assert len(owners) == 2  # both processes planned some of them

                # serve's /metrics counts what every planning process did, not its own share only.
                counted = await scrape(session, base)
                assert counted["mana_ai_plans_written_back_total"] == missions
                assert counted["mana_ai_planner_rounds_count"] == missions
                assert counted["mana_ai_llm_concurrency_limit"] == 8  # 4 + 4, the service's limit

                # A planning process that dies is started again.
                os.kill(child, signal.SIGKILL)

                async def replaced() -> bool:
                    async with session.get(f"{base}/health") as resp:
                        state = (await resp.json())["planProcesses"]
                    return state["running"] == 1 and state["pids"] != [child] and state["restarts"] == 1

                await wait_until(replaced, 60)
                async with session.get(f"{base}/health") as resp:
                    child = (await resp.json())["planProcesses"]["pids"][0]

                # The killed child's counts stay counted; its live gauge is not, the new child's is.
                assert (await scrape(session, base))["mana_ai_plans_written_back_total"] == missions

                async def new_child_published() -> bool:
                    return limit_of(child) == 4

                await wait_until(new_child_published, 60)
                counted = await scrape(session, base)
                assert counted["mana_ai_llm_concurrency_limit"] == 8  # 12: the dead child's share too
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert not alive(child)  # stopped with the service
    assert shared.is_dir() and not any(shared.iterdir())  # the run's metric files are gone with it


async def test_planning_processes_end_with_a_killed_service(app_db_url):
    port = free_port()
    child: int | None = None

    async def child_gone() -> bool:
        return child is None or not alive(child)

    async with FakeLlmServer(default=conversation_responder()) as llm:
        proc = await start_serve(app_db_url, llm.url, port)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, f"http://127.0.0.1:{port}/health", proc)

                async def child_running() -> bool:
                    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                        return (await resp.json())["planProcesses"]["running"] == 1

                await wait_until(child_running, 60)
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    child = (await resp.json())["planProcesses"]["pids"][0]
        finally:
            proc.kill()  # no chance to stop its children
            try:
                await wait_until(child_gone, 30)  # Linux told it its parent died (PR_SET_PDEATHSIG)
            finally:
                if child is not None and alive(child):
                    # An orphan would hold the test database and serve's stderr pipe open.
                    os.kill(child, signal.SIGKILL)
                await proc.wait()
