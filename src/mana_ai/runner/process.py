"""One due mission from gate to write-back (SPEC §3 step 6, with our fixes).

Order: agent gates (unknown → archived → paused), claim (concurrency and 24 h budget are decided there,
atomically across processes), cadence check, planning under a hard timeout, write-back. Every failure ends
as a counted outcome for this mission only (W22): nothing here raises to the tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mana_ai import tracing
from mana_ai.errors import ConnectionLostError, StorageError
from mana_ai.runner.budget import RoundBudget
from mana_ai.runner.context import RunnerContext
from mana_ai.runner.iteration import failed_iteration, plan_to_iteration
from mana_ai.runner.pipeline import Failed, Planned, PlanRequest, Skipped, plan_mission
from mana_ai.runner.slots import PlanningSlot
from mana_ai.runner.store import KEEP, Claim, LostClaim, RunnerStore
from mana_ai.runner.writeback import TOO_LARGE, Written
from mana_ai.scheduler.cadence import Cadence, InvalidCadence, next_run, parse_cadence
from mana_ai.scheduler.missed import is_missed, missed_iteration
from mana_ai.synclog.actor import ai_actor
from mana_ai.synclog.records import ServerAgent, ServerMission
from mana_ai.timefmt import parse_iso, to_js_iso, utcnow
from mana_ai.workbench.context import zone_for_user
from mana_ai.workbench.gate import step_status

logger = logging.getLogger(__name__)

BUDGET_WARNING = 0.8
"""Share of an agent's daily cap whose crossing by recorded usage is logged and counted."""


@dataclass(frozen=True)
class MissionResult:
    mission_id: str
    user_id: str
    decision: str
    """ran | failed | paused-after-failures | skipped-<why> | stale | not-due | error"""
    steps: int = 0
    tokens: int = 0
    detail: str = ""
    iteration_id: str | None = None


UNSTORABLE = "the plan could not be stored (a database error; the service log names it)"
"""Message of a run whose write-back failed: the database's own text may quote the model's answer."""

STOPPING = "the worker is stopping"
"""Detail of a mission skipped because its process shuts down."""

_AGENT_SKIP_DETAIL = {
    "skipped-unknown-agent": "the mission's agent does not exist",
    "skipped-archived": "the agent is archived",
    "skipped-paused": "the agent is paused",
}


def resolve_agent(
    mission: ServerMission, agents: dict[tuple[str, str], ServerAgent]
) -> tuple[ServerAgent | None, str | None]:
    """(agent, skip decision). Missions without an agent skip the gates; an unknown agent is not run (W16)."""
    if mission.agent_id is None:
        return None, None
    agent = agents.get((mission.user_id, mission.agent_id))
    if agent is None or agent.deleted:
        return None, "skipped-unknown-agent"
    if agent.state == "archived":
        return agent, "skipped-archived"
    if agent.state == "paused":
        return agent, "skipped-paused"
    return agent, None


async def process_mission(
    ctx: RunnerContext,
    store: RunnerStore,
    mission: ServerMission,
    agents: dict[tuple[str, str], ServerAgent],
    *,
    slot: PlanningSlot | None = None,
) -> MissionResult:
    """Gate, claim, plan and write back one mission. ``slot`` (the dispatcher's) is taken after the claim and
    given back once the LLM calls are over: the next mission plans while this one is written back."""
    attributes = tracing.mission_attributes(mission, resolve_agent(mission, agents)[0])
    with tracing.span("tick.planMission", attributes) as mission_span:
        try:
            result = await _process(ctx, store, mission, agents, slot or PlanningSlot.unbounded())
        except Exception as exc:  # the last line of W22: one mission's surprise never stops the others
            tracing.mark_error(mission_span, exc)
            ctx.metrics.mission_errors.inc()
            logger.exception(
                "mission failed unexpectedly",
                extra={
                    "action": "runner.mission_error",
                    "mission_id": mission.id,
                    "user_id": mission.user_id,
                },
            )
            result = MissionResult(
                mission.id, mission.user_id, "error", detail=f"{type(exc).__name__}: {exc}"
            )
        mission_span.set_attributes({"mission.decision": result.decision, "mission.tokens": result.tokens})
        return result


