"""Mission cadences (SPEC §6.1): parse the synced JSON and compute the next run. Pure; time is an argument.

A mission's ``cadence`` arrives as the web app's JSON::

    {"kind": "manual"}
    {"kind": "interval", "everyMinutes": 90}
    {"kind": "daily", "atHour": 7, "atMinute": 30}
    {"kind": "weekly", "dayOfWeek": 1, "atHour": 9}          # 0 = Sunday (JS Date.getDay)
    {"kind": "cron", "expression": "30 2 * * *"}

each optionally with ``"timezone": "<IANA name>"``; without one the caller's default zone applies.
The original web app never implemented ``cron`` (no next run); we do, with ``cronsim``.

Daylight-saving rule (daily, weekly, and cron expressions whose minute *and* hour fields are fixed):
the cadence names a **local wall-clock time**, and it runs once per matching local day.

* A wall-clock time that does not exist (spring-forward gap) runs at the first wall-clock minute that
  exists after it, i.e. the moment of the transition: Europe/Berlin 02:30 on 2026-03-29 → 03:00 CEST
  (01:00 UTC).
* A wall-clock time that occurs twice (fall-back) runs at its **first** occurrence only: Europe/Berlin
  02:30 on 2026-10-25 → 02:30 CEST (00:30 UTC); if ``after`` already lies past that first occurrence,
  the next run is the following day's.

This is Debian cron's behaviour, which ``cronsim`` implements for fixed-time expressions; daily and
weekly cadences use the same rule so that ``daily 02:30`` and ``30 2 * * *`` agree.

Cron expressions with a wildcard in the minute or hour field (``0 * * * *``, ``*/15 2 * * *``) follow
real time instead: every real instant whose local wall clock matches fires. A non-existent local hour
never fires, and a repeated hour fires in both occurrences, which are different UTC instants; so an
hourly cron stays exactly hourly in UTC across both transitions, with no duplicate and no gap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

UTC = dt.UTC

MAX_INTERVAL_MINUTES: Final = 366 * 24 * 60
"""Upper bound for ``everyMinutes`` (one leap year)."""

_KINDS: Final = ("manual", "interval", "daily", "weekly", "cron")
# A gap longer than two days has never existed (Samoa skipped one day in 2011); the bound only
# guarantees termination.
_MAX_GAP_MINUTES: Final = 2 * 24 * 60
# Candidates at or before `after` only come from the fall-back hour; a few skips are plenty.
_MAX_CRON_CANDIDATES: Final = 1000


class InvalidCadence(ValueError):
    """A cadence object that cannot be scheduled; the message says why in plain English."""


@dataclass(frozen=True, slots=True)
class ManualCadence:
    """Runs only when the user starts it."""

    kind: ClassVar[str] = "manual"
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The web app's JSON form."""
        return _with_tz({"kind": self.kind}, self.timezone)


@dataclass(frozen=True, slots=True)
class IntervalCadence:
    """Runs every ``every_minutes`` minutes after the previous run."""

    every_minutes: int
    kind: ClassVar[str] = "interval"
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The web app's JSON form."""
        return _with_tz({"kind": self.kind, "everyMinutes": self.every_minutes}, self.timezone)


@dataclass(frozen=True, slots=True)
class DailyCadence:
    """Runs every day at ``at_hour:at_minute`` local time."""

    at_hour: int
    at_minute: int
    kind: ClassVar[str] = "daily"
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The web app's JSON form."""
        return _with_tz(
            {"kind": self.kind, "atHour": self.at_hour, "atMinute": self.at_minute}, self.timezone
        )


@dataclass(frozen=True, slots=True)
class WeeklyCadence:
    """Runs every week on ``day_of_week`` (0 = Sunday) at ``at_hour:00`` local time."""

    day_of_week: int
    at_hour: int
    kind: ClassVar[str] = "weekly"
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The web app's JSON form."""
        return _with_tz(
            {"kind": self.kind, "dayOfWeek": self.day_of_week, "atHour": self.at_hour}, self.timezone
        )


