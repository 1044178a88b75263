"""Pure builders behind the data commands: CLI options in, web-app-shaped records out.

The CLI writes agents and missions exactly as the mana web app would (SPEC §6.1, §6.4), so everything here
produces the same JSON the web app stores: camelCase fields, JS-ISO timestamps, cadences in the
``MissionCadence`` form. No I/O and no clock: the caller passes ``now``.

Every error is an :class:`InvalidOption` (a ``ValueError``) whose message is one line meant for the user;
the CLI prints it as ``Error: …`` and exits 1.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from mana_ai.scheduler.cadence import (
    Cadence,
    DailyCadence,
    IntervalCadence,
    InvalidCadence,
    ManualCadence,
    WeeklyCadence,
    next_run,
    parse_cadence,
)
from mana_ai.timefmt import parse_iso, to_js_iso


class InvalidOption(ValueError):
    """A command-line value that cannot be used; the message says why in one line."""


INPUT_TABLES: Final[Mapping[str, tuple[str, str]]] = {
    "notes": ("notes", "notes"),
    "tasks": ("todo", "tasks"),
    "events": ("calendar", "events"),
    "journalEntries": ("journal", "journalEntries"),
    "kontextDoc": ("kontext", "kontextDoc"),
    "userContext": ("profile", "userContext"),
    "companionGoals": ("goals", "companionGoals"),
}
"""``--input <table>:<id>`` prefixes and the (module, table) pair of SPEC §6.1 each maps to."""

DEFAULT_POLICY_DECISION: Final = "propose"

_DAYS: Final[Mapping[str, int]] = {
    name: number
    for number, names in enumerate(
        (
            ("sun", "sunday", "so", "sonntag"),
            ("mon", "monday", "mo", "montag"),
            ("tue", "tuesday", "di", "dienstag"),
            ("wed", "wednesday", "mi", "mittwoch"),
            ("thu", "thursday", "do", "donnerstag"),
            ("fri", "friday", "fr", "freitag"),
            ("sat", "saturday", "sa", "samstag"),
        )
    )
    for name in names
}
_DAY_LABELS: Final = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_EVERY: Final = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?$")
_CLOCK: Final = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")
_MIN_PREFIX: Final = 4


# --- cadences ---------------------------------------------------------------------------------------------


def parse_every(text: str) -> int:
    """Minutes of an ``--every`` value: ``90``, ``90m``, ``2h``, ``1d`` or ``1h30m``.

    Raises:
        InvalidOption: when the text is none of these forms.
    """
    compact = text.strip().lower().replace(" ", "")
    if compact.isdigit():
        return int(compact)
    match = _EVERY.match(compact)
    if not compact or match is None or not any(match.groups()):
        raise InvalidOption("--every must look like 90m, 2h, 1d or 1h30m, got " + repr(text))
    days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    return days * 1440 + hours * 60 + minutes


def _clock(text: str, option: str) -> tuple[int, int]:
    match = _CLOCK.match(text.strip())
    if match is None:
        raise InvalidOption(option + " needs a time like 07:30, got " + repr(text))
    return int(match.group(1)), int(match.group(2) or 0)


def parse_weekly(text: str) -> tuple[int, int]:
    """``(dayOfWeek, atHour)`` of a ``--weekly DOW@HH`` value; 0 = Sunday as in the web app.

    The day is a number 0–6 or an English or German day name (``mon``, ``Monday``, ``mo``, ``Montag``).

    Raises:
        InvalidOption: for an unknown day, a malformed hour, or minutes other than ``00``.
    """
    day_text, sep, hour_text = text.partition("@")
    if not sep:
        raise InvalidOption("--weekly must look like mon@09 (day@hour), got " + repr(text))
    day_key = day_text.strip().lower()
    if day_key.isdigit():
        day = int(day_key)
    elif day_key in _DAYS:
        day = _DAYS[day_key]
    else:
        raise InvalidOption("--weekly: unknown day " + repr(day_text) + " (use mon…sun or 0–6, 0 = Sunday)")
    hour, minute = _clock(hour_text, "--weekly")
    if minute:
        raise InvalidOption("--weekly runs on the full hour (the web app's weekly cadence has no minutes)")
    return day, hour


def cadence_from_options(
    *,
    every: str | None = None,
    daily: str | None = None,
    weekly: str | None = None,
    cron: str | None = None,
    manual: bool = False,
    timezone: str | None = None,
) -> Cadence:
    """The cadence chosen by at most one of the cadence options (none given: manual).

    Raises:
        InvalidOption: when more than one cadence option is given or a value is malformed.
        InvalidCadence: when a value is out of range, the cron expression is invalid or the zone unknown.
    """
    chosen = [
        name
        for name, value in (
            ("every", every),
            ("daily", daily),
            ("weekly", weekly),
            ("cron", cron),
            ("manual", manual or None),
        )
        if value is not None
    ]
    if len(chosen) > 1:
        raise InvalidOption(
            "choose one cadence, not "
            + " and ".join("--" + c for c in chosen)
            + " (--every, --daily, --weekly, --cron or --manual)"
        )
    obj: dict[str, Any]
    if every is not None:
        obj = {"kind": "interval", "everyMinutes": parse_every(every)}
    elif daily is not None:
        hour, minute = _clock(daily, "--daily")
        obj = {"kind": "daily", "atHour": hour, "atMinute": minute}
    elif weekly is not None:
        day, hour = parse_weekly(weekly)
        obj = {"kind": "weekly", "dayOfWeek": day, "atHour": hour}
    elif cron is not None:
        obj = {"kind": "cron", "expression": cron}
    else:
        obj = {"kind": "manual"}
    if timezone is not None:
        obj["timezone"] = timezone.strip()
    return parse_cadence(obj)


def describe_cadence(obj: Any) -> str:
    """A short human form of a synced cadence object, e.g. ``daily 07:30 Europe/Berlin``."""
    try:
        cadence = parse_cadence(obj)
    except InvalidCadence as exc:
        return "invalid (" + str(exc) + ")"
    if isinstance(cadence, ManualCadence):
        text = "manual"
    elif isinstance(cadence, IntervalCadence):
        text = "every " + _minutes_label(cadence.every_minutes)
    elif isinstance(cadence, DailyCadence):
        text = f"daily {cadence.at_hour:02d}:{cadence.at_minute:02d}"
    elif isinstance(cadence, WeeklyCadence):
        text = f"weekly {_DAY_LABELS[cadence.day_of_week]} {cadence.at_hour:02d}:00"
    else:
        text = "cron " + cadence.expression
    if cadence.timezone and not isinstance(cadence, ManualCadence | IntervalCadence):
        text += " " + cadence.timezone
    return text


def _minutes_label(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [str(n) + unit for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return "".join(parts) or "0m"


def first_run(cadence: Cadence, *, now: dt.datetime, run_now: bool, default_tz: str) -> str | None:
    """``nextRunAt`` of a new mission: ``now`` with ``--now``, else the cadence's next run (manual: none)."""
    if run_now:
        return to_js_iso(now)
    at = next_run(cadence, after=now, default_tz=default_tz)
    return to_js_iso(at) if at is not None else None


