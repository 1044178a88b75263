"""The "run it next to mana" guide, step by step, on a fresh database with a fresh role.

The owner migrates; a role that has never been granted anything gets exactly the GRANT statements the guide
prints (which must be the shipped ``grants.sql``); then that role runs a tick and the procrastinate queue
(cluster tick + planning job). It is no superuser and has no BYPASSRLS, and the test checks what it still
cannot do.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from mana_ai.db.connector import Database
from mana_ai.db.migrate import migrate
from mana_ai.runner.queue import build_queue
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, running_app

GUIDE = Path(__file__).resolve().parents[2] / "deploy" / "run-next-to-mana.md"
SHIPPED_ROLE = "mana_ai_app"
PASSWORD = "fresh-role-password-1"


def shipped_grants() -> str:
    return (resources.files("mana_ai.db") / "sql" / "grants.sql").read_text(encoding="utf-8")


def guide_grants() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    block = re.search(r"<!-- grants: begin.*?-->\s*```sql\n(.*?)```\s*<!-- grants: end -->", text, re.DOTALL)
    assert block is not None, "the guide lost its grants block"
    return block.group(1)


def statements(script: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", script)
    return [" ".join(part.split()) for part in without_comments.split(";") if part.strip()]


def for_role(script: str, role: str) -> str:
    return re.sub(rf"\b{SHIPPED_ROLE}\b", role, script)


def test_the_guide_prints_exactly_the_shipped_grants() -> None:
    assert statements(guide_grants()) == statements(shipped_grants())
    assert len(statements(shipped_grants())) >= 5
    create_role = re.search(r"CREATE ROLE mana_ai_app ([^;]*);", GUIDE.read_text(encoding="utf-8"))
    assert create_role is not None and {"NOSUPERUSER", "NOBYPASSRLS"} <= set(create_role.group(1).split())


@pytest.fixture
def fresh(pg_admin_url: str) -> Iterator[tuple[str, str, str]]:
    """(owner URL, role name, role URL) for a new database and a new login role without any grant."""
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    dbname, role = f"lp_{suffix}", f"mana_ai_lp_{suffix}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD {}"
            ).format(sql.Identifier(role), sql.Literal(PASSWORD))
        )
    owner_url = make_conninfo(pg_admin_url, dbname=dbname)
    try:
        yield owner_url, role, make_conninfo(owner_url, user=role, password=PASSWORD)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def runner_rows(owner: Database, mission_id: str) -> int:
    row = await owner.fetchrow(
        "SELECT count(*) AS n FROM public.sync_changes WHERE record_id = %s AND client_id = 'mana-ai-runner'",
        (mission_id,),
    )
    assert row is not None
    return int(row["n"])


async def test_a_fresh_role_with_the_guides_grants_runs_a_tick_and_the_queue(
    fresh: tuple[str, str, str],
) -> None:
    owner_url, role, role_url = fresh
    assert await migrate(owner_url)  # step 2 of the guide: the owner adds the schema

    async with await psycopg.AsyncConnection.connect(role_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT count(*) FROM mana_ai.mission_snapshots")

    async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
        await conn.execute(for_role(guide_grants(), role).encode())  # step 3, as printed
        found = await (
            await conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,))
        ).fetchone()
        assert found == (False, False)

    owner = Database(owner_url, min_size=1, max_size=2)
    await owner.open()
    try:
        # mana-sync writes the user's agent and mission.
        await put_row(owner, "u1", "agents", "a1", "insert", agent_record("a1", name="Planner"))
        await put_row(owner, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
        responder = conversation_responder(tool_name="create_task", arguments={"title": "Plan"})
        async with FakeLlmServer(default=responder) as llm, running_app(role_url, llm) as app:
            stats = await app.ticker.tick()
            assert stats.decisions == {"ran": 1}, stats.to_json()
            assert await runner_rows(owner, "m1") == 1

            # The cluster path: the periodic tick job defers a planning job; one worker runs both.
            await put_row(owner, "u2", "aiMissions", "m2", "insert", mission("m2"))
            queue = build_queue(role_url, tick_interval_s=60, tick_enabled=False)
            async with queue.open_async():
                await queue.configure_task("mana_ai.tick").defer_async(timestamp=int(time.time()))
                await asyncio.wait_for(
                    queue.run_worker_async(
                        wait=False,
                        install_signal_handlers=False,
                        additional_context={"runtime": app},
                        delete_jobs="successful",
                        name="least-privilege-test",
                    ),
                    timeout=60,
                )
                rows = await queue.connector.execute_query_all_async(
                    "SELECT task_name, status FROM mana_ai_queue.procrastinate_jobs"
                )
            assert rows == [], rows  # both jobs succeeded (and were deleted)
            assert await runner_rows(owner, "m2") == 1

        # What the role still cannot do.
        async with await psycopg.AsyncConnection.connect(role_url, autocommit=True) as conn:
            visible = await (await conn.execute("SELECT count(*) FROM public.sync_changes")).fetchone()
            assert visible == (0,)  # no user set: row-level security shows nothing
            for forbidden in (
                "UPDATE public.sync_changes SET op = 'delete'",
                "DELETE FROM public.sync_changes",
                "CREATE TABLE mana_ai.intruder (id int)",
                "DROP TRIGGER mana_ai_capture_sync_change ON public.sync_changes",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await conn.execute(forbidden.encode())
    finally:
        await owner.close()


def test_the_migrate_command_sets_up_a_fresh_database(fresh: tuple[str, str, str]) -> None:
    owner_url, _role, _role_url = fresh
    result = subprocess.run(
        [sys.executable, "-m", "mana_ai", "migrate"],
        env={**os.environ, "SYNC_DATABASE_URL": owner_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
