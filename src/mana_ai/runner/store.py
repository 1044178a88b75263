"""The runner's SQL: due missions, agents, claims, write-back and token usage.

Write-back is the one place that appends to a mission's iterations. It runs inside ``with_user`` (row-level
security applies), holds a per-record advisory lock so none of our writers appends from a stale base (W11),
rebuilds the iterations array from the log itself (not from a snapshot that may be a tick old), refuses to
write when the mission changed under it (paused, deleted, rescheduled), and finishes the claim in the same
transaction: a plan is written once per due run or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.runner.iteration import append_iteration
from mana_ai.synclog.lww import next_stamp
from mana_ai.synclog.records import ServerAgent, ServerMission
from mana_ai.synclog.store import RUNNER_CLIENT_ID, replay_record, update_fields

logger = logging.getLogger(__name__)

KEEP = object()
"""Sentinel: leave a field as it is."""


@dataclass(frozen=True, slots=True)
class Claim:
    decision: str
    tokens_used_24h: int
    attempt: int
    consecutive_failures: int


class LostClaim(Exception):
    """Our lease on the run expired and another worker may own it now; nothing was written."""


WriteResult = Literal["written", "stale"]


class RunnerStore:
    def __init__(self, db: Database, owner: str) -> None:
        self.db = db
        self.owner = owner

    async def due_missions(self, now_iso: str, limit: int) -> list[ServerMission]:
        rows = await self.db.fetch(q("due_missions"), {"now": now_iso, "limit": limit})
        return [ServerMission.from_record(r["user_id"], r["record"]) for r in rows]

    async def missions_by_key(self, keys: Iterable[tuple[str, str]]) -> list[ServerMission]:
        found = []
        for user_id, mission_id in keys:
            row = await self.db.fetchrow(
                q("mission_snapshot"), {"user_id": user_id, "mission_id": mission_id}
            )
            if row and not row["deleted"]:
                found.append(ServerMission.from_record(user_id, row["record"]))
        return found

    async def agents_for_users(self, user_ids: Iterable[str]) -> dict[tuple[str, str], ServerAgent]:
        users = sorted(set(user_ids))
        if not users:
            return {}
        rows = await self.db.fetch(q("agents_for_users"), {"users": users})
        agents: dict[tuple[str, str], ServerAgent] = {}
        for row in rows:
            try:
                agents[(row["user_id"], row["agent_id"])] = ServerAgent.from_record(
                    row["user_id"], row["record"], deleted=row["deleted"]
                )
            except Exception:  # a corrupt record of one user must not stop the others (W22)
                logger.warning(
                    "unreadable agent record",
                    extra={
                        "action": "runner.agent_unreadable",
                        "user_id": row["user_id"],
                        "agent_id": row["agent_id"],
                    },
                )
        return agents

    async def claim(
        self, mission: ServerMission, due_at: str, agent: ServerAgent | None, lease: timedelta
    ) -> Claim:
        row = await self.db.fetchrow(
            q("claim_run"),
            {
                "user_id": mission.user_id,
                "mission_id": mission.id,
                "due_at": due_at,
                "agent_id": agent.id if agent else None,
                "max_concurrent": agent.max_concurrent_missions if agent else None,
                "max_tokens": agent.max_tokens_per_day
                if agent and agent.max_tokens_per_day is not None
                else None,
                "owner": self.owner,
                "lease": lease,
            },
        )
        assert row is not None
        return Claim(
            row["decision"],
            int(row["tokens_used_24h"]),
            int(row["attempt"]),
            int(row["consecutive_failures"]),
        )

    async def release(self, mission: ServerMission) -> None:
        await self.db.execute(
            q("release_run"), {"user_id": mission.user_id, "mission_id": mission.id, "owner": self.owner}
        )

    async def write_back(
        self,
        mission: ServerMission,
        *,
        due_at: str,
        iteration: dict[str, Any],
        next_run_at: Any,
        now_iso: str,
        actor: Mapping[str, Any],
        outcome: Literal["done", "failed"],
        error: str | None = None,
        backoff: timedelta = timedelta(0),
        new_state: str | None = None,
        tokens: int = 0,
        agent_id: str | None = None,
    ) -> WriteResult:
        """Append ``iteration`` (and move nextRunAt / state) in one transaction with the claim's outcome.

        Returns ``"stale"`` (and writes nothing) when the mission is gone, no longer active or was
        rescheduled since it was found due. Raises :class:`LostClaim` when our lease is gone.
        """
        async with self.db.with_user(mission.user_id, pipeline=True) as conn:
            await conn.execute(q("lock_record"), {"user_id": mission.user_id, "record_id": mission.id})
            latest = await replay_record(
                conn, user_id=mission.user_id, app_id="ai", table="aiMissions", record_id=mission.id
            )
            if (
                latest is None
                or not latest.is_live()
                or latest.record.get("state", "active") != "active"
                or latest.record.get("nextRunAt") != due_at
            ):
                stale = True
            else:
                stale = False
                fields: dict[str, Any] = {
                    "iterations": append_iteration(latest.record.get("iterations"), iteration)
                }
                if next_run_at is not KEEP:
                    fields["nextRunAt"] = next_run_at
                if new_state is not None:
                    fields["state"] = new_state
                # Strictly after what we read: an approval written in the same millisecond must not win.
                now_iso = next_stamp(latest.field_meta, fields, now_iso)
                await update_fields(
                    conn,
                    user_id=mission.user_id,
                    app_id="ai",
                    table="aiMissions",
                    record_id=mission.id,
                    fields=fields,
                    at=now_iso,
                    client_id=RUNNER_CLIENT_ID,
                    actor=actor,
                )
                # Marked so a device edit that drops it is noticed and undone (mana_ai.synclog.restore).
                await conn.execute(
                    q("mark_iteration"),
                    {
                        "user_id": mission.user_id,
                        "mission_id": mission.id,
                        "iteration_id": iteration["id"],
                        "step_id": "",
                        "status": "",
                    },
                )
            if tokens > 0 and agent_id:
                await conn.execute(
                    q("insert_token_usage"),
                    {
                        "user_id": mission.user_id,
                        "agent_id": agent_id,
                        "mission_id": mission.id,
                        "tokens": tokens,
                    },
                )
            if stale:
                await conn.execute(
                    q("release_run"),
                    {"user_id": mission.user_id, "mission_id": mission.id, "owner": self.owner},
                )
                return "stale"
            params = {
                "user_id": mission.user_id,
                "mission_id": mission.id,
                "owner": self.owner,
                "due_at": due_at,
                "iteration_id": iteration["id"],
            }
            if outcome == "done":
                cur = await conn.execute(q("finish_run_done"), params)
            else:
                cur = await conn.execute(
                    q("finish_run_failed"), {**params, "error": error, "backoff": backoff}
                )
            if await cur.fetchone() is None:
                raise LostClaim(f"lease on mission {mission.id} expired before the write-back")
        return "written"

    async def record_failure(
        self, mission: ServerMission, *, error: str, backoff: timedelta, tokens: int, agent_id: str | None
    ) -> int:
        """Count a failed attempt without writing an iteration; returns consecutive failures so far."""
        async with self.db.transaction() as conn:
            if tokens > 0 and agent_id:
                await conn.execute(
                    q("insert_token_usage"),
                    {
                        "user_id": mission.user_id,
                        "agent_id": agent_id,
                        "mission_id": mission.id,
                        "tokens": tokens,
                    },
                )
            cur = await conn.execute(
                q("finish_run_failed"),
                {
                    "user_id": mission.user_id,
                    "mission_id": mission.id,
                    "owner": self.owner,
                    "error": error,
                    "backoff": backoff,
                    "iteration_id": None,
                },
            )
            row = await cur.fetchone()
        return int(row["consecutive_failures"]) if row else 0

    async def prune_token_usage(self, retention: timedelta) -> int:
        return await self.db.execute(q("prune_token_usage"), {"retention": retention})
