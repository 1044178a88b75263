"""`mana-ai serve` as a newcomer runs it: a subprocess on its embedded database, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(session: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> dict:
    for _ in range(300):
        if proc.returncode is not None:
            raise AssertionError(f"serve exited early with {proc.returncode}")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return await resp.json()
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not become healthy")


async def test_serve_on_embedded_database(tmp_path: Path):
    port = free_port()
    async with FakeLlmServer(default=conversation_responder()) as llm:
        env = {
            **os.environ,
            "MANA_AI_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(port),
            "MANA_LLM_URL": llm.url,
            "MANA_SERVICE_KEY": "test-key-123",
            "TICK_INTERVAL_MS": "60000",
        }
        env.pop("SYNC_DATABASE_URL", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mana_ai",
            "serve",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                health = await wait_healthy(session, f"{base}/health", proc)
                assert health["ok"] is True and health["database"] == {"reachable": True, "embedded": True}
                assert health["worker"]["state"] == "running"
                # The original's isTickRunning(): the periodic tick is installed, not "a tick runs right now".
                assert health["tick"]["enabled"] is True and health["tick"]["running"] is True
                async with session.post(f"{base}/internal/tick", headers={"X-Service-Key": "nope"}) as resp:
                    assert resp.status == 401
                    assert await resp.json() == {"error": "invalid or missing service key"}
                async with session.post(
                    f"{base}/internal/tick", headers={"X-Service-Key": "test-key-123"}
                ) as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    assert set(body) >= {
                        "scannedAt",
                        "dueMissionCount",
                        "plansProduced",
                        "plansWrittenBack",
                        "parseFailures",
                        "errors",
                    }
                async with session.get(f"{base}/metrics") as resp:
                    text = await resp.text()
                    assert "mana_ai_ticks_total" in text and "mana_ai_plans_written_back_total" in text
                async with session.get(f"{base}/openapi.json") as resp:
                    assert "/internal/tick" in (await resp.json())["paths"]
                async with session.get(f"{base}/api/v1/ai-runner-pubkey") as resp:
                    assert resp.status == 503  # no key configured
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                raise
            _out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert "test-key-123" not in err.decode()  # the service key never reaches the logs
        assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()  # data survives under MANA_AI_DATA_DIR


def test_bad_configuration_is_one_clear_line(tmp_path: Path):
    import subprocess

    env = {**os.environ, "SYNC_DATABASE_URL": "mysql://user:secretpw@host/db", "POLICY_MODE": "loud"}
    result = subprocess.run(
        [sys.executable, "-m", "mana_ai", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "SYNC_DATABASE_URL" in result.stderr and "POLICY_MODE" in result.stderr
    assert "secretpw" not in result.stderr
    unreachable = {**os.environ, "SYNC_DATABASE_URL": "postgresql://u:secretpw@127.0.0.1:1/db"}
    result = subprocess.run(
        [sys.executable, "-m", "mana_ai", "migrate"],
        env=unreachable,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "secretpw" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_refuses_a_master_key_in_jwt_mode(tmp_path: Path):
    import subprocess

    key_file = tmp_path / "master.key"
    key_file.write_text("00" * 32)
    key_file.chmod(0o000)  # never read: the refusal comes first
    env = {
        **os.environ,
        "MANA_AUTH_URL": "http://127.0.0.1:1",
        "MANA_AI_MASTER_KEY_FILE": str(key_file),
        "SYNC_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mana_ai", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "MANA_AI_MASTER_KEY_FILE is set, but the service never reads a master key" in result.stderr
    assert "127.0.0.1:1/db" not in result.stderr  # refused before any database connection
