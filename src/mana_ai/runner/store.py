"""The runner's SQL: due missions, agents, claims, write-back and token usage.

Write-back (:mod:`mana_ai.runner.writeback`) is the one place that appends to a mission's iterations. It runs inside ``with_user`` (row-level
security applies), holds a per-record advisory lock so none of our writers appends from a stale base (W11),
rebuilds the iterations array from the log itself (not from a snapshot that may be a tick old), refuses to
write when the mission changed under it (paused, deleted, rescheduled), and finishes the claim in the same
transaction: a plan is written once per due run or not at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.errors import ConnectionLostError, StorageError
from mana_ai.runner.batching import Coalescer
from mana_ai.runner.writeback import (
    KEEP as KEEP,
)
from mana_ai.runner.writeback import (
    BatchNotWritten,
    WriteBack,
    Written,
    correction_params,
    fields_to_write,
    update_params,
    usage_lock_params,
    write_back_many,
)
from mana_ai.synclog.records import ServerAgent, ServerMission
from mana_ai.synclog.store import replay_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    decision: str
    tokens_used_24h: int
    attempt: int
    consecutive_failures: int
    token_share: int | None = None
    """Tokens this run may spend (its reservation against the agent's daily cap); None: no cap."""
    tokens_reserved: int = 0
    """Shares held by the agent's other runs in flight when this claim was decided."""
    detail: str = ""
    """Why the claim was not granted (one line), empty when it was."""


X = TypeVar("X")


async def _once_more_if_lost(action: Callable[[], Awaitable[X]]) -> X:
    """Run ``action``; once more if the database connection was lost under it.

    Pooled connections are not checked before every use (see :mod:`mana_ai.db.connector`), so the first
    statement after a server restart can meet a dead one; its transaction did not commit, and every
    connection is checked at its next checkout, so the second attempt meets a live one. Safe for claims
    and write-backs: both are decided under the claim, so a repeat never plans or writes twice.
    """
    try:
        return await action()
    except ConnectionLostError:
        logger.info("database connection lost; trying once more", extra={"action": "runner.retry_lost"})
        return await action()


def _claim_of(row: Mapping[str, Any]) -> Claim:
    """The one place a row of ``claim_mission_run`` (``claim_run`` or ``claim_runs``) becomes a Claim."""
    return Claim(
        row["decision"],
        int(row["tokens_used_24h"]),
        int(row["attempt"]),
        int(row["consecutive_failures"]),
        int(row["token_share"]) if row["token_share"] is not None else None,
        int(row["tokens_reserved"] or 0),
        row["detail"] or "",
    )


class LostClaim(Exception):
    """Our lease on the run expired and another worker may own it now; nothing was written."""


@dataclass(frozen=True, slots=True)
class _ClaimRequest:
    mission: ServerMission
    due_at: str
    agent: ServerAgent | None
    lease: timedelta


class RunnerStore:
    def __init__(self, db: Database, owner: str, *, batch_size: int = 64) -> None:
        self.db = db
        self.owner = owner
        self.planning: set[tuple[str, str]] = set()
        """(user, mission) of the claimed runs being planned in this process: the heartbeat renews these."""
        self.holding: set[tuple[str, str]] = set()
        """(user, mission) held by this process's planning jobs: the heartbeat renews their dispatch marks."""
        self._claims: Coalescer[_ClaimRequest, Claim] = Coalescer(self._claim_batch, max_batch=batch_size)
        self._write_backs: Coalescer[WriteBack, Written] = Coalescer(
            self._write_back_batch, max_batch=batch_size
        )

    async def due_missions(self, now_iso: str, limit: int) -> list[ServerMission]:
        rows = await self.db.fetch(q("due_missions"), {"now": now_iso, "limit": limit})
        return [ServerMission.from_record(r["user_id"], r["record"]) for r in rows]

    async def running_claim(self, user_id: str, mission_id: str) -> tuple[str, str] | None:
        """(owner, lease end ``HH:MM:SSZ``) while some worker is planning the mission, else None."""
        row = await self.db.fetchrow(q("running_claim"), {"user_id": user_id, "mission_id": mission_id})
        return (str(row["owner"]), str(row["lease_until"])) if row else None

    async def missions_by_key(self, keys: Iterable[tuple[str, str]]) -> list[ServerMission]:
        pairs = list(keys)
        if not pairs:
            return []
        rows = await self.db.fetch(
            q("mission_snapshots_for_keys"), {"users": [k[0] for k in pairs], "ids": [k[1] for k in pairs]}
        )
        by_key = {(r["user_id"], r["record_id"]): r for r in rows if not r["deleted"]}
        return [ServerMission.from_record(key[0], by_key[key]["record"]) for key in pairs if key in by_key]

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
        """Claim one due run; claims asked for at the same time go out together (:meth:`_claim_batch`)."""
        return await self._claims.submit(_ClaimRequest(mission, due_at, agent, lease))

    async def _claim_batch(self, requests: list[_ClaimRequest]) -> list[Claim | BaseException]:
        """One statement for the batch; one claim at a time if it fails (a deadlock between two processes'
        batches, or one mission's bad data), so every mission gets its own outcome."""
        if len(requests) > 1 and len({r.lease for r in requests}) == 1:
            try:
                return list(await self._claim_many(requests))
            except StorageError:
                logger.warning(
                    "batched claim failed; claiming one at a time",
                    extra={"action": "runner.claim_batch_failed", "missions": len(requests)},
                    exc_info=True,
                )
        results: list[Claim | BaseException] = []
        for r in requests:
            try:
                results.append(await _once_more_if_lost(functools.partial(self._claim_request, r)))
            except Exception as exc:
                results.append(exc)
        return results

    async def _claim_many(self, batch: list[_ClaimRequest]) -> list[Claim]:
        # Locks are taken in (user, mission) order: two processes' batches cannot take them crosswise.
        order = sorted(range(len(batch)), key=lambda i: (batch[i].mission.user_id, batch[i].mission.id))
        requests = [batch[i] for i in order]
        rows = await self.db.fetch(
            q("claim_runs"),
            {
                "user_ids": [r.mission.user_id for r in requests],
                "mission_ids": [r.mission.id for r in requests],
                "due_ats": [r.due_at for r in requests],
                "agent_ids": [r.agent.id if r.agent else None for r in requests],
                "max_concurrent": [r.agent.max_concurrent_missions if r.agent else None for r in requests],
                "max_tokens": [r.agent.max_tokens_per_day if r.agent else None for r in requests],
                "owner": self.owner,
                "lease": requests[0].lease,
            },
        )
        if len(rows) != len(requests):
            raise StorageError(f"batched claim returned {len(rows)} rows for {len(requests)} missions")
        claims: list[Claim | None] = [None] * len(batch)
        for i, row in zip(order, rows, strict=True):
            claims[i] = _claim_of(row)
        return [c for c in claims if c is not None]

    async def _claim_request(self, r: _ClaimRequest) -> Claim:
        return await self._claim_one(r.mission, r.due_at, r.agent, r.lease)

    async def _claim_one(
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
        return _claim_of(row)

    async def release_owned(self) -> int:
        """Give back every run this process still holds (shutdown)."""
        return await self.db.execute(q("release_owned_runs"), {"owner": self.owner})

    async def heartbeat(self, lease: timedelta) -> tuple[int, int]:
        """Renew the leases of this process's running claims and dispatch marks: (runs, marks)."""
        runs, marks = sorted(self.planning), sorted(self.holding)
        if not runs and not marks:
            return (0, 0)
        row = await self.db.fetchrow(
            q("heartbeat"),
            {
                "owner": self.owner,
                "lease": lease,
                "run_users": [k[0] for k in runs],
                "run_ids": [k[1] for k in runs],
                "mark_users": [k[0] for k in marks],
                "mark_ids": [k[1] for k in marks],
            },
        )
        return (int(row["runs"]), int(row["marks"])) if row else (0, 0)

    async def dispatch_due(self, now_iso: str, limit: int, hold: timedelta) -> list[tuple[str, str]]:
        """Pick and mark the due missions a planning job should get, in fair order (see dispatch_due)."""
        rows = await self.db.fetch(q("dispatch_due"), {"now": now_iso, "limit": limit, "hold": hold})
        return [(r["user_id"], r["mission_id"]) for r in rows]

    async def dispatch_take(self, keys: list[tuple[str, str]], lease: timedelta) -> None:
        await self.db.execute(
            q("dispatch_take"),
            {"owner": self.owner, "lease": lease, "users": [k[0] for k in keys], "ids": [k[1] for k in keys]},
        )

    async def dispatch_done(self, keys: list[tuple[str, str]]) -> None:
        await self.db.execute(
            q("dispatch_done"), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]}
        )

    async def notify_tick_batch(self, payload: str) -> None:
        await self.db.execute(q("notify_tick_batch"), {"payload": payload})

    async def next_due_at(self, now_iso: str) -> str | None:
        row = await self.db.fetchrow(q("next_due_at"), {"now": now_iso})
        return row["next_due"] if row else None

    async def agent_budget(self, user_id: str, agent_id: str) -> tuple[int, int]:
        """(tokens used in the last 24 h, tokens reserved by runs in flight) of one agent."""
        row = await self.db.fetchrow(q("agent_budget"), {"user_id": user_id, "agent_id": agent_id})
        return (int(row["used"]), int(row["reserved"])) if row else (0, 0)

    async def agents_usage_24h(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int | None]]:
        """The rolling 24 h usage of the given (user id, agent id) pairs and the daily cap each has now (None:
        no cap, or no agent)."""
        users, agents = zip(*keys, strict=True) if keys else ((), ())
        rows = await self.db.fetch(q("agents_usage_24h"), {"users": list(users), "agents": list(agents)})
        return {
            (r["user_id"], r["agent_id"]): (int(r["used"]), int(r["cap"]) if r["cap"] is not None else None)
            for r in rows
        }

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
        outcome: Literal["done", "skipped", "failed"],
        error: str | None = None,
        backoff: timedelta = timedelta(0),
        new_state: str | None = None,
        tokens: int = 0,
        agent_id: str | None = None,
        counted: bool = False,
    ) -> Written:
        """Append ``iteration`` (and move nextRunAt / state) in one transaction with the claim's outcome.

        The status is ``"stale"`` (and nothing is written) when the mission is gone, no longer active or was
        rescheduled since it was found due. ``counted`` (an agent with a cap): the result carries the agent's
        24 h usage including ``tokens``. Raises :class:`LostClaim` when our lease is gone. Write-backs asked
        for at the same time share one transaction (:mod:`mana_ai.runner.writeback`).
        """
        item = WriteBack(
            mission,
            due_at,
            iteration,
            next_run_at,
            now_iso,
            actor,
            outcome,
            error,
            backoff,
            new_state,
            tokens,
            agent_id,
            counted,
        )
        return await self._write_backs.submit(item)

    async def _write_back_batch(self, items: list[WriteBack]) -> list[Written | BaseException]:
        """Two round trips and a COMMIT for the batch (one mission or many); one at a time if it fails."""
        try:
            return list(await write_back_many(self.db, self.owner, items))
        except (BatchNotWritten, StorageError) as exc:
            if len(items) > 1:
                logger.info(
                    "batched write-back not written; writing one at a time",
                    extra={
                        "action": "runner.write_back_batch_retry",
                        "missions": len(items),
                        "why": str(exc),
                    },
                )
        results: list[Written | BaseException] = []
        for item in items:
            try:
                results.append(await _once_more_if_lost(functools.partial(self._write_back_one, item)))
            except Exception as exc:
                results.append(exc)
        return results

    async def _write_back_one(self, item: WriteBack) -> Written:
        mission = item.mission
        async with self.db.with_user(mission.user_id, pipeline=True) as conn:
            await conn.execute(q("lock_record"), {"user_id": mission.user_id, "record_id": mission.id})
            latest = await replay_record(
                conn, user_id=mission.user_id, app_id="ai", table="aiMissions", record_id=mission.id
            )
            decided = fields_to_write(item, latest)
            if decided is not None:
                await conn.execute(q("insert_change"), update_params(item, *decided))
                if item.appends:
                    await conn.execute(q("mark_iteration"), item.mark_params())
            tokens = item.token_params()
            used: int | None = None
            if tokens is not None and item.counted:
                lock = usage_lock_params([(mission.user_id, item.agent_id)])
                await conn.execute(q("lock_agent_usage"), lock)
                row = await (await conn.execute(item.token_query(), tokens)).fetchone()
                used = int(row["used"]) if row is not None else None
            elif tokens is not None:
                await conn.execute(item.token_query(), tokens)
            if decided is None:
                cur = await conn.execute(
                    q("release_run"),
                    {"user_id": mission.user_id, "mission_id": mission.id, "owner": self.owner},
                )
                await conn.execute(q("correct_mission_snapshot"), correction_params(item, latest))
                status = "stale"
            else:
                cur = await conn.execute(item.finish_query(), item.finish_params(self.owner))
                status = item.written_status
            # As in the batch: nothing commits unless the claim is still ours (also not the run's tokens,
            # which a first attempt that did commit before its connection broke has recorded already).
            if await cur.fetchone() is None:
                raise LostClaim(f"lease on mission {mission.id} expired before the write-back")
        return Written(status, used)

    async def record_failure(
        self, mission: ServerMission, *, error: str, backoff: timedelta, tokens: int, agent_id: str | None
    ) -> int:
        """Count a failed attempt without writing an iteration; returns consecutive failures so far.

        Its tokens are recorded only while the run is still ours: a write-back that did commit before its
        connection was lost has recorded them already."""
        async with self.db.transaction() as conn:
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
            if row is not None and tokens > 0 and agent_id:
                await conn.execute(
                    q("insert_token_usage"),
                    {
                        "user_id": mission.user_id,
                        "agent_id": agent_id,
                        "mission_id": mission.id,
                        "tokens": tokens,
                    },
                )
        return int(row["consecutive_failures"]) if row else 0

    async def prune_token_usage(self, retention: timedelta) -> int:
        return await self.db.execute(q("prune_token_usage"), {"retention": retention})
