"""The review gate: which planned steps the mana app may run on its own, and how an approval reaches it.

What the real web app does (verified by running its code under Bun, see ``docs/next-to-mana.md``):
``WEB/data/ai/missions/server-iteration-executor.ts`` runs every step with ``status: 'planned'`` of a
``source: 'server'`` iteration as soon as a device syncs it, ``propose`` tools included
(``WEB/data/tools/executor.ts`` treats ``propose`` as ``auto``), and leaves every other status alone. Its
idempotency is one marker per *iteration* and device (``_serverIterationExecutions``): once a device ran an
iteration it never looks at that iteration again. ``'staged'`` is a status of the shared ``PlanStep`` type
that the executor skips; the app's mission view shows such an iteration with its ``awaiting-review`` badge
and the feedback form.

So each step is written by the agent's policy for its tool (resolved like ``WEB/data/ai/policy.ts``:
per tool, per module, ``defaultForAi``, the catalog default):

* ``auto`` → ``planned``: the app runs it, as the original service's steps;
* ``propose`` → ``staged``: nothing runs it until it is approved in the workbench or the CLI.

An approval (``MANA_AI_EXECUTOR``) either runs the step here with our executors (``server``, the default:
it also works without the app) and marks it ``approved`` so no device runs it, or hands it to the app
(``webapp``, and for tools we have no executor for): the step is marked ``approved`` with
``execution.state = "pending"`` and a *new* server iteration carrying a copy of it as ``planned`` is
appended. A new iteration, because a device that already ran the original iteration (for an ``auto`` step
in it) would skip a step flipped to ``planned`` in place, leaving an approved step unrun.

Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final, Literal

from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.tools.policy import resolve_decision

STAGED: Final = "staged"
"""Needs review: the app's executor skips it."""
PLANNED: Final = "planned"
"""The app runs it as soon as a device syncs."""

Executor = Literal["server", "webapp"]


def step_status(tool_name: str, policy: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(status, policy decision)`` for a newly planned step of ``tool_name`` under the agent's policy.

    A tool missing from the catalog is never auto (``propose``)."""
    tool = CATALOG_BY_NAME.get(tool_name)
    decision = resolve_decision(tool, policy) if tool is not None else "propose"
    return (PLANNED if decision == "auto" else STAGED), decision


def runs_here(executor: Executor, *, has_executor: bool) -> bool:
    """Whether an approved step runs with our executors (else it is handed to the app)."""
    return executor == "server" and has_executor


def handoff_iteration(
    step: Mapping[str, Any], *, step_key: str, iteration_id: str, now_iso: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """The server iteration that hands one approved step to the app: a copy of it, ``planned``."""
    handed = copy.deepcopy(dict(step))
    for key in ("decidedAt", "decidedBy", "execution", "userFeedback", "originalParams"):
        handed.pop(key, None)
    intent = dict(handed.get("intent") or {})
    intent["params"] = dict(params)
    handed.update(
        id=iteration_id + "-0", status=PLANNED, intent=intent, approvedStep=step_key, policy="approved"
    )
    summary = handed.get("summary")
    return {
        "id": iteration_id,
        "startedAt": now_iso,
        "finishedAt": now_iso,
        "plan": [handed],
        "summary": "Freigegeben: " + summary if isinstance(summary, str) and summary else "Freigegeben",
        "overallStatus": "awaiting-review",
        "source": "server",
    }
