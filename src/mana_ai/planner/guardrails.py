"""Pure guardrails for a server plan (SPEC §15).

The original defined these in shared-ai but only the web app's foreground runner applied them;
mana-ai wrote any plan back (W12). We apply them around the planner run:

- ``input-size-limit`` (pre-plan, block): the resolved inputs exceed 100,000 characters;
- ``plan-step-limit`` (post-plan, block): the plan has more than 25 steps;
- ``duplicate-destructive-tool`` (post-plan, warn): ``undo_drink`` appears more than once;
- ``empty-required-params`` (pre-execute, block): ``create_task`` without ``title`` or
  ``save_news_article`` without ``url``.

As in the original runner, every triggered guardrail is listed, the first blocking one gives the
block reason, and warnings pass. Pure functions, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mana_ai.planner.recorder import PlannedStep
from mana_ai.tools.injection import is_blank

__all__ = [
    "DESTRUCTIVE_ONCE_TOOLS",
    "MAX_INPUT_CHARS",
    "MAX_PLAN_STEPS",
    "REQUIRED_PARAMS",
    "GuardrailOutcome",
    "check_inputs",
    "check_plan",
]

MAX_INPUT_CHARS = 100_000
MAX_PLAN_STEPS = 25
DESTRUCTIVE_ONCE_TOOLS: tuple[str, ...] = ("undo_drink",)
REQUIRED_PARAMS: tuple[tuple[str, str], ...] = (("create_task", "title"), ("save_news_article", "url"))

INPUT_SIZE_LIMIT = "input-size-limit"
PLAN_STEP_LIMIT = "plan-step-limit"
DUPLICATE_DESTRUCTIVE_TOOL = "duplicate-destructive-tool"
EMPTY_REQUIRED_PARAMS = "empty-required-params"


@dataclass(frozen=True, slots=True)
class GuardrailOutcome:
    """The result of running a group of guardrails."""

    passed: bool
    """False when at least one blocking guardrail triggered."""
    block_reason: str | None = None
    """Reason of the first blocking guardrail that triggered."""
    triggered: tuple[str, ...] = ()
    """Names of every guardrail that triggered (blocking or warning), in check order."""
    warnings: tuple[str, ...] = ()
    """Reasons of the warning guardrails that triggered."""


def _outcome(results: Sequence[tuple[str, bool, str | None]]) -> GuardrailOutcome:
    """Fold ``(name, blocks, reason-or-None)`` results into one outcome."""
    triggered: list[str] = []
    warnings: list[str] = []
    block_reason: str | None = None
    for name, blocks, reason in results:
        if reason is None:
            continue
        triggered.append(name)
        if blocks:
            if block_reason is None:
                block_reason = reason
        else:
            warnings.append(reason)
    return GuardrailOutcome(
        passed=block_reason is None,
        block_reason=block_reason,
        triggered=tuple(triggered),
        warnings=tuple(warnings),
    )


def check_inputs(contents: Sequence[str]) -> GuardrailOutcome:
    """Pre-plan guardrail: the resolved inputs must fit the prompt budget.

    Args:
        contents: the ``content`` of every resolved input (including research inputs).

    Returns:
        Blocked by ``input-size-limit`` when the total exceeds ``MAX_INPUT_CHARS``.
    """
    # UTF-16 code units, as the original's JavaScript ``length``: a character outside the BMP counts twice.
    total = sum(len(c.encode("utf-16-le", "surrogatepass")) // 2 for c in contents)
    reason = None
    if total > MAX_INPUT_CHARS:
        reason = f"Resolved inputs total {total:,} characters, more than the limit of {MAX_INPUT_CHARS:,}"
    return _outcome([(INPUT_SIZE_LIMIT, True, reason)])


def _step_limit(steps: Sequence[PlannedStep]) -> str | None:
    if len(steps) <= MAX_PLAN_STEPS:
        return None
    return f"Plan has {len(steps)} steps, more than the limit of {MAX_PLAN_STEPS}"


def _duplicate_destructive(steps: Sequence[PlannedStep]) -> str | None:
    counts = Counter(s.tool_name for s in steps)
    repeated = [f"{name} ({counts[name]}x)" for name in DESTRUCTIVE_ONCE_TOOLS if counts[name] > 1]
    if not repeated:
        return None
    return "Destructive tool used more than once: {}".format(", ".join(repeated))


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and is_blank(value))


def _empty_required(steps: Sequence[PlannedStep]) -> str | None:
    required = dict(REQUIRED_PARAMS)
    problems = [
        f"step {i} ({step.tool_name}) has no {required[step.tool_name]}"
        for i, step in enumerate(steps, start=1)
        if step.tool_name in required and _is_empty(step.params.get(required[step.tool_name]))
    ]
    if not problems:
        return None
    return "Required parameters are empty: {}".format("; ".join(problems))


def check_plan(steps: Sequence[PlannedStep]) -> GuardrailOutcome:
    """Post-plan and pre-execute guardrails on a recorded plan.

    Args:
        steps: the plan's steps in order.

    Returns:
        The combined outcome of ``plan-step-limit`` (block), ``duplicate-destructive-tool``
        (warn) and ``empty-required-params`` (block).
    """
    return _outcome(
        [
            (PLAN_STEP_LIMIT, True, _step_limit(steps)),
            (DUPLICATE_DESTRUCTIVE_TOOL, False, _duplicate_destructive(steps)),
            (EMPTY_REQUIRED_PARAMS, True, _empty_required(steps)),
        ]
    )
