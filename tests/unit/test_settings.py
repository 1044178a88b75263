"""Configuration: a bad value is one clear error naming its variable, never a traceback or a silent change."""

from __future__ import annotations

import datetime as dt

import croniter  # procrastinate's cron semantics
import pytest

from mana_ai.errors import ConfigError
from mana_ai.runner.queue import interval_cron
from mana_ai.settings import load_settings


def test_an_overlarge_duration_is_a_config_error_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="MANA_AI_MISSION_TIMEOUT"):
        load_settings(mission_timeout="99999999999d")  # timedelta overflowed: an OverflowError traceback


@pytest.mark.parametrize(
    ("field", "env", "value"),
    [
        ("llm_timeout_s", "MANA_LLM_TIMEOUT_S", "inf"),  # `llm check`: OverflowError in aiohttp's timer
        ("db_timeout_s", "MANA_AI_DB_TIMEOUT_S", "1e400"),
        ("shutdown_grace_s", "MANA_AI_SHUTDOWN_GRACE_S", "infinity"),
    ],
)
def test_an_infinite_number_is_a_config_error_naming_its_variable(field: str, env: str, value: str) -> None:
    with pytest.raises(ConfigError, match=env):
        load_settings(**{field: value})


def test_a_duration_reaching_past_the_calendar_is_a_config_error_naming_its_variable() -> None:
    # 1,000,000 days passed and `proposals list` then died computing now - ttl (OverflowError traceback).
    with pytest.raises(ConfigError, match="MANA_AI_PROPOSAL_TTL"):
        load_settings(proposal_ttl="1000000d")
    assert load_settings(proposal_ttl="36500d").proposal_ttl == dt.timedelta(days=36500)


@pytest.mark.parametrize("env", ["MANA_AI_DATA_DIR", "MANA_AI_PRIVATE_KEY_FILE", "MANA_AI_MASTER_KEY_FILE"])
def test_an_empty_path_variable_is_unset_not_the_current_directory(
    env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `MANA_AI_DATA_DIR=` in .env made the embedded database ./pgdata of wherever a command ran;
    # `MANA_AI_PRIVATE_KEY_FILE=` failed with "cannot be read: Is a directory"; `MANA_AI_MASTER_KEY_FILE=`
    # made `serve` refuse to start in JWT mode.
    from mana_ai.web.security import refuse_master_key

    monkeypatch.setenv(env, "")
    monkeypatch.setenv("MANA_AUTH_URL", "http://127.0.0.1:3001")  # JWT mode
    settings = load_settings()
    assert (settings.data_dir, settings.private_key_file, settings.master_key_file) == (None, None, None)
    assert settings.private_key_text() is None
    refuse_master_key(settings)


@pytest.mark.parametrize("env", ["MANA_AI_WORKER_METRICS_PORT", "MANA_LLM_MAX_RPM", "MANA_LLM_MAX_TPM"])
def test_an_empty_optional_number_is_unset(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `MANA_AI_WORKER_METRICS_PORT=` (or compose's `${MANA_AI_WORKER_METRICS_PORT:-}`) stopped every command
    # with "Input should be a valid integer", where the other optional numbers read an empty value as unset.
    monkeypatch.setenv(env, "")
    settings = load_settings()
    assert (settings.worker_metrics_port, settings.llm_max_rpm, settings.llm_max_tpm) == (None, None, None)


def test_an_unknown_log_level_is_a_config_error_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="MANA_AI_LOG_LEVEL"):
        load_settings(log_level="verbose")
    assert load_settings(log_level="debug").log_level == "DEBUG"


def test_a_database_url_libpq_cannot_parse_is_refused_without_its_password() -> None:
    # A badly percent-encoded password passed urlsplit; libpq's own error then quoted it on stderr.
    with pytest.raises(ConfigError, match="SYNC_DATABASE_URL") as info:
        load_settings(database_url="postgresql://app:s3cr%ZZetpw@127.0.0.1:1/mana")
    assert "s3cr" not in str(info.value)


@pytest.mark.parametrize("interval_s", [1, 5, 7, 30, 45, 60, 90, 600, 3600, 5 * 3600, 86400])
def test_the_tick_never_runs_less_often_than_configured(interval_s: int) -> None:
    # 7 s and 45 s fell through to one tick a minute.
    ticks = croniter.croniter(interval_cron(interval_s), dt.datetime(2026, 1, 1))
    first, second = ticks.get_next(dt.datetime), ticks.get_next(dt.datetime)
    gap = (second - first).total_seconds()
    assert gap <= interval_s
    assert gap >= min(interval_s, 86400) / 2  # the nearest a cron can express, not far below


def test_the_banner_names_the_interval_the_tick_really_runs_at() -> None:
    from mana_ai.banner import banner_lines

    settings = load_settings(tick_interval_ms=7000)
    assert settings.tick_every_s == 6
    lines = banner_lines(settings, database_url=None, data_dir=None, env_file=None, http=False)
    assert "tick       every 6 s" in lines