async def _process(
    ctx: RunnerContext,
    store: RunnerStore,
    mission: ServerMission,
    agents: dict[tuple[str, str], ServerAgent],
    slot: PlanningSlot,
) -> MissionResult:
    metrics, settings = ctx.metrics, ctx.settings
    agent, skip = resolve_agent(mission, agents)
    if skip:
        metrics.agent_decisions.labels(skip).inc()
        return MissionResult(mission.id, mission.user_id, skip, detail=_AGENT_SKIP_DETAIL.get(skip, ""))
    due_at = mission.next_run_at
    if due_at is None:
        return MissionResult(mission.id, mission.user_id, "stale", detail="the mission has no nextRunAt")
    if due_at > to_js_iso(utcnow()):
        # A planning batch may start after another worker planned this run; its fresh snapshot then holds
        # the next run, which is not due yet. Claiming it would plan that run early, and a second time.
        return MissionResult(mission.id, mission.user_id, "not-due", detail=f"next run at {due_at}")

    claim = await store.claim(mission, due_at, agent, settings.claim_lease)
    if claim.decision != "claimed":
        if claim.decision.startswith("skipped-"):
            metrics.agent_decisions.labels(claim.decision).inc()
        return MissionResult(mission.id, mission.user_id, claim.decision, detail=claim.detail)
    key = (mission.user_id, mission.id)
    store.planning.add(key)
    try:
        if not await slot.take():
            await _release_quietly(store, mission)
            return MissionResult(mission.id, mission.user_id, "skipped-shutdown", detail=STOPPING)
        return await _claimed(ctx, store, mission, agent, due_at, claim, slot)
    except asyncio.CancelledError:
        # Shutdown (SIGINT/SIGTERM after the grace period) or a cancelled tick: give the run back now
        # instead of leaving it to the lease, so the next worker or tick takes it at once.
        await asyncio.shield(_release_quietly(store, mission))
        raise
    except Exception as exc:
        # A surprise after the claim: count the attempt and back off, or the run would be planned again as
        # soon as its lease ran out, for ever (its model calls included).
        await _count_failure(ctx, store, mission, agent, claim, f"unexpected error: {type(exc).__name__}")
        raise
    finally:
        store.planning.discard(key)


async def _count_failure(
    ctx: RunnerContext,
    store: RunnerStore,
    mission: ServerMission,
    agent: ServerAgent | None,
    claim: Claim,
    error: str,
    tokens: int = 0,
) -> bool:
    """Count a failed attempt with its backoff and tokens, without an iteration; whether that worked."""
    try:
        await store.record_failure(
            mission,
            error=error,
            backoff=_backoff(ctx.settings.retry_backoff, claim.consecutive_failures + 1),
            tokens=tokens,
            agent_id=agent.id if agent else None,
        )
    except Exception:
        logger.warning(
            "could not count a failed run",
            extra={"action": "runner.release_failed", "mission_id": mission.id},
        )
        return False
    return True


async def _release_quietly(store: RunnerStore, mission: ServerMission) -> None:
    try:
        await store.release(mission)
    except Exception:
        logger.warning(
            "could not release a claim", extra={"action": "runner.release_failed", "mission_id": mission.id}
        )


def _observe_claim(ctx: RunnerContext, agent: ServerAgent | None, due_at: str, claim: Claim) -> None:
    metrics = ctx.metrics
    if claim.attempt == 1:
        try:
            metrics.due_delay.observe(max((utcnow() - parse_iso(due_at)).total_seconds(), 0.0))
        except ValueError:
            pass
    cap = _daily_cap(agent)
    if agent is not None and cap is not None:
        ctx.budget_gauges.show(agent.user_id, agent.id, claim.tokens_used_24h, cap)


def _count_tokens(ctx: RunnerContext, agent: ServerAgent | None, tokens: int) -> None:
    if agent is not None and tokens > 0:
        ctx.metrics.tokens_used.labels(agent.id).inc(tokens)


def _observe_budget(ctx: RunnerContext, agent: ServerAgent | None, tokens: int, written: Written) -> None:
    """Warn once when a run's tokens take the agent's recorded 24 h usage past 80 % of its cap.

    Recorded usage, not reservations: a new agent's first run reserves its whole cap (it has no history to
    estimate from), and that is no sign of a budget running out. The usage is the one the write-back answered
    (the tokens' own statement counted them in order), not the one seen at the claim: runs of the same agent
    that overlap would otherwise each miss the others' tokens."""
    cap = _daily_cap(agent)
    if agent is None or tokens <= 0 or cap is None or written.tokens_used_24h is None:
        return
    after = written.tokens_used_24h
    before = after - tokens
    ctx.budget_gauges.show(agent.user_id, agent.id, after, cap)
    if before < BUDGET_WARNING * cap <= after:
        ctx.metrics.budget_warnings.inc()
        logger.warning(
            "agent near its daily token budget",
            extra={
                "action": "runner.budget_high",
                "agent_id": agent.id,
                "user_id": agent.user_id,
                "used": after,
                "cap": cap,
            },
        )


