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

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.synclog.lww import ChangeRow, RecordState, apply_row
from mana_ai.synclog.validate import check_row, clean_data, clean_field_meta

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
    async with db.transaction() as conn:
        await conn.execute(q("refresh_lock"))
        cur = await conn.execute(q("refresh_window"))
        window = await cur.fetchone()
        if window is None:
            raise RuntimeError("mana_ai.refresh_cursor has no 'snapshots' row: run `mana-ai migrate`")
        old, new = window["old_horizon"], window["new_horizon"]
        cur = await conn.execute(q("feed_window"), {"old": old, "new": new})
        rows = await cur.fetchall()
        if rows:
            by_table: dict[str, list[dict[str, Any]]] = {"aiMissions": [], "agents": []}
            for row in rows:
                bucket = by_table.get(row["table_name"])
                if bucket is not None:
                    bucket.append(row)
            users: set[str] = set()
            for table, table_rows in by_table.items():
                if table_rows:
                    table_stats = stats.missions if table == "aiMissions" else stats.agents
                    await _refresh_table(conn, table, table_rows, table_stats, users)
            stats.users_processed = len(users)
        await conn.execute(q("advance_refresh_cursor"), {"horizon": new})
    if stats.rows_applied or stats.missions.rows_skipped or stats.agents.rows_skipped:
        logger.info("snapshots refreshed", extra={"action": "snapshots.refresh", **stats.as_dict()})
    return stats


async def _refresh_table(
    conn: Any, table: str, rows: list[dict[str, Any]], stats: TableStats, users: set[str]
) -> None:
    load_query, upsert_query = TABLES[table]
    keys: dict[Key, None] = {}
    for row in rows:
        keys[(row["user_id"], row["record_id"])] = None
    cur = await conn.execute(q(load_query), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]})
    states: dict[Key, RecordState] = {
        (s["user_id"], s["record_id"]): RecordState.from_snapshot(s["record"], deleted=s["deleted"])
        for s in await cur.fetchall()
    }
    existed = set(states)
    last_applied: dict[Key, str] = {}
    for row in rows:
        key = (row["user_id"], row["record_id"])
        change = _to_change(table, row)
        if change is None:
            stats.rows_skipped += 1
            continue
        states[key] = apply_row(states.get(key), change)
        last_applied[key] = change.created_at
        stats.rows_applied += 1
    if not last_applied:
        return
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


def _to_change(table: str, row: Mapping[str, Any]) -> ChangeRow | None:
    problem = check_row(table, row["op"], row["data"], row["field_meta"])
    if problem is not None:
        logger.warning(
            "skipping malformed sync row",
            extra={
                "action": "snapshots.row_skipped",
                "table": table,
                "user_id": row["user_id"],
                "record_id": row["record_id"],
                "seq": row.get("seq"),
                "reason": problem,
            },
        )
        return None
    return ChangeRow(
        record_id=row["record_id"],
        op=row["op"],
        data=clean_data(row["data"]),
        field_meta=clean_field_meta(row["field_meta"]),
        created_at=row["created_iso"],
    )


async def prune_feed(db: Database) -> int:
    """Delete feed rows that every snapshot already contains."""
    return await db.execute(q("prune_feed"))
