"""Incremental snapshot refresh: fold new ai/aiMissions and ai/agents rows into the snapshot tables.

One refresh is one transaction of a fixed number of statements, whatever the number of records:

1. take the cluster-wide refresh lock (so two processes never fold the same rows);
2. read the cursor (a transaction-id horizon) and the new horizon;
3. read the feed rows between the two, and the current snapshots of the records they touch;
4. merge in Python with the one LWW function (:mod:`mana_ai.synclog.lww`);
5. write every changed snapshot with one upsert per table and advance the cursor.

Its work is proportional to the number of new rows, not to the size of the history (W9), and a row that
commits late is still applied (W10): see ``refresh_window`` in ``queries.sql``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg.rows import tuple_row

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.synclog.lww import RecordState, apply_change
from mana_ai.synclog.restore import restore_lost
from mana_ai.synclog.validate import prepare_row

logger = logging.getLogger(__name__)

TABLES = {
    "aiMissions": ("mission_snapshots_for_keys", "upsert_mission_snapshots"),
    "agents": ("agent_snapshots_for_keys", "upsert_agent_snapshots"),
}


@dataclass
class TableStats:
    rows_applied: int = 0
    new_snapshots: int = 0
    updated_snapshots: int = 0
    rows_skipped: int = 0


@dataclass
class RefreshStats:
    """What one refresh did; the mission numbers feed the original's snapshot metrics."""

    missions: TableStats = field(default_factory=TableStats)
    agents: TableStats = field(default_factory=TableStats)
    users_processed: int = 0
    restored_iterations: int = 0
    """Server iterations a device edit had dropped, written back after the refresh (issue 12)."""
    restored_decisions: int = 0
    """Workbench decisions a device edit had reopened, written back after the refresh."""

    @property
    def rows_applied(self) -> int:
        return self.missions.rows_applied + self.agents.rows_applied

    def as_dict(self) -> dict[str, Any]:
        return {
            "usersProcessed": self.users_processed,
            "newSnapshots": self.missions.new_snapshots,
            "updatedSnapshots": self.missions.updated_snapshots,
            "rowsApplied": self.missions.rows_applied,
            "agentRowsApplied": self.agents.rows_applied,
            "rowsSkipped": self.missions.rows_skipped + self.agents.rows_skipped,
        }


Key = tuple[str, str]


async def refresh_snapshots(db: Database) -> RefreshStats:
    """Fold every committed feed row not yet applied into the snapshot tables."""
    stats = RefreshStats()
    changed: dict[Key, RecordState] = {}
    async with db.transaction() as conn:
        await conn.execute(q("refresh_lock"))
        cur = await conn.execute(q("refresh_window"))
        window = await cur.fetchone()
        if window is None:
            raise RuntimeError("mana_ai.refresh_cursor has no 'snapshots' row: run `mana-ai migrate`")
        old, new = window["old_horizon"], window["new_horizon"]
        # Tuple rows: on a bootstrap of hundreds of thousands of rows, building a dict per row is a
        # measurable share of the whole refresh.
        tuples = conn.cursor(row_factory=tuple_row)
        await tuples.execute(q("feed_window"), {"old": old, "new": new})
        with _gc_paused():
            rows: list[FeedRow] = await tuples.fetchall()
        if rows:
            by_table: dict[str, list[FeedRow]] = {"aiMissions": [], "agents": []}
            for row in rows:
                bucket = by_table.get(row[0])
                if bucket is not None:
                    bucket.append(row)
            users: set[str] = set()
            for table, table_rows in by_table.items():
                if table_rows:
                    table_stats = stats.missions if table == "aiMissions" else stats.agents
                    states = await _refresh_table(conn, table, table_rows, table_stats, users)
                    if table == "aiMissions":
                        changed = states
            stats.users_processed = len(users)
        await conn.execute(q("advance_refresh_cursor"), {"horizon": new})
    if changed:
        await _restore(db, changed, stats)
    if stats.rows_applied or stats.missions.rows_skipped or stats.agents.rows_skipped:
        logger.info("snapshots refreshed", extra={"action": "snapshots.refresh", **stats.as_dict()})
    return stats


