"""The one field-level last-writer-wins merge (SPEC §4.3), shared by every projection.

Pure: no I/O, no clock. A record's state is its field values plus, per field, the timestamp of the write
that set it. Rows are applied in the order given:

* a record starts as ``{"id": record_id}``; every row sets each field whose timestamp is ``>=`` the stored
  one (a field never set has the empty timestamp): ties go to the incoming row, as in the web app;
* a field's timestamp is ``field_meta[field]``; without one it is the row's ``created_at`` for an update
  row, and the empty timestamp for an ``insert`` row. mana-sync stores inserts with ``field_meta = {}``, and
  the original let any later write win over an insert's fields (an offline edit pushed in the same changeset
  as the insert must not lose to the server's clock); the empty timestamp keeps exactly that, and also makes
  re-delivering an insert harmless;
* deletes follow the web app's replay (``WEB/data/sync.ts`` ``applyServerChanges``): an ``op='delete'`` row
  whose data carries a ``deletedAt`` string is a *soft* delete, which sets the ``deletedAt`` field stamped
  with its own value (when that is ``>=`` the field's stamp), so a later update ``deletedAt: null`` (the app's
  undo) restores the record; a delete row without ``deletedAt`` removes the record (``deleted``), and a later
  insert or update starts it again from that row's fields, as the app re-creates a record from an update;
  a soft delete of a record never seen leaves it soft-deleted (not live, as when the app skips it), so that
  re-delivering the rows that follow, e.g. its re-creation, gives the same state as the first delivery;
* rows without data change nothing.

Timestamps are compared as strings, which is correct for JS ``toISOString()`` output.

Two properties follow and are tested with hypothesis: applying rows in one batch or split into any number
of batches gives the same state (the state carries everything the merge needs), and re-delivering any suffix
of already-applied rows changes nothing. The one exception follows the web app: a soft delete that met a
record a hard delete had removed was skipped, and re-delivered after the record's re-creation it would meet
that record. The refresh reads each row exactly once, so this never arises there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from mana_ai.timefmt import is_js_iso, normalize_iso, parse_iso, to_js_iso

Op = Literal["insert", "update", "delete"]
FIELD_META_KEY = "__fieldMeta"


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One sync_changes row, reduced to what the merge needs."""

    record_id: str
    op: Op
    data: Mapping[str, Any] | None
    field_meta: Mapping[str, Any] | None
    created_at: str
    """JS-ISO form of the row's created_at: the timestamp of fields missing from field_meta."""


@dataclass(slots=True)
class RecordState:
    """The merged state of one record."""

    record: dict[str, Any]
    field_meta: dict[str, str] = field(default_factory=dict)
    deleted: bool = False

    def to_snapshot(self) -> dict[str, Any]:
        """The record as stored in a snapshot table: fields plus ``__fieldMeta``."""
        return {**self.record, FIELD_META_KEY: dict(self.field_meta)}

    @classmethod
    def from_snapshot(cls, record: Mapping[str, Any], *, deleted: bool = False) -> RecordState:
        body = {k: v for k, v in record.items() if k != FIELD_META_KEY}
        meta = record.get(FIELD_META_KEY)
        return cls(body, _string_values(meta), deleted)

    def is_live(self) -> bool:
        """Not deleted by a delete row and not soft-deleted with a truthy ``deletedAt``."""
        return not self.deleted and not self.record.get("deletedAt")


def _string_values(meta: Any) -> dict[str, str]:
    if not isinstance(meta, Mapping):
        return {}
    return {str(k): v for k, v in meta.items() if isinstance(v, str)}


def apply_row(state: RecordState | None, row: ChangeRow) -> RecordState:
    """Apply one row to a record state (``None`` = never seen) and return the new state.

    The state passed in is updated in place when it exists; callers that need the old value copy it first.
    """
    return apply_change(state, row.record_id, row.op, row.data, row.field_meta, row.created_at)


