"""Sync-log reads and writes of the grant client: missions, source records and re-sealed copies.

Every function takes a connection inside ``Database.with_user(user_id)`` (row-level security applies) and
writes as the user (actor ``user``, client ``mana-ai-cli``), as the web app would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mana_ai.db.connector import AsyncConn
from mana_ai.db.queries import q
from mana_ai.errors import ManaAiError
from mana_ai.privacy.refs import RecordRef
from mana_ai.privacy.reseal import GRANT_APP_ID, GRANT_RECORDS_TABLE, MISSION_TABLE, copies_prefix
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.lww import RecordState
from mana_ai.synclog.store import CLI_CLIENT_ID, append_change, insert_record, replay_record, update_fields


class GrantTargetMissing(ManaAiError):
    """The mission or a granted record does not exist (or is deleted)."""


async def lock_mission(conn: AsyncConn, user_id: str, mission_id: str) -> None:
    """Serialise with every other writer of this mission (grant commands, the runner's write-back)."""
    await conn.execute(q("lock_record"), {"user_id": user_id, "record_id": mission_id})


async def mission_state(conn: AsyncConn, user_id: str, mission_id: str) -> RecordState | None:
    return await replay_record(
        conn, user_id=user_id, app_id=GRANT_APP_ID, table=MISSION_TABLE, record_id=mission_id
    )


async def live_mission(conn: AsyncConn, user_id: str, mission_id: str) -> RecordState:
    """The mission as the log has it now.

    Raises:
        GrantTargetMissing: it does not exist or is deleted.
    """
    state = await mission_state(conn, user_id, mission_id)
    if state is None or not state.is_live():
        raise GrantTargetMissing("mission " + repr(mission_id) + " not found for user " + repr(user_id))
    return state


async def live_source(conn: AsyncConn, user_id: str, ref: RecordRef) -> RecordState | None:
    """A granted source record, ``None`` when it does not exist or is deleted."""
    state = await replay_record(
        conn, user_id=user_id, app_id=ref.app_id, table=ref.table, record_id=ref.record_id
    )
    return state if state is not None and state.is_live() else None


async def copy_state(conn: AsyncConn, user_id: str, record_id: str) -> RecordState | None:
    return await replay_record(
        conn, user_id=user_id, app_id=GRANT_APP_ID, table=GRANT_RECORDS_TABLE, record_id=record_id
    )


async def list_copies(conn: AsyncConn, user_id: str, mission_id: str) -> list[tuple[str, bool]]:
    """``(record id, deleted)`` of every copy of every grant of the mission."""
    cur = await conn.execute(
        q("grant_copies_of_mission"),
        {
            "user_id": user_id,
            "app_id": GRANT_APP_ID,
            "table": GRANT_RECORDS_TABLE,
            "prefix": copies_prefix(mission_id),
        },
    )
    return [(row["record_id"], bool(row["deleted"])) for row in await cur.fetchall()]


async def insert_copy(conn: AsyncConn, user_id: str, copy: Mapping[str, Any]) -> None:
    await insert_record(
        conn,
        user_id=user_id,
        app_id=GRANT_APP_ID,
        table=GRANT_RECORDS_TABLE,
        record=copy,
        client_id=CLI_CLIENT_ID,
        actor=user_actor(user_id),
    )


async def update_copy(conn: AsyncConn, user_id: str, copy: Mapping[str, Any], at: str) -> None:
    fields = {k: v for k, v in copy.items() if k != "id"}
    await update_fields(
        conn,
        user_id=user_id,
        app_id=GRANT_APP_ID,
        table=GRANT_RECORDS_TABLE,
        record_id=str(copy["id"]),
        fields=fields,
        at=at,
        client_id=CLI_CLIENT_ID,
        actor=user_actor(user_id),
    )


async def delete_copy(conn: AsyncConn, user_id: str, record_id: str, at: str) -> None:
    """An ``op = delete`` row: the copy is gone for good (a tombstone)."""
    await append_change(
        conn,
        user_id=user_id,
        app_id=GRANT_APP_ID,
        table=GRANT_RECORDS_TABLE,
        record_id=record_id,
        op="delete",
        data={"deletedAt": at},
        field_meta={"deletedAt": at},
        client_id=CLI_CLIENT_ID,
        actor=user_actor(user_id),
    )


async def delete_copies(
    conn: AsyncConn, user_id: str, mission_id: str, *, keep_prefix: str | None, at: str
) -> int:
    """Delete every live copy of the mission except those whose id starts with ``keep_prefix``."""
    removed = 0
    for record_id, deleted in await list_copies(conn, user_id, mission_id):
        if deleted or (keep_prefix is not None and record_id.startswith(keep_prefix)):
            continue
        await delete_copy(conn, user_id, record_id, at)
        removed += 1
    return removed


async def set_mission_grant(
    conn: AsyncConn, user_id: str, mission_id: str, grant: Mapping[str, Any] | None, at: str
) -> None:
    """A field-level update of ``mission.grant`` (``None`` revokes, as the web app does)."""
    await update_fields(
        conn,
        user_id=user_id,
        app_id=GRANT_APP_ID,
        table=MISSION_TABLE,
        record_id=mission_id,
        fields={"grant": dict(grant) if grant is not None else None},
        at=at,
        client_id=CLI_CLIENT_ID,
        actor=user_actor(user_id),
    )
