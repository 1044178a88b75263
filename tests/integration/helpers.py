"""Small helpers for integration tests: write sync rows the way mana-sync stores them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.store import append_change
from mana_ai.timefmt import to_js_iso, utcnow


async def put_row(
    db: Database,
    user_id: str,
    table: str,
    record_id: str,
    op: str,
    data: dict[str, Any] | None,
    field_meta: dict[str, str] | None = None,
    *,
    app_id: str = "ai",
) -> str:
    """Append one row as the user (RLS applies); returns the row id."""
    async with db.with_user(user_id) as conn:
        return await append_change(
            conn,
            user_id=user_id,
            app_id=app_id,
            table=table,
            record_id=record_id,
            op=op,
            data=data,
            field_meta=field_meta or {},
            client_id="test-client",
            actor=user_actor(user_id),
        )


async def backdate(admin_db: Database, change_id: str, created_at: str) -> None:
    """Give a row an old created_at, as a client clock or a long transaction would (needs the admin role)."""
    await admin_db.execute(
        "UPDATE public.sync_changes SET created_at = %s::timestamptz WHERE id = %s", (created_at, change_id)
    )
    await admin_db.execute(
        "UPDATE mana_ai.sync_feed SET created_at = %s::timestamptz WHERE change_id = %s",
        (created_at, change_id),
    )


def mission(mission_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": mission_id,
        "title": f"Mission {mission_id}",
        "objective": "Plan my week",
        "conceptMarkdown": "",
        "state": "active",
        "cadence": {"kind": "interval", "everyMinutes": 60},
        "inputs": [],
        "iterations": [],
        # Due a moment ago: a run found much later than its due time is skipped as missed (issue 15).
        "nextRunAt": to_js_iso(utcnow() - timedelta(seconds=1)),
    }
    base.update(fields)
    return base