def apply_change(
    state: RecordState | None,
    record_id: str,
    op: str,
    data: Mapping[str, Any] | None,
    field_meta: Mapping[str, Any] | None,
    created_at: str,
) -> RecordState:
    """:func:`apply_row` without building a :class:`ChangeRow` (the refresh's hot loop calls this)."""
    if op == "delete":
        return _delete(state, record_id, data)
    if state is None or state.deleted:
        state = RecordState({"id": record_id}, {})
    if type(data) is not dict and not isinstance(data, Mapping):
        return state
    meta = field_meta if type(field_meta) is dict or isinstance(field_meta, Mapping) else {}
    fallback = "" if op == "insert" else created_at
    record, stamps = state.record, state.field_meta
    for key, value in data.items():
        stamp = meta.get(key)
        if type(stamp) is not str:
            stamp = fallback
        if stamp >= stamps.get(key, ""):
            record[key] = value
            if stamp:
                stamps[key] = stamp
    return state


def _delete(state: RecordState | None, record_id: str, data: Mapping[str, Any] | None) -> RecordState:
    deleted_at = data.get("deletedAt") if isinstance(data, Mapping) else None
    if not isinstance(deleted_at, str) or not deleted_at or (state is not None and state.deleted):
        return RecordState({"id": record_id}, {}, deleted=True)
    if state is None:
        # Not a hard tombstone: a record that exists by the time these rows are re-read would take the soft
        # delete, so the first delivery must end in that same state.
        state = RecordState({"id": record_id}, {})
    try:
        stamp = normalize_iso(deleted_at)
    except ValueError:
        stamp = deleted_at
    if stamp >= state.field_meta.get("deletedAt", ""):
        state.record["deletedAt"] = deleted_at
        state.field_meta["deletedAt"] = stamp
    return state


def merge(state: RecordState | None, rows: Iterable[ChangeRow]) -> RecordState | None:
    """Apply rows in order; ``None`` when there was no state and no rows."""
    for row in rows:
        state = apply_row(state, row)
    return state


def next_stamp(field_meta: Mapping[str, str], fields: Iterable[str], now_iso: str) -> str:
    """The field-meta time for a read-modify-write: ``now``, or 1 ms after the newest stamp of ``fields``.

    Two writers of one record can share a millisecond, and rows of one transaction share ``created_at``; a
    stamp strictly after what was read makes the write win whatever order the log replays them in.
    """
    latest = max((field_meta.get(name, "") for name in fields), default="")
    if latest < now_iso:
        return now_iso
    try:
        return to_js_iso(parse_iso(latest) + timedelta(milliseconds=1))
    except OverflowError:
        # Nothing is later than the last instant JavaScript writes (9999-12-31T23:59:59.999Z): a tie goes to
        # the later row, where ``now`` would lose for ever (a restore would rewrite the mission every refresh).
        return latest
    except ValueError:
        return now_iso


def write_stamp(state: RecordState | None, fields: Iterable[str], now_iso: str) -> str:
    """The field-meta time of our update of ``fields`` over ``state``: :func:`next_stamp`, where a field an
    insert set counts at the time the web app gives it.

    mana-sync stores inserts with ``field_meta = {}`` and our merge gives their fields the empty stamp, but
    the web app stamps them with the insert's ``updatedAt ?? createdAt`` (``WEB/data/sync.ts``), a device's
    clock: a phone running ahead would otherwise make every device drop an update we write right after."""
    names = tuple(fields)
    if state is None:
        return next_stamp({}, names, now_iso)
    inserted = _insert_time(state)
    stamps = {
        name: state.field_meta.get(name) or (inserted if name in state.record else "") for name in names
    }  # a field the record does not hold was never set: nothing to come after
    return next_stamp(stamps, names, now_iso)


def _insert_time(state: RecordState) -> str:
    """The record's ``updatedAt`` while no update has stamped it (it is the insert's), else ``createdAt``."""
    updated = None if "updatedAt" in state.field_meta else state.record.get("updatedAt")
    for value in (updated, state.record.get("createdAt")):
        if isinstance(value, str) and is_js_iso(value):
            return value
    return ""