# --- inputs -----------------------------------------------------------------------------------------------


def parse_input_ref(text: str) -> dict[str, str]:
    """A ``MissionInputRef`` ``{module, table, id}`` from ``<table>:<id>`` (``userContext`` alone is allowed).

    Raises:
        InvalidOption: for an unknown table or a missing id.
    """
    table, _sep, record_id = text.strip().partition(":")
    pair = INPUT_TABLES.get(table)
    if pair is None:
        raise InvalidOption(
            "--input: unknown table "
            + repr(table)
            + " (use one of "
            + ", ".join(INPUT_TABLES)
            + ", as table:id)"
        )
    record_id = record_id.strip()
    if table == "userContext":
        record_id = record_id or "singleton"
        if record_id != "singleton":
            raise InvalidOption("--input: userContext has only the id 'singleton'")
    if not record_id:
        raise InvalidOption("--input needs table:id, got " + repr(text))
    return {"module": pair[0], "table": pair[1], "id": record_id}


# --- records ----------------------------------------------------------------------------------------------


def required_text(value: str, option: str) -> str:
    """``value`` without surrounding blanks.

    Raises:
        InvalidOption: when nothing is left.
    """
    value = value.strip()
    if not value:
        raise InvalidOption(option + " must not be empty")
    return value


def build_agent(
    *,
    agent_id: str,
    now: dt.datetime,
    name: str,
    role: str = "",
    persona: str | None = None,
    max_concurrent: int = 1,
    max_tokens_per_day: int | None = None,
    deny_tools: Iterable[str] = (),
    deny_modules: Iterable[str] = (),
    known_tools: Iterable[str] | None = None,
    known_modules: Iterable[str] | None = None,
) -> dict[str, Any]:
    """A new agent record as the web app creates it (SPEC §6.4).

    Args:
        agent_id: a fresh UUID v4.
        now: creation time (``createdAt``/``updatedAt``).
        name: the agent's name (uniqueness is the caller's check: it needs the user's other agents).
        role: short role text.
        persona: the system prompt, if any.
        max_concurrent: missions of this agent planned at once (at least 1).
        max_tokens_per_day: 24 h token cap; ``None`` = unlimited, 0 = paused.
        deny_tools: tools set to ``deny`` in the agent's policy.
        deny_modules: modules whose tools default to ``deny``.
        known_tools: when given, ``deny_tools`` must be among them.
        known_modules: when given, ``deny_modules`` must be among them.

    Raises:
        InvalidOption: for an empty name, out-of-range limits or unknown tools/modules.
    """
    name = required_text(name, "--name")
    if max_concurrent < 1:
        raise InvalidOption("--max-concurrent must be at least 1, got " + str(max_concurrent))
    if max_tokens_per_day is not None and max_tokens_per_day < 0:
        raise InvalidOption("--max-tokens-per-day must be 0 or more, got " + str(max_tokens_per_day))
    tools = _checked(deny_tools, known_tools, "--deny-tool", "tool")
    modules = _checked(deny_modules, known_modules, "--deny-module", "module")
    iso = to_js_iso(now)
    record: dict[str, Any] = {
        "id": agent_id,
        "createdAt": iso,
        "updatedAt": iso,
        "name": name,
        "role": role.strip(),
    }
    if persona:
        record["systemPrompt"] = persona
    record["policy"] = {
        "tools": {tool: "deny" for tool in tools},
        "defaultsByModule": {module: "deny" for module in modules},
        "defaultForAi": DEFAULT_POLICY_DECISION,
    }
    if max_tokens_per_day is not None:
        record["maxTokensPerDay"] = max_tokens_per_day
    record["maxConcurrentMissions"] = max_concurrent
    record["state"] = "active"
    return record


