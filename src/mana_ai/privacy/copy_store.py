"""Sync-log reads and writes of the grant client: the mission, its agent, the granted source records, and
the mission's ``grant`` field (the user's consent, as the web app's ``setMissionGrant`` writes it).

Every function takes a connection inside ``Database.with_user(user_id)`` (row-level security applies) and
writes as the user (actor ``user``, client ``mana-ai-cli``), as the web app would. The sealed copies are not
here: they live in mana-ai's own tables (:mod:`mana_ai.privacy.grant_store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mana_ai.db.connector import AsyncConn
from mana_ai.db.queries import q
from mana_ai.errors import ManaAiError
from mana_ai.privacy.refs import RecordRef
from mana_ai.privacy.reseal import AGENT_TABLE, MISSION_TABLE
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.lww import RecordState
from mana_ai.synclog.store import CLI_CLIENT_ID, replay_record, update_fields

GRANT_APP_ID: Final = "ai"
"""Sync app of missions and agents."""


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


async def live_agent(conn: AsyncConn, user_id: str, agent_id: str) -> RecordState | None:
    """The mission's agent, ``None`` when it does not exist or is deleted."""
    state = await replay_record(
        conn, user_id=user_id, app_id=GRANT_APP_ID, table=AGENT_TABLE, record_id=agent_id
    )
    return state if state is not None and state.is_live() else None


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
