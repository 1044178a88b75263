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

import asyncio
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
from mana_ai.synclog.validate import (
    MAX_ROW_BYTES,
    SHORT_ROW_CHARS,
    prepare_row,
    shallow_text,
    too_long,
)

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


CHUNK_ROWS = 5_000
"""Feed rows read and folded per step. A bootstrap of hundreds of thousands of rows is read through a
server-side cursor and folded chunk by chunk, releasing the event loop between chunks, instead of one fetch
and one fold holding the loop for seconds and every row in memory (one user's 200k-row batch once did)."""
FOLD_SLICE = 500
"""Rows folded between two turns of the event loop (about a millisecond): the fetch of the next chunk
and any request waiting run in between."""
FLUSH_RECORDS = 20_000
"""Merged records kept in memory before they are written out; later rows of a written record reload it."""


async def refresh_snapshots(
    db: Database,
    *,
    chunk_rows: int = CHUNK_ROWS,
    flush_records: int = FLUSH_RECORDS,
    fold_slice: int = FOLD_SLICE,
) -> RefreshStats:
    """Fold every committed feed row not yet applied into the snapshot tables.

    A row that cannot be used (malformed, too large, nested too deep) and a record whose snapshot cannot be
    stored are skipped, counted and logged with their ids; the cursor advances past them either way, so
    one user's bad row never stops anyone else's refresh.
    """
    stats = RefreshStats()
    users: set[str] = set()
    async with db.transaction() as conn:
        await conn.execute(q("refresh_lock"))
        window = await _window(conn)
        old, new = window["old_horizon"], window["new_horizon"]
        folds = {
            "aiMissions": _TableFold(conn, "aiMissions", stats.missions, users),
            "agents": _TableFold(conn, "agents", stats.agents, users),
        }
        # Tuple rows: on a bootstrap of hundreds of thousands of rows, building a dict per row is a
        # measurable share of the whole refresh.
        feed = conn.cursor("mana_ai_feed_window", row_factory=tuple_row)
        await feed.execute(q("feed_window"), {"old": old, "new": new})
        with _gc_paused():
            rows: list[FeedRow] = await feed.fetchmany(chunk_rows)
            while rows:
                by_table = _split_by_table(rows)
                del rows
                for table, table_rows in by_table.items():
                    await folds[table].load(table_rows)
                # PostgreSQL reads the next chunk while this one is folded: the fold yields every
                # FOLD_SLICE rows, so the fetch keeps draining the socket instead of stalling the server.
                following = asyncio.ensure_future(feed.fetchmany(chunk_rows))
                try:
                    for table, table_rows in by_table.items():
                        await folds[table].fold(table_rows, fold_slice)
                    rows = await following
                except BaseException:
                    following.cancel()
                    # Retrieved, so a fetch that failed on its own is not reported as never retrieved.
                    await asyncio.gather(following, return_exceptions=True)
                    raise
                for table in by_table:
                    if len(folds[table].last_applied) >= flush_records:
                        await folds[table].flush()
        await feed.close()
        for fold in folds.values():
            await fold.flush()
        stats.users_processed = len(users)
        changed = folds["aiMissions"].counted
        cur = await conn.execute(
            q("restore_checks"), {"users": [k[0] for k in changed], "ids": [k[1] for k in changed]}
        )
        pending = {(r["user_id"], r["mission_id"]): r["queued_at"] for r in await cur.fetchall()}
        await conn.execute(q("advance_refresh_cursor"), {"horizon": new})
    if pending:
        await _restore(db, pending, stats)
    if stats.rows_applied or stats.missions.rows_skipped or stats.agents.rows_skipped:
        logger.info("snapshots refreshed", extra={"action": "snapshots.refresh", **stats.as_dict()})
    return stats


def _split_by_table(rows: list[FeedRow]) -> dict[str, list[FeedRow]]:
    by_table: dict[str, list[FeedRow]] = {table: [] for table in TABLES}
    for row in rows:
        bucket = by_table.get(row[0])
        if bucket is not None:
            bucket.append(row)
    return {table: table_rows for table, table_rows in by_table.items() if table_rows}


async def _restore(db: Database, pending: dict[Key, str], stats: RefreshStats) -> None:
    # Never lets a restore problem fail the refresh: what is still queued is checked by the next refresh.
    try:
        restored = await restore_lost(db, pending)
    except Exception:
        logger.warning(
            "restoring lost iterations failed", exc_info=True, extra={"action": "snapshots.restore_failed"}
        )
        return
    stats.restored_iterations, stats.restored_decisions = restored.iterations, restored.decisions


async def _window(conn: Any) -> Any:
    cur = await conn.execute(q("refresh_window"))
    window = await cur.fetchone()
    if window is None:
        # The bookkeeping was wiped (tables truncated by hand): rebuild it from the log instead of failing
        # every tick until someone intervenes.
        await conn.execute(q("restore_refresh_cursor"))
        logger.warning(
            "refresh cursor was missing: rebuilding the snapshots from the sync log",
            extra={"action": "snapshots.rebuild"},
        )
        cur = await conn.execute(q("refresh_window"))
        window = await cur.fetchone()
        if window is None:
            raise RuntimeError("mana_ai.refresh_cursor could not be restored: run `mana-ai migrate`")
    return window


