"""Starting `mana-ai worker` processes for the multi-process acceptance tests."""

from __future__ import annotations

import asyncio
import os
import sys


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
