"""Write-back: append a mission's iteration and finish its claim in one transaction (SPEC §3 step 6, W11).

:class:`WriteBack` is what one planned (or failed) mission writes; :func:`fields_to_write` decides it from
the record as the log says now (pure). :func:`write_back_many` writes the write-backs of many missions of
many users in one transaction and two round trips: one multi-statement message reads every record's log
under its per-record lock (row-level security scoped per user with ``set_current_user``), the merge runs
here with the one LWW function, and a second message appends the rows and finishes the claims; only when
every claim was still ours does a ``COMMIT`` follow. Otherwise it rolls back and raises
:class:`BatchNotWritten`, and the caller writes those missions one at a time (where a lost claim is
reported for its mission alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any, Final, LiteralString

from psycopg import AsyncClientCursor
from psycopg.rows import TupleRow, tuple_row
from psycopg.types.json import Jsonb, set_json_loads

from mana_ai.db.connector import AsyncConn, Database
from mana_ai.db.queries import q
from mana_ai.runner.iteration import append_iteration
from mana_ai.synclog.lww import RecordState, write_stamp
from mana_ai.synclog.records import ServerMission
from mana_ai.synclog.store import RUNNER_CLIENT_ID, change_params, fold_record_rows, loads_or_unreadable
from mana_ai.synclog.validate import MAX_ROW_BYTES, fits_printed

KEEP: Any = object()
"""Sentinel: leave a field as it is."""

APP_ID, TABLE = "ai", "aiMissions"


@dataclass(slots=True)
class WriteBack:
    mission: ServerMission
    due_at: str
    iteration: dict[str, Any]
    next_run_at: Any
    now_iso: str
    actor: Mapping[str, Any]
    outcome: str
    """done | skipped (a missed run: done, but the failure streak goes on) | failed"""
    error: str | None = None
    backoff: timedelta = timedelta(0)
    new_state: str | None = None
    tokens: int = 0
    agent_id: str | None = None
    counted: bool = False
    """The agent has a daily cap: the token row answers the agent's 24 h usage (:class:`Written`)."""

    appends: bool = True
    """False once the row turned out too large: the mission is paused instead (:data:`TOO_LARGE`)."""

    def too_large(self) -> None:
        """The run is finished as a failure without an iteration (:data:`TOO_LARGE`)."""
        self.outcome, self.error, self.appends = "failed", TOO_LARGE, False

    @property
    def written_status(self) -> str:
        """:attr:`Written.status` of a write-back that was not stale."""
        return "written" if self.appends else "too-large"

    def finish_params(self, owner: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "user_id": self.mission.user_id,
            "mission_id": self.mission.id,
            "owner": owner,
            "due_at": self.due_at,
            "iteration_id": self.iteration["id"],
        }
        if self.outcome == "failed":
            params.update(error=self.error, backoff=self.backoff)
        return params

    def finish_query(self) -> LiteralString:
        if self.outcome == "done":
            return q("finish_run_done")
        return q("finish_run_skipped") if self.outcome == "skipped" else q("finish_run_failed")

    def mark_params(self) -> dict[str, Any]:
        """``mark_iteration``: remembered so a device edit that drops it is undone (mana_ai.synclog.restore)."""
        return {
            "user_id": self.mission.user_id,
            "mission_id": self.mission.id,
            "iteration_id": self.iteration["id"],
            "step_id": "",
            "status": "",
        }

    def token_query(self) -> LiteralString:
        return q("insert_token_usage_counted") if self.counted else q("insert_token_usage")

    def token_params(self) -> dict[str, Any] | None:
        if self.tokens <= 0 or not self.agent_id:
            return None
        return {
            "user_id": self.mission.user_id,
            "agent_id": self.agent_id,
            "mission_id": self.mission.id,
            "tokens": self.tokens,
        }


ROW_HEADROOM: Final = 64_000
"""Bytes an update row keeps free under the refresh's limit (:data:`MAX_ROW_BYTES`)."""

TOO_LARGE: Final = (
    "the mission's iterations are too large to append another one; the mission is paused: "
    "delete old iterations and resume it"
)
"""Why a run was not written: its row would be longer than the refresh reads."""


