"""The decrypt audit (SPEC §4.4, §20): one row per server-side decrypt attempt, readable only by its user.

``mana_ai.decrypt_audit`` has FORCE row-level security, so every write and read runs inside
``Database.with_user(user_id)``, also for the service's own plain role. Writes are best-effort: an audit
failure is logged and counted in the return value, never raised, so it cannot break a mission's planning.
Unlike the original, rows carry the iteration id.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.timefmt import to_js_iso

logger = logging.getLogger(__name__)

AuditStatus = Literal["ok", "failed", "scope-violation"]

DEFAULT_LIMIT: Final = 200
MAX_LIMIT: Final = 1000
SCOPE_VIOLATION_REASON: Final = "record-not-in-grant-allowlist"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One decrypt attempt to record."""

    user_id: str
    mission_id: str
    iteration_id: str | None
    table: str
    record_id: str
    status: AuditStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored audit row, as the audit endpoint and ``mana-ai audit`` show it."""

    id: str
    mission_id: str
    iteration_id: str | None
    table_name: str
    record_id: str
    status: str
    reason: str | None
    ts: dt.datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditRow:
        return cls(
            id=str(row["id"]),
            mission_id=row["mission_id"],
            iteration_id=row["iteration_id"],
            table_name=row["table_name"],
            record_id=row["record_id"],
            status=row["status"],
            reason=row["reason"],
            ts=row["ts"],
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of SPEC §20 (camelCase, ``ts`` as a JS ISO string)."""
        return {
            "id": self.id,
            "missionId": self.mission_id,
            "iterationId": self.iteration_id,
            "tableName": self.table_name,
            "recordId": self.record_id,
            "status": self.status,
            "reason": self.reason,
            "ts": to_js_iso(self.ts),
        }


class AuditLog:
    """Writes audit rows for the runner's decrypts, each in its own user-scoped transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, entry: AuditEntry) -> bool:
        """Append one row; returns False (after logging) when the write failed. Never raises."""
        try:
            async with self.db.with_user(entry.user_id) as conn:
                await conn.execute(
                    q("insert_audit"),
                    {
                        "user_id": entry.user_id,
                        "mission_id": entry.mission_id,
                        "iteration_id": entry.iteration_id,
                        "table": entry.table,
                        "record_id": entry.record_id,
                        "status": entry.status,
                        "reason": entry.reason,
                    },
                )
        except Exception:  # best-effort by contract: the audit must never break planning
            logger.warning(
                "decrypt audit write failed",
                exc_info=True,
                extra={
                    "action": "privacy.audit_write_failed",
                    "mission_id": entry.mission_id,
                    "table": entry.table,
                    "status": entry.status,
                },
            )
            return False
        return True


_PARSE_INT: Final = re.compile(r"[\s\ufeff]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|([0-9]+))")


def _parse_int(text: str) -> int | None:
    """JavaScript's ``parseInt(text)``: the leading (decimal or ``0x``) integer, the rest ignored; ``None``
    for NaN. Python's ``int`` differs: it refuses ``"2.5"`` or ``"10rows"`` and reads ``"1_0"`` as 10."""
    match = _PARSE_INT.match(text)
    if match is None:
        return None
    sign, hex_digits, digits = match.groups()
    if len(hex_digits or digits) > 1000:
        return None  # past Number.MAX_VALUE: Infinity, not finite (int() would refuse it anyway)
    number = int(hex_digits, 16) if hex_digits else int(digits)
    if number > 1.7976931348623157e308:
        return None
    return -number if sign == "-" else number


def clamp_limit(value: object, default: int = DEFAULT_LIMIT) -> int:
    """The row limit as the original parsed it (``parseInt``): not a number → ``default``; then clamped to
    [1, 1000]."""
    number = _parse_int(str(value)) if value is not None else default
    return max(1, min(MAX_LIMIT, default if number is None else number))


async def read_audit(
    db: Database, *, user_id: str, mission_id: str | None = None, limit: int = DEFAULT_LIMIT
) -> list[AuditRow]:
    """The user's audit rows, newest first (RLS applies on top of the explicit user filter).

    Args:
        db: the database.
        user_id: whose rows (non-empty).
        mission_id: only this mission's rows; empty or ``None`` means all missions.
        limit: clamped to [1, 1000].
    """
    async with db.with_user(user_id) as conn:
        cur = await conn.execute(
            q("read_audit"),
            {"user_id": user_id, "mission_id": mission_id or None, "limit": clamp_limit(limit)},
        )
        rows = await cur.fetchall()
    return [AuditRow.from_row(row) for row in rows]
