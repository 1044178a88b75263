"""Process lifecycle on the embedded database: processes started together on a fresh data dir, and a stop
that arrives while `serve` is still starting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.test_cli_config import (  # noqa: F401 (bare_env is a fixture)
    _postmaster_alive,
    bare_env,
    serve_env,
    start_serve,
)
from tests.acceptance.test_first_run_cli import run

pytestmark = pytest.mark.slow


def _stop_postmaster(pgdata: Path) -> None:
    if _postmaster_alive(pgdata):
        os.kill(int((pgdata / "postmaster.pid").read_text().splitlines()[0]), signal.SIGTERM)


def _pid_file(pgdata: Path) -> str:
    """``postmaster.pid`` as it is now; ``""`` while there is none (initdb's own server comes and goes)."""
    try:
        return (pgdata / "postmaster.pid").read_text()
    except FileNotFoundError:
        return ""


async def _gone(pgdata: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _postmaster_alive(pgdata):
            return True
        await asyncio.sleep(0.1)
    return not _postmaster_alive(pgdata)


async def test_two_migrates_at_once_on_a_fresh_embedded_data_dir_both_succeed(bare_env, tmp_path):  # noqa: F811
    # Both create the embedded server's database: the one that checked "not there yet" just after the other
    # checked too failed with psycopg's UniqueViolation traceback.
    data = tmp_path / "data"
    env = {**bare_env, "MANA_AI_DATA_DIR": str(data)}
    try:
        first, second = await asyncio.gather(run(env, "migrate"), run(env, "migrate"))
        for result in (first, second):
            assert "Traceback" not in result.err, result.err[-1500:]
            assert result.code == 0, result.err[-1500:]
        assert await _gone(data / "pgdata", 30)  # the last one out stopped the server
    finally:
        _stop_postmaster(data / "pgdata")


async def test_sigterm_while_serve_starts_exits_0_and_stops_the_embedded_server(bare_env, tmp_path):  # noqa: F811
    # SIGTERM before the worker's signal handlers were installed (embedded start, migrations) killed the
    # process with the default action: status -15, and the embedded PostgreSQL it had started ran on.
    data = tmp_path / "data"
    pgdata = data / "pgdata"
    serve = await start_serve(serve_env(bare_env, data))
    try:
        # The server is up (status "ready" in postmaster.pid): serve is creating the database or migrating.
        deadline = time.monotonic() + 120
        while "ready" not in _pid_file(pgdata):
            assert serve.returncode is None and time.monotonic() < deadline
            await asyncio.sleep(0.01)
        serve.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(serve.communicate(), timeout=60)
        assert serve.returncode == 0, (serve.returncode, err.decode()[-1500:])
        assert "Traceback" not in err.decode()
        assert await _gone(pgdata, 15), "the embedded PostgreSQL outlived serve"
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
        _stop_postmaster(pgdata)


async def test_a_stale_postmaster_pid_naming_another_process_is_not_taken_for_the_server(bare_env, tmp_path):  # noqa: F811
    # After a crash or reboot postmaster.pid is still there and its pid may belong to another process by now.
    # The package took that process for the server: the command failed with a psycopg traceback (no socket),
    # and its exit handler then "stopped the server" by killing the unrelated process.
    data = tmp_path / "data"
    pgdata = data / "pgdata"
    env = {**bare_env, "MANA_AI_DATA_DIR": str(data)}
    bystander = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        (await run(env, "db", "url")).ok()  # leaves the server running
        crashed = (pgdata / "postmaster.pid").read_text()
        _stop_postmaster(pgdata)
        assert await _gone(pgdata, 30)
        # The file as the crash left it, its pid now someone else's.
        lines = crashed.splitlines(keepends=True)
        stale = pgdata / "postmaster.pid"
        stale.write_text(f"{bystander.pid}\n" + "".join(lines[1:]))
        owner = pgdata.stat()
        os.chown(stale, owner.st_uid, owner.st_gid)

        result = await run(env, "migrate")
        assert bystander.returncode is None, "the unrelated process was killed"
        assert "Traceback" not in result.err, result.err[-1500:]
        assert result.code == 0, result.err[-1500:]
        assert await _gone(pgdata, 30)
    finally:
        if bystander.returncode is None:
            bystander.kill()
        await bystander.wait()
        _stop_postmaster(pgdata)


@pytest.mark.parametrize("command", ["migrate", "serve"])
async def test_a_database_that_never_answers_is_one_line_soon_not_minutes_of_silence(bare_env, command):  # noqa: F811
    # A host that accepts the connection but never answers (wrong port, a hung server, a proxy without a
    # backend): the start waited psycopg's default connect timeout of 130 s, silently.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"postgresql://u:secretpw@127.0.0.1:{listener.getsockname()[1]}/d"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**bare_env, "SYNC_DATABASE_URL": url, "PORT": str(port), "MANA_LLM_URL": "http://127.0.0.1:9"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mana_ai", command, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        started = time.monotonic()
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"`mana-ai {command}` still waiting after 60 s") from None
    text = err.decode()
    assert proc.returncode != 0 and "Traceback" not in text and "secretpw" not in text, text[-1500:]
    assert len(text.strip().splitlines()) == 1, text
    assert time.monotonic() - started < 60
