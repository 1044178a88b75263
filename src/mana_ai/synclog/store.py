"""Reading and writing sync_changes rows as mana-sync stores them (SPEC §4.1–4.3).

Every function takes a connection that is already inside ``Database.with_user(user_id)``: row-level
security applies, so a caller can only ever see and write its own user's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from psycopg.types.json import Jsonb, set_json_loads

from mana_ai.db.connector import AsyncConn
from mana_ai.db.queries import q
from mana_ai.synclog.actor import origin_of
from mana_ai.synclog.lww import ChangeRow, RecordState, apply_row, write_stamp
from mana_ai.synclog.validate import MAX_ROW_BYTES, prepare_row

RUNNER_CLIENT_ID = "mana-ai-runner"
CLI_CLIENT_ID = "mana-ai-cli"


async def append_change(
    conn: AsyncConn,
    *,
    user_id: str,
    app_id: str,
    table: str,
    record_id: str,
    op: str,
    data: Mapping[str, Any] | None,
    field_meta: Mapping[str, str] | None,
    client_id: str,
    actor: Mapping[str, Any],
) -> str:
    """Append one row; returns its id (``eventId`` on the wire)."""
    cur = await conn.execute(
        q("insert_change"),
        change_params(
            user_id=user_id,
            app_id=app_id,
            table=table,
            record_id=record_id,
            op=op,
            data=data,
            field_meta=field_meta,
            client_id=client_id,
            actor=actor,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row["id"])


def change_params(
    *,
    user_id: str,
    app_id: str,
    table: str,
    record_id: str,
    op: str,
    data: Mapping[str, Any] | None,
    field_meta: Mapping[str, str] | None,
    client_id: str,
    actor: Mapping[str, Any],
) -> dict[str, Any]:
    """The parameters of ``insert_change`` for one row (also for writers that batch their statements)."""
    return {
        "app_id": app_id,
        "table": table,
        "record_id": record_id,
        "user_id": user_id,
        "op": op,
        "data": Jsonb(dict(data)) if data is not None else None,
        "field_meta": Jsonb(dict(field_meta or {})),
        "client_id": client_id,
        "actor": Jsonb(dict(actor)),
        "origin": origin_of(dict(actor)),
        # mana-sync fills the space_id column from the change's spaceId (data.spaceId for an insert).
        "space_id": _space_of(data),
    }


def _space_of(data: Mapping[str, Any] | None) -> str | None:
    space = data.get("spaceId") if data is not None else None
    return space if isinstance(space, str) and space else None


async def insert_record(
    conn: AsyncConn,
    *,
    user_id: str,
    app_id: str,
    table: str,
    record: Mapping[str, Any],
    client_id: str,
    actor: Mapping[str, Any],
) -> str:
    """An ``insert`` row carrying the full record (field_meta ``{}``, as mana-sync stores inserts)."""
    return await append_change(
        conn,
        user_id=user_id,
        app_id=app_id,
        table=table,
        record_id=str(record["id"]),
        op="insert",
        data=record,
        field_meta={},
        client_id=client_id,
        actor=actor,
    )


async def update_fields(
    conn: AsyncConn,
    *,
    user_id: str,
    app_id: str,
    table: str,
    record_id: str,
    fields: Mapping[str, Any],
    at: str,
    client_id: str,
    actor: Mapping[str, Any],
) -> str:
    """A field-level ``update`` row: every field stamped with ``at`` in field_meta."""
    return await append_change(
        conn,
        user_id=user_id,
        app_id=app_id,
        table=table,
        record_id=record_id,
        op="update",
        data=fields,
        field_meta={name: at for name in fields},
        client_id=client_id,
        actor=actor,
    )


async def update_iterations(
    conn: AsyncConn,
    *,
    user_id: str,
    mission_id: str,
    state: RecordState,
    iterations: Any,
    now_iso: str,
    client_id: str,
    actor: Mapping[str, Any],
) -> str:
    """A mission's whole ``iterations`` field rewritten, stamped after every stamp the record has for it."""
    return await update_fields(
        conn,
        user_id=user_id,
        app_id="ai",
        table="aiMissions",
        record_id=mission_id,
        fields={"iterations": iterations},
        at=write_stamp(state, ("iterations",), now_iso),
        client_id=client_id,
        actor=actor,
    )


async def replay_record(
    conn: AsyncConn,
    *,
    user_id: str,
    app_id: str,
    table: str,
    record_id: str,
    on_data: Callable[[Mapping[str, Any]], None] | None = None,
) -> RecordState | None:
    """The record as the log says now: every row of it merged with the LWW function.

    Malformed rows are skipped as the snapshot refresh skips them, so both agree. ``on_data`` sees the data
    of every row merged, in log order.
    """
    cur = conn.cursor()
    set_json_loads(loads_or_unreadable, cur)
    await cur.execute(
        q("record_rows"), {"table": table, "record_id": record_id, "app_id": app_id, "user_id": user_id}
    )
    rows = await cur.fetchall()
    return fold_record_rows(
        table, record_id, ((r["op"], r["data"], r["field_meta"], r["created_iso"]) for r in rows), on_data
    )


def fold_record_rows(
    table: str,
    record_id: str,
    rows: Iterable[tuple[Any, Any, Any, str]],
    on_data: Callable[[Mapping[str, Any]], None] | None = None,
) -> RecordState | None:
    """Merge one record's rows ``(op, data, field_meta, created_iso)``, in log order, with the LWW function.

    Malformed rows are skipped as the snapshot refresh skips them, so both agree.
    """
    state: RecordState | None = None
    for op, data, field_meta, created_iso in rows:
        # The same check and timestamp normalisation as the refresh, in one pass.
        prepared = prepare_row(table, op, data, field_meta)
        if isinstance(prepared, str):
            continue
        clean, stamps = prepared
        change = ChangeRow(record_id=record_id, op=op, data=clean, field_meta=stamps, created_at=created_iso)
        try:
            state = apply_row(state, change)
        except Exception:  # as the refresh skips a row the merge cannot handle ("merge failed")
            continue
        if on_data is not None and isinstance(clean, Mapping):
            on_data(clean)
    return state


class _Unreadable:
    """A jsonb value orjson cannot load (a number beyond double range, nesting deeper than it parses)."""


_UNREADABLE = _Unreadable()


def loads_or_unreadable(data: bytes | str) -> Any:
    # Postgres accepts such values, so one of them in a record's log must not fail every replay of it:
    # not being a JSON object, it makes prepare_row refuse its row, as the refresh skips it.
    if len(data) > MAX_ROW_BYTES:  # as the refresh skips it, unparsed
        return _UNREADABLE
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _UNREADABLE
