"""The first-run commands in a subprocess: .env, `llm check`, `tick` progress and exit code, `missions run`,
and a second `serve` on a taken port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from tests.acceptance.test_cli_data import Result
from tests.integration.helpers import mission, put_row


@pytest.fixture
def env(app_db_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MANA_", "SYNC_", "TICK_"))}
    base.update(
        SYNC_DATABASE_URL=app_db_url, TICK_ENABLED="false", COLUMNS="250", NO_COLOR="1", MANA_AI_ENV_FILE=""
    )
    return base


async def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mana_ai",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return Result(args, proc.returncode, out.decode(), err.decode())


def llm_env(env: dict[str, str], llm: FakeLlmServer, **more: Any) -> dict[str, str]:
    return {**env, "MANA_LLM_URL": llm.url, "MANA_LLM_MODEL": "smollm2", "MANA_LLM_MAX_RETRIES": "0", **more}


async def test_llm_check_reports_both_rounds(env):
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
    ) as llm:
        result = (await run(llm_env(env, llm), "llm", "check")).ok()
    assert (
        "round 1 (one tool offered)" in result.out and "create_task" in result.out and "(valid)" in result.out
    )
    assert "round 2 (tool result sent back)" in result.out
    assert result.out.strip().endswith("follow-up requests")
    # The follow-up carries the assistant turn with string content.
    assert llm.requests[1].json["messages"][2]["content"] == ""
    assert (
        "maxLength" not in llm.requests[0].json["tools"][0]["function"]["parameters"]["properties"]["title"]
    )


async def test_llm_check_sends_the_configured_string_limit(env):
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
    ) as llm:
        (await run(llm_env(env, llm, MANA_LLM_MAX_ARGUMENT_CHARS="500"), "llm", "check")).ok()
    title = llm.requests[0].json["tools"][0]["function"]["parameters"]["properties"]["title"]
    assert title["maxLength"] == 500


async def test_llm_check_explains_a_server_that_does_not_call_tools(env):
    async with FakeLlmServer() as llm:
        llm.reply_text("Sure, I created the task.")
        result = await run(llm_env(env, llm), "llm", "check")
    result.one_error_line("without calling the tool", "--chat_format chatml-function-calling", "--jinja")


async def test_the_dot_env_file_configures_every_command(env, tmp_path):
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
    ) as llm:
        (tmp_path / ".env").write_text(f"MANA_LLM_URL={llm.url}\nMANA_LLM_MODEL=from-dot-env\n")
        plain = {k: v for k, v in env.items() if k != "MANA_AI_ENV_FILE"}
        result = (await run(plain, "llm", "check", cwd=tmp_path)).ok()
        assert "model from-dot-env" in result.out
        assert llm.requests[0].json["model"] == "from-dot-env"
        missing = await run({**plain, "MANA_AI_ENV_FILE": str(tmp_path / "nope.env")}, "llm", "check")
    missing.one_error_line("MANA_AI_ENV_FILE")


async def test_tick_shows_progress_and_fails_when_every_mission_failed(env, db):
    await put_row(db, "local", "aiMissions", "m1", "insert", mission("m1"))
    await put_row(db, "local", "aiMissions", "m2", "insert", mission("m2"))
    async with FakeLlmServer() as llm:
        llm.reply_error(400).reply_error(400)
        failed = await run(llm_env(env, llm), "tick")
    assert failed.code == 1, failed
    assert "Traceback" not in failed.err
    assert "LLM request 1" in failed.err and "failed: LLM server (model smollm2) 400" in failed.err
    assert "every due mission failed" in failed.err
    await put_row(db, "local", "aiMissions", "m3", "insert", mission("m3"))
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
    ) as llm:
        ok = (await run(llm_env(env, llm, MANA_AI_RETRY_BACKOFF="0"), "tick")).ok()
    assert "calls create_task" in ok.err and "mission m3: ran, 1 step(s)" in ok.err


async def test_missions_run_plans_one_mission_with_live_progress(env, db):
    future = mission("m1", title="Wasser", nextRunAt="2099-01-01T00:00:00.000Z")
    await put_row(db, "local", "aiMissions", "m1aaaaaa", "insert", {**future, "id": "m1aaaaaa"})
    await put_row(db, "local", "aiMissions", "m2", "insert", mission("m2", state="paused"))
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "x"})
    ) as llm:
        secret = llm_env(env, llm, MANA_LLM_URL=llm.url.replace("http://", "http://planner:tok3n-s3cret@"))
        result = (await run(secret, "missions", "run", "m1aa")).ok()
        paused = await run(llm_env(env, llm), "missions", "run", "m2")
    assert "tok3n-s3cret" not in result.out + result.err  # the URL's credentials were printed
    assert "LLM request 1:" in result.err and "calls create_task" in result.err
    assert "LLM request 2:" in result.err
    assert result.out.startswith("ran: 1 step(s)")
    assert "create_task" in result.out
    paused.one_error_line("is paused", "missions resume")


async def test_missions_run_leaves_a_mission_being_planned_alone(env, db, admin_db):
    # A run in flight elsewhere (the service): making the mission due again would turn that run's plan into a
    # stale write-back that is thrown away.
    await put_row(
        db, "local", "aiMissions", "m1", "insert", mission("m1", nextRunAt="2026-01-01T00:00:00.000Z")
    )
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, state, owner, lease_until)"
        " VALUES ('local', 'm1', '2026-01-01T00:00:00.000Z', 'running', 'vm:1:serve', now() + interval '1 minute')"
    )
    async with FakeLlmServer(default=conversation_responder()) as llm:
        result = await run(llm_env(env, llm), "missions", "run", "m1")
        assert llm.requests == []
    result.one_error_line("being planned right now", "missions show")
    rows = await admin_db.fetch(
        "SELECT count(*) AS n FROM public.sync_changes WHERE record_id = 'm1' AND client_id <> 'test-client'"
    )
    assert rows[0]["n"] == 0  # nothing written: its nextRunAt is untouched


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_a_second_serve_on_a_taken_port_says_so_in_one_line(env):
    with taken_port() as port:
        result = await run({**env, "PORT": str(port)}, "serve")
    result.one_error_line(f"port {port} in use")


async def test_a_worker_on_a_taken_metrics_port_says_so_in_one_line(env):
    with taken_port() as port:
        result = await run({**env, "MANA_AI_WORKER_METRICS_PORT": str(port)}, "worker")
    result.one_error_line(f"port {port} in use", "MANA_AI_WORKER_METRICS_PORT")


async def test_audit_and_grants_default_to_the_local_user_and_take_id_prefixes(env, db):
    mission_id = "3f2c9a1e-0000-4000-8000-000000000001"
    await put_row(db, "local", "aiMissions", mission_id, "insert", mission(mission_id))
    audit = (await run(env, "audit")).ok()
    assert "No audit rows." in audit.out
    revoked = (await run(env, "grants", "revoke", "--mission", "3f2c9a1e")).ok()
    assert "The mission had no grant" in revoked.out
    unknown = await run(env, "grants", "revoke", "--mission", "ffff0000")
    unknown.one_error_line("ffff0000")


async def test_demo_twice_then_tools_list_and_edit_and_delete(env, admin_db):
    first = (await run(env, "demo")).ok()
    second = (await run(env, "demo")).ok()
    assert "(reused) due now" in second.out and "(reused)" not in first.out
    listed = (await run(env, "missions", "list")).ok()
    assert listed.out.count("Demo: Tagesplanung") == 1
    tools = (await run(env, "tools", "list", "--module", "todo")).ok()
    assert "create_task" in tools.out and "title*" in tools.out and "create_event" not in tools.out
    edited = (await run(env, "missions", "edit", "Demo: Tagesplanung", "--objective", "Zwei Aufgaben")).ok()
    assert "updated" in edited.out
    shown = (await run(env, "missions", "show", "Demo: Tagesplanung")).ok()
    assert "objective: Zwei Aufgaben" in shown.out
    deleted = (await run(env, "missions", "delete", "Demo: Tagesplanung", "--yes")).ok()
    assert deleted.out.startswith("Deleted mission")
    after = (await run(env, "missions", "list")).ok()
    assert "Demo: Tagesplanung" not in after.out
