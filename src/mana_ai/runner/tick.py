"""The tick: refresh snapshots, find due missions, plan them concurrently, report TickStats (SPEC §3).

Unlike the original, missions are planned concurrently (``MANA_AI_MAX_CONCURRENCY`` per process, W8), an
agent's ``maxConcurrentMissions`` is respected while its missions wait their turn instead of being skipped
for the rest of the tick, and due missions go round-robin across users, then agents (oldest first within an
agent), so one user's backlog never holds back another's mission and none starves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from mana_ai import tracing
from mana_ai.errors import StorageError
from mana_ai.runner.context import RunnerContext
from mana_ai.runner.process import STOPPING, MissionResult, process_mission, resolve_agent
from mana_ai.runner.slots import PlanningSlot, Slots
from mana_ai.runner.store import RunnerStore
from mana_ai.synclog.records import ServerAgent, ServerMission
from mana_ai.synclog.snapshots import RefreshStats, prune_feed, refresh_snapshots
from mana_ai.timefmt import to_js_iso, utcnow

logger = logging.getLogger(__name__)

DISPATCH_HOLD = timedelta(seconds=60)
"""How long a dispatched mission stays reserved for its planning job before a worker takes it (then the
worker's heartbeat keeps it); a job lost with a killed worker frees its missions after this."""


@dataclass
class TickStats:
    scanned_at: str
    due_mission_count: int = 0
    plans_produced: int = 0
    plans_written_back: int = 0
    parse_failures: int = 0
    errors: list[str] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    results: list[MissionResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scannedAt": self.scanned_at,
            "dueMissionCount": self.due_mission_count,
            "plansProduced": self.plans_produced,
            "plansWrittenBack": self.plans_written_back,
            "parseFailures": self.parse_failures,
            "errors": self.errors,
            "decisions": dict(self.decisions),
        }

    def add_report(self, report: BatchReport) -> None:
        for decision, count in report.decisions.items():
            self.decisions[decision] += count
            if decision == "ran":
                self.plans_produced += count
                self.plans_written_back += count
            elif decision in ("failed", "paused-after-failures"):
                self.parse_failures += count
        self.errors.extend(report.errors)

    def add(self, result: MissionResult) -> None:
        self.results.append(result)
        self.decisions[result.decision] += 1
        if result.decision == "ran":
            self.plans_produced += 1
            self.plans_written_back += 1
        elif result.decision in ("failed", "paused-after-failures"):
            self.parse_failures += 1
        elif result.decision == "error":
            self.errors.append(f"mission={result.mission_id}: {result.detail}")


REPORT_ERRORS = 10
"""Error lines one batch report carries at most (a NOTIFY payload must stay under 8,000 bytes)."""


@dataclass
class BatchReport:
    """What one planning batch deferred by a tick did: decisions counted, the first error lines."""

    tick: str
    decisions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, tick: str, results: Iterable[MissionResult]) -> BatchReport:
        report = cls(tick)
        for result in results:
            report.decisions[result.decision] = report.decisions.get(result.decision, 0) + 1
            if result.decision == "error" and len(report.errors) < REPORT_ERRORS:
                report.errors.append(f"mission={result.mission_id}: {result.detail}"[:300])
        return report

    def to_payload(self) -> str:
        return orjson.dumps({"tick": self.tick, "decisions": self.decisions, "errors": self.errors}).decode()

    @classmethod
    def from_payload(cls, payload: str) -> BatchReport | None:
        """None for anything that is not a report (another sender on the channel)."""
        try:
            raw = orjson.loads(payload)
            decisions = {str(k): int(v) for k, v in raw["decisions"].items()}
            return cls(str(raw["tick"]), decisions, [str(e) for e in raw["errors"]])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


