"""Whose clock a cadence follows (issue 12, finding 3): deployment zone, the user's stored zone."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from mana_ai.errors import ConfigError
from mana_ai.scheduler.cadence import next_run, parse_cadence
from mana_ai.scheduler.zones import deployment_zone, known_zone, system_zone, user_zone
from mana_ai.settings import Settings, load_settings


def test_known_zone_accepts_iana_names_only() -> None:
    assert known_zone("Europe/Berlin") == "Europe/Berlin"
    assert known_zone(":Europe/Berlin") == "Europe/Berlin"  # TZ=:Europe/Berlin as glibc allows
    for bad in ("", "Mars/Olympus", "../etc/passwd", "/etc/localtime", None, 42, "CET-1CEST"):
        assert known_zone(bad) is None, bad


def test_system_zone_from_etc_timezone_or_the_localtime_link(tmp_path: Path) -> None:
    (tmp_path / "timezone").write_text("Europe/Vienna\n")
    assert system_zone(tmp_path) == "Europe/Vienna"
    (tmp_path / "timezone").unlink()
    os.symlink("/usr/share/zoneinfo/America/New_York", tmp_path / "localtime")
    assert system_zone(tmp_path) == "America/New_York"
    assert system_zone(tmp_path / "nothing") is None


def test_deployment_zone_is_tz_then_system_then_utc(tmp_path: Path) -> None:
    (tmp_path / "timezone").write_text("Europe/Vienna\n")
    assert deployment_zone({"TZ": "Europe/Berlin"}, tmp_path) == "Europe/Berlin"
    assert deployment_zone({"TZ": "nonsense"}, tmp_path) == "Europe/Vienna"
    assert deployment_zone({}, tmp_path) == "Europe/Vienna"
    assert deployment_zone({}, tmp_path / "nothing") == "UTC"


def test_settings_resolve_the_default_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    monkeypatch.delenv("MANA_AI_DEFAULT_TZ", raising=False)
    assert Settings().default_tz == "Europe/Berlin"
    monkeypatch.setenv("MANA_AI_DEFAULT_TZ", "Asia/Tokyo")
    assert Settings().default_tz == "Asia/Tokyo"
    monkeypatch.setenv("MANA_AI_DEFAULT_TZ", "Mars/Olympus")
    with pytest.raises(ConfigError, match="MANA_AI_DEFAULT_TZ"):
        load_settings()


def test_user_zone_is_the_default_calendars_like_the_app_picks_it() -> None:
    calendars = [
        {"id": "a", "timezone": "America/New_York", "isDefault": False},
        {"id": "b", "timezone": "Europe/Berlin", "isDefault": True},
        {"id": "c", "timezone": "Asia/Tokyo", "isDefault": True, "deletedAt": "2026-01-01T00:00:00.000Z"},
    ]
    assert user_zone(calendars) == "Europe/Berlin"
    assert user_zone(calendars[:1]) == "America/New_York"
    assert user_zone([{"id": "x", "timezone": "bogus", "isDefault": True}]) is None
    assert user_zone([]) is None


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # Values computed by the web app's own nextRunForCadence under TZ=Europe/Berlin (Bun, docs/next-to-mana.md).
        ("2026-12-02T05:00:00.000Z", "2026-12-02T06:30:00.000Z"),  # winter: 07:30 CET
        ("2026-07-01T06:29:59.000Z", "2026-07-02T05:30:00.000Z"),  # summer: 07:30 CEST, already past today
        ("2026-03-28T12:00:00.000Z", "2026-03-29T05:30:00.000Z"),  # across the spring-forward night
        ("2026-10-24T12:00:00.000Z", "2026-10-25T06:30:00.000Z"),  # across the fall-back night
    ],
)
def test_daily_0730_in_berlin_matches_the_web_app(after: str, expected: str) -> None:
    cadence = parse_cadence({"kind": "daily", "atHour": 7, "atMinute": 30})
    got = next_run(cadence, after=dt.datetime.fromisoformat(after), default_tz="Europe/Berlin")
    assert got is not None and got.isoformat().replace("+00:00", "") == expected.replace(".000Z", "")
