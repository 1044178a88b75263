"""Reminder producers for the planner loop (SPEC §12).

A producer looks at the :class:`LoopState` at the start of a round and may return a short German
instruction that the loop appends to that round's request as a transient ``<reminder>`` system
message. Producers are pure: they return data, and the runner counts what was emitted
(``reminders_emitted_total{producer, severity}``) from the loop result.

The texts use ASCII transliterations (``ae``, ``oe``, ``ue``) like the original, whose tests look for
substrings such as ``ausgeschoepft``.
"""

from __future__ import annotations

import math

from mana_ai.planner.types import LoopState, Reminder, ReminderChannel

WARN_RATIO = 0.75
"""Share of the daily token budget from which the budget reminder warns."""

ESCALATE_RATIO = 1.0
"""Share of the daily token budget from which the budget reminder escalates."""

RETRY_LOOP_MIN_ROUND = 3
"""The retry-loop reminder stays silent in the first rounds, where a failure is still being handled."""

RETRY_LOOP_WINDOW = 2
"""Number of most recent calls that must all have failed."""


def _round_half_up(value: float) -> int:
    # JavaScript's Math.round rounds .5 up; Python's round() rounds half to even (74.5 -> 74).
    return math.floor(value + 0.5)


def token_budget_reminder(
    agent_name: str | None,
    cap: int | None,
    pretick_usage_24h: int,
    round_usage: int,
) -> Reminder | None:
    """Warn the model when the agent's daily token budget runs low.

    Args:
        agent_name: display name of the mission's agent; None when the mission has no agent.
        cap: the agent's ``maxTokensPerDay``; None or ``<= 0`` disables the reminder.
        pretick_usage_24h: tokens the agent used in the 24 h before this run.
        round_usage: tokens this run has used so far.

    Returns:
        A ``warn`` reminder from 75 % of the cap, an ``escalate`` reminder from 100 %, otherwise None.
    """
    if agent_name is None or cap is None or cap <= 0:
        return None
    total = pretick_usage_24h + round_usage
    ratio = total / cap
    if ratio < WARN_RATIO:
        return None
    percent = _round_half_up(ratio * 100)
    if ratio >= ESCALATE_RATIO:
        return Reminder(
            producer="token-budget",
            severity="escalate",
            text=(
                f"Das Tagesbudget von Agent {agent_name} ist ausgeschoepft ({total} / {cap} Tokens = "
                f"{percent}%). Schreib JETZT eine abschliessende Summary und ruf keine weiteren Tools auf: "
                "der Runner beendet die Planung, sobald das Budget erreicht ist."
            ),
        )
    return Reminder(
        producer="token-budget",
        severity="warn",
        text=(
            f"Agent {agent_name} hat bereits {percent}% seines Tagesbudgets verbraucht ({total} / {cap} "
            "Tokens). Geh sparsam vor, verzichte auf doppelte Tool-Calls und komm bald zu einer "
            "abschliessenden Summary."
        ),
    )


def retry_loop_reminder(state: LoopState) -> Reminder | None:
    """Tell the model to stop retrying when the most recent tool calls all failed.

    Args:
        state: the loop state at the start of the round.

    Returns:
        A ``warn`` reminder from round 3 on when the last two executed calls failed, otherwise None.
    """
    if state.round < RETRY_LOOP_MIN_ROUND:
        return None
    window = state.recent_calls[-RETRY_LOOP_WINDOW:]
    if len(window) < RETRY_LOOP_WINDOW or any(c.result.success for c in window):
        return None
    names = ", ".join(c.call.name for c in window)
    return Reminder(
        producer="retry-loop",
        severity="warn",
        text=(
            f"Die letzten {RETRY_LOOP_WINDOW} Tool-Calls ({names}) sind fehlgeschlagen. Hoer mit dem "
            "Wiederholen auf und erklaere dem Nutzer stattdessen in einer Summary, was nicht geklappt hat."
        ),
    )


def compacted_reminder(state: LoopState) -> Reminder | None:
    """Tell the model that older turns were folded into a compact summary.

    Args:
        state: the loop state at the start of the round.

    Returns:
        An ``info`` reminder once at least one compaction happened, otherwise None.
    """
    if state.compactions_done < 1:
        return None
    return Reminder(
        producer="compacted",
        severity="info",
        text=(
            "Aeltere Runden dieses Gespraechs wurden in einem <compact-summary>-Block zusammengefasst "
            "(Goal / Decisions / Tools Called / Current Progress). Dieser Block ist ab jetzt die "
            "verbindliche Kurzfassung des bisherigen Verlaufs: frag nicht nach Details, die dabei "
            "weggefallen sind, sondern mach von dort aus weiter."
        ),
    )


def build_reminder_channel(
    *,
    agent_name: str | None,
    max_tokens_per_day: int | None,
    pretick_usage_24h: int,
) -> ReminderChannel:
    """Build the reminder channel for one planner run.

    Args:
        agent_name: display name of the mission's agent; None when the mission has no agent.
        max_tokens_per_day: the agent's daily token cap (None = unlimited).
        pretick_usage_24h: tokens the agent used in the 24 h before this run.

    Returns:
        A channel that, each round, returns the reminders that apply, in the order compacted,
        token-budget, retry-loop.
    """

    def channel(state: LoopState) -> list[Reminder]:
        candidates = (
            compacted_reminder(state),
            token_budget_reminder(
                agent_name, max_tokens_per_day, pretick_usage_24h, state.usage.total_tokens
            ),
            retry_loop_reminder(state),
        )
        return [r for r in candidates if r is not None]

    return channel
