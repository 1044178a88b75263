"""Resolvers for encrypted modules: notes, tasks/todo, calendar, journal, kontext, profile (SPEC §7).

Per input reference:

1. no usable grant → ``None``: no database access, no audit;
2. ``<table>:<id>`` not in the grant's allowlist → ``grant_scope_violations_total{table}``, an audit row
   ``scope-violation`` / ``record-not-in-grant-allowlist``, ``None``; the record is not even read;
3. replay the source record (its app, the ref's table) and read the grant's sealed copy of it
   (:mod:`mana_ai.privacy.grant_store`) in one user-scoped transaction; no live source → ``None``, no audit;
4. decrypt through the copy with the mission key. Failure → audit ``failed`` with the reason
   (``ciphertext-malformed``, ``ciphertext-tampered-or-wrong-key``, ``decrypt-failed``,
   ``resealed-copy-missing``), ``None``; success → ``decrypts_total{table}`` per decrypted field and an
   ``ok`` row (reason ``resealed-copy-stale`` when the source changed after the copy was made);
5. the input: title from the family's override, else the record's title, else the family's label.

Audit rows carry the iteration id and are best-effort.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mana_ai.planner.prompts import ResolvedInput
from mana_ai.privacy.audit import SCOPE_VIOLATION_REASON
from mana_ai.privacy.grant_store import get_copy
from mana_ai.privacy.refs import SOURCE_APPS
from mana_ai.privacy.reseal import STALE_REASON, OpenFailed, open_copy
from mana_ai.resolvers import formats
from mana_ai.resolvers.registry import InputRef, Resolver, ResolverContext
from mana_ai.synclog.store import replay_record

logger = logging.getLogger(__name__)

Formatter = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class EncryptedResolver:
    """One encrypted module's resolver (the original's ``createEncryptedResolver``)."""

    module: str
    app_id: str
    """Sync app of the source records."""
    label: str
    """Title when the record has none."""
    format_content: Formatter
    fixed_title: str | None = None
    """Title used for every record of this module (kontext, profile)."""

    async def __call__(self, ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None:
        grant = ctx.grant
        if grant is None:
            return None
        if not grant.allows(ref.table, ref.id):
            # The ref's table is whatever the mission's inputs say: as a label only the tables a grant can
            # cover, or every made-up name would be a new series on /metrics for ever.
            label = ref.table if ref.table in SOURCE_APPS else "other"
            ctx.metrics.grant_scope_violations.labels(label).inc()
            logger.warning(
                "input outside the grant's allowlist",
                extra={"action": "privacy.scope_violation", "mission_id": ctx.mission_id, "table": ref.table},
            )
            await ctx.record_audit(ref, "scope-violation", SCOPE_VIOLATION_REASON)
            return None

        async with ctx.db.with_user(ctx.user_id) as conn:
            source = await replay_record(
                conn, user_id=ctx.user_id, app_id=self.app_id, table=ref.table, record_id=ref.id
            )
            if source is None or not source.is_live():
                return None
            times = await _event_times(conn, ctx.user_id, source.record) if self.module == "calendar" else {}
            copy = await get_copy(conn, ctx.user_id, ctx.mission_id, grant.grant_id, ref.table, ref.id)

        opened = open_copy(
            mission_id=ctx.mission_id,
            table=ref.table,
            record_id=ref.id,
            source=source.record,
            source_field_meta=source.field_meta,
            copy=copy,
            key=grant.aead,
        )
        if isinstance(opened, OpenFailed):
            logger.warning(
                "granted record could not be decrypted",
                extra={
                    "action": "privacy.decrypt_failed",
                    "mission_id": ctx.mission_id,
                    "table": ref.table,
                    "reason": opened.reason,
                },
            )
            await ctx.record_audit(ref, "failed", opened.reason)
            return None
        if opened.decrypted:
            ctx.metrics.decrypts.labels(ref.table).inc(len(opened.decrypted))
        await ctx.record_audit(ref, "ok", STALE_REASON if opened.stale else None)

        record = {**opened.record, **times}
        title = self.fixed_title or _str(record.get("title")) or self.label
        return ResolvedInput(
            id=ref.id, module=ref.module, table=ref.table, title=title, content=self.format_content(record)
        )


async def _event_times(conn: Any, user_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's ``startDate``/``endDate`` from its ``timeblocks/timeBlocks`` row: the web app keeps an event's
    time there (``modules/calendar/stores/events.svelte.ts``), not on the event. ``{}`` without a live block."""
    block_id = event.get("timeBlockId")
    if not isinstance(block_id, str) or not block_id:
        return {}
    block = await replay_record(
        conn, user_id=user_id, app_id="timeblocks", table="timeBlocks", record_id=block_id
    )
    if block is None or not block.is_live():
        return {}
    return {k: block.record[k] for k in ("startDate", "endDate", "allDay") if k in block.record}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def builtin_encrypted_resolvers() -> dict[str, Resolver]:
    """``module → resolver`` for the encrypted modules (``todo`` is an alias of ``tasks``)."""
    tasks = EncryptedResolver("tasks", "todo", "Task", formats.task_content)
    return {
        "notes": EncryptedResolver("notes", "notes", "Notiz", formats.note_content),
        "tasks": tasks,
        "todo": tasks,
        "calendar": EncryptedResolver("calendar", "calendar", "Termin", formats.event_content),
        "journal": EncryptedResolver("journal", "journal", "Journal-Eintrag", formats.journal_content),
        "kontext": EncryptedResolver(
            "kontext", "kontext", "Kontext", formats.kontext_content, fixed_title="Mana-Kontext"
        ),
        "profile": EncryptedResolver(
            "profile", "profile", "Nutzerprofil", formats.profile_content, fixed_title="Nutzerprofil"
        ),
    }