WorkerRun = Callable[[list[tuple[str, str]]], Awaitable[list[BatchReport]]]
"""Hands (user id, mission id) keys to the planning processes and returns their reports once all are done."""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class Dispatcher:
    """Runs missions with the process's planning slots (:mod:`mana_ai.runner.slots`) and per-agent
    in-process slots (an agent's slot is held from before the claim to the end of the write-back)."""

    def __init__(self, ctx: RunnerContext, store: RunnerStore) -> None:
        self.ctx = ctx
        self.store = store
        self._slots = Slots(ctx.settings.max_concurrency)
        self._agent_slots: dict[tuple[str, str], tuple[int, asyncio.Semaphore]] = {}
        self._in_flight: set[asyncio.Task[MissionResult]] = set()
        self.accepting = True
        self.on_result: Callable[[MissionResult], None] | None = None
        """Called with each mission's outcome as soon as it is known (the CLI's live progress)."""

    def _agent_slot(self, agent: ServerAgent) -> asyncio.Semaphore:
        """The agent's in-process limit, sized by its limit now: a raised or lowered limit gets a semaphore of
        its own size (runs holding the old one finish under it; the claim in Postgres keeps the limit across
        both and across processes)."""
        key = (agent.user_id, agent.id)
        limit = max(agent.max_concurrent_missions, 1)
        known = self._agent_slots.get(key)
        if known is None or known[0] != limit:
            known = self._agent_slots[key] = (limit, asyncio.Semaphore(limit))
        return known[1]

    async def run_one(
        self, mission: ServerMission, agents: dict[tuple[str, str], ServerAgent]
    ) -> MissionResult:
        agent, skip = resolve_agent(mission, agents)
        if agent is not None and skip is None:
            async with self._agent_slot(agent):  # held until the write-back: the agent's limit is per run
                return await self._in_slot(mission, agents)
        return await self._in_slot(mission, agents)

    async def _in_slot(
        self, mission: ServerMission, agents: dict[tuple[str, str], ServerAgent]
    ) -> MissionResult:
        slot = await self._slots.admit()
        try:
            return await self._guarded(mission, agents, slot)
        finally:
            slot.give_back()

    async def _guarded(
        self, mission: ServerMission, agents: dict[tuple[str, str], ServerAgent], slot: PlanningSlot
    ) -> MissionResult:
        if not self.accepting:
            return MissionResult(mission.id, mission.user_id, "skipped-shutdown", detail=STOPPING)
        result = await process_mission(self.ctx, self.store, mission, agents, slot=slot)
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def run_all(
        self, missions: Iterable[ServerMission], agents: dict[tuple[str, str], ServerAgent]
    ) -> list[MissionResult]:
        tasks = [asyncio.ensure_future(self.run_one(m, agents)) for m in missions]
        self._in_flight.update(tasks)
        try:
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            # Cancelled (Ctrl-C on `mana-ai tick`, shutdown): let every mission release its claim before the
            # caller closes the pool under it.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=10)
            raise
        finally:
            self._in_flight.difference_update(tasks)

    async def drain(self, grace_s: float) -> None:
        """Stop taking new missions; give those in flight ``grace_s`` seconds, then cancel them.

        A cancelled mission writes nothing (its write-back transaction rolls back) and releases its claim, so
        another worker plans it right away: never half-written, never lost.
        """
        self.accepting = False
        self._slots.close()
        pending = [t for t in self._in_flight if not t.done()]
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)


