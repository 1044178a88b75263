"""Mission cadences (SPEC §6.1): parsing, next run, and the daylight-saving rule."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mana_ai.scheduler.cadence import (
    Cadence,
    CronCadence,
    DailyCadence,
    IntervalCadence,
    InvalidCadence,
    ManualCadence,
    WeeklyCadence,
    next_run,
    parse_cadence,
)

UTC = dt.UTC
BERLIN = "Europe/Berlin"
TZ_BERLIN = ZoneInfo(BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def run_times(cadence: Cadence, start: dt.datetime, count: int) -> list[dt.datetime]:
    """``count`` consecutive runs, each computed from the previous one."""
    out: list[dt.datetime] = []
    at = start
    for _ in range(count):
        nxt = next_run(cadence, after=at)
        assert nxt is not None
        out.append(nxt)
        at = nxt
    return out


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"kind": "manual"}, ManualCadence()),
        ({"kind": "interval", "everyMinutes": 90}, IntervalCadence(every_minutes=90)),
        ({"kind": "interval", "everyMinutes": 60.0}, IntervalCadence(every_minutes=60)),
        ({"kind": "daily", "atHour": 7, "atMinute": 30}, DailyCadence(at_hour=7, at_minute=30)),
        (
            {"kind": "weekly", "dayOfWeek": 0, "atHour": 9, "timezone": BERLIN},
            WeeklyCadence(0, 9, timezone=BERLIN),
        ),
        ({"kind": "cron", "expression": "  30   2 * * 1-5 "}, CronCadence(expression="30 2 * * 1-5")),
        ({"kind": "daily", "atHour": 0, "atMinute": 59, "timezone": None}, DailyCadence(0, 59)),
    ],
)
def test_parse_valid(obj: dict[str, Any], expected: Cadence) -> None:
    assert parse_cadence(obj) == expected


@pytest.mark.parametrize(
    "cadence",
    [
        ManualCadence(),
        IntervalCadence(5),
        DailyCadence(23, 59, timezone=BERLIN),
        WeeklyCadence(6, 0),
        CronCadence("0 9 * * MON"),
    ],
)
def test_to_json_round_trips(cadence: Cadence) -> None:
    assert parse_cadence(cadence.to_json()) == cadence


def test_to_json_uses_the_web_app_field_names() -> None:
    assert DailyCadence(7, 30, timezone=BERLIN).to_json() == {
        "kind": "daily",
        "atHour": 7,
        "atMinute": 30,
        "timezone": BERLIN,
    }
    assert WeeklyCadence(1, 9).to_json() == {"kind": "weekly", "dayOfWeek": 1, "atHour": 9}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (None, "cadence must be an object"),
        ("daily", "cadence must be an object"),
        ({}, "unknown cadence kind None"),
        ({"kind": "hourly"}, "unknown cadence kind 'hourly'"),
        ({"kind": "interval"}, "interval cadence needs everyMinutes"),
        ({"kind": "interval", "everyMinutes": 0}, "everyMinutes must be between 1 and"),
        ({"kind": "interval", "everyMinutes": -5}, "everyMinutes must be between 1 and"),
        ({"kind": "interval", "everyMinutes": 600_000}, "everyMinutes must be between 1 and 527040"),
        ({"kind": "interval", "everyMinutes": 1.5}, "everyMinutes must be an integer"),
        ({"kind": "interval", "everyMinutes": "60"}, "everyMinutes must be an integer"),
        ({"kind": "interval", "everyMinutes": True}, "everyMinutes must be an integer"),
        ({"kind": "daily", "atHour": 24, "atMinute": 0}, "atHour must be between 0 and 23, got 24"),
        ({"kind": "daily", "atHour": 7, "atMinute": 60}, "atMinute must be between 0 and 59, got 60"),
        ({"kind": "daily", "atHour": 7}, "daily cadence needs atMinute"),
        ({"kind": "weekly", "dayOfWeek": 7, "atHour": 9}, "dayOfWeek must be between 0 and 6, got 7"),
        ({"kind": "weekly", "dayOfWeek": 1, "atHour": -1}, "atHour must be between 0 and 23"),
        ({"kind": "cron"}, "cron expression must be a string"),
        ({"kind": "cron", "expression": "0 9 * *"}, "cron expression must have 5 fields"),
        ({"kind": "cron", "expression": "0 0 9 * * *"}, "cron expression must have 5 fields"),
        ({"kind": "cron", "expression": "61 9 * * *"}, "invalid cron expression '61 9 * * *'"),
        ({"kind": "cron", "expression": "0 9 31 2 *"}, "invalid cron expression"),
        ({"kind": "cron", "expression": "@daily"}, "cron expression must have 5 fields"),
        (
            {"kind": "daily", "atHour": 7, "atMinute": 0, "timezone": "Mars/Olympus"},
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"kind": "manual", "timezone": "Europe"}, "unknown time zone 'Europe'"),
        ({"kind": "manual", "timezone": "../etc/passwd"}, "unknown time zone"),
        ({"kind": "manual", "timezone": 1}, "timezone must be a string"),
    ],
)
def test_parse_invalid(obj: Any, reason: str) -> None:
    with pytest.raises(InvalidCadence) as info:
        parse_cadence(obj)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


# --- next run -----------------------------------------------------------------------------------------------


def test_manual_never_runs() -> None:
    assert next_run(ManualCadence(), after=utc(2026, 4, 15, 12)) is None


def test_interval_adds_minutes() -> None:
    after = dt.datetime(2026, 4, 15, 14, 0, tzinfo=TZ_BERLIN)
    result = next_run(IntervalCadence(90), after=after)
    assert result == utc(2026, 4, 15, 13, 30)
    assert result is not None and result.tzinfo is UTC


def test_daily_today_when_still_ahead_else_tomorrow() -> None:
    cadence = DailyCadence(7, 30)
    assert next_run(cadence, after=utc(2026, 4, 15, 7, 29)) == utc(2026, 4, 15, 7, 30)
    assert next_run(cadence, after=utc(2026, 4, 15, 7, 30)) == utc(2026, 4, 16, 7, 30)  # strictly after


def test_daily_uses_the_cadence_zone_then_the_default_zone() -> None:
    after = utc(2026, 4, 15, 12)
    assert next_run(DailyCadence(7, 30, timezone=BERLIN), after=after) == utc(2026, 4, 16, 5, 30)
    assert next_run(DailyCadence(7, 30), after=after, default_tz="America/New_York") == utc(
        2026, 4, 16, 11, 30
    )
    assert next_run(DailyCadence(7, 30, timezone="UTC"), after=after, default_tz=BERLIN) == utc(
        2026, 4, 16, 7, 30
    )


def test_weekly_uses_js_day_numbers() -> None:
    # 2026-04-15 is a Wednesday (JS day 3); 0 = Sunday.
    after = utc(2026, 4, 15, 12)
    assert next_run(WeeklyCadence(0, 9), after=after) == utc(2026, 4, 19, 9)
    assert next_run(WeeklyCadence(1, 9), after=after) == utc(2026, 4, 20, 9)
    assert next_run(WeeklyCadence(3, 13), after=after) == utc(2026, 4, 15, 13)  # later today
    assert next_run(WeeklyCadence(3, 11), after=after) == utc(2026, 4, 22, 11)  # passed today -> +7 days


def test_cron_in_zone() -> None:
    cadence = CronCadence("0 9 * * 1-5", timezone=BERLIN)
    # Friday 2026-04-17 10:00 Berlin -> next weekday is Monday 09:00 CEST.
    assert next_run(cadence, after=utc(2026, 4, 17, 8)) == utc(2026, 4, 20, 7)


def test_cron_leap_day() -> None:
    assert next_run(CronCadence("0 0 29 2 *"), after=utc(2026, 4, 15)) == utc(2028, 2, 29)


@pytest.mark.parametrize(
    "cadence",
    [DailyCadence(10, 0, timezone="Pacific/Apia"), CronCadence("0 10 * * *", timezone="Pacific/Apia")],
    ids=["daily", "cron"],
)
def test_a_skipped_calendar_day_runs_at_the_first_existing_minute(cadence: Cadence) -> None:
    # Samoa skipped 2011-12-30 entirely (23:59 on the 29th was followed by 00:00 on the 31st).
    apia = ZoneInfo("Pacific/Apia")
    result = next_run(cadence, after=dt.datetime(2011, 12, 29, 12, tzinfo=apia))
    assert result is not None
    assert result.astimezone(apia) == dt.datetime(2011, 12, 31, 0, 0, tzinfo=apia)


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run(IntervalCadence(5), after=dt.datetime(2026, 4, 15, 12))  # noqa: DTZ001


def test_unknown_default_zone_is_rejected() -> None:
    with pytest.raises(InvalidCadence, match="unknown time zone"):
        next_run(DailyCadence(7, 0), after=utc(2026, 4, 15), default_tz="Nowhere/Town")


# --- daylight saving (Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET) ----


SPRING_0230 = [DailyCadence(2, 30, timezone=BERLIN), CronCadence("30 2 * * *", timezone=BERLIN)]


@pytest.mark.parametrize("cadence", SPRING_0230, ids=["daily", "cron"])
def test_spring_forward_gap_runs_at_the_transition(cadence: Cadence) -> None:
    runs = run_times(cadence, utc(2026, 3, 28, 12), 3)
    # 02:30 does not exist on 03-29: run at 03:00 CEST (= 01:00 UTC), the first existing minute.
    assert runs == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    assert [r.astimezone(TZ_BERLIN).strftime("%H:%M") for r in runs] == ["03:00", "02:30", "02:30"]


@pytest.mark.parametrize("cadence", SPRING_0230, ids=["daily", "cron"])
def test_fall_back_ambiguous_time_runs_once(cadence: Cadence) -> None:
    runs = run_times(cadence, utc(2026, 10, 24, 12), 3)
    # 02:30 happens twice on 10-25; only the first (CEST, 00:30 UTC) runs.
    assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


@pytest.mark.parametrize("cadence", SPRING_0230, ids=["daily", "cron"])
def test_fall_back_after_inside_the_repeated_hour_skips_the_second_occurrence(cadence: Cadence) -> None:
    # 01:15 UTC is 02:15 CET, the second pass through 02:xx; 02:30 CET must not run again.
    assert next_run(cadence, after=utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)
    # Before the first 02:30, the first occurrence is next.
    assert next_run(cadence, after=utc(2026, 10, 25, 0, 15)) == utc(2026, 10, 25, 0, 30)


def test_weekly_on_the_spring_forward_sunday() -> None:
    # Both transition days are Sundays (JS day 0).
    cadence = WeeklyCadence(0, 2, timezone=BERLIN)
    assert run_times(cadence, utc(2026, 3, 27), 2) == [utc(2026, 3, 29, 1, 0), utc(2026, 4, 5, 0, 0)]
    assert run_times(cadence, utc(2026, 10, 23), 2) == [utc(2026, 10, 25, 0, 0), utc(2026, 11, 1, 1, 0)]


@pytest.mark.parametrize(
    ("start", "local_hours"),
    [
        (utc(2026, 3, 28, 22), ["00", "01", "03", "04", "05", "06"]),  # local 02:00 does not exist
        (utc(2026, 10, 24, 22), ["01", "02", "02", "03", "04", "05"]),  # local 02:00 happens twice
    ],
    ids=["spring-forward", "fall-back"],
)
def test_hourly_cron_is_exactly_hourly_in_utc(start: dt.datetime, local_hours: list[str]) -> None:
    runs = run_times(CronCadence("0 * * * *", timezone=BERLIN), start, 6)
    assert [b - a for a, b in zip([start, *runs], runs, strict=False)] == [dt.timedelta(hours=1)] * 6
    assert len(set(runs)) == 6
    assert [r.astimezone(TZ_BERLIN).strftime("%H") for r in runs] == local_hours


# --- properties ---------------------------------------------------------------------------------------------

ZONES = [
    "UTC",
    BERLIN,
    "America/New_York",
    "America/Sao_Paulo",  # historical DST switches at midnight
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Asia/Kolkata",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Apia",  # skipped 2011-12-30 entirely
]

hours = st.integers(0, 23)
minutes = st.integers(0, 59)
zones = st.sampled_from(ZONES)
afters = st.datetimes(
    min_value=dt.datetime(1995, 1, 1),  # noqa: DTZ001 - bounds must be naive for hypothesis
    max_value=dt.datetime(2060, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
cadences = st.one_of(
    st.builds(IntervalCadence, st.integers(1, 366 * 24 * 60), timezone=st.none() | zones),
    st.builds(DailyCadence, hours, minutes, timezone=zones),
    st.builds(WeeklyCadence, st.integers(0, 6), hours, timezone=zones),
    st.builds(lambda m, h, z: CronCadence(f"{m} {h} * * *", timezone=z), minutes, hours, zones),
    st.builds(
        lambda m, h, d, z: CronCadence(f"{m} {h} * * {d}", timezone=z),
        minutes,
        hours,
        st.integers(0, 6),
        zones,
    ),
    st.builds(lambda m, z: CronCadence(f"{m} * * * *", timezone=z), minutes, zones),
)


def _in_gap(day: dt.date, hour: int, minute: int, tz: ZoneInfo) -> bool:
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive


def _wanted(cadence: Cadence) -> tuple[int | None, int, int | None]:
    """(hour or None for any, minute, JS weekday or None for any)."""
    if isinstance(cadence, DailyCadence):
        return cadence.at_hour, cadence.at_minute, None
    if isinstance(cadence, WeeklyCadence):
        return cadence.at_hour, 0, cadence.day_of_week
    assert isinstance(cadence, CronCadence)
    minute, hour, _, _, dow = cadence.expression.split()
    return (None if hour == "*" else int(hour)), int(minute), (None if dow == "*" else int(dow))


@settings(max_examples=300, deadline=None)
@given(cadence=cadences, after=afters)
def test_next_run_is_strictly_after_and_at_the_requested_local_time(
    cadence: Cadence, after: dt.datetime
) -> None:
    result = next_run(cadence, after=after)
    assert result is not None
    assert result.tzinfo is UTC
    assert result > after
    if isinstance(cadence, IntervalCadence):
        assert result - after == dt.timedelta(minutes=cadence.every_minutes)
        return
    assert cadence.timezone is not None
    tz = ZoneInfo(cadence.timezone)
    local = result.astimezone(tz)
    hour, minute, weekday = _wanted(cadence)
    if hour is None:
        assert local.minute == minute
        assert result - after <= dt.timedelta(hours=2)
        return
    if (local.hour, local.minute) == (hour, minute):
        matched_day = local.date()
    else:
        # Only allowed when the requested wall time did not exist that day (spring-forward gap).
        candidates = [local.date(), local.date() - dt.timedelta(days=1)]
        gap_days = [d for d in candidates if _in_gap(d, hour, minute, tz)]
        assert gap_days, (local, hour, minute)
        matched_day = gap_days[-1]
    if weekday is not None:
        assert (matched_day.weekday() + 1) % 7 == weekday
    limit = dt.timedelta(days=1 if weekday is None else 7, hours=2)
    assert result - after <= limit


@settings(max_examples=100, deadline=None)
@given(cadence=cadences, after=afters)
def test_consecutive_runs_are_distinct(cadence: Cadence, after: dt.datetime) -> None:
    first = next_run(cadence, after=after)
    assert first is not None
    second = next_run(cadence, after=first)
    assert second is not None and second > first


@pytest.mark.parametrize(
    ("zone", "expression", "after", "expected"),
    [
        # Lord Howe falls back 30 min at 02:00 (+11) -> 01:30 (+10:30) on 2026-04-05 local, 15:00 UTC.
        # Every two hours: 02:00 +10:30 (15:30 UTC) is an even hour that exists; cronsim jumps to 04:00.
        (
            "Australia/Lord_Howe",
            "0 */2 * * *",
            dt.datetime(2026, 4, 4, 14, 23, tzinfo=dt.UTC),
            dt.datetime(2026, 4, 4, 15, 30, tzinfo=dt.UTC),
        ),
        # Havana springs forward at midnight 2026-03-08 (00:00 -5 -> 01:00 -4): 01:00 -4 (05:00 UTC) matches
        # "every 20 minutes between 01 and 03 on Sundays"; cronsim starts at 02:00.
        (
            "America/Havana",
            "*/20 1-3 * * 0",
            dt.datetime(2026, 3, 8, 3, 7, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 8, 5, 0, tzinfo=dt.UTC),
        ),
    ],
)
def test_wildcard_cron_does_not_skip_matching_instants(zone, expression, after, expected) -> None:
    cadence = parse_cadence({"kind": "cron", "expression": expression, "timezone": zone})
    assert next_run(cadence, after=after) == expected
