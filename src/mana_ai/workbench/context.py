"""What an executor may do: read and write the user's records through the sync log, emit domain events.

An :class:`ExecContext` wraps the connection of the approval's transaction (inside ``Database.with_user``, so
row-level security applies): everything a step writes commits together with its decision or not at all.

Writes look as if the web app had made them: inserts carry the full record (``field_meta {}``), updates are
field-level with every field stamped. The actor is the agent that proposed the step (as the web app's
executor stamps server steps, SPEC §11) and the client id ``mana-ai-workbench``. Fields the web app encrypts
(:data:`~mana_ai.workbench.shapes.ENCRYPTED_FIELDS`) are encrypted with the user's master key when the
workbench has one; without it records are written in plaintext, and changing a field that is already
encrypted fails the step instead of mixing plaintext into an encrypted record.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Final

from mana_ai.crypto.aead import decrypt_record_fields, encrypt_record_fields, is_encrypted
from mana_ai.db.connector import AsyncConn, Database
from mana_ai.db.queries import q
from mana_ai.errors import CryptoError
from mana_ai.scheduler.zones import user_zone
from mana_ai.synclog.lww import RecordState, apply_change, write_stamp
from mana_ai.synclog.store import insert_record, replay_record, update_fields
from mana_ai.synclog.validate import prepare_row
from mana_ai.timefmt import to_js_iso
from mana_ai.workbench.goals import DomainEvent
from mana_ai.workbench.shapes import CALENDARS, ENCRYPTED_FIELDS, Target, tenancy

logger = logging.getLogger(__name__)

WORKBENCH_CLIENT_ID: Final = "mana-ai-workbench"


class StepFailed(Exception):
    """Running a step failed for a reason the user can act on; the message is shown on the step."""


async def replay_table(conn: AsyncConn, user_id: str, target: Target) -> dict[str, RecordState]:
    """Every record of one user's synced table, each replayed with the one LWW function (deleted included).

    Malformed rows are skipped as the snapshot refresh and ``replay_record`` skip them.
    """
    cur = await conn.execute(
        q("workbench_table_rows"), {"user_id": user_id, "app_id": target.app_id, "table": target.table}
    )
    states: dict[str, RecordState] = {}
    for row in await cur.fetchall():
        prepared = prepare_row(target.table, row["op"], row["data"], row["field_meta"])
        if isinstance(prepared, str):
            continue
        record_id = row["record_id"]
        states[record_id] = apply_change(
            states.get(record_id), record_id, row["op"], prepared[0], prepared[1], row["created_iso"]
        )
    return states


async def user_zone_of(conn: AsyncConn, user_id: str) -> str | None:
    """The zone the app stored for the user (their default calendar's ``timezone``), or ``None``."""
    states = await replay_table(conn, user_id, CALENDARS)
    return user_zone(state.record for state in states.values() if state.is_live())


async def zone_for_user(db: Database, user_id: str, default: str) -> str:
    """The zone of a wall-clock cadence without its own, as the runner takes it for every run: the user's,
    else ``default`` (the deployment's, :mod:`mana_ai.scheduler.zones`). A first run set by the workbench or
    the CLI must use the same one."""
    async with db.with_user(user_id) as conn:
        return await user_zone_of(conn, user_id) or default


class ExecContext:
    """Reads and writes for one step's execution, inside the approval's transaction."""

    def __init__(
        self,
        conn: AsyncConn,
        *,
        user_id: str,
        now: dt.datetime,
        tz: str,
        master_key: bytes | None,
        actor: Mapping[str, Any],
    ) -> None:
        self.conn = conn
        self.user_id = user_id
        self.now = now
        self.now_iso = to_js_iso(now)
        self.tz = tz
        self.master_key = master_key
        self.actor = dict(actor)
        self.written: list[dict[str, str]] = []
        """``{appId, table, id, op}`` of every record written, for the step's ``execution.records``."""
        self.events: list[DomainEvent] = []
        self._states: dict[tuple[str, str, str], RecordState] = {}

    # --- reading ----------------------------------------------------------------------------------------
    def readable(self, target: Target, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record with its encrypted fields decrypted when there is a key (else left as ciphertext).

        Raises:
            StepFailed: the key does not open the record (a wrong master key).
        """
        if self.master_key is None:
            return dict(record)
        try:
            plain, _names = decrypt_record_fields(record, self.master_key)
        except CryptoError:
            raise StepFailed(
                target.table + " record " + str(record.get("id")) + " does not decrypt with the master key"
            ) from None
        return plain

    def require_plain(self, target: Target, record: Mapping[str, Any], *fields: str) -> None:
        """Fail when one of ``fields`` is still ciphertext (no key to read it).

        Raises:
            StepFailed: a needed field is encrypted and the workbench has no master key.
        """
        locked = [name for name in fields if is_encrypted(record.get(name))]
        if locked:
            raise StepFailed(
                target.table
                + " record "
                + str(record.get("id"))
                + " is encrypted ("
                + ", ".join(locked)
                + "); approve it with `mana-ai proposals approve --master-key-file` (the service holds no key)"
            )

    async def get(self, target: Target, record_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        """The live record (decrypted when possible), or ``None``; ``lock`` serialises read-modify-writes."""
        if lock:
            await self.conn.execute(q("lock_record"), {"user_id": self.user_id, "record_id": record_id})
        state = await replay_record(
            self.conn, user_id=self.user_id, app_id=target.app_id, table=target.table, record_id=record_id
        )
        if state is None or not state.is_live():
            return None
        self._states[(target.app_id, target.table, record_id)] = state
        return self.readable(target, state.record)

    async def list(self, target: Target) -> list[dict[str, Any]]:
        """Every live record of the user's table (decrypted when possible), ordered by id."""
        states = await replay_table(self.conn, self.user_id, target)
        out = []
        for record_id, state in states.items():
            if state.is_live():
                self._states[(target.app_id, target.table, record_id)] = state
                out.append(self.readable(target, state.record))
        return out

    # --- writing ----------------------------------------------------------------------------------------
    def _sealed(self, target: Target, fields: Mapping[str, Any]) -> dict[str, Any]:
        names = ENCRYPTED_FIELDS.get(target.table, ())
        if self.master_key is None or not names:
            return dict(fields)
        return encrypt_record_fields(fields, self.master_key, names)

    async def insert(self, target: Target, record: Mapping[str, Any]) -> str:
        """Insert a new record with the app's tenancy fields (encrypted fields sealed); returns its id."""
        await insert_record(
            self.conn,
            user_id=self.user_id,
            app_id=target.app_id,
            table=target.table,
            record=self._sealed(target, tenancy(record, self.user_id)),
            client_id=WORKBENCH_CLIENT_ID,
            actor=self.actor,
        )
        record_id = str(record["id"])
        self.written.append({"appId": target.app_id, "table": target.table, "id": record_id, "op": "insert"})
        return record_id

    async def update(
        self,
        target: Target,
        record_id: str,
        fields: Mapping[str, Any],
        *,
        actor: Mapping[str, Any] | None = None,
    ) -> None:
        """A field-level update of a record read with :meth:`get` or :meth:`list` in this context.

        ``actor`` overrides the context's actor (the goal tracker writes as a system rule).

        Raises:
            StepFailed: an encrypted field would be overwritten without a master key.
        """
        state = self._states.get((target.app_id, target.table, record_id))
        current = state.record if state is not None else {}
        if self.master_key is None:
            self.require_plain(
                target, current, *(f for f in fields if f in ENCRYPTED_FIELDS.get(target.table, ()))
            )
        await update_fields(
            self.conn,
            user_id=self.user_id,
            app_id=target.app_id,
            table=target.table,
            record_id=record_id,
            fields=self._sealed(target, fields),
            at=write_stamp(state, fields, self.now_iso),
            client_id=WORKBENCH_CLIENT_ID,
            actor=dict(actor) if actor is not None else self.actor,
        )
        self.written.append({"appId": target.app_id, "table": target.table, "id": record_id, "op": "update"})

    def emit(self, event_type: str, target: Target, record_id: str, payload: Mapping[str, Any]) -> None:
        """Record a domain event; the goal tracker and the event log see it after the executor returns."""
        self.events.append(DomainEvent(event_type, target.app_id, target.table, record_id, dict(payload)))