def _daily_cap(agent: ServerAgent | None) -> int | None:
    cap = agent.max_tokens_per_day if agent is not None else None
    return cap if cap is not None and cap > 0 else None


async def _claimed(
    ctx: RunnerContext,
    store: RunnerStore,
    mission: ServerMission,
    agent: ServerAgent | None,
    due_at: str,
    claim: Claim,
    slot: PlanningSlot,
) -> MissionResult:
    metrics, settings = ctx.metrics, ctx.settings
    _observe_claim(ctx, agent, due_at, claim)

    iteration_id = str(uuid.uuid4())
    actor = ai_actor(
        agent_id=agent.id if agent else None,
        agent_name=agent.name if agent else None,
        mission_id=mission.id,
        iteration_id=iteration_id,
        # The actor is stored in plaintext: never copy a vault-encrypted objective into it (W3).
        rationale="" if mission.objective.startswith("enc:1:") else mission.objective,
    )

    try:
        cadence = parse_cadence(mission.cadence if mission.cadence is not None else {"kind": "manual"})
    except InvalidCadence as exc:
        now_iso = to_js_iso(utcnow())
        iteration = failed_iteration(
            iteration_id,
            now_iso,
            name="InvalidCadence",
            message=f"cadence is invalid: {exc}",
            phase="resolving-inputs",
        )
        await store.write_back(
            mission,
            due_at=due_at,
            iteration=iteration,
            next_run_at=None,
            now_iso=now_iso,
            actor=actor,
            outcome="failed",
            error=str(exc),
        )
        metrics.missions_failed.labels("invalid-cadence").inc()
        return MissionResult(
            mission.id, mission.user_id, "failed", detail=str(exc), iteration_id=iteration_id
        )

    # The user's zone for a wall-clock cadence without its own: the grace window and the next run both use it.
    tz = await _zone_for(ctx, mission.user_id, cadence)
    missed = await _skip_missed(ctx, store, mission, cadence, tz, due_at, iteration_id, actor)
    if missed is not None:
        return missed

    budget = _round_budget(ctx, mission, agent, claim)
    request = PlanRequest(
        mission,
        agent,
        iteration_id,
        tokens_used_24h=claim.tokens_used_24h,
        token_share=claim.token_share,
        budget=budget,
    )
    limit_s = settings.mission_timeout.total_seconds()
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for runs the coroutine in a task of its own, and
        # starting and finishing that task cost three trips through the event loop's queue of ready
        # callbacks while the mission holds its planning slot (~10 ms each on a busy loop).
        async with asyncio.timeout(limit_s):
            outcome = await plan_mission(ctx, request)
    except TimeoutError:
        outcome = Failed(
            "timeout",
            f"planning took longer than {limit_s:g} s (MANA_AI_MISSION_TIMEOUT)",
            # What the finished rounds of a capped run cost is known: record it rather than lose it.
            tokens=budget.spent if budget is not None else 0,
            phase="calling-llm",
        )
    slot.give_back()
    if budget is not None and not isinstance(outcome, Skipped) and budget.spent > outcome.tokens:
        # A round answered without usage counts as its worst case while the run is in flight; recording the
        # provider's silence as 0 would leave the agent's daily cap without effect.
        outcome = dataclasses.replace(outcome, tokens=budget.spent)

    if isinstance(outcome, Skipped):
        if outcome.reason == "research-pending":
            metrics.research_pending_skips.inc()
        elif outcome.reason == "budget":
            metrics.agent_decisions.labels("skipped-budget").inc()
        await store.release(mission)
        detail = "waiting for deep research" if outcome.reason == "research-pending" else outcome.reason
        return MissionResult(
            mission.id, mission.user_id, f"skipped-{outcome.reason}", detail=outcome.detail or detail
        )

    _count_tokens(ctx, agent, outcome.tokens)
    written = _Written(ctx, store, mission, agent, cadence, tz, due_at, claim, iteration_id, actor)
    try:
        return await written.outcome(outcome)
    except LostClaim as exc:
        logger.warning("lost claim", extra={"action": "runner.lost_claim", "mission_id": mission.id})
        return MissionResult(mission.id, mission.user_id, "lost-claim", detail=str(exc))
    except StorageError as exc:
        return await written.unstorable(outcome, exc)


