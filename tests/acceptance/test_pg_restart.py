"""Postgres restarts under load: every due mission is planned exactly once (issue 14, item 2).

Three ``mana-ai worker`` processes plan missions against their own embedded PostgreSQL, which is restarted
twice with ``pg_ctl restart -m immediate`` (a crash restart: every connection is cut) while they plan. The
processes are kept the way the systemd unit's rule would keep them *without* ``Restart=always``: a process
that exits non-zero is started again, one that exits 0 stays down. So the test fails if a process treats a
database restart as a normal end, or if a plan is lost or written twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from mana_ai.db.connector import Database
from mana_ai.db.embedded import start_embedded
from mana_ai.db.migrate import migrate
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.acceptance.test_workers import wait_until
from tests.integration.helpers import mission, put_row

pytestmark = pytest.mark.slow

MISSIONS = 160
WORKERS = 3


async def written_per_mission(url: str) -> dict[str, int]:
    """Runner writes per mission, on a fresh connection (the server may just have restarted)."""
    for _ in range(100):
        try:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                cur = await conn.execute(
                    "SELECT record_id, count(*) FROM public.sync_changes"
                    " WHERE client_id = 'mana-ai-runner' GROUP BY record_id"
                )
                return {str(r[0]): int(r[1]) for r in await cur.fetchall()}
        except psycopg.OperationalError:
            await asyncio.sleep(0.2)
    raise AssertionError("the database did not come back")


async def describe(url: str, missions: list[str]) -> str:
    """The runner rows and the claim of some missions, for the failure message."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT record_id, created_at, data->>'nextRunAt', jsonb_path_query_array(data, '$.iterations[*].id')"
            " FROM public.sync_changes WHERE record_id = ANY(%s) ORDER BY record_id, created_at",
            (missions,),
        )
        rows = await cur.fetchall()
        cur = await conn.execute("SELECT * FROM mana_ai.mission_runs WHERE mission_id = ANY(%s)", (missions,))
        runs = await cur.fetchall()
    return "\n".join(map(str, [*rows, *runs]))


@dataclass
class Slot:
    """One process as the service manager keeps it: restarted after a non-zero exit, down after exit 0."""

    env: dict[str, str]
    exits: list[int] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    down: bool = False

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mana_ai",
            "worker",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def keep(self) -> None:
        while True:
            await self.start()
            assert self.proc is not None
            code = await self.proc.wait()
            self.exits.append(code)
            if code == 0:
                self.down = True
                return
            await asyncio.sleep(1.0)  # RestartSec


async def test_two_immediate_restarts_while_three_workers_plan() -> None:
    # Not pytest's tmp_path: concurrent pytest runs prune old numbered temp dirs under a running server.
    base = Path(tempfile.mkdtemp(prefix="mana-ai-pg-restart-"))
    embedded = await asyncio.to_thread(start_embedded, base)
    url = embedded.url()
    slots: list[Slot] = []
    keepers: list[asyncio.Task[None]] = []
    try:
        await migrate(url)
        db = Database(url, min_size=1, max_size=2)
        await db.open()
        try:
            for i in range(MISSIONS):
                await put_row(db, f"u{i % 16}", "aiMissions", f"m{i}", "insert", mission(f"m{i}"))
        finally:
            await db.close()
        async with FakeLlmServer(default=conversation_responder(), latency_s=0.4) as llm:
            env = {
                **os.environ,
                "SYNC_DATABASE_URL": url,
                "MANA_LLM_URL": llm.url,
                "MANA_LLM_MAX_RETRIES": "0",
                "TICK_INTERVAL_MS": "1000",
                "MANA_AI_MAX_CONCURRENCY": "4",
                "MANA_AI_MISSION_TIMEOUT": "20s",
                "MANA_AI_LOG_LEVEL": "WARNING",
            }
            slots = [Slot(env) for _ in range(WORKERS)]
            keepers = [asyncio.create_task(slot.keep()) for slot in slots]
            written_at_restart: list[int] = []
            for threshold in (15, 60):

                async def reached(n: int = threshold) -> bool:
                    return len(await written_per_mission(url)) >= n or all(s.down for s in slots)

                await wait_until(reached, 120)
                if all(s.down for s in slots):
                    break
                written_at_restart.append(len(await written_per_mission(url)))
                await asyncio.to_thread(embedded.restart, "immediate")

            async def all_written() -> bool:
                return len(await written_per_mission(url)) >= MISSIONS or all(s.down for s in slots)

            await wait_until(all_written, 240)
            await asyncio.sleep(3)  # further ticks run meanwhile: nothing may be planned twice
            counts = await written_per_mission(url)
            twice = [k for k, v in counts.items() if v > 1]
            details = await describe(url, twice[:3]) if twice else ""
    finally:
        for task in keepers:
            task.cancel()
        for slot in slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.terminate()
                try:
                    await asyncio.wait_for(slot.proc.wait(), 30)
                except TimeoutError:
                    slot.proc.kill()
        await asyncio.to_thread(embedded.stop)
        shutil.rmtree(base, ignore_errors=True)
    assert [s.exits for s in slots if s.down] == []  # no process took a restart for a normal end
    assert (
        len(written_at_restart) == 2 and max(written_at_restart) < MISSIONS
    )  # restarts while planning  # the restarts really happened while planning
    assert len(counts) == MISSIONS, f"{MISSIONS - len(counts)} due missions never planned"
    assert not twice, f"planned more than once: {twice}\n{details}"