@dataclass(frozen=True, slots=True)
class CronCadence:
    """Runs at the matches of a 5-field cron expression, in local time."""

    expression: str
    kind: ClassVar[str] = "cron"
    timezone: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The web app's JSON form."""
        return _with_tz({"kind": self.kind, "expression": self.expression}, self.timezone)


Cadence = ManualCadence | IntervalCadence | DailyCadence | WeeklyCadence | CronCadence


def _with_tz(obj: dict[str, Any], timezone: str | None) -> dict[str, Any]:
    if timezone is not None:
        obj["timezone"] = timezone
    return obj


# --- parsing ----------------------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        InvalidCadence: when there is no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: names like "Europe" are directories of the zone database, not zones.
        raise InvalidCadence("unknown time zone " + repr(name)) from exc


def _int_field(obj: Mapping[str, Any], kind: str, name: str, low: int, high: int) -> int:
    if name not in obj or obj[name] is None:
        raise InvalidCadence(kind + " cadence needs " + name)
    value = obj[name]
    # JSON numbers have no integer type, so 7.0 is accepted as 7; booleans are not numbers here.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCadence(name + " must be an integer, got " + repr(value))
    if not low <= value <= high:
        raise InvalidCadence(
            name + " must be between " + str(low) + " and " + str(high) + ", got " + str(value)
        )
    return value


def _validate_cron(expression: Any) -> str:
    if not isinstance(expression, str):
        raise InvalidCadence("cron expression must be a string, got " + repr(expression))
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidCadence(
            "cron expression must have 5 fields (minute hour day-of-month month day-of-week), got "
            + repr(expression)
        )
    normalized = " ".join(fields)
    try:
        CronSim(normalized, dt.datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError) as exc:
        raise InvalidCadence("invalid cron expression " + repr(expression) + ": " + str(exc)) from exc
    return normalized


def parse_cadence(obj: Any) -> Cadence:
    """Parse a synced ``MissionCadence`` object.

    Args:
        obj: the decoded JSON value.

    Returns:
        The frozen cadence dataclass for its ``kind``.

    Raises:
        InvalidCadence: for an unknown kind, a missing or mistyped field, an out-of-range value, a bad
            cron expression or an unknown time zone.
    """
    if not isinstance(obj, Mapping):
        raise InvalidCadence("cadence must be an object, got " + type(obj).__name__)
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise InvalidCadence(
            "unknown cadence kind " + repr(kind) + " (expected one of " + ", ".join(_KINDS) + ")"
        )
    timezone = obj.get("timezone")
    if timezone is not None:
        if not isinstance(timezone, str):
            raise InvalidCadence("timezone must be a string, got " + repr(timezone))
        zone(timezone)
    if kind == "manual":
        return ManualCadence(timezone=timezone)
    if kind == "interval":
        every = _int_field(obj, kind, "everyMinutes", 1, MAX_INTERVAL_MINUTES)
        return IntervalCadence(every_minutes=every, timezone=timezone)
    if kind == "daily":
        return DailyCadence(
            at_hour=_int_field(obj, kind, "atHour", 0, 23),
            at_minute=_int_field(obj, kind, "atMinute", 0, 59),
            timezone=timezone,
        )
    if kind == "weekly":
        return WeeklyCadence(
            day_of_week=_int_field(obj, kind, "dayOfWeek", 0, 6),
            at_hour=_int_field(obj, kind, "atHour", 0, 23),
            timezone=timezone,
        )
    return CronCadence(expression=_validate_cron(obj.get("expression")), timezone=timezone)


# --- next run ---------------------------------------------------------------------------------------------


def _exists(naive: dt.datetime, tz: ZoneInfo) -> bool:
    # A wall time exists when it survives a round trip through UTC unchanged (gap times shift).
    aware = naive.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive


