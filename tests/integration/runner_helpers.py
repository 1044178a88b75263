"""Fixtures for runner tests: an App on a fresh database as the plain role, and a fake LLM server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mana_ai.app import App
from mana_ai.settings import Settings
from mana_ai.testing.fake_llm import FakeLlmServer
from tests.integration.helpers import mission, put_row


def make_settings(db_url: str, llm_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "llm_url": llm_url,
        "llm_max_retries": 0,
        "retry_backoff": 0,
        "tick_enabled": False,
        "default_tz": "UTC",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_app(db_url: str, llm: FakeLlmServer, **overrides: Any) -> AsyncIterator[App]:
    async with App(make_settings(db_url, llm.url, **overrides)) as app:
        yield app


def agent_record(agent_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": agent_id,
        "name": f"Agent {agent_id}",
        "role": "helper",
        "state": "active",
        "maxConcurrentMissions": 10,
        "policy": {"tools": {}, "defaultForAi": "propose"},
    }
    base.update(fields)
    return base


async def record_usage(
    admin_db: Any, user_id: str, agent_id: str, tokens: int, mission_id: str = "old"
) -> None:
    """A token_usage row, as an earlier run of the agent would have left it (now)."""
    await admin_db.execute(
        "INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used) VALUES (%s, %s, %s, %s)",
        (user_id, agent_id, mission_id, tokens),
    )


async def capped_agent_with_mission(
    db: Any, admin_db: Any, *, agent_id: str, cap: int, used: int, user_id: str = "u1", mission_id: str = "m1"
) -> None:
    """An agent with a daily cap of which ``used`` tokens are spent already, and one due mission of it."""
    await put_row(db, user_id, "agents", agent_id, "insert", agent_record(agent_id, maxTokensPerDay=cap))
    await record_usage(admin_db, user_id, agent_id, used)
    await put_row(db, user_id, "aiMissions", mission_id, "insert", mission(mission_id, agentId=agent_id))
