"""Bad configuration from the command line: one line naming the variable, never a secret or a traceback; and
the embedded database's lifetime across a killed process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_first_run_cli import run


@pytest.fixture
def bare_env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MANA_", "SYNC_", "TICK_"))}
    return {**base, "MANA_AI_ENV_FILE": "", "NO_COLOR": "1"}


async def test_a_database_url_libpq_cannot_parse_never_prints_its_password(bare_env):
    env = {**bare_env, "SYNC_DATABASE_URL": "postgresql://app:s3cr%ZZetpw@127.0.0.1:1/mana"}
    for command in (["migrate"], ["agents", "list"], ["db", "url"]):
        result = await run(env, *command)
        assert result.code != 0 and "s3cr" not in result.out + result.err, (command, result.err)
        result.one_error_line("SYNC_DATABASE_URL")


async def test_db_url_and_an_overlarge_duration_are_one_line_not_a_traceback(bare_env):
    (await run({**bare_env, "SYNC_DATABASE_URL": "not a url"}, "db", "url")).one_error_line(
        "SYNC_DATABASE_URL"
    )
    huge = {
        **bare_env,
        "MANA_AI_MISSION_TIMEOUT": "99999999999d",
        "SYNC_DATABASE_URL": "postgresql://u@127.0.0.1:1/d",
    }
    (await run(huge, "migrate")).one_error_line("MANA_AI_MISSION_TIMEOUT")


def _postmaster_alive(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().splitlines()[0]), 0)
    except ProcessLookupError:
        return False
    return True


async def test_after_a_killed_serve_the_next_clean_run_stops_the_embedded_server(bare_env, tmp_path):
    # The package stops the server when the last process using it exits, by its list of pids: a killed
    # process never removed its own, so no later process was ever the last and the server ran for good.
    data = tmp_path / "data"
    env = serve_env(bare_env, data)
    serve = await start_serve(env)
    try:
        await _wait_for_banner(serve)
        assert _postmaster_alive(data / "pgdata")
        serve.send_signal(signal.SIGKILL)
        await serve.wait()
        (await run(env, "migrate")).ok()
        handles = json.loads((data / "pgdata" / ".handle_pids.json").read_text() or "[]")
        assert not _postmaster_alive(data / "pgdata"), handles
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
        if _postmaster_alive(data / "pgdata"):
            os.kill(int((data / "pgdata" / "postmaster.pid").read_text().splitlines()[0]), signal.SIGTERM)


def serve_env(bare_env: dict[str, str], data: Path) -> dict[str, str]:
    """`serve` on the embedded database under ``data``, without ticks or a reachable LLM."""
    return {
        **bare_env,
        "MANA_AI_DATA_DIR": str(data),
        "TICK_ENABLED": "false",
        "MANA_LLM_URL": "http://127.0.0.1:9",
    }


async def start_serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    """`mana-ai serve` on a free port; its stderr is piped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mana_ai", "serve", env={**env, "PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _serve(env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await start_serve(env)
    await _wait_for_banner(proc)
    return proc


async def _wait_for_banner(proc: asyncio.subprocess.Process) -> None:
    """Until the banner's workbench line; a serve that exits first fails the test with what it said."""
    assert proc.stderr is not None
    said: list[bytes] = []
    while b"workbench" not in (line := await asyncio.wait_for(proc.stderr.readline(), timeout=120)):
        if not line:
            raise AssertionError("serve exited before its banner: " + b"".join(said).decode()[-2000:])
        said.append(line)


async def test_a_process_killed_while_another_ran_does_not_keep_the_server_up(bare_env, tmp_path):
    # The survivor pruned dead pids only when it started: at its clean exit it still saw the killed one,
    # was not the last, and left the server running.
    data = tmp_path / "data"
    env = serve_env(bare_env, data)
    survivor = await _serve(env)
    killed = await _serve(env)
    try:
        killed.send_signal(signal.SIGKILL)
        await killed.wait()
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), timeout=60) == 0
        assert not _postmaster_alive(data / "pgdata")
    finally:
        for proc in (survivor, killed):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if _postmaster_alive(data / "pgdata"):
            os.kill(int((data / "pgdata" / "postmaster.pid").read_text().splitlines()[0]), signal.SIGTERM)