def wall_clock_instant(day: dt.date, hour: int, minute: int, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of local ``day hour:minute`` under the module's DST rule.

    Returns the first occurrence of an ambiguous time, and the first existing minute after a
    non-existent one.
    """
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    for _ in range(_MAX_GAP_MINUTES):
        if _exists(naive, tz):
            return naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
        naive += dt.timedelta(minutes=1)
    raise AssertionError("time zone gap longer than two days")  # pragma: no cover


def _js_weekday(day: dt.date) -> int:
    """Day of week with 0 = Sunday (JS ``Date.getDay``); Python's ``weekday()`` has 0 = Monday."""
    return (day.weekday() + 1) % 7


def _next_wall_clock(
    after: dt.datetime, tz: ZoneInfo, hour: int, minute: int, day_of_week: int | None
) -> dt.datetime:
    local_day = after.astimezone(tz).date()
    # Start a day early: a gap can push yesterday's time past midnight into today.
    for offset in range(-1, 9):
        day = local_day + dt.timedelta(days=offset)
        if day_of_week is not None and _js_weekday(day) != day_of_week:
            continue
        candidate = wall_clock_instant(day, hour, minute, tz)
        if candidate > after:
            return candidate
    raise AssertionError("no run within 9 days")  # pragma: no cover


_MAX_SHIFT: Final = dt.timedelta(hours=3)  # larger than any DST or offset change within a day


def _next_cron_realtime(expression: str, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    # Walk the naive wall clock (no DST handling in cronsim) and map each match to the real instants that
    # show it: none in a gap, two in a repeated hour. The earliest instant after `after` wins; matches are
    # collected until the wall clock is past the first one by more than any shift.
    it = CronSim(expression, after.astimezone(tz).replace(tzinfo=None) - _MAX_SHIFT)
    best: dt.datetime | None = None
    limit: dt.datetime | None = None
    for naive in it:
        if limit is not None and naive > limit:
            break
        for fold in (0, 1):
            aware = naive.replace(tzinfo=tz, fold=fold)
            instant = aware.astimezone(UTC)
            if instant.astimezone(tz).replace(tzinfo=None) != naive or instant <= after:
                continue
            if best is None or instant < best:
                best = instant
                limit = naive + 2 * _MAX_SHIFT
    return best


def _next_cron(expression: str, after: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
    fields = expression.split()
    if fields[0].startswith("*") or fields[1].startswith("*"):
        return _next_cron_realtime(expression, after, tz)
    it = CronSim(expression, after.astimezone(tz))
    for _ in range(_MAX_CRON_CANDIDATES):
        try:
            candidate = next(it).astimezone(UTC)
        except StopIteration:
            return None  # pragma: no cover - cronsim gives up after 50 years without a match
        # Fixed-time expressions iterate naive wall-clock time; inside the repeated hour the match can
        # be the first occurrence, which lies before `after`: that run already happened, skip it.
        if candidate > after:
            return candidate
    return None  # pragma: no cover


def next_run(cadence: Cadence, *, after: dt.datetime, default_tz: str = "UTC") -> dt.datetime | None:
    """When a mission with ``cadence`` is next due, strictly after ``after``.

    Args:
        cadence: a parsed cadence.
        after: the reference instant (timezone-aware), usually the end of the last run or now.
        default_tz: IANA zone for cadences without their own ``timezone``.

    Returns:
        An aware UTC datetime strictly after ``after``; ``None`` for manual cadences and for cron
        expressions that never match again.

    Raises:
        ValueError: when ``after`` is naive.
        InvalidCadence: when ``default_tz`` is not a known zone.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be timezone-aware")
    after = after.astimezone(UTC)
    if isinstance(cadence, ManualCadence):
        return None
    if isinstance(cadence, IntervalCadence):
        return after + dt.timedelta(minutes=cadence.every_minutes)
    tz = zone(cadence.timezone or default_tz)
    if isinstance(cadence, DailyCadence):
        return _next_wall_clock(after, tz, cadence.at_hour, cadence.at_minute, None)
    if isinstance(cadence, WeeklyCadence):
        return _next_wall_clock(after, tz, cadence.at_hour, 0, cadence.day_of_week)
    return _next_cron(cadence.expression, after, tz)