def _checked(values: Iterable[str], known: Iterable[str] | None, option: str, what: str) -> list[str]:
    allowed = frozenset(known) if known is not None else None
    out: list[str] = []
    for value in values:
        value = value.strip()
        if allowed is not None and value not in allowed:
            raise InvalidOption(option + ": unknown " + what + " " + repr(value))
        if value and value not in out:
            out.append(value)
    return out


def build_mission(
    *,
    mission_id: str,
    now: dt.datetime,
    title: str,
    objective: str,
    cadence: Cadence,
    next_run_at: str | None,
    concept: str = "",
    agent_id: str | None = None,
    inputs: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """A new mission record as the web app creates it (SPEC §6.1): active, no iterations yet.

    Raises:
        InvalidOption: for an empty title or objective.
    """
    title, objective = required_text(title, "--title"), required_text(objective, "--objective")
    iso = to_js_iso(now)
    record: dict[str, Any] = {
        "id": mission_id,
        "createdAt": iso,
        "updatedAt": iso,
        "title": title,
        "conceptMarkdown": concept,
        "objective": objective,
        "inputs": [dict(i) for i in inputs],
        "cadence": cadence.to_json(),
        "state": "active",
        "iterations": [],
    }
    if next_run_at is not None:
        record["nextRunAt"] = next_run_at
    if agent_id is not None:
        record["agentId"] = agent_id
    return record


def resume_fields(
    record: Mapping[str, Any], *, now: dt.datetime, default_tz: str
) -> tuple[dict[str, Any], str | None]:
    """The field update that resumes a mission, and a warning for the user (or ``None``).

    The state becomes ``active``. A ``nextRunAt`` that is missing or already past is replaced by the
    cadence's next run after ``now`` (``None`` for a manual cadence, so a stale time cannot fire at once);
    a future one is kept.
    """
    fields: dict[str, Any] = {"state": "active"}
    current = record.get("nextRunAt")
    if isinstance(current, str):
        try:
            if parse_iso(current) > now:
                return fields, None
        except ValueError:
            pass
    try:
        cadence = parse_cadence(record.get("cadence"))
    except InvalidCadence as exc:
        return fields, "the mission's cadence is invalid (" + str(exc) + "): no next run was set"
    fields["nextRunAt"] = first_run(cadence, now=now, run_now=False, default_tz=default_tz)
    if fields["nextRunAt"] is None and current is None:
        del fields["nextRunAt"]
    return fields, None


# --- looking records up -----------------------------------------------------------------------------------


def match_ref(ref: str, candidates: Sequence[tuple[str, str]], *, kind: str) -> str:
    """The id ``ref`` names among ``(id, label)`` candidates: the exact id, else one whose label is ``ref``
    (case-insensitive), else the one id starting with ``ref`` (at least four characters).

    Raises:
        InvalidOption: when nothing or more than one record matches.
    """
    ref = ref.strip()
    ids = [c[0] for c in candidates]
    if ref in ids:
        return ref
    by_label = [c[0] for c in candidates if c[1].casefold() == ref.casefold()] if ref else []
    if len(by_label) == 1:
        return by_label[0]
    if len(by_label) > 1:
        raise InvalidOption(str(len(by_label)) + " " + kind + "s are named " + repr(ref) + ": give the id")
    by_prefix = [i for i in ids if len(ref) >= _MIN_PREFIX and i.startswith(ref)]
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        raise InvalidOption(
            repr(ref) + " matches " + str(len(by_prefix)) + " " + kind + "s: give more of the id"
        )
    if ref and len(ref) < _MIN_PREFIX and any(i.startswith(ref) for i in ids):
        raise InvalidOption(
            "give at least " + str(_MIN_PREFIX) + " characters of the " + kind + " id, not " + repr(ref)
        )
    raise InvalidOption("unknown " + kind + " " + repr(ref) + " (see `mana-ai " + kind + "s list`)")


def check_unique_name(name: str, existing: Iterable[str]) -> None:
    """Agent names are unique per user, compared case-insensitively like the web app's check.

    Raises:
        InvalidOption: when another agent already has the name.
    """
    wanted = name.strip().casefold()
    if any(other.strip().casefold() == wanted for other in existing):
        raise InvalidOption("an agent named " + repr(name.strip()) + " already exists")


# --- showing records --------------------------------------------------------------------------------------


def shown(value: Any) -> str:
    """A synced text field for display: encrypted values (``enc:1:…``) are not printed as ciphertext."""
    if not isinstance(value, str):
        return ""
    return "(encrypted)" if value.startswith("enc:") else value


def step_row(step: Any) -> tuple[str, str, str, str]:
    """``(status, tool, params, summary)`` of one ``PlanStep``; a note step shows ``note`` and its body."""
    if not isinstance(step, Mapping):
        return ("?", "?", "", "")
    intent = step.get("intent")
    intent = intent if isinstance(intent, Mapping) else {}
    if intent.get("kind") == "note":
        tool, params = "note", shown(intent.get("body"))
    else:
        tool = str(intent.get("toolName", "?"))
        raw = intent.get("params", {})
        params = orjson.dumps(raw).decode() if raw is not None else ""
    return (str(step.get("status", "?")), tool, params, shown(step.get("summary")))


def error_line(details: Any) -> str | None:
    """``name: message (phase)`` of an iteration's ``errorDetails``, or ``None``."""
    if not isinstance(details, Mapping):
        return None
    text = str(details.get("name") or "Error") + ": " + str(details.get("message") or "")
    if details.get("phase"):
        text += " (phase " + str(details["phase"]) + ")"
    return text


def short_ids(ids: Iterable[str], min_length: int = 8) -> dict[str, str]:
    """The shortest prefix of each id (at least ``min_length`` characters) that is unique among ``ids``."""
    unique = list(dict.fromkeys(ids))
    length = min_length
    while len({i[:length] for i in unique}) < len(unique) and length < max(map(len, unique)):
        length += 1
    return {i: i[:length] for i in unique}


def short_time(value: Any) -> str:
    """A JS-ISO timestamp as ``2026-03-28 12:00Z`` for tables; anything else as is, ``-`` for none."""
    if not isinstance(value, str) or not value:
        return "-"
    try:
        return parse_iso(value).strftime("%Y-%m-%d %H:%MZ")
    except ValueError:
        return value


def is_due(record: Mapping[str, Any], now: dt.datetime) -> bool:
    """Whether the runner would take the mission now (active, not deleted, ``nextRunAt`` reached)."""
    next_at = record.get("nextRunAt")
    if record.get("state") != "active" or record.get("deletedAt") or not isinstance(next_at, str):
        return False
    try:
        return parse_iso(next_at) <= now
    except ValueError:
        return False


__all__ = [
    "INPUT_TABLES",
    "InvalidOption",
    "build_agent",
    "build_mission",
    "cadence_from_options",
    "check_unique_name",
    "describe_cadence",
    "error_line",
    "first_run",
    "is_due",
    "match_ref",
    "parse_every",
    "parse_input_ref",
    "parse_weekly",
    "required_text",
    "resume_fields",
    "short_ids",
    "short_time",
    "shown",
    "step_row",
]
