"""Missed-run grace windows and the budget line (pure)."""

from __future__ import annotations

import datetime as dt

from mana_ai.scheduler.budget import TEMPLATE_TOKENS, budget_line, round_worst_case
from mana_ai.scheduler.cadence import parse_cadence
from mana_ai.scheduler.missed import grace_window, is_missed, missed_iteration

UTC = dt.UTC
DUE = dt.datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


def grace(cadence: dict, configured: dt.timedelta | None = None) -> dt.timedelta | None:
    return grace_window(parse_cadence(cadence), DUE, configured=configured, default_tz="UTC")


def test_default_grace_is_half_the_period_at_most_twelve_hours() -> None:
    assert grace({"kind": "interval", "everyMinutes": 10}) == dt.timedelta(minutes=5)
    assert grace({"kind": "daily", "atHour": 6, "atMinute": 30}) == dt.timedelta(hours=12)
    assert grace({"kind": "weekly", "dayOfWeek": 1, "atHour": 6}) == dt.timedelta(hours=12)
    assert grace({"kind": "cron", "expression": "*/20 * * * *"}) == dt.timedelta(minutes=10)
    assert grace({"kind": "manual"}) is None
    assert grace({"kind": "interval", "everyMinutes": 10}, dt.timedelta(hours=2)) == dt.timedelta(hours=2)
    assert grace({"kind": "manual"}, dt.timedelta(hours=2)) is None


def test_a_daily_briefing_found_in_the_evening_is_missed_one_found_soon_is_not() -> None:
    daily = parse_cadence({"kind": "daily", "atHour": 6, "atMinute": 30})
    assert is_missed(daily, DUE, DUE + dt.timedelta(hours=15), configured=None, default_tz="UTC")
    assert not is_missed(daily, DUE, DUE + dt.timedelta(hours=2), configured=None, default_tz="UTC")


def test_missed_iteration_says_why_and_when_next() -> None:
    it = missed_iteration(
        "i1", "2026-03-02T21:30:00.000Z", due_iso="2026-03-02T06:30:00.000Z",
        late=dt.timedelta(hours=15), next_iso="2026-03-03T06:30:00.000Z",
    )  # fmt: skip
    assert it["summary"] == (
        "skipped, missed while the runner was down (due 2026-03-02T06:30:00.000Z, found 15 h 0 min late;"
        " next run 2026-03-03T06:30:00.000Z)"
    )
    assert it["plan"] == [] and it["overallStatus"] == "approved" and it["source"] == "server"


def test_budget_line() -> None:
    assert budget_line(100, 50, 1000) == "100 used + 50 reserved of 1,000 tokens per 24 h (15 %)"
    assert budget_line(700, 100, 1000).endswith("(80 %) — running out")
    assert budget_line(5, 0, None) == "5 used + 0 reserved tokens in the last 24 h (no daily cap)"


def test_the_worst_case_of_a_round_is_its_body_in_bytes_plus_the_template_plus_the_answer() -> None:
    assert round_worst_case(12_000, 1024, 32768) == 12_000 + TEMPLATE_TOKENS + 1024
    # Without max_tokens only the context window bounds the answer.
    assert round_worst_case(12_000, None, 32768) == 12_000 + TEMPLATE_TOKENS + 32768
    assert round_worst_case(12_000, 0, 8192) == 12_000 + TEMPLATE_TOKENS + 8192
