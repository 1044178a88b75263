"""Missed runs after downtime (issue 15): coalesce, and skip a run found too late to be useful. Pure.

A mission that missed several due times is planned once: its next run is computed from *now*, not from the
old due time, so the missed occurrences collapse into this one run. A run found later than a grace window
after its due time is not planned at all: a daily 07:30 briefing should not arrive at 22:00. It is skipped
to the next occurrence, and the mission gets an iteration that says so.

The grace window is ``MANA_AI_MISSED_RUN_GRACE`` when set, otherwise half of the cadence's period (the time
between the two occurrences after the missed due time), at most 12 hours. Manual missions never expire.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from mana_ai.scheduler.cadence import Cadence, ManualCadence, next_run

MAX_DEFAULT_GRACE: Final = dt.timedelta(hours=12)

MISSED_SUMMARY: Final = "skipped, missed while the runner was down"


def grace_window(
    cadence: Cadence, due: dt.datetime, *, configured: dt.timedelta | None, default_tz: str
) -> dt.timedelta | None:
    """How late a run may start; ``None``: never skipped (manual cadence, or no later occurrence)."""
    if isinstance(cadence, ManualCadence):
        return None
    if configured is not None:
        return configured
    # The period between two occurrences after the due time (a hand-edited nextRunAt may be off the grid).
    try:
        following = next_run(cadence, after=due, default_tz=default_tz)
        second = next_run(cadence, after=following, default_tz=default_tz) if following else None
    except OverflowError:
        # A due time at the edge of the calendar (a device may write "0001-01-01T00:00:00.000Z"): no period
        # to measure there, and a run due so long ago is late by any grace: the widest default applies.
        return MAX_DEFAULT_GRACE
    if following is None or second is None:
        return None
    return min((second - following) / 2, MAX_DEFAULT_GRACE)


def is_missed(
    cadence: Cadence,
    due: dt.datetime,
    now: dt.datetime,
    *,
    configured: dt.timedelta | None,
    default_tz: str,
) -> bool:
    grace = grace_window(cadence, due, configured=configured, default_tz=default_tz)
    return grace is not None and now - due > grace


def missed_iteration(
    iteration_id: str, now_iso: str, *, due_iso: str, late: dt.timedelta, next_iso: str | None
) -> dict[str, Any]:
    """The iteration note of a skipped run: no plan, nothing to review, the reason in the summary."""
    minutes = int(late.total_seconds() // 60)
    late_text = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    then = f"; next run {next_iso}" if next_iso else ""
    return {
        "id": iteration_id,
        "startedAt": now_iso,
        "finishedAt": now_iso,
        "plan": [],
        "summary": f"{MISSED_SUMMARY} (due {due_iso}, found {late_text} late{then})",
        "overallStatus": "approved",
        "source": "server",
    }
