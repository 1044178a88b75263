"""Proposals: the planned steps of server iterations, and how a decision on one changes the iterations.

The runner writes each plan step of a ``source: server`` iteration as ``staged`` when the agent's policy
wants it reviewed, and as ``planned`` when the mana app may run it at once (:mod:`mana_ai.workbench.gate`:
the real app's executor runs every ``planned`` step as soon as it syncs). A proposal *is* a ``staged`` step,
identified by ``(mission id, iteration id, step id)``, and a decision is written into the step itself, so
the web app, the CLI and the next planning round all read the same record.

A decided step keeps its shape (SPEC §6.3 ``PlanStep``) and gains:

* ``status``: ``approved`` (ran here, or handed to the mana app in a new ``planned`` iteration),
  ``rejected``, ``failed`` (the summary is suffixed `` (FEHLER: <reason>)`` as the web app's executor does)
  or ``skipped`` (expired after ``MANA_AI_PROPOSAL_TTL``);
* ``decidedAt``, ``decidedBy`` (``user`` or ``auto-expire``), ``userFeedback`` for a rejection;
* ``execution``: ``{"state": "done"|"failed"|"pending", "by": "mana-ai"|"mana-app", ...}`` (a hand-off
  names the new iteration in ``iterationId``);
* edited arguments replace ``intent.params``; the planned ones are kept in ``originalParams``.

The iteration's ``overallStatus`` follows SPEC §11 once no step is open any more: ``failed`` only when every
step failed, ``approved`` when any step was approved, else ``rejected``. Feedback is also collected into the
iteration's ``userFeedback``, the field the planner prompt shows under "Letzte Iterationen" (SPEC §9).

Pure: no I/O, no clock (times are arguments).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from mana_ai.timefmt import parse_iso, to_js_iso
from mana_ai.tools.catalog import CATALOG_BY_NAME

OPEN_STATUSES: Final = ("staged",)
"""Step statuses that still wait for a decision (``planned`` is the app's to run, not ours to review)."""

FAILURE_MARK: Final = " (FEHLER: "

StepStatus = Literal["approved", "rejected", "failed", "skipped"]
DecidedBy = Literal["user", "auto-expire"]


class StepNotFound(LookupError):
    """The mission has no such iteration or step (any more)."""


@dataclass(frozen=True, slots=True)
class StepRef:
    """Where a proposal lives: one step of one iteration of one mission."""

    mission_id: str
    iteration_id: str
    step_id: str

    @property
    def key(self) -> str:
        """``mission/iteration/step``: the proposal's id in URLs and CLI output."""
        return self.mission_id + "/" + self.iteration_id + "/" + self.step_id

    @classmethod
    def parse(cls, key: str) -> StepRef:
        """Parse :attr:`key`.

        Raises:
            ValueError: not three non-empty parts.
        """
        parts = key.strip().split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError("a proposal id looks like <mission>/<iteration>/<step>, got " + repr(key[:120]))
        return cls(parts[0], parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class Proposal:
    """One open (or expired) step of a server iteration, with what the inbox shows about it."""

    ref: StepRef
    mission_title: str
    agent_id: str | None
    agent_name: str | None
    agent_avatar: str | None
    tool_name: str
    params: Mapping[str, Any]
    summary: str
    iteration_summary: str
    started_at: str
    status: str
    expires_at: str | None

    @property
    def module(self) -> str:
        """The catalog module of the tool (``unknown`` for a tool not in the catalog)."""
        tool = CATALOG_BY_NAME.get(self.tool_name)
        return tool.module if tool is not None else "unknown"

    @property
    def known_tool(self) -> bool:
        return self.tool_name in CATALOG_BY_NAME


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def step_intent(step: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(tool name, params)`` of a tool-call step; ``("", {})`` for anything else."""
    intent = step.get("intent")
    if not isinstance(intent, Mapping) or intent.get("kind") != "toolCall":
        return "", {}
    params = intent.get("params")
    return _text(intent.get("toolName")), dict(params) if isinstance(params, Mapping) else {}


def expires_at(started_at: str, ttl: dt.timedelta) -> str | None:
    """When a proposal of an iteration started at ``started_at`` expires (``None``: no usable start)."""
    try:
        return to_js_iso(parse_iso(started_at) + ttl)
    except (ValueError, OverflowError):
        return None


def cutoff(now: dt.datetime, ttl: dt.timedelta) -> str:
    """Iterations that started before this JS-ISO time have expired proposals."""
    return to_js_iso(now - ttl)


def is_expired(started_at: str, now: dt.datetime, ttl: dt.timedelta) -> bool:
    """Whether proposals of an iteration started at ``started_at`` are past their TTL (no start: never)."""
    return bool(started_at) and started_at < cutoff(now, ttl)


def proposal_from_row(row: Mapping[str, Any], ttl: dt.timedelta) -> Proposal:
    """A proposal from one ``workbench_steps`` row."""
    step = row["step"] if isinstance(row["step"], Mapping) else {}
    tool_name, params = step_intent(step)
    started = _text(row.get("started_at"))
    return Proposal(
        ref=StepRef(str(row["mission_id"]), _text(row.get("iteration_id")), _text(step.get("id"))),
        mission_title=_text(row.get("mission_title")),
        agent_id=row.get("agent_id") or None,
        agent_name=row.get("agent_name") or None,
        agent_avatar=row.get("agent_avatar") or None,
        tool_name=tool_name,
        params=params,
        summary=_text(step.get("summary")),
        iteration_summary=_text(row.get("iteration_summary")),
        started_at=started,
        status=_text(step.get("status")),
        expires_at=expires_at(started, ttl) if started else None,
    )


def proposals_of_mission(
    mission: Mapping[str, Any],
    *,
    ttl: dt.timedelta,
    statuses: Sequence[str] = OPEN_STATUSES,
    agent_name: str | None = None,
    agent_avatar: str | None = None,
) -> list[Proposal]:
    """Every tool-call step of the mission's server iterations whose status is in ``statuses``."""
    found: list[Proposal] = []
    iterations = mission.get("iterations")
    for iteration in iterations if isinstance(iterations, list) else []:
        if not isinstance(iteration, Mapping) or iteration.get("source") != "server":
            continue
        plan = iteration.get("plan")
        for step in plan if isinstance(plan, list) else []:
            if not isinstance(step, Mapping) or step.get("status") not in statuses:
                continue
            if step_intent(step)[0] == "":
                continue
            row = {
                "mission_id": mission.get("id", ""),
                "mission_title": mission.get("title"),
                "agent_id": mission.get("agentId"),
                "agent_name": agent_name,
                "agent_avatar": agent_avatar,
                "iteration_id": iteration.get("id"),
                "started_at": iteration.get("startedAt"),
                "iteration_summary": iteration.get("summary"),
                "step": step,
            }
            found.append(proposal_from_row(row, ttl))
    return found


def locate(iterations: Any, ref: StepRef) -> tuple[int, int] | None:
    """``(iteration index, step index)`` of the step, or ``None``."""
    for i, iteration in enumerate(iterations if isinstance(iterations, list) else []):
        if not isinstance(iteration, Mapping) or iteration.get("id") != ref.iteration_id:
            continue
        plan = iteration.get("plan")
        for j, step in enumerate(plan if isinstance(plan, list) else []):
            if isinstance(step, Mapping) and step.get("id") == ref.step_id:
                return i, j
    return None


def find_step(iterations: Any, ref: StepRef) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(iteration, step)`` for ``ref``.

    Raises:
        StepNotFound: no such iteration or step.
    """
    where = locate(iterations, ref)
    if where is None:
        raise StepNotFound("no step " + ref.key)
    iteration = iterations[where[0]]
    return iteration, iteration["plan"][where[1]]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to write into one step."""

    status: StepStatus
    decided_at: str
    decided_by: DecidedBy = "user"
    params: Mapping[str, Any] | None = None
    """Edited arguments (``None`` keeps the planned ones)."""
    feedback: str | None = None
    execution: Mapping[str, Any] | None = None
    error: str | None = None
    """For ``failed``: the reason, appended to the summary like the web app's executor does."""


def overall_status(plan: Any) -> str:
    """The iteration's ``overallStatus`` from its steps (SPEC §11; see the module docstring)."""
    statuses = [s.get("status") for s in (plan if isinstance(plan, list) else []) if isinstance(s, Mapping)]
    if not statuses:
        return "approved"
    if any(s in (*OPEN_STATUSES, "planned") for s in statuses):
        return "awaiting-review"
    if all(s == "failed" for s in statuses):
        return "failed"
    if any(s == "approved" for s in statuses):
        return "approved"
    return "rejected"


def merged_feedback(existing: Any, summary: str, feedback: str) -> str:
    """The iteration's ``userFeedback`` with one more step's feedback (``"<summary>: <feedback>"``, ``"; "``)."""
    entry = (summary.strip() + ": " if summary.strip() else "") + feedback.strip()
    previous = existing.strip() if isinstance(existing, str) else ""
    return previous + "; " + entry if previous else entry


def apply_decision(iterations: Any, ref: StepRef, decision: Decision) -> list[Any]:
    """The iterations array with ``decision`` written into the step (inputs are not modified).

    Raises:
        StepNotFound: no such iteration or step.
    """
    where = locate(iterations, ref)
    if where is None:
        raise StepNotFound("no step " + ref.key)
    i, j = where
    out = list(iterations)
    iteration = dict(out[i])
    plan = list(iteration["plan"])
    step = copy.deepcopy(dict(plan[j]))
    step["status"] = decision.status
    step["decidedAt"] = decision.decided_at
    step["decidedBy"] = decision.decided_by
    if decision.params is not None:
        intent = dict(step.get("intent") or {})
        if intent.get("params") != dict(decision.params):
            step["originalParams"] = intent.get("params")
            intent["params"] = dict(decision.params)
            step["intent"] = intent
    if decision.execution is not None:
        step["execution"] = dict(decision.execution)
    summary = _text(step.get("summary"))
    if decision.feedback and decision.feedback.strip():
        step["userFeedback"] = decision.feedback.strip()
        iteration["userFeedback"] = merged_feedback(iteration.get("userFeedback"), summary, decision.feedback)
    if decision.status == "failed" and decision.error and FAILURE_MARK not in summary:
        step["summary"] = summary + FAILURE_MARK + decision.error + ")"
    plan[j] = step
    iteration["plan"] = plan
    iteration["overallStatus"] = overall_status(plan)
    out[i] = iteration
    return out
