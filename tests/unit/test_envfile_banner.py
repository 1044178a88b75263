"""The .env file every command reads, and the startup banner that says what the process uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mana_ai.banner import banner_lines, describe_database, describe_url, workbench_url
from mana_ai.envfile import EnvFile, load_env_file
from mana_ai.errors import ConfigError
from mana_ai.settings import Settings


def test_dot_env_in_the_current_directory_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# local LLM\nMANA_LLM_URL=http://127.0.0.1:8080\nexport MANA_LLM_MODEL='smollm2'\nPORT=4000\n"
    )
    env = {"PORT": "5000"}
    loaded = load_env_file(env, cwd=tmp_path)
    assert loaded is not None
    assert env == {"PORT": "5000", "MANA_LLM_URL": "http://127.0.0.1:8080", "MANA_LLM_MODEL": "smollm2"}
    assert loaded.applied == ("MANA_LLM_URL", "MANA_LLM_MODEL") and loaded.overridden == ("PORT",)


def test_mana_ai_env_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "llm.env"
    path.write_text("MANA_LLM_MODEL=qwen\n")
    (tmp_path / ".env").write_text("MANA_LLM_MODEL=other\n")
    env = {"MANA_AI_ENV_FILE": str(path)}
    load_env_file(env, cwd=tmp_path)
    assert env["MANA_LLM_MODEL"] == "qwen"


def test_a_missing_named_file_is_an_error_and_an_empty_name_reads_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MANA_AI_ENV_FILE"):
        load_env_file({"MANA_AI_ENV_FILE": str(tmp_path / "nope.env")}, cwd=tmp_path)
    (tmp_path / ".env").write_text("MANA_LLM_MODEL=x\n")
    env = {"MANA_AI_ENV_FILE": ""}
    assert load_env_file(env, cwd=tmp_path) is None
    assert "MANA_LLM_MODEL" not in env
    assert load_env_file({}, cwd=tmp_path / "empty-dir-without-env") is None


def test_database_is_described_without_credentials() -> None:
    text = describe_database("postgresql://mana:s3cret@db.example:5433/mana_sync", data_dir=None)
    assert text == "PostgreSQL at db.example:5433/mana_sync"
    assert "s3cret" not in describe_database("host=db password=s3cret dbname=x user=u", data_dir=None)
    assert describe_database(None, data_dir=Path("/data")) == "embedded PostgreSQL, data dir /data"
    assert describe_url("https://user:pw@llm.example/v1") == "https://llm.example/v1"


def test_banner_names_database_llm_workbench_and_tick() -> None:
    settings = Settings(
        llm_url="http://127.0.0.1:8080",
        llm_model="smollm2",
        tick_interval_ms=30_000,
        port=3067,
        host="0.0.0.0",
    )
    lines = banner_lines(
        settings,
        database_url=None,
        data_dir=Path("/d"),
        env_file=EnvFile(Path("/w/.env"), ("MANA_LLM_URL",), ("PORT",)),
        http=True,
    )
    text = "\n".join(lines)
    assert "config     /w/.env (the environment wins for PORT)" in text
    assert "embedded PostgreSQL, data dir /d" in text
    assert "http://127.0.0.1:8080  model smollm2" in text
    assert "workbench  http://127.0.0.1:3067/workbench" in text
    assert "tick       every 30 s" in text
    assert workbench_url(Settings(host="::1", port=1)) == "http://[::1]:1/workbench"


def test_a_worker_banner_names_its_metrics_port_when_it_has_one() -> None:
    def lines(**fields: object) -> str:
        settings = Settings(host="0.0.0.0", **fields)  # type: ignore[arg-type]
        return "\n".join(banner_lines(settings, database_url=None, data_dir=None, env_file=None, http=False))

    assert "metrics    http://127.0.0.1:9467/metrics" in lines(worker_metrics_port=9467)
    assert "metrics" not in lines()
    assert "workbench" not in lines(worker_metrics_port=9467)


def test_every_help_example_keeps_its_lines() -> None:
    """Examples are marked with click's \\b so `--help` prints one command per line (not run together)."""
    import click

    from mana_ai.cli import cli

    def commands(
        group: click.Group, prefix: tuple[str, ...] = ()
    ) -> list[tuple[tuple[str, ...], click.Command]]:
        found = []
        for name, command in group.commands.items():
            found.append(((*prefix, name), command))
            if isinstance(command, click.Group):
                found += commands(command, (*prefix, name))
        return found

    checked = 0
    for path, command in commands(cli):
        text = command.help or ""
        if "Example usage:" in text:
            after = text.split("Example usage:", 1)[1].lstrip("\n ")
            assert after.startswith("\b"), path
            checked += 1
    assert checked >= 20
