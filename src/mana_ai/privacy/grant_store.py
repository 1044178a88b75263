"""Where grants and their sealed copies are kept: ``mana_ai.mission_grants`` and ``mission_grant_copies``.

Both tables have FORCE row-level security; every function takes a connection inside
``Database.with_user(user_id)``. Nothing here is in the sync log, so the web app never pulls it (its sync
throws on tables it does not know). Writers: the grant API (``PUT/DELETE /api/v1/me/missions/{id}/grant``)
and the CLI; reader: the runner's privacy steps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from mana_ai.db.connector import AsyncConn
from mana_ai.db.queries import q
from mana_ai.privacy.reseal import SealedCopy


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """A mission's current grant as stored."""

    mission_id: str
    grant_id: str
    grant: Mapping[str, Any]
    """The grant JSON as issued (``wrappedKey``, ``derivation``, ``issuedAt``, ``expiresAt``)."""
    key_box: str | None = field(repr=False)
    """The grant data key sealed under the user's master key (opaque to the server)."""
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "missionId": self.mission_id,
            "grantId": self.grant_id,
            "grant": dict(self.grant),
            "keyBox": self.key_box,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class CopyMeta:
    """A copy without its sealed text."""

    grant_id: str
    table: str
    record_id: str
    source_field_meta: Mapping[str, Any]
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "grantId": self.grant_id,
            "table": self.table,
            "recordId": self.record_id,
            "sourceFieldMeta": dict(self.source_field_meta),
            "updatedAt": self.updated_at.isoformat(),
        }


def _grant(row: Mapping[str, Any]) -> StoredGrant:
    return StoredGrant(
        mission_id=row["mission_id"],
        grant_id=row["grant_id"],
        grant=row["grant_json"],
        key_box=row["key_box"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get_grant(conn: AsyncConn, user_id: str, mission_id: str) -> StoredGrant | None:
    cur = await conn.execute(q("grant_get"), {"user_id": user_id, "mission_id": mission_id})
    row = await cur.fetchone()
    return _grant(row) if row is not None else None


async def list_grants(conn: AsyncConn, user_id: str, *, limit: int = 500) -> list[StoredGrant]:
    cur = await conn.execute(q("grant_list"), {"user_id": user_id, "limit": limit})
    return [_grant(row) for row in await cur.fetchall()]


async def put_grant(
    conn: AsyncConn,
    user_id: str,
    mission_id: str,
    *,
    grant_id: str,
    grant: Mapping[str, Any],
    key_box: str | None,
    expires_at: dt.datetime,
    copies: Iterable[SealedCopy],
) -> None:
    """Store a new grant and its copies; every copy of an earlier grant of the mission is removed."""
    await conn.execute(
        q("grant_upsert"),
        {
            "user_id": user_id,
            "mission_id": mission_id,
            "grant_id": grant_id,
            "grant_json": Jsonb(dict(grant)),
            "key_box": key_box,
            "expires_at": expires_at,
        },
    )
    await conn.execute(q("grant_copies_clear"), {"user_id": user_id, "mission_id": mission_id})
    await put_copies(conn, user_id, mission_id, grant_id=grant_id, copies=copies, removed=())


async def put_copies(
    conn: AsyncConn,
    user_id: str,
    mission_id: str,
    *,
    grant_id: str,
    copies: Iterable[SealedCopy],
    removed: Iterable[tuple[str, str]],
) -> None:
    """Store or replace copies of the current grant; delete the copies of ``removed`` ``(table, id)``.

    Each list is one ``executemany`` (pipelined): a thousand copies cost a few round trips, not a thousand
    while the request holds a pooled connection."""
    keys = {"user_id": user_id, "mission_id": mission_id}
    upserts = [
        {
            **keys,
            "grant_id": grant_id,
            "table": copy.table,
            "record_id": copy.record_id,
            "sealed": copy.sealed,
            "meta": Jsonb(dict(copy.source_field_meta)),
        }
        for copy in copies
    ]
    deletes = [{**keys, "table": table, "record_id": record_id} for table, record_id in removed]
    async with conn.cursor() as cur:
        if upserts:
            await cur.executemany(q("grant_copy_upsert"), upserts)
        if deletes:
            await cur.executemany(q("grant_copy_delete"), deletes)
    await conn.execute(q("grant_touch"), {"user_id": user_id, "mission_id": mission_id})


async def delete_grant(conn: AsyncConn, user_id: str, mission_id: str) -> bool:
    """Remove the grant and all its copies; ``True`` when there was one."""
    cur = await conn.execute(q("grant_delete"), {"user_id": user_id, "mission_id": mission_id})
    return await cur.fetchone() is not None


async def get_copy(
    conn: AsyncConn, user_id: str, mission_id: str, grant_id: str, table: str, record_id: str
) -> SealedCopy | None:
    """The copy of ``<table>:<record_id>`` made for grant ``grant_id``, if any."""
    cur = await conn.execute(
        q("grant_copy_get"),
        {
            "user_id": user_id,
            "mission_id": mission_id,
            "grant_id": grant_id,
            "table": table,
            "record_id": record_id,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    meta = row["source_field_meta"]
    return SealedCopy(
        row["table_name"], row["record_id"], row["sealed"], meta if isinstance(meta, dict) else {}
    )


async def list_copy_meta(conn: AsyncConn, user_id: str, mission_id: str) -> list[CopyMeta]:
    cur = await conn.execute(q("grant_copies_meta"), {"user_id": user_id, "mission_id": mission_id})
    return [
        CopyMeta(
            r["grant_id"], r["table_name"], r["record_id"], r["source_field_meta"] or {}, r["updated_at"]
        )
        for r in await cur.fetchall()
    ]
