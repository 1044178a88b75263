"""Fixtures for runner tests: an App on a fresh database as the plain role, and a fake LLM server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mana_ai.app import App
from mana_ai.settings import Settings
from mana_ai.testing.fake_llm import FakeLlmServer


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
