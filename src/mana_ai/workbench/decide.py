"""Approving, rejecting and expiring proposals: written back into the mission through the sync log, once.

Every decision is one transaction inside ``Database.with_user`` that

1. takes the mission's per-record advisory lock (``lock_record``, the lock the runner's write-back takes), so
   no writer of ours builds on a stale iterations array;
2. replays the mission from the log (not from a snapshot that may be a tick old) and finds the step; a step
   that is no longer open is reported as decided already (approving twice runs nothing twice);
3. claims the step's row in ``mana_ai.proposal_decisions`` (primary key = the step): the gate that keeps a
   step from running twice even if the iterations array in the log were overwritten by a concurrent
   last-writer-wins update from another device;
4. for an approval, validates edited arguments against the tool's schema again (SPEC §16.2), checks the
   agent's policy still allows the tool, and runs the executor inside a savepoint: its writes, the goal
   tracker's updates and the domain events commit with the decision, or are rolled back and the step is
   marked ``failed`` with the reason;
5. writes the step's new status, feedback and the iteration's ``overallStatus`` as a field-level update of
   ``iterations`` attributed to the user (actor ``user``, client ``mana-ai-workbench``).

Two sessions approving the same step at once therefore serialise on the lock; the second finds the step
approved and returns ``already=True`` without executing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg.types.json import Jsonb

from mana_ai.crypto.aead import is_encrypted
from mana_ai.db.connector import AsyncConn, Database
from mana_ai.db.queries import q
from mana_ai.errors import CryptoError, ManaAiError
from mana_ai.synclog.actor import ai_actor, user_actor
from mana_ai.synclog.lww import RecordState
from mana_ai.synclog.records import ServerAgent
from mana_ai.synclog.store import replay_record, update_iterations
from mana_ai.synclog.validate import MAX_DEPTH, too_deep
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.tools.policy import resolve_decision
from mana_ai.tools.validate import validate_arguments
from mana_ai.workbench.context import WORKBENCH_CLIENT_ID, ExecContext, StepFailed, user_zone_of
from mana_ai.workbench.executors import EXECUTORS
from mana_ai.workbench.gate import Executor, handoff_iteration, runs_here
from mana_ai.workbench.proposals import (
    OPEN_STATUSES,
    Decision,
    StepNotFound,
    StepRef,
    apply_decision,
    cutoff,
    find_step,
    is_expired,
    step_intent,
)
from mana_ai.workbench.tracker import EventOrigin, store_events, track_goals

logger = logging.getLogger(__name__)

Outcome = Literal["done", "failed", "pending", "none"]


class ProposalError(ManaAiError):
    """The proposal cannot be decided as asked."""


class ProposalNotFound(ProposalError):
    """There is no open or decided proposal with this id."""


class InvalidParams(ProposalError):
    """Edited arguments do not fit the tool's schema."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid arguments: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """What a decision did."""

    ref: StepRef
    status: str
    """The step's status now: approved, rejected, failed or skipped (expired)."""
    outcome: str
    """done (ran here), failed, pending (waits for the mana app), none (rejected/expired)."""
    already: bool = False
    """The step had been decided before this call; nothing was done now."""
    message: str = ""
    error: str | None = None
    records: tuple[Mapping[str, str], ...] = ()
    events: tuple[str, ...] = field(default=())


async def _mark(
    conn: AsyncConn, user_id: str, mission_id: str, iteration_id: str, step_id: str, status: str
) -> None:
    """Remember what we wrote, so a device edit that drops it is undone (:mod:`mana_ai.synclog.restore`)."""
    await conn.execute(
        q("mark_iteration"),
        {
            "user_id": user_id,
            "mission_id": mission_id,
            "iteration_id": iteration_id,
            "step_id": step_id,
            "status": status,
        },
    )


def _module(tool_name: str) -> str:
    tool = CATALOG_BY_NAME.get(tool_name)
    return tool.module if tool is not None else "unknown"