async def _restore(db: Database, changed: dict[Key, RecordState], stats: RefreshStats) -> None:
    # Never lets a restore problem fail the refresh: the next refresh of the mission tries again.
    try:
        restored = await restore_lost(db, changed)
    except Exception:
        logger.warning(
            "restoring lost iterations failed", exc_info=True, extra={"action": "snapshots.restore_failed"}
        )
        return
    stats.restored_iterations, stats.restored_decisions = restored.iterations, restored.decisions


FeedRow = tuple[Any, ...]
"""(table_name, user_id, record_id, op, data, field_meta, seq, created_iso), as ``feed_window`` selects."""


async def _refresh_table(
    conn: Any, table: str, rows: list[FeedRow], stats: TableStats, users: set[str]
) -> dict[Key, RecordState]:
    """Fold ``rows`` into the table's snapshots; returns the states of the records that changed."""
    load_query, upsert_query = TABLES[table]
    keys: dict[Key, None] = dict.fromkeys((row[1], row[2]) for row in rows)
    cur = await conn.execute(q(load_query), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]})
    states: dict[Key, RecordState] = {
        (s["user_id"], s["record_id"]): RecordState.from_snapshot(s["record"], deleted=s["deleted"])
        for s in await cur.fetchall()
    }
    existed = set(states)
    last_applied: dict[Key, str] = {}
    with _gc_paused():
        _fold(table, rows, states, last_applied, stats)
    if not last_applied:
        return {}
    payload = []
    for key, applied_at in last_applied.items():
        state = states[key]
        payload.append(
            {
                "user_id": key[0],
                "record_id": key[1],
                "record": state.to_snapshot(),
                "last_applied_at": applied_at,
                "deleted": state.deleted,
            }
        )
        users.add(key[0])
        if key in existed:
            stats.updated_snapshots += 1
        else:
            stats.new_snapshots += 1
    await conn.execute(q(upsert_query), {"rows": orjson.dumps(payload).decode()})
    return {key: states[key] for key in last_applied}


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while hundreds of thousands of small acyclic dicts are built: its
    generation scans would otherwise cost a sizeable share of a bootstrap refresh. Nothing built here forms
    reference cycles, so pausing it frees nothing late."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fold(
    table: str,
    rows: list[FeedRow],
    states: dict[Key, RecordState],
    last_applied: dict[Key, str],
    stats: TableStats,
) -> None:
    get_state = states.get
    loads = orjson.loads
    for _table, user_id, record_id, op, data_text, meta_text, seq, created_iso in rows:
        try:
            data = loads(data_text) if data_text is not None else None
            field_meta = loads(meta_text) if meta_text is not None else None
        except orjson.JSONDecodeError:
            data, field_meta = None, "unparseable"
        prepared = (
            prepare_row(table, op, data, field_meta) if created_iso is not None else "created_at is infinite"
        )
        if isinstance(prepared, str):
            stats.rows_skipped += 1
            _warn_skipped(table, user_id, record_id, seq, prepared)
            continue
        key = (user_id, record_id)
        states[key] = apply_change(get_state(key), record_id, op, prepared[0], prepared[1], created_iso)
        if created_iso > last_applied.get(key, ""):
            last_applied[key] = created_iso
        stats.rows_applied += 1


def _warn_skipped(table: str, user_id: str, record_id: str, seq: Any, reason: str) -> None:
    logger.warning(
        "skipping malformed sync row",
        extra={
            "action": "snapshots.row_skipped",
            "table": table,
            "user_id": user_id,
            "record_id": record_id,
            "seq": seq,
            "reason": reason,
        },
    )


async def prune_feed(db: Database) -> int:
    """Delete feed rows that every snapshot already contains."""
    return await db.execute(q("prune_feed"))
