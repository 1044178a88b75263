"""The workbench's read models: inbox pages, the timeline, token usage, goals, agents and missions.

Proposals are read from the mission snapshots (folded from the sync log by the same refresh the runner uses;
:meth:`WorkbenchStore.refresh` brings them up to date first), paged in SQL so a page costs the same with 5 or
500 open proposals. Decisions and domain events come from the workbench's own tables inside ``with_user``;
goals are replayed from the sync log.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.store import insert_record
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.workbench.context import WORKBENCH_CLIENT_ID, replay_table
from mana_ai.workbench.proposals import (
    OPEN_STATUSES,
    Proposal,
    StepRef,
    cutoff,
    proposal_from_row,
    proposals_of_mission,
)
from mana_ai.workbench.shapes import GOALS, local_now

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE: Final = 200
DEFAULT_PAGE_SIZE: Final = 25
MAX_PAGE: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class MissionGroup:
    """Consecutive proposals of one mission on a page."""

    mission_id: str
    mission_title: str
    agent_id: str | None
    agent_name: str | None
    agent_avatar: str | None
    proposals: tuple[Proposal, ...]


@dataclass(frozen=True, slots=True)
class InboxPage:
    proposals: tuple[Proposal, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def groups(self) -> list[MissionGroup]:
        groups: list[MissionGroup] = []
        for p in self.proposals:
            if groups and groups[-1].mission_id == p.ref.mission_id:
                last = groups[-1]
                groups[-1] = MissionGroup(
                    last.mission_id,
                    last.mission_title,
                    last.agent_id,
                    last.agent_name,
                    last.agent_avatar,
                    (*last.proposals, p),
                )
            else:
                groups.append(
                    MissionGroup(
                        p.ref.mission_id, p.mission_title, p.agent_id, p.agent_name, p.agent_avatar, (p,)
                    )
                )
        return groups


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    ts: str
    kind: str
    """planned (an agent planned an iteration), decision (the user decided), event (a domain event)."""
    who: str
    text: str
    mission_id: str | None = None
    mission_title: str | None = None
    agent_id: str | None = None
    modules: tuple[str, ...] = ()
    status: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class UsageSeries:
    """Tokens of one agent: 24 hourly buckets (oldest first) and 7 daily buckets (oldest first)."""

    hourly: tuple[int, ...]
    daily: tuple[int, ...]
    hour_labels: tuple[str, ...] = field(default=())
    day_labels: tuple[str, ...] = field(default=())

    @property
    def total_24h(self) -> int:
        return sum(self.hourly)

    @property
    def total_7d(self) -> int:
        return sum(self.daily)


def _iso(value: Any) -> str:
    return to_js_iso(value) if isinstance(value, dt.datetime) else str(value or "")


def _modules_of(plan: Any) -> tuple[str, ...]:
    found: list[str] = []
    for step in plan if isinstance(plan, list) else []:
        intent = step.get("intent") if isinstance(step, Mapping) else None
        tool = CATALOG_BY_NAME.get(str(intent.get("toolName"))) if isinstance(intent, Mapping) else None
        if tool is not None and tool.module not in found:
            found.append(tool.module)
    return tuple(found)


class WorkbenchStore:
    def __init__(self, db: Database, *, ttl: dt.timedelta, tz: str = "UTC") -> None:
        self.db = db
        self.ttl = ttl
        self.tz = tz

    async def refresh(self) -> None:
        """Fold new sync-log rows into the snapshots, so the inbox shows decisions made a moment ago."""
        try:
            await refresh_snapshots(self.db)
        except Exception:  # a failed refresh shows slightly older data; the page still works
            logger.warning(
                "snapshot refresh failed", exc_info=True, extra={"action": "workbench.refresh_failed"}
            )

    # --- proposals ----------------------------------------------------------------------------------------
    async def _steps(
        self,
        user_id: str,
        *,
        expired: bool,
        limit: int,
        offset: int,
        now: dt.datetime,
        mission_id: str | None = None,
        statuses: tuple[str, ...] = OPEN_STATUSES,
    ) -> tuple[list[Proposal], int]:
        rows = await self.db.fetch(
            q("workbench_steps"),
            {
                "user_id": user_id,
                "statuses": list(statuses),
                "mission_id": mission_id,
                "cutoff": cutoff(now, self.ttl),
                "expired": expired,
                "limit": limit,
                "offset": offset,
            },
        )
        total = int(rows[0]["total"]) if rows else 0
        return [proposal_from_row(r, self.ttl) for r in rows], total

    async def inbox(
        self,
        user_id: str,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        mission_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> InboxPage:
        """One page of open, unexpired proposals, grouped by mission (``page`` is 1-based)."""
        page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
        page = min(max(page, 1), MAX_PAGE)
        proposals, total = await self._steps(
            user_id,
            expired=False,
            limit=page_size,
            offset=(page - 1) * page_size,
            now=now or utcnow(),
            mission_id=mission_id,
        )
        if not proposals and total == 0 and page > 1:
            # Past the end (e.g. the last proposal of the last page was just decided): count again.
            _, total = await self._steps(user_id, expired=False, limit=1, offset=0, now=now or utcnow())
        return InboxPage(tuple(proposals), total, page, page_size)

    async def expired(
        self, user_id: str, *, now: dt.datetime | None = None, limit: int = 1000
    ) -> list[Proposal]:
        """Open proposals past ``MANA_AI_PROPOSAL_TTL`` (at most ``limit``)."""
        proposals, _ = await self._steps(user_id, expired=True, limit=limit, offset=0, now=now or utcnow())
        return proposals

    async def all_open(
        self, user_id: str, *, now: dt.datetime | None = None, limit: int = 1000
    ) -> list[Proposal]:
        """Every open, unexpired proposal (CLI)."""
        proposals, _ = await self._steps(user_id, expired=False, limit=limit, offset=0, now=now or utcnow())
        return proposals

    async def step(self, user_id: str, ref: StepRef) -> Proposal | None:
        """The step as the mission snapshot has it, in whatever status (``None``: not found)."""
        row = await self.db.fetchrow(
            q("mission_snapshot"), {"user_id": user_id, "mission_id": ref.mission_id}
        )
        if row is None or row["deleted"]:
            return None
        statuses = (*OPEN_STATUSES, "approved", "rejected", "failed", "skipped")
        for proposal in proposals_of_mission(row["record"], ttl=self.ttl, statuses=statuses):
            if proposal.ref == ref:
                return proposal
        return None

    async def decision(self, user_id: str, ref: StepRef) -> dict[str, Any] | None:
        async with self.db.with_user(user_id) as conn:
            cur = await conn.execute(
                q("workbench_decision"),
                {
                    "user_id": user_id,
                    "mission_id": ref.mission_id,
                    "iteration_id": ref.iteration_id,
                    "step_id": ref.step_id,
                },
            )
            return await cur.fetchone()

    # --- timeline -----------------------------------------------------------------------------------------
    async def decisions(
        self,
        user_id: str,
        *,
        mission_id: str | None = None,
        agent_id: str | None = None,
        module: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        async with self.db.with_user(user_id) as conn:
            cur = await conn.execute(
                q("workbench_decisions"),
                {
                    "user_id": user_id,
                    "mission_id": mission_id,
                    "agent_id": agent_id,
                    "module": module,
                    "limit": limit,
                },
            )
            return await cur.fetchall()

    async def events(
        self,
        user_id: str,
        *,
        event_type: str | None = None,
        mission_id: str | None = None,
        agent_id: str | None = None,
        module: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        async with self.db.with_user(user_id) as conn:
            cur = await conn.execute(
                q("workbench_events"),
                {
                    "user_id": user_id,
                    "event_type": event_type,
                    "mission_id": mission_id,
                    "agent_id": agent_id,
                    "module": module,
                    "limit": limit,
                },
            )
            return await cur.fetchall()

    async def timeline(
        self,
        user_id: str,
        *,
        agent_id: str | None = None,
        module: str | None = None,
        mission_id: str | None = None,
        limit: int = 100,
    ) -> list[TimelineEntry]:
        """What the agents planned, what the user decided and what happened, newest first."""
        agents = {str(a.get("id")): a for a in await self.agents(user_id)}
        entries: list[TimelineEntry] = []
        rows = await self.db.fetch(
            q("workbench_iterations"),
            {"user_id": user_id, "mission_id": mission_id, "agent_id": agent_id, "limit": limit},
        )
        for row in rows:
            it = row["iteration"]
            modules = _modules_of(it.get("plan"))
            if module and module not in modules:
                continue
            plan = it.get("plan") if isinstance(it.get("plan"), list) else []
            agent = agents.get(str(row["agent_id"])) if row["agent_id"] else None
            source = it.get("source") or "browser"
            entries.append(
                TimelineEntry(
                    ts=row["started_at"],
                    kind="planned",
                    who=str(agent.get("name")) if agent else "Mana",
                    text="planned " + str(len(plan)) + " step(s) (" + str(source) + ")",
                    mission_id=row["mission_id"],
                    mission_title=row["mission_title"],
                    agent_id=row["agent_id"],
                    modules=modules,
                    status=str(it.get("overallStatus") or ""),
                    detail=it.get("summary") if isinstance(it.get("summary"), str) else None,
                )
            )
        for d in await self.decisions(
            user_id, mission_id=mission_id, agent_id=agent_id, module=module, limit=limit
        ):
            detail = d["feedback"] or d["error"]
            entries.append(
                TimelineEntry(
                    ts=_iso(d["decided_at"]),
                    kind="decision",
                    who="Du" if d["decided_by"] == "user" else "Ablauf (TTL)",
                    text=str(d["decision"]) + " " + str(d["tool_name"]),
                    mission_id=d["mission_id"],
                    agent_id=d["agent_id"],
                    modules=(str(d["module"]),),
                    status=str(d["outcome"]),
                    detail=str(detail) if detail else None,
                )
            )
        for e in await self.events(
            user_id, mission_id=mission_id, agent_id=agent_id, module=module, limit=limit
        ):
            agent = agents.get(str(e["agent_id"])) if e["agent_id"] else None
            who = (
                "Regel" if e["event_type"] == "GoalReached" else (str(agent.get("name")) if agent else "Mana")
            )
            entries.append(
                TimelineEntry(
                    ts=_iso(e["ts"]),
                    kind="event",
                    who=who,
                    text=str(e["event_type"]),
                    mission_id=e["mission_id"],
                    agent_id=e["agent_id"],
                    modules=(str(e["module"]),) if e["module"] else (),
                    detail=", ".join(
                        k + "=" + str(v)
                        for k, v in (e["payload"] or {}).items()
                        if not isinstance(v, dict | list)
                    )[:300],
                )
            )
        titles = {
            str(r["record"].get("id")): r["record"].get("title") for r in await self._mission_rows(user_id)
        }
        entries = [
            e if e.mission_title or not e.mission_id else _with_title(e, titles.get(e.mission_id))
            for e in entries
        ]
        # Newest first; within one instant (a decision and its events share a transaction) the decision first.
        rank = {"event": 0, "decision": 1, "planned": 2}
        entries.sort(key=lambda e: (e.ts, rank.get(e.kind, 0)), reverse=True)
        return entries[:limit]

    # --- token usage ----------------------------------------------------------------------------------------
    async def token_usage(self, user_id: str, *, now: dt.datetime | None = None) -> dict[str, UsageSeries]:
        """Per agent: tokens in each of the last 24 hours and each of the last 7 days (``tz`` days)."""
        now = now or utcnow()
        hour0 = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=23)
        today = local_now(now, self.tz).date()
        days = [today - dt.timedelta(days=6 - i) for i in range(7)]
        rows = await self.db.fetch(
            q("workbench_token_usage"), {"user_id": user_id, "since": now - dt.timedelta(days=7, hours=1)}
        )
        hourly: dict[str, list[int]] = {}
        daily: dict[str, list[int]] = {}
        for row in rows:
            agent, bucket, tokens = str(row["agent_id"]), row["bucket"], int(row["tokens"])
            hours = hourly.setdefault(agent, [0] * 24)
            index = int((bucket - hour0).total_seconds() // 3600)
            if 0 <= index < 24:
                hours[index] += tokens
            day = local_now(bucket, self.tz).date()
            if day in days:
                daily.setdefault(agent, [0] * 7)[days.index(day)] += tokens
        hour_labels = tuple(
            local_now(hour0 + dt.timedelta(hours=i), self.tz).strftime("%H") for i in range(24)
        )
        day_labels = tuple(d.strftime("%a %d") for d in days)
        return {
            agent: UsageSeries(
                tuple(hourly.get(agent, [0] * 24)), tuple(daily.get(agent, [0] * 7)), hour_labels, day_labels
            )
            for agent in sorted(set(hourly) | set(daily))
        }

    # --- agents, missions, goals ------------------------------------------------------------------------------
    async def _mission_rows(self, user_id: str) -> list[dict[str, Any]]:
        return await self.db.fetch(q("missions_of_user"), {"user_id": user_id})

    async def agents(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(q("agents_of_user"), {"user_id": user_id})
        return [r["record"] for r in rows if not r["record"].get("deletedAt")]

    async def missions(self, user_id: str) -> list[dict[str, Any]]:
        return [r["record"] for r in await self._mission_rows(user_id) if not r["record"].get("deletedAt")]

    async def run_errors(self, user_id: str) -> dict[str, str]:
        """``mission id → error`` for the missions whose last run failed."""
        rows = await self.db.fetch(q("run_errors_of_user"), {"user_id": user_id})
        return {r["mission_id"]: r["last_error"] for r in rows}

    async def goals(self, user_id: str) -> list[dict[str, Any]]:
        """The user's live goals from the sync log, newest first."""
        async with self.db.with_user(user_id) as conn:
            states = await replay_table(conn, user_id, GOALS)
        goals = [s.record for s in states.values() if s.is_live()]
        return sorted(goals, key=lambda g: str(g.get("createdAt") or ""), reverse=True)

    async def create_goal(self, user_id: str, record: Mapping[str, Any]) -> None:
        """Insert a goal as the user (``companion/companionGoals``, plaintext as in the web app)."""
        async with self.db.with_user(user_id) as conn:
            await insert_record(
                conn,
                user_id=user_id,
                app_id=GOALS.app_id,
                table=GOALS.table,
                record=record,
                client_id=WORKBENCH_CLIENT_ID,
                actor=user_actor(user_id),
            )


def _with_title(entry: TimelineEntry, title: Any) -> TimelineEntry:
    return TimelineEntry(
        entry.ts,
        entry.kind,
        entry.who,
        entry.text,
        entry.mission_id,
        title if isinstance(title, str) else None,
        entry.agent_id,
        entry.modules,
        entry.status,
        entry.detail,
    )