def fields_to_write(item: WriteBack, latest: RecordState | None) -> tuple[dict[str, Any], str] | None:
    """The fields of the update row and their stamp; ``None`` when the mission is stale (gone, no longer
    active or rescheduled since it was found due): then nothing may be written. A row too large to append
    to pauses the mission instead (:meth:`WriteBack.too_large`)."""
    if (
        latest is None
        or not latest.is_live()
        or latest.record.get("state", "active") != "active"
        or latest.record.get("nextRunAt") != item.due_at
    ):
        return None
    fields: dict[str, Any] = {"iterations": append_iteration(latest.record.get("iterations"), item.iteration)}
    if item.next_run_at is not KEEP:
        fields["nextRunAt"] = item.next_run_at
    if item.new_state is not None:
        fields["state"] = item.new_state
    if not fits_printed(fields, MAX_ROW_BYTES - ROW_HEADROOM):
        # Appending would write a row our own refresh skips: the run would never be seen, the mission stay
        # due for ever. Pause it instead, without an iteration.
        item.too_large()
        fields = {"state": "paused"}
    # Strictly after what we read: an approval written in the same millisecond must not win.
    return fields, write_stamp(latest, fields, item.now_iso)


def correction_params(item: WriteBack, latest: RecordState | None) -> dict[str, Any]:
    """``correct_mission_snapshot`` for a mission found stale: its snapshot takes the replay just read.

    The refresh folds a window's rows in arrival order, the replay a record's whole log in ``created_at``
    order (as the web app pulls it); where they disagree (a hard delete between two transactions that
    commit out of order), a snapshot that still finds the mission due would plan it on every tick and have
    every write-back refused. Only a snapshot that still finds this run due is corrected: one a refresh
    has moved on meanwhile holds rows our replay did not see."""
    return {
        "user_id": item.mission.user_id,
        "mission_id": item.mission.id,
        "due_at": item.due_at,
        "record": Jsonb(latest.to_snapshot()) if latest is not None else None,
        "deleted": latest is None or latest.deleted,
    }