@dataclass(frozen=True)
class _Written:
    """Writes a claimed run's outcome back: its plan, or a failure that counts towards the mission's pause."""

    ctx: RunnerContext
    store: RunnerStore
    mission: ServerMission
    agent: ServerAgent | None
    cadence: Cadence
    tz: str
    due_at: str
    claim: Claim
    iteration_id: str
    actor: Any

    async def outcome(self, outcome: Planned | Failed) -> MissionResult:
        if isinstance(outcome, Planned):
            return await self.planned(outcome)
        return await self.failed(outcome)

    async def planned(self, outcome: Planned) -> MissionResult:
        ctx, mission, agent = self.ctx, self.mission, self.agent
        now = utcnow()
        now_iso = to_js_iso(now)
        ctx.metrics.plans_produced.inc()
        policy = agent.policy if agent is not None else None
        iteration = plan_to_iteration(
            outcome.plan, self.iteration_id, now_iso, lambda tool: step_status(tool, policy)
        )
        written = await self.store.write_back(
            mission,
            due_at=self.due_at,
            iteration=iteration,
            next_run_at=self._next_run(now),
            now_iso=now_iso,
            actor=self.actor,
            outcome="done",
            tokens=outcome.tokens,
            agent_id=agent.id if agent else None,
            counted=_daily_cap(agent) is not None,
        )
        _observe_budget(ctx, agent, outcome.tokens, written)
        if written.status == "stale":
            return MissionResult(mission.id, mission.user_id, "stale", tokens=outcome.tokens)
        if written.status == "too-large":
            return _too_large(mission, outcome.tokens)
        ctx.metrics.plans_written_back.inc()
        if agent is not None:
            ctx.metrics.agent_decisions.labels("ran").inc()
        steps = len(outcome.plan.steps)
        logger.info(
            "mission planned",
            extra={
                "action": "runner.planned",
                "mission_id": mission.id,
                "user_id": mission.user_id,
                "agent_id": agent.id if agent else "legacy",
                "steps": steps,
                "iteration_id": self.iteration_id,
                "tokens": outcome.tokens,
            },
        )
        return MissionResult(
            mission.id,
            mission.user_id,
            "ran",
            steps=steps,
            tokens=outcome.tokens,
            iteration_id=self.iteration_id,
        )

    async def failed(self, outcome: Failed) -> MissionResult:
        ctx, mission, agent, settings = self.ctx, self.mission, self.agent, self.ctx.settings
        ctx.metrics.parse_failures.inc()
        ctx.metrics.missions_failed.labels(outcome.label).inc()
        failures = self.claim.consecutive_failures + 1
        paused = failures >= settings.max_consecutive_failures
        message = outcome.message
        if paused:
            message = (
                f"{outcome.message} — paused after {failures} failed attempts in a row; "
                "resume the mission to try again"
            )
        now = utcnow()
        now_iso = to_js_iso(now)
        iteration = failed_iteration(
            self.iteration_id, now_iso, name=outcome.reason, message=message, phase=outcome.phase
        )
        # A retryable failure keeps its due time (the backoff delays the retry); one that cannot succeed on a
        # retry moves on to the next occurrence, in the user's zone as a plan does.
        moves_on = not outcome.retryable and not paused
        written = await self.store.write_back(
            mission,
            due_at=self.due_at,
            iteration=iteration,
            next_run_at=self._next_run(now) if moves_on else KEEP,
            now_iso=now_iso,
            actor=self.actor,
            outcome="failed",
            error=message[:2000],
            backoff=_backoff(settings.retry_backoff, failures),
            new_state="paused" if paused else None,
            tokens=outcome.tokens,
            agent_id=agent.id if agent else None,
            counted=_daily_cap(agent) is not None,
        )
        _observe_budget(ctx, agent, outcome.tokens, written)
        logger.warning(
            "mission planning failed",
            extra={
                "action": "runner.failed",
                "mission_id": mission.id,
                "user_id": mission.user_id,
                "reason": outcome.reason,
                "consecutive_failures": failures,
            },
        )
        decision = "paused-after-failures" if paused else "failed"
        if written.status == "stale":
            decision = "stale"
        if written.status == "too-large":
            return _too_large(mission, outcome.tokens)
        return MissionResult(
            mission.id,
            mission.user_id,
            decision,
            tokens=outcome.tokens,
            detail=message,
            iteration_id=self.iteration_id,
        )

    async def unstorable(self, outcome: Planned | Failed, exc: StorageError) -> MissionResult:
        """The write-back failed, not for a lost claim (a value Postgres refuses, say): the run still counts
        as a failed attempt with its tokens and backoff, or it would be planned again as soon as its lease
        ran out, for ever and outside the agent's budget."""
        mission = self.mission
        logger.warning(
            "write-back failed",
            extra={
                "action": "runner.write_back_failed",
                "mission_id": mission.id,
                "error": type(exc).__name__,
            },
        )
        if isinstance(outcome, Planned) and not isinstance(exc, ConnectionLostError):
            try:  # the plan could not be stored; a failed iteration (no model text in it) likely can
                return await self.failed(Failed("write-back", UNSTORABLE, outcome.tokens, "finalizing"))
            except (LostClaim, StorageError):
                pass
        if not await _count_failure(
            self.ctx, self.store, mission, self.agent, self.claim, UNSTORABLE, outcome.tokens
        ):
            raise exc
        return MissionResult(mission.id, mission.user_id, "failed", tokens=outcome.tokens, detail=UNSTORABLE)

    def _next_run(self, now: datetime) -> str | None:
        nxt = next_run(self.cadence, after=max(now, parse_iso(self.due_at)), default_tz=self.tz)
        return to_js_iso(nxt) if nxt else None


