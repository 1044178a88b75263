"""The user's own edits from the workbench (agents, missions, goals): sync-log rows as the web app writes them.

An insert carries the full record; an edit is a field-level update of only the changed fields, decided on the
record as the log says now (replayed under the record's advisory lock, like the runner's write-back and the
CLI), stamped strictly after the fields' current stamps. Actor ``user``, client ``mana-ai-workbench``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.lww import write_stamp
from mana_ai.synclog.store import insert_record, replay_record, update_fields
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.context import WORKBENCH_CLIENT_ID

FieldsFor = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
"""Given the record's current state: the fields to write, or ``None`` for nothing."""


class RecordMissing(LookupError):
    """The record does not exist or is deleted."""


async def insert_user_record(
    db: Database, user_id: str, app_id: str, table: str, record: Mapping[str, Any]
) -> None:
    async with db.with_user(user_id) as conn:
        await insert_record(
            conn,
            user_id=user_id,
            app_id=app_id,
            table=table,
            record=record,
            client_id=WORKBENCH_CLIENT_ID,
            actor=user_actor(user_id),
        )


async def update_user_record(
    db: Database, user_id: str, app_id: str, table: str, record_id: str, fields_for: FieldsFor
) -> dict[str, Any]:
    """Write the changed fields ``fields_for`` derives from the current record; returns what was written.

    Fields whose value would not change are dropped, so an unchanged form writes nothing.

    Raises:
        RecordMissing: no live record.
    """
    async with db.with_user(user_id) as conn:
        await conn.execute(q("lock_record"), {"user_id": user_id, "record_id": record_id})
        state = await replay_record(conn, user_id=user_id, app_id=app_id, table=table, record_id=record_id)
        if state is None or not state.is_live():
            raise RecordMissing(table + " " + record_id + " not found")
        wanted = fields_for(state.record) or {}
        fields = {k: v for k, v in wanted.items() if state.record.get(k, _ABSENT) != v}
        if fields:
            await update_fields(
                conn,
                user_id=user_id,
                app_id=app_id,
                table=table,
                record_id=record_id,
                fields=fields,
                at=write_stamp(state, fields, to_js_iso(utcnow())),
                client_id=WORKBENCH_CLIENT_ID,
                actor=user_actor(user_id),
            )
    return fields


_ABSENT = object()