def update_params(item: WriteBack, fields: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``insert_change`` parameters of the update row (as :func:`~mana_ai.synclog.store.update_fields`)."""
    return change_params(
        user_id=item.mission.user_id,
        app_id=APP_ID,
        table=TABLE,
        record_id=item.mission.id,
        op="update",
        data=fields,
        field_meta={name: at for name in fields},
        client_id=RUNNER_CLIENT_ID,
        actor=item.actor,
    )


class BatchNotWritten(Exception):
    """A claim of the batch was no longer ours: nothing of the batch was written."""


@dataclass(frozen=True, slots=True)
class Written:
    status: str
    """written | stale | too-large (nothing appended, the mission paused: :data:`TOO_LARGE`)"""
    tokens_used_24h: int | None = None
    """For an agent with a cap (``counted``) whose run used tokens: its 24 h usage including them."""


def usage_lock_params(agents: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """``lock_agent_usage`` for these (user, agent) pairs; the query takes them in sorted order."""
    pairs = sorted({(user, agent or "") for user, agent in agents})
    return {"user_ids": [u for u, _ in pairs], "agent_ids": [a for _, a in pairs]}


async def write_back_many(db: Database, owner: str, items: list[WriteBack]) -> list[Written]:
    """Write every item in one transaction (see the module docstring); results in the order of ``items``."""
    groups = [
        (user, sorted(group, key=lambda i: i.mission.id))
        for user, group in groupby(
            sorted(items, key=lambda i: i.mission.user_id), key=lambda i: i.mission.user_id
        )
    ]
    async with db.connection() as conn:
        cur: AsyncClientCursor[TupleRow] = AsyncClientCursor(conn, row_factory=tuple_row)
        set_json_loads(loads_or_unreadable, cur)
        try:
            latest = await _read(cur, groups)
            results, finishes = await _write(cur, groups, latest, owner)
            if not all(finishes):
                raise BatchNotWritten(f"{finishes.count(False)} of {len(finishes)} claims were lost")
            await conn.execute("COMMIT")
        except BaseException:
            await _rollback(conn)
            raise
    return [results[(i.mission.user_id, i.mission.id)] for i in items]


Groups = list[tuple[str, list[WriteBack]]]


async def _read(
    cur: AsyncClientCursor[TupleRow], groups: Groups
) -> dict[tuple[str, str], RecordState | None]:
    parts = [b"BEGIN"]
    for user, group in groups:
        ids = [i.mission.id for i in group]
        scope = {"user_id": user, "record_ids": ids}
        parts.append(_bind(cur, q("set_current_user"), scope))
        parts.append(_bind(cur, q("lock_records"), scope))
        parts.append(_bind(cur, q("records_rows"), {**scope, "app_id": APP_ID, "table": TABLE}))
    await cur.execute(b";\n".join(parts))
    latest: dict[tuple[str, str], RecordState | None] = {}
    for user, group in groups:
        for _ in range(3):  # BEGIN or the previous user's rows, set_current_user, lock_records
            cur.nextset()
        rows = await cur.fetchall()
        by_record = {rid: list(rs) for rid, rs in groupby(rows, key=lambda r: r[0])}
        for item in group:
            mine = by_record.get(item.mission.id, [])
            latest[(user, item.mission.id)] = fold_record_rows(
                TABLE, item.mission.id, ((r[1], r[2], r[3], r[4]) for r in mine)
            )
    return latest


async def _write(
    cur: AsyncClientCursor[TupleRow],
    groups: Groups,
    latest: dict[tuple[str, str], RecordState | None],
    owner: str,
) -> tuple[dict[tuple[str, str], Written], list[bool]]:
    parts: list[bytes] = []
    counted = {(u, i.agent_id) for u, g in groups for i in g if i.counted and i.token_params()}
    if counted:
        parts.append(_bind(cur, q("lock_agent_usage"), usage_lock_params(counted)))
    finish_at: list[int] = []
    usage_at: dict[int, tuple[str, str]] = {}
    statuses: dict[tuple[str, str], str] = {}
    for user, group in groups:
        parts.append(_bind(cur, q("set_current_user"), {"user_id": user}))
        for item in group:
            key = (user, item.mission.id)
            decided = fields_to_write(item, latest[key])
            if decided is not None:
                parts.append(_bind(cur, q("insert_change"), update_params(item, *decided)))
                if item.appends:
                    parts.append(_bind(cur, q("mark_iteration"), item.mark_params()))
            tokens = item.token_params()
            if tokens is not None:
                if item.counted:
                    usage_at[len(parts)] = key
                parts.append(_bind(cur, item.token_query(), tokens))
            params = {"user_id": user, "mission_id": item.mission.id, "owner": owner}
            if decided is None:
                finish_at.append(len(parts))  # the claim must still be ours, as for a finish
                parts.append(_bind(cur, q("release_run"), params))
                parts.append(_bind(cur, q("correct_mission_snapshot"), correction_params(item, latest[key])))
                statuses[key] = "stale"
                continue
            finish_at.append(len(parts))
            parts.append(_bind(cur, item.finish_query(), item.finish_params(owner)))
            statuses[key] = item.written_status
    await cur.execute(b";\n".join(parts))
    finishes: list[bool] = []
    usage: dict[tuple[str, str], int] = {}
    position = 0
    for target in sorted([*finish_at, *usage_at]):
        while position < target:
            cur.nextset()
            position += 1
        if target in usage_at:
            row = await cur.fetchone()
            usage[usage_at[target]] = int(row[0]) if row is not None else 0
        else:
            finishes.append(cur.rowcount == 1)
    return {key: Written(status, usage.get(key)) for key, status in statuses.items()}, finishes


def _bind(cur: AsyncClientCursor[TupleRow], query: LiteralString, params: Mapping[str, Any]) -> bytes:
    return cur.mogrify(query, params).encode()


async def _rollback(conn: AsyncConn) -> None:
    try:
        await conn.execute("ROLLBACK")
    except Exception:  # the pool discards a connection it cannot reset
        pass
