"""SPEC §15 guardrails applied to server plans."""

from __future__ import annotations

from typing import Any

from mana_ai.planner.guardrails import GuardrailOutcome, check_inputs, check_plan
from mana_ai.planner.recorder import PlannedStep


def _step(tool: str, **params: Any) -> PlannedStep:
    return PlannedStep(summary=tool, tool_name=tool, params=params)


def test_inputs_within_limit_pass() -> None:
    assert check_inputs(["a" * 50_000, "b" * 50_000]) == GuardrailOutcome(passed=True)
    assert check_inputs([]).passed


def test_inputs_over_limit_block() -> None:
    outcome = check_inputs(["a" * 60_000, "b" * 40_001])
    assert not outcome.passed
    assert outcome.triggered == ("input-size-limit",)
    assert outcome.block_reason is not None and "100,001" in outcome.block_reason
    assert outcome.warnings == ()


def test_plan_of_25_steps_passes_26_blocks() -> None:
    assert check_plan([_step("get_habits")] * 25).passed
    outcome = check_plan([_step("get_habits")] * 26)
    assert not outcome.passed
    assert outcome.triggered == ("plan-step-limit",)
    assert outcome.block_reason is not None and "26" in outcome.block_reason


def test_duplicate_undo_drink_warns_but_passes() -> None:
    assert check_plan([_step("undo_drink")]).triggered == ()
    outcome = check_plan([_step("undo_drink"), _step("create_note", content="x"), _step("undo_drink")])
    assert outcome.passed
    assert outcome.block_reason is None
    assert outcome.triggered == ("duplicate-destructive-tool",)
    assert len(outcome.warnings) == 1 and "undo_drink (2x)" in outcome.warnings[0]


def test_other_duplicates_do_not_warn() -> None:
    assert check_plan([_step("create_note", content="x")] * 3) == GuardrailOutcome(passed=True)


def test_empty_required_params_block() -> None:
    outcome = check_plan([_step("create_task", title="ok"), _step("create_task", title="  ")])
    assert not outcome.passed
    assert outcome.triggered == ("empty-required-params",)
    assert outcome.block_reason is not None and "step 2 (create_task) has no title" in outcome.block_reason

    outcome = check_plan([_step("save_news_article", title="t")])
    assert (
        outcome.block_reason is not None
        and "save_news_article" in outcome.block_reason
        and "url" in outcome.block_reason
    )

    assert check_plan([_step("save_news_article", url="https://x.example")]).passed
    assert not check_plan([_step("create_task")]).passed


def test_all_triggered_listed_first_block_reason_wins() -> None:
    steps = [_step("undo_drink"), _step("undo_drink"), _step("create_task", title="")] + [
        _step("get_habits")
    ] * 24
    outcome = check_plan(steps)
    assert not outcome.passed
    assert outcome.triggered == ("plan-step-limit", "duplicate-destructive-tool", "empty-required-params")
    assert outcome.block_reason is not None and outcome.block_reason.startswith("Plan has 27 steps")
    assert len(outcome.warnings) == 1


def test_empty_required_params_guardrail_sees_through_zero_width_characters() -> None:
    steps = [
        PlannedStep(summary="create_task", tool_name="create_task", params={"title": "\u200b\u2060\u200b"})
    ]
    outcome = check_plan(steps)
    assert not outcome.passed
    assert outcome.triggered == ("empty-required-params",)


def test_input_size_limit_counts_like_the_original_utf16_length() -> None:
    # 50,001 emoji are 100,002 UTF-16 code units: the original (JavaScript .length) blocks them.
    outcome = check_inputs(["\U0001f600" * 50_001])
    assert not outcome.passed
    assert outcome.triggered == ("input-size-limit",)