def _too_large(mission: ServerMission, tokens: int) -> MissionResult:
    logger.warning(
        "mission paused: its iterations are too large",
        extra={"action": "runner.too_large", "mission_id": mission.id, "user_id": mission.user_id},
    )
    return MissionResult(mission.id, mission.user_id, "failed", tokens=tokens, detail=TOO_LARGE)


def _round_budget(
    ctx: RunnerContext, mission: ServerMission, agent: ServerAgent | None, claim: Claim
) -> RoundBudget | None:
    """The run's per-round reservations against its agent's cap; None (no extra round trip) without one."""
    if agent is None or agent.max_tokens_per_day is None or claim.token_share is None:
        return None
    settings = ctx.settings
    return RoundBudget(
        ctx.llm,
        ctx.db,
        user_id=mission.user_id,
        mission_id=mission.id,
        agent_id=agent.id,
        owner=ctx.owner,
        cap=agent.max_tokens_per_day,
        max_tokens=settings.llm_max_tokens or None,
        context_tokens=settings.llm_context_tokens,
    )


async def _skip_missed(
    ctx: RunnerContext,
    store: RunnerStore,
    mission: ServerMission,
    cadence: Cadence,
    tz: str,
    due_at: str,
    iteration_id: str,
    actor: Any,
) -> MissionResult | None:
    """A run found later than its grace window (in the user's zone ``tz``, as the next run): move on to the
    next occurrence with a note, plan nothing."""
    settings = ctx.settings
    now = utcnow()
    try:
        due = parse_iso(due_at)
    except ValueError:
        return None
    if not is_missed(cadence, due, now, configured=settings.missed_run_grace, default_tz=tz):
        return None
    nxt = next_run(cadence, after=now, default_tz=tz)
    next_iso = to_js_iso(nxt) if nxt else None
    now_iso = to_js_iso(now)
    iteration = missed_iteration(iteration_id, now_iso, due_iso=due_at, late=now - due, next_iso=next_iso)
    written = await store.write_back(
        mission,
        due_at=due_at,
        iteration=iteration,
        next_run_at=next_iso,
        now_iso=now_iso,
        actor=actor,
        outcome="skipped",
    )
    if written.status == "stale":
        return MissionResult(mission.id, mission.user_id, "stale", detail="changed while it was claimed")
    if written.status == "too-large":
        return _too_large(mission, 0)
    ctx.metrics.missed_runs_skipped.inc()
    logger.info(
        "missed run skipped",
        extra={"action": "runner.missed_skipped", "mission_id": mission.id, "user_id": mission.user_id},
    )
    return MissionResult(
        mission.id,
        mission.user_id,
        "skipped-missed",
        detail=str(iteration["summary"]),
        iteration_id=iteration_id,
    )


async def _zone_for(ctx: RunnerContext, user_id: str, cadence: object) -> str:
    """The zone of a wall-clock cadence without its own: the user's (their default calendar's, as the app
    stores it), else the deployment's (:mod:`mana_ai.scheduler.zones`). Interval cadences need none."""
    default = ctx.settings.default_tz
    if getattr(cadence, "kind", "") not in ("daily", "weekly", "cron") or getattr(cadence, "timezone", None):
        return default
    return await zone_for_user(ctx.db, user_id, default)


def _backoff(base: timedelta, failures: int) -> timedelta:
    delay: timedelta = base * (2 ** max(failures - 1, 0))
    return min(delay, timedelta(hours=1))
