"""Reminder producers (SPEC §12; original cases §24.1 42-61)."""

from __future__ import annotations

import pytest

from mana_ai.planner.reminders import (
    build_reminder_channel,
    compacted_reminder,
    retry_loop_reminder,
    token_budget_reminder,
)
from mana_ai.planner.types import ExecutedCall, LoopState, ToolCall, ToolResult, Usage


def _call(success: bool, i: int = 0) -> ExecutedCall:
    return ExecutedCall(
        round=1,
        call=ToolCall(id="c" + str(i), name="tool_" + str(i), raw_arguments="{}", arguments={}),
        result=ToolResult(success=success, message="ok" if success else "boom"),
    )


def _state(
    *,
    round: int = 1,
    usage: int = 0,
    outcomes: tuple[bool, ...] = (),
    compactions: int = 0,
) -> LoopState:
    calls = tuple(_call(ok, i) for i, ok in enumerate(outcomes))
    return LoopState(
        round=round,
        tool_call_count=len(calls),
        usage=Usage(prompt_tokens=usage, completion_tokens=0),
        last_call=calls[-1] if calls else None,
        recent_calls=calls[-5:],
        compactions_done=compactions,
    )


# --- token_budget_reminder ---------------------------------------------------------------


def test_budget_no_cap_is_silent() -> None:  # case 42
    assert token_budget_reminder("Mana", None, 99_000, 99_000) is None


def test_budget_no_agent_is_silent() -> None:  # case 43
    assert token_budget_reminder(None, 100_000, 99_000, 99_000) is None


@pytest.mark.parametrize("cap", [0, -5])
def test_budget_non_positive_cap_is_silent(cap: int) -> None:
    assert token_budget_reminder("Mana", cap, 99_000, 99_000) is None


def test_budget_below_75_percent_is_silent() -> None:  # case 44
    assert token_budget_reminder("Mana", 100_000, 50_000, 20_000) is None


def test_budget_warns_at_75_percent() -> None:  # case 45
    r = token_budget_reminder("Mana", 100_000, 50_000, 25_000)
    assert r is not None
    assert (r.producer, r.severity) == ("token-budget", "warn")
    assert "75%" in r.text
    assert "Mana" in r.text
    assert "Tagesbudget" in r.text
    assert "75000 / 100000" in r.text


def test_budget_escalates_above_100_percent() -> None:  # case 46
    r = token_budget_reminder("Mana", 100_000, 90_000, 15_000)
    assert r is not None
    assert (r.producer, r.severity) == ("token-budget", "escalate")
    assert "ausgeschoepft" in r.text
    assert "JETZT" in r.text
    assert "105%" in r.text


def test_budget_counts_pretick_usage() -> None:  # case 47
    warn = token_budget_reminder("Mana", 100_000, 80_000, 0)
    escalate = token_budget_reminder("Mana", 100_000, 80_000, 20_000)
    assert warn is not None and warn.severity == "warn"
    assert escalate is not None and escalate.severity == "escalate"


def test_budget_percent_rounds_half_up_like_javascript() -> None:
    # 74.5 % is below the warn ratio; 80.5 % must display as 81 % (Python's round() would give 80).
    r = token_budget_reminder("Mana", 1000, 805, 0)
    assert r is not None
    assert "81%" in r.text


# --- retry_loop_reminder -----------------------------------------------------------------


def test_retry_silent_before_round_3() -> None:  # case 48
    assert retry_loop_reminder(_state(round=2, outcomes=(False, False))) is None


def test_retry_fires_on_two_failures_from_round_3() -> None:  # case 49
    r = retry_loop_reminder(_state(round=3, outcomes=(False, False)))
    assert r is not None
    assert (r.producer, r.severity) == ("retry-loop", "warn")
    assert "fehlgeschlagen" in r.text
    assert "tool_0, tool_1" in r.text


def test_retry_silent_when_last_succeeded_before() -> None:  # case 50
    assert retry_loop_reminder(_state(round=3, outcomes=(True, False))) is None


def test_retry_silent_with_single_failure() -> None:  # case 51
    assert retry_loop_reminder(_state(round=3, outcomes=(False,))) is None


def test_retry_looks_only_at_last_two() -> None:  # case 52
    assert retry_loop_reminder(_state(round=5, outcomes=(False, False, False, True, False))) is None


# --- compacted_reminder ------------------------------------------------------------------


def test_compacted_silent_without_compaction() -> None:  # case 53
    assert compacted_reminder(_state(compactions=0)) is None


def test_compacted_info_after_one_compaction() -> None:  # case 54
    r = compacted_reminder(_state(compactions=1))
    assert r is not None
    assert (r.producer, r.severity) == ("compacted", "info")
    assert "compact-summary" in r.text
    assert "frag nicht" in r.text


def test_compacted_fires_after_several_compactions() -> None:  # case 55
    assert compacted_reminder(_state(compactions=3)) is not None


# --- build_reminder_channel --------------------------------------------------------------


def test_channel_empty_when_nothing_fires() -> None:  # case 56
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=100_000, pretick_usage_24h=0)
    assert channel(_state(round=1)) == []


def test_channel_budget_only() -> None:  # case 57
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=10_000, pretick_usage_24h=8_000)
    out = channel(_state(round=2, usage=1_000))
    assert len(out) == 1
    assert "90%" in out[0].text


def test_channel_retry_only() -> None:  # case 58
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=100_000, pretick_usage_24h=0)
    out = channel(_state(round=4, outcomes=(True, False, False)))
    assert len(out) == 1
    assert "fehlgeschlagen" in out[0].text


def test_channel_orders_compacted_before_budget() -> None:  # case 59
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=10_000, pretick_usage_24h=8_000)
    out = channel(_state(round=2, usage=0, compactions=1))
    assert [r.producer for r in out] == ["compacted", "token-budget"]
    assert "Tagesbudget" in out[1].text


def test_channel_orders_budget_before_retry() -> None:  # case 60
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=10_000, pretick_usage_24h=10_000)
    out = channel(_state(round=3, outcomes=(False, False)))
    assert len(out) == 2
    assert "ausgeschoepft" in out[0].text
    assert "fehlgeschlagen" in out[1].text


def test_channel_uses_the_loops_running_usage() -> None:  # case 61
    channel = build_reminder_channel(agent_name="Mana", max_tokens_per_day=10_000, pretick_usage_24h=5_000)
    assert channel(_state(round=1, usage=0)) == []
    out = channel(_state(round=2, usage=3_000))
    assert len(out) == 1
    assert "80%" in out[0].text


def test_channel_without_agent_never_reports_budget() -> None:
    channel = build_reminder_channel(agent_name=None, max_tokens_per_day=10_000, pretick_usage_24h=50_000)
    assert channel(_state(round=2, usage=3_000)) == []