FeedRow = tuple[Any, ...]
"""(table_name, user_id, record_id, op, data, field_meta, seq, created_iso), as ``feed_window`` selects."""


class _TableFold:
    """The merged records of one table during one refresh: loaded on first touch, written on flush."""

    def __init__(self, conn: Any, table: str, stats: TableStats, users: set[str]) -> None:
        self.conn = conn
        self.table = table
        self.stats = stats
        self.users = users
        self.load_query, self.upsert_query = TABLES[table]
        self.states: dict[Key, RecordState] = {}
        self.loaded: set[Key] = set()
        self.existed: set[Key] = set()
        self.last_applied: dict[Key, str] = {}
        self.counted: set[Key] = set()
        """Records already counted as new or updated (a record written by two flushes counts once)."""

    async def load(self, rows: list[FeedRow]) -> None:
        """Read the snapshots of the records ``rows`` touch that are not in memory yet."""
        keys = [k for k in dict.fromkeys((row[1], row[2]) for row in rows) if k not in self.loaded]
        if keys:
            cur = await self.conn.execute(
                q(self.load_query), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]}
            )
            for s in await cur.fetchall():
                key = (s["user_id"], s["record_id"])
                self.states[key] = RecordState.from_snapshot(s["record"], deleted=s["deleted"])
                if key not in self.counted:
                    self.existed.add(key)
            self.loaded.update(keys)

    async def fold(self, rows: list[FeedRow], slice_rows: int) -> None:
        """Merge ``rows`` (their records loaded) in slices, letting the event loop run between them."""
        for start in range(0, len(rows), slice_rows):
            _fold(self.table, rows[start : start + slice_rows], self.states, self.last_applied, self.stats)
            await asyncio.sleep(0)

    async def flush(self) -> None:
        """Write every changed record (one upsert), then forget them all: later rows reload from the table."""
        parts: list[bytes] = []
        for key, applied_at in self.last_applied.items():
            state = self.states[key]
            try:
                # One record at a time: a record that cannot be serialised is skipped alone.
                parts.append(
                    orjson.dumps(
                        {
                            "user_id": key[0],
                            "record_id": key[1],
                            "record": state.to_snapshot(),
                            "last_applied_at": applied_at,
                            "deleted": state.deleted,
                        }
                    )
                )
            except (TypeError, orjson.JSONEncodeError) as exc:
                self.stats.rows_skipped += 1
                _warn_skipped(self.table, key[0], key[1], None, f"snapshot not storable: {exc}")
                continue
            self.users.add(key[0])
            if key not in self.counted:
                self.counted.add(key)
                if key in self.existed:
                    self.stats.updated_snapshots += 1
                else:
                    self.stats.new_snapshots += 1
        if parts:
            await self.conn.execute(q(self.upsert_query), {"rows": (b"[" + b",".join(parts) + b"]").decode()})
        self.states.clear()
        self.loaded.clear()
        self.last_applied.clear()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while hundreds of thousands of small acyclic dicts are built: its
    generation scans would otherwise cost a sizeable share of a bootstrap refresh. Nothing built here forms
    reference cycles. The pause spans the fold's yields too, so cyclic garbage of other tasks (requests,
    planning) waits until the refresh ends: memory for a few seconds, against collections that would
    rescan every record state built so far."""
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
        prepared: Any
        # The length first: the call only for the rare long text (a function call per row is measurable).
        if data_text is not None and len(data_text) > SHORT_ROW_CHARS and too_long(data_text):
            prepared = f"data is longer than {MAX_ROW_BYTES} bytes"
        elif meta_text is not None and len(meta_text) > SHORT_ROW_CHARS and too_long(meta_text):
            prepared = f"field_meta is longer than {MAX_ROW_BYTES} bytes"
        elif created_iso is None:
            prepared = "created_at is infinite"
        else:
            try:
                data = loads(data_text) if data_text is not None else None
                field_meta = loads(meta_text) if meta_text is not None else None
            except orjson.JSONDecodeError:
                data, field_meta = None, "unparseable"
            shallow = data_text is None or shallow_text(data_text)
            prepared = prepare_row(table, op, data, field_meta, shallow=shallow)
        if isinstance(prepared, str):
            stats.rows_skipped += 1
            _warn_skipped(table, user_id, record_id, seq, prepared)
            continue
        key = (user_id, record_id)
        try:
            states[key] = apply_change(get_state(key), record_id, op, prepared[0], prepared[1], created_iso)
        except Exception as exc:  # a record the merge cannot handle is skipped alone, never the batch
            stats.rows_skipped += 1
            _warn_skipped(table, user_id, record_id, seq, f"merge failed: {exc.__class__.__name__}")
            continue
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
