"""Pure builders of the MissionIteration records the runner writes back (SPEC §6.3, §11)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mana_ai.planner.recorder import PlannedStep


@dataclass(frozen=True, slots=True)
class Plan:
    summary: str
    steps: tuple[PlannedStep, ...]
    stop_reason: str = ""
    """Why planning ended: ``finished``, ``no-tool-calls``, ``max-rounds``, ``budget-exhausted``, ``budget``
    (the next round was refused), ``truncated`` or ``llm-error`` (steps of earlier rounds kept); stored as
    ``stopReason``."""


def _always_review(_tool_name: str) -> tuple[str, str]:
    return "staged", "propose"


def plan_to_iteration(
    plan: Plan,
    iteration_id: str,
    now_iso: str,
    gate: Callable[[str], tuple[str, str]] = _always_review,
) -> dict[str, Any]:
    """A planned server iteration, overall ``awaiting-review`` (``approved`` if empty).

    ``gate(tool_name)`` gives each step's ``(status, policy)``: ``planned`` for a step the mana app runs as
    soon as it syncs (``auto``), ``staged`` for one that waits for a review (see
    :mod:`mana_ai.workbench.gate`)."""
    steps = []
    for index, step in enumerate(plan.steps):
        status, policy = gate(step.tool_name)
        steps.append(
            {
                "id": f"{iteration_id}-{index}",
                "summary": step.summary,
                "intent": {"kind": "toolCall", "toolName": step.tool_name, "params": dict(step.params)},
                "status": status,
                "policy": policy,
            }
        )
    return {
        "id": iteration_id,
        "startedAt": now_iso,
        "finishedAt": now_iso,
        "plan": steps,
        "summary": plan.summary,
        "overallStatus": "approved" if not plan.steps else "awaiting-review",
        "source": "server",
        **({"stopReason": plan.stop_reason} if plan.stop_reason else {}),
    }


def failed_iteration(
    iteration_id: str,
    now_iso: str,
    *,
    name: str,
    message: str,
    phase: str | None = None,
    stop_reason: str = "error",
) -> dict[str, Any]:
    """A server iteration that says why planning failed (the original wrote nothing, so users never knew)."""
    details: dict[str, Any] = {"name": name, "message": message}
    if phase:
        details["phase"] = phase
    return {
        "id": iteration_id,
        "startedAt": now_iso,
        "finishedAt": now_iso,
        "plan": [],
        "summary": message,
        "overallStatus": "failed",
        "source": "server",
        "stopReason": stop_reason,
        "errorDetails": details,
    }


def append_iteration(existing: Any, iteration: dict[str, Any]) -> list[Any]:
    """The iterations array to write: the latest one from the log plus the new iteration."""
    base: Sequence[Any] = existing if isinstance(existing, list) else []
    return [*base, iteration]
