"""Starting `mana-ai worker` processes, seeding their work and reading their metrics, for the multi-process
acceptance tests."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record


async def start_worker(
    app_db_url: str, llm_url: str, *args: str, **env_extra: str
) -> asyncio.subprocess.Process:
    """A `mana-ai worker` on the test database and the fake LLM; stderr is kept for failure messages."""
    env = {
        **os.environ,
        "SYNC_DATABASE_URL": app_db_url,
        "MANA_LLM_URL": llm_url,
        "MANA_AI_LOG_LEVEL": "WARNING",
        **env_extra,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mana_ai",
        "worker",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def seed_agent_missions(db, *, users: int, missions: int, max_concurrent: int) -> None:
    """One agent per user (``u<n>`` / ``a<n>``) allowing ``max_concurrent`` at once; missions ``m<i>`` dealt
    round-robin over the users, all due now."""
    for user in range(users):
        record = agent_record(f"a{user}", maxConcurrentMissions=max_concurrent)
        await put_row(db, f"u{user}", "agents", f"a{user}", "insert", record)
    for i in range(missions):
        user = i % users
        await put_row(db, f"u{user}", "aiMissions", f"m{i}", "insert", mission(f"m{i}", agentId=f"a{user}"))


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """``/metrics`` as ``{sample name: value}`` for the samples without labels of their own."""
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if set(s.labels) <= {"service"}
    }
