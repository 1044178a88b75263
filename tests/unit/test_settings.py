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