class Ticker:
    def __init__(self, ctx: RunnerContext, store: RunnerStore, dispatcher: Dispatcher) -> None:
        self.ctx = ctx
        self.store = store
        self.dispatcher = dispatcher
        self._running = asyncio.Lock()
        self._maintenance: asyncio.Task[None] | None = None
        self.last_tick: TickStats | None = None

    @property
    def running(self) -> bool:
        return self._running.locked()

    async def refresh(self, stats: TickStats) -> RefreshStats | None:
        metrics = self.ctx.metrics
        try:
            refreshed = await refresh_snapshots(self.ctx.db)
        except Exception as exc:
            stats.errors.append(f"refresh: {exc}")
            logger.exception("snapshot refresh failed", extra={"action": "tick.refresh_failed"})
            return None
        metrics.snapshots_new.inc(refreshed.missions.new_snapshots)
        metrics.snapshots_updated.inc(refreshed.missions.updated_snapshots)
        metrics.snapshot_rows_applied.inc(refreshed.missions.rows_applied)
        if refreshed.restored_iterations:
            metrics.iterations_restored.labels("iteration").inc(refreshed.restored_iterations)
        if refreshed.restored_decisions:
            metrics.iterations_restored.labels("decision").inc(refreshed.restored_decisions)
        if refreshed.missions.rows_skipped:
            metrics.snapshot_rows_skipped.labels("aiMissions").inc(refreshed.missions.rows_skipped)
        if refreshed.agents.rows_skipped:
            metrics.snapshot_rows_skipped.labels("agents").inc(refreshed.agents.rows_skipped)
        return refreshed

    async def tick(self, workers: WorkerRun | None = None) -> TickStats:
        """Run one tick and wait for every due mission's outcome.

        Without ``workers`` the due missions are planned in this process. With it (``serve`` planning on
        several processes) they are picked as the cluster dispatcher picks them (agents with a free slot,
        nothing held by another job) and handed to the planning processes through the queue.
        """
        now = utcnow()
        stats = TickStats(scanned_at=to_js_iso(now))
        if self._running.locked():
            stats.errors.append("overlap-skipped")
            return stats
        async with self._running, tracing.span("tick") as tick_span:
            metrics = self.ctx.metrics
            metrics.ticks.inc()
            started = time.perf_counter()
            phases: dict[str, float] = {}
            try:
                if await self.refresh(stats) is None and not await self.ctx.db.ping():
                    raise StorageError("database unreachable; tick skipped")
                phases["refresh_ms"] = _ms_since(started)
                if workers is not None:
                    await self._tick_on_workers(stats, workers)
                else:
                    due = await self.store.due_missions(stats.scanned_at, self.ctx.settings.due_batch_limit)
                    stats.due_mission_count = len(due)
                    phases["due_ms"] = _ms_since(started) - phases["refresh_ms"]
                    if due:
                        agents = await self.store.agents_for_users(m.user_id for m in due)
                        for result in await self.dispatcher.run_all(due, agents):
                            stats.add(result)
                self.start_maintenance()
            except Exception as exc:
                stats.errors.append(str(exc))
                tracing.mark_error(tick_span, exc)
                logger.exception("tick failed", extra={"action": "tick.failed"})
            finally:
                metrics.tick_duration.observe(time.perf_counter() - started)
            self.last_tick = stats
            tick_span.set_attributes(
                {
                    "tick.due": stats.due_mission_count,
                    "tick.written": stats.plans_written_back,
                    "tick.failed": stats.parse_failures,
                    "tick.errors": len(stats.errors),
                }
            )
            logger.info(
                "tick done",
                extra={
                    "action": "tick.done",
                    "due": stats.due_mission_count,
                    "written": stats.plans_written_back,
                    "failed": stats.parse_failures,
                    "errors": len(stats.errors),
                    "duration_ms": round(_ms_since(started), 1),
                    **{k: round(v, 1) for k, v in phases.items()},
                },
            )
            return stats

    async def _tick_on_workers(self, stats: TickStats, workers: WorkerRun) -> None:
        keys = await self.store.dispatch_due(
            stats.scanned_at, self.ctx.settings.due_batch_limit, DISPATCH_HOLD
        )
        stats.due_mission_count = len(keys)
        if keys:
            for report in await workers(keys):
                stats.add_report(report)

    async def dispatch_tick(
        self,
        defer: Callable[[list[list[tuple[str, str]]]], Awaitable[Any]],
        *,
        backlog: Callable[[], Awaitable[int]],
        batch_size: int,
    ) -> dict[str, Any]:
        """The periodic cluster tick: :meth:`dispatch_due` plus housekeeping."""
        self.ctx.metrics.ticks.inc()
        started = time.perf_counter()
        try:
            result = await self.dispatch_due(defer, backlog=backlog, batch_size=batch_size)
            await self.maintenance()
        finally:
            self.ctx.metrics.tick_duration.observe(time.perf_counter() - started)
        return result

    async def dispatch_due(
        self,
        defer: Callable[[list[list[tuple[str, str]]]], Awaitable[Any]],
        *,
        backlog: Callable[[], Awaitable[int]],
        batch_size: int,
    ) -> dict[str, Any]:
        """Refresh, pick the due missions in fair order and defer them in batches to whichever worker is free.

        Nothing is deferred while planning jobs are still waiting to be picked up, and a mission a job
        holds (queued, waiting for its agent's slot or being planned) is never handed out again.
        """
        stats = TickStats(scanned_at=to_js_iso(utcnow()))
        started = time.perf_counter()
        deferred = 0
        pending = 0
        with tracing.span("tick.dispatch") as tick_span:
            await self.refresh(stats)
            pending = await backlog()
            if pending == 0:
                keys = await self.store.dispatch_due(
                    stats.scanned_at, self.ctx.settings.due_batch_limit, DISPATCH_HOLD
                )
                stats.due_mission_count = len(keys)
                batches = [keys[start : start + batch_size] for start in range(0, len(keys), batch_size)]
                if batches:
                    await defer(batches)
                deferred = len(batches)
            tick_span.set_attributes(
                {"tick.due": stats.due_mission_count, "tick.batches": deferred, "tick.backlog": pending}
            )
        if deferred:
            logger.info(
                "dispatched due missions",
                extra={
                    "action": "tick.dispatched",
                    "missions": stats.due_mission_count,
                    "batches": deferred,
                    "duration_ms": round((time.perf_counter() - started) * 1000),
                },
            )
        self.last_tick = stats
        return {**stats.to_json(), "batchesDeferred": deferred, "backlog": pending}

    def start_maintenance(self) -> None:
        """Run :meth:`maintenance` in the background: the tick's answer does not wait for housekeeping (after
        a bootstrap, pruning the feed deletes every row just folded). One runs at a time."""
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.create_task(self.maintenance(), name="tick-maintenance")

    async def close(self) -> None:
        """Wait for background maintenance (shutdown)."""
        if self._maintenance is not None and not self._maintenance.done():
            await asyncio.wait([self._maintenance], timeout=30)

    async def maintenance(self) -> None:
        """Housekeeping that keeps tables bounded (W13): applied feed rows, old token usage."""
        try:
            await prune_feed(self.ctx.db)
            await self.store.prune_token_usage(self.ctx.settings.token_usage_retention)
        except Exception:
            logger.warning("maintenance failed", extra={"action": "tick.maintenance_failed"}, exc_info=True)
