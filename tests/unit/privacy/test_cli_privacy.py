"""The privacy CLI's error handling: one clear line and a non-zero exit, before any database is touched."""

from __future__ import annotations

import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from mana_ai.cli import privacy

MASTER = bytes(range(1, 33))


def cli() -> click.Group:
    group = click.Group("mana-ai")
    privacy.register(group)
    return group


def invoke(*args: str) -> Result:
    # No SYNC_DATABASE_URL and no runner: every case here must fail before it would need one.
    return CliRunner().invoke(cli(), list(args), env={"SYNC_DATABASE_URL": "", "MANA_AI_USER": ""})


def error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    master = tmp_path / "master.key"
    master.write_bytes(MASTER)
    from mana_ai.privacy.keyfiles import write_runner_keypair

    files = write_runner_keypair(tmp_path / "k")
    return master, files.public_path


def test_register_adds_the_commands() -> None:
    group = cli()
    assert set(group.commands) == {"grants", "keys", "audit"}
    grants = group.commands["grants"]
    assert isinstance(grants, click.Group) and {"create", "revoke", "refresh"} <= set(grants.commands)


@pytest.mark.parametrize("ttl", ["soon", "7x", "-1d", "0"])
def test_bad_ttl(ttl: str, key_files: tuple[Path, Path]) -> None:
    master, public = key_files
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        "--record",
        "notes:n1",
        "--ttl",
        ttl,
        "--master-key-file",
        str(master),
        "--public-key-file",
        str(public),
    )
    assert result.exit_code != 0
    assert "--ttl" in error_line(result)


def test_more_than_1000_records(key_files: tuple[Path, Path]) -> None:
    master, public = key_files
    records = [arg for i in range(1001) for arg in ("--record", "notes:n" + str(i))]
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        *records,
        "--master-key-file",
        str(master),
        "--public-key-file",
        str(public),
    )
    assert result.exit_code != 0
    assert "must not exceed 1000" in error_line(result)


def test_missing_key_files(tmp_path: Path, key_files: tuple[Path, Path]) -> None:
    master, public = key_files
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        "--record",
        "notes:n1",
        "--master-key-file",
        str(tmp_path / "nope.key"),
        "--public-key-file",
        str(public),
    )
    assert result.exit_code != 0
    assert "master key file" in error_line(result) and "cannot be read" in error_line(result)
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        "--record",
        "notes:n1",
        "--master-key-file",
        str(master),
        "--public-key-file",
        str(tmp_path / "nope.pem"),
    )
    assert result.exit_code != 0
    assert "public key file" in error_line(result)


def test_bad_master_key_and_bad_record(tmp_path: Path, key_files: tuple[Path, Path]) -> None:
    master, public = key_files
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        "--record",
        "notes:n1",
        "--master-key-file",
        str(bad),
        "--public-key-file",
        str(public),
    )
    assert result.exit_code != 0 and "32 bytes" in error_line(result)
    result = invoke(
        "grants",
        "create",
        "--user",
        "u1",
        "--mission",
        "m1",
        "--record",
        "notes",
        "--master-key-file",
        str(master),
        "--public-key-file",
        str(public),
    )
    assert result.exit_code != 0 and "<table>:<id>" in error_line(result)
    # A missing --user is no error any more: like the other data commands, the default is the local user
    # (tests/acceptance/test_first_run_cli.py runs `audit` and `grants revoke` without it).


def test_keys_generate(tmp_path: Path) -> None:
    out = tmp_path / "runner"
    result = invoke("keys", "generate", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((out / "runner-private.pem").stat().st_mode) == 0o600
    assert (out / "runner-public.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = invoke("keys", "generate", "--out", str(out))
    assert again.exit_code != 0 and "exists" in error_line(again)
