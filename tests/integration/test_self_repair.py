"""Derived state wiped by hand repairs itself, and the decrypt audit stays append-only (issue 14, items 4, 8).

A DBA truncating the ``mana_ai`` tables to force a rebuild must not leave the service failing every tick:
the refresh cursor is recreated and the snapshots rebuilt from the sync log, and missions already planned
are not planned again (their write-back is in the log).
"""

from __future__ import annotations

import psycopg
import pytest

from mana_ai.db.connector import Database
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app

DERIVED = (
    "mana_ai.mission_snapshots, mana_ai.agent_snapshots, mana_ai.sync_feed, mana_ai.refresh_cursor,"
    " mana_ai.mission_runs, mana_ai.token_usage"
)


async def runner_writes(admin_db: Database) -> dict[str, int]:
    rows = await admin_db.fetch(
        "SELECT record_id, count(*) AS n FROM public.sync_changes WHERE client_id = 'mana-ai-runner'"
        " GROUP BY record_id"
    )
    return {r["record_id"]: r["n"] for r in rows}


async def test_truncated_bookkeeping_is_rebuilt_by_the_next_tick(
    db: Database, admin_db: Database, app_db_url: str
) -> None:
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    await put_row(db, "u2", "aiMissions", "m2", "insert", mission("m2"))
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(app_db_url, llm) as app,
    ):
        first = await app.ticker.tick()
        assert first.plans_written_back == 2 and not first.errors
        await admin_db.execute("TRUNCATE " + DERIVED)  # type: ignore[arg-type]
        await put_row(db, "u3", "aiMissions", "m3", "insert", mission("m3"))
        second = await app.ticker.tick()
        assert not second.errors, second.errors
        assert second.plans_written_back == 1  # only the new mission: m1/m2 are not due any more
        third = await app.ticker.tick()
        assert not third.errors and third.due_mission_count == 0
    snaps = await admin_db.fetch("SELECT mission_id FROM mana_ai.mission_snapshots ORDER BY 1")
    assert [r["mission_id"] for r in snaps] == ["m1", "m2", "m3"]
    assert await runner_writes(admin_db) == {"m1": 1, "m2": 1, "m3": 1}


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM mana_ai.decrypt_audit",
        "UPDATE mana_ai.decrypt_audit SET reason = 'x'",
        "TRUNCATE mana_ai.decrypt_audit",
    ],
)
async def test_service_role_cannot_rewrite_the_decrypt_audit(app_db_url: str, statement: str) -> None:
    async with await psycopg.AsyncConnection.connect(app_db_url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(statement)  # type: ignore[arg-type]
        await conn.rollback()
        await conn.execute("SELECT count(*) FROM mana_ai.decrypt_audit")  # reading is still allowed