class Decider:
    """Approves, rejects and expires one user's proposals. Cheap to build; holds no connection."""

    def __init__(
        self,
        db: Database,
        *,
        ttl: dt.timedelta,
        tz: str = "UTC",
        master_key: bytes | None = None,
        executor: Executor = "server",
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.tz = tz
        self.master_key = master_key
        self.executor: Executor = executor

    # --- public -----------------------------------------------------------------------------------------
    async def approve(
        self,
        user_id: str,
        ref: StepRef,
        *,
        params: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> DecisionResult:
        """Approve (and run) one proposal, optionally with edited arguments.

        Raises:
            ProposalNotFound: no such mission, server iteration or tool-call step.
            InvalidParams: edited arguments fail the tool's schema (nothing is written).
        """
        return await self._decide(user_id, ref, "approved", params=params, feedback=None, now=now)

    async def reject(
        self, user_id: str, ref: StepRef, *, feedback: str | None = None, now: dt.datetime | None = None
    ) -> DecisionResult:
        """Reject one proposal, optionally with feedback for the next planning round.

        Raises:
            ProposalNotFound: no such mission, server iteration or tool-call step.
        """
        return await self._decide(user_id, ref, "rejected", params=None, feedback=feedback, now=now)

    async def expire(self, user_id: str, refs: list[StepRef], *, now: dt.datetime | None = None) -> int:
        """Mark the given proposals expired when they are still open and past the TTL; returns how many."""
        now = now or utcnow()
        by_mission: dict[str, list[StepRef]] = {}
        for ref in refs:
            by_mission.setdefault(ref.mission_id, []).append(ref)
        expired = 0
        for mission_id, mission_refs in sorted(by_mission.items()):
            async with self.db.with_user(user_id) as conn:
                state = await self._locked_mission(conn, user_id, mission_id)
                if state is None:
                    continue
                iterations: Any = state.record.get("iterations")
                changed = False
                for ref in mission_refs:
                    try:
                        iteration, step = find_step(iterations, ref)
                    except StepNotFound:
                        continue
                    started = iteration.get("startedAt")
                    if step.get("status") not in OPEN_STATUSES or not (
                        isinstance(started, str) and is_expired(started, now, self.ttl)
                    ):
                        continue
                    tool_name, _ = step_intent(step)
                    if not await self._claim(
                        conn, user_id, ref, state.record, tool_name, "expired", None, None
                    ):
                        continue
                    iterations = apply_decision(
                        iterations,
                        ref,
                        Decision("skipped", to_js_iso(now), "auto-expire", execution={"state": "expired"}),
                    )
                    await _mark(conn, user_id, mission_id, ref.iteration_id, ref.step_id, "skipped")
                    changed = True
                    expired += 1
                if changed:
                    await self._write_iterations(conn, user_id, mission_id, state, iterations, now)
        if expired:
            logger.info(
                "proposals expired",
                extra={"action": "workbench.expired", "user_id": user_id, "count": expired},
            )
        return expired

    def cutoff(self, now: dt.datetime) -> str:
        return cutoff(now, self.ttl)

    # --- the transaction ----------------------------------------------------------------------------------
    async def _decide(
        self,
        user_id: str,
        ref: StepRef,
        verdict: Literal["approved", "rejected"],
        *,
        params: Mapping[str, Any] | None,
        feedback: str | None,
        now: dt.datetime | None,
    ) -> DecisionResult:
        now = now or utcnow()
        now_iso = to_js_iso(now)
        async with self.db.with_user(user_id) as conn:
            state = await self._locked_mission(conn, user_id, ref.mission_id)
            if state is None:
                raise ProposalNotFound("mission " + ref.mission_id + " not found")
            iterations = state.record.get("iterations")
            try:
                iteration, step = find_step(iterations, ref)
            except StepNotFound:
                raise ProposalNotFound("no proposal " + ref.key) from None
            tool_name, planned = step_intent(step)
            if iteration.get("source") != "server" or not tool_name:
                raise ProposalNotFound(ref.key + " is not a tool call of a server iteration")
            if step.get("status") not in OPEN_STATUSES:
                return await self._already(conn, user_id, ref, step)
            tool = CATALOG_BY_NAME.get(tool_name)
            final = dict(planned) if params is None else dict(params)
            if verdict == "approved" and params is not None:
                if too_deep(params):
                    raise InvalidParams([f"the arguments nest deeper than {MAX_DEPTH} levels"])
                if tool is None:
                    raise InvalidParams(
                        ["the arguments of the unknown tool " + tool_name + " cannot be edited"]
                    )
                problems = validate_arguments(tool, final)
                if problems:
                    raise InvalidParams(problems)
            started = iteration.get("startedAt")
            if verdict == "approved" and isinstance(started, str) and is_expired(started, now, self.ttl):
                if await self._claim(conn, user_id, ref, state.record, tool_name, "expired", None, None):
                    iterations = apply_decision(
                        iterations,
                        ref,
                        Decision("skipped", now_iso, "auto-expire", execution={"state": "expired"}),
                    )
                    await self._write_iterations(conn, user_id, ref.mission_id, state, iterations, now)
                    await _mark(conn, user_id, ref.mission_id, ref.iteration_id, ref.step_id, "skipped")
                return DecisionResult(ref, "skipped", "none", message="the proposal has expired")
            decision_params = final if verdict == "approved" else None
            if not await self._claim(
                conn, user_id, ref, state.record, tool_name, verdict, decision_params, feedback
            ):
                return await self._already(conn, user_id, ref, step)

            handoff: dict[str, Any] | None = None
            if verdict == "rejected":
                result = DecisionResult(ref, "rejected", "none", message="rejected")
                decision = Decision("rejected", now_iso, params=None, feedback=feedback)
            else:
                agent = await self._agent(conn, user_id, state.record.get("agentId"))
                result = await self._execute(conn, user_id, ref, step, tool_name, final, agent, now)
                execution: dict[str, Any] = {
                    "state": result.outcome,
                    "by": "mana-app" if result.outcome == "pending" else "mana-ai",
                }
                if result.outcome == "pending":
                    handoff = handoff_iteration(
                        step, step_key=ref.key, iteration_id=str(uuid.uuid4()), now_iso=now_iso, params=final
                    )
                    execution["iterationId"] = handoff["id"]
                if result.records:
                    execution["records"] = [dict(r) for r in result.records]
                if result.error:
                    execution["error"] = result.error
                decision = Decision(
                    "failed" if result.outcome == "failed" else "approved",
                    now_iso,
                    params=final if params is not None else None,
                    execution=execution,
                    error=result.error,
                )
            iterations = apply_decision(iterations, ref, decision)
            if handoff is not None:
                iterations = [*iterations, handoff]
                await _mark(conn, user_id, ref.mission_id, handoff["id"], "", "")
            await self._write_iterations(conn, user_id, ref.mission_id, state, iterations, now)
            await _mark(conn, user_id, ref.mission_id, ref.iteration_id, ref.step_id, decision.status)
            await conn.execute(
                q("workbench_finish_decision"),
                {
                    "user_id": user_id,
                    "mission_id": ref.mission_id,
                    "iteration_id": ref.iteration_id,
                    "step_id": ref.step_id,
                    "outcome": result.outcome,
                    "error": result.error,
                    "records": Jsonb([dict(r) for r in result.records]),
                },
            )
        logger.info(
            "proposal decided",
            extra={
                "action": "workbench.decided",
                "user_id": user_id,
                "mission_id": ref.mission_id,
                "step_id": ref.step_id,
                "tool": tool_name,
                "status": result.status,
                "outcome": result.outcome,
            },
        )
        return result

    async def _execute(
        self,
        conn: AsyncConn,
        user_id: str,
        ref: StepRef,
        step: Mapping[str, Any],
        tool_name: str,
        params: Mapping[str, Any],
        agent: ServerAgent | None,
        now: dt.datetime,
    ) -> DecisionResult:
        tool = CATALOG_BY_NAME.get(tool_name)
        executor = EXECUTORS.get(tool_name)
        if tool is not None and agent is not None and resolve_decision(tool, agent.policy) == "deny":
            error = 'Tool "' + tool_name + '" is not available to AI actors under current policy'
            return DecisionResult(ref, "failed", "failed", message=error, error=error)
        if tool is None or executor is None or not runs_here(self.executor, has_executor=True):
            why = (
                "mana-ai has no executor for " + tool_name if executor is None else "MANA_AI_EXECUTOR=webapp"
            )
            return DecisionResult(
                ref, "approved", "pending", message="approved; the mana app runs it (" + why + ")"
            )
        summary = step.get("summary")
        ctx = ExecContext(
            conn,
            user_id=user_id,
            now=now,
            tz=await user_zone_of(conn, user_id) or self.tz,
            master_key=self.master_key,
            actor=ai_actor(
                agent_id=agent.id if agent else None,
                agent_name=agent.name if agent else None,
                mission_id=ref.mission_id,
                iteration_id=ref.iteration_id,
                rationale=summary if isinstance(summary, str) and not is_encrypted(summary) else "",
            ),
        )
        origin = EventOrigin(
            ref.mission_id, ref.iteration_id, ref.step_id, agent.id if agent else None, tool.module
        )
        try:
            # A savepoint: a failing step leaves none of its writes behind, but its decision is still written.
            async with conn.transaction():
                message = await executor(ctx, params)
                await track_goals(ctx)
                await store_events(
                    conn, user_id, ctx.events, origin, encrypted_user=self.master_key is not None
                )
        except (StepFailed, CryptoError) as exc:
            return DecisionResult(ref, "failed", "failed", message=str(exc), error=str(exc))
        return DecisionResult(
            ref,
            "approved",
            "done",
            message=message,
            records=tuple(ctx.written),
            events=tuple(e.type for e in ctx.events),
        )

    # --- helpers ----------------------------------------------------------------------------------------
    async def _locked_mission(self, conn: AsyncConn, user_id: str, mission_id: str) -> RecordState | None:
        await conn.execute(q("lock_record"), {"user_id": user_id, "record_id": mission_id})
        state = await replay_record(
            conn, user_id=user_id, app_id="ai", table="aiMissions", record_id=mission_id
        )
        return state if state is not None and state.is_live() else None

    async def _agent(self, conn: AsyncConn, user_id: str, agent_id: Any) -> ServerAgent | None:
        # Replayed from the log, not read from a snapshot: a policy changed a moment ago must already apply.
        if not isinstance(agent_id, str) or not agent_id:
            return None
        state = await replay_record(conn, user_id=user_id, app_id="ai", table="agents", record_id=agent_id)
        if state is None or not state.is_live():
            return None
        return ServerAgent.from_record(user_id, state.to_snapshot())

    async def _claim(
        self,
        conn: AsyncConn,
        user_id: str,
        ref: StepRef,
        mission: Mapping[str, Any],
        tool_name: str,
        decision: str,
        params: Mapping[str, Any] | None,
        feedback: str | None,
    ) -> bool:
        cur = await conn.execute(
            q("workbench_claim_decision"),
            {
                "user_id": user_id,
                "mission_id": ref.mission_id,
                "iteration_id": ref.iteration_id,
                "step_id": ref.step_id,
                "agent_id": mission.get("agentId") if isinstance(mission.get("agentId"), str) else None,
                "tool_name": tool_name or "?",
                "module": _module(tool_name),
                "decision": decision,
                "outcome": "none" if decision != "approved" else "pending",
                "params": Jsonb(dict(params)) if params is not None else None,
                "feedback": feedback.strip() if feedback and feedback.strip() else None,
                "decided_by": "auto-expire" if decision == "expired" else "user",
            },
        )
        return await cur.fetchone() is not None

    async def _already(
        self, conn: AsyncConn, user_id: str, ref: StepRef, step: Mapping[str, Any]
    ) -> DecisionResult:
        cur = await conn.execute(
            q("workbench_decision"),
            {
                "user_id": user_id,
                "mission_id": ref.mission_id,
                "iteration_id": ref.iteration_id,
                "step_id": ref.step_id,
            },
        )
        row = await cur.fetchone()
        status = step.get("status")
        if status in OPEN_STATUSES and row is not None:
            status = {"approved": "approved", "rejected": "rejected", "expired": "skipped"}[row["decision"]]
        execution = step.get("execution")
        outcome = row["outcome"] if row is not None else None
        if outcome is None and isinstance(execution, Mapping):
            outcome = execution.get("state")
        return DecisionResult(
            ref,
            str(status),
            str(outcome or "none"),
            already=True,
            message="already " + str(status),
            error=row["error"] if row is not None else None,
        )

    async def _write_iterations(
        self,
        conn: AsyncConn,
        user_id: str,
        mission_id: str,
        state: RecordState,
        iterations: Any,
        now: dt.datetime,
    ) -> None:
        await update_iterations(
            conn,
            user_id=user_id,
            mission_id=mission_id,
            state=state,
            iterations=iterations,
            now_iso=to_js_iso(now),
            client_id=WORKBENCH_CLIENT_ID,
            actor=user_actor(user_id),
        )
