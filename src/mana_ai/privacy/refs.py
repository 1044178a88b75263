"""Which records a grant may cover, and where they live in the sync log (SPEC §6.1, §23).

A grant names records as ``"<table>:<id>"``. Each table belongs to one sync app of the web app; the grant
client needs the app to replay the source record it re-seals. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mana_ai.crypto.grants import MAX_RECORD_IDS, InvalidGrantRequest

SOURCE_APPS: Final[Mapping[str, str]] = {
    "notes": "notes",
    "tasks": "todo",
    "events": "calendar",
    "journalEntries": "journal",
    "kontextDoc": "kontext",
    "userContext": "profile",
    "companionGoals": "companion",
}
"""Sync app of each table a grant may cover."""

PLAINTEXT_TABLES: Final = frozenset({"companionGoals"})
"""Tables the web app does not encrypt: they need no grant."""

TABLE_ALIASES: Final[Mapping[str, str]] = {
    "todo": "tasks",
    "calendar": "events",
    "journal": "journalEntries",
    "kontext": "kontextDoc",
    "profile": "userContext",
    "goals": "companionGoals",
}
"""Module names accepted in place of their table in ``--record module:id``."""


@dataclass(frozen=True, slots=True)
class RecordRef:
    """One record a grant covers."""

    table: str
    record_id: str

    @property
    def qualified(self) -> str:
        """``"<table>:<id>"``, as the grant's allowlist lists it."""
        return self.table + ":" + self.record_id

    @property
    def app_id(self) -> str:
        """The sync app the record lives in."""
        return SOURCE_APPS[self.table]


def parse_record_ref(text: str) -> RecordRef:
    """Parse ``<table>:<id>`` (a module name such as ``todo`` may stand for its table).

    Raises:
        InvalidGrantRequest: no ``:``, an empty part, or a table no resolver reads.
    """
    table, sep, record_id = text.strip().partition(":")
    if not sep or not table or not record_id:
        raise InvalidGrantRequest(
            "record " + repr(text[:80]) + " must look like <table>:<id>, e.g. notes:abc"
        )
    table = TABLE_ALIASES.get(table, table)
    if table not in SOURCE_APPS:
        known = ", ".join(SOURCE_APPS)
        raise InvalidGrantRequest(
            "unknown table " + repr(table[:40]) + " in " + repr(text[:80]) + "; known: " + known
        )
    return RecordRef(table, record_id)


def split_qualified(qualified: str) -> RecordRef | None:
    """The ref of a grant's ``"<table>:<id>"`` entry; ``None`` for a table we do not know."""
    table, sep, record_id = qualified.partition(":")
    if not sep or not record_id or table not in SOURCE_APPS:
        return None
    return RecordRef(table, record_id)


def check_record_count(refs: Sequence[RecordRef]) -> None:
    """The request limit that needs no key and no database (so the CLI can fail fast).

    Raises:
        InvalidGrantRequest: more than 1000 distinct records.
    """
    if len({ref.qualified for ref in refs}) > MAX_RECORD_IDS:
        raise InvalidGrantRequest("recordIds must not exceed 1000 entries")


def refs_from_inputs(inputs: Any) -> list[RecordRef]:
    """The mission's inputs that point at encrypted tables (what the web app's consent dialog offers)."""
    refs: list[RecordRef] = []
    for item in inputs if isinstance(inputs, list) else []:
        if not isinstance(item, Mapping):
            continue
        table, record_id = item.get("table"), item.get("id")
        if isinstance(table, str) and isinstance(record_id, str) and record_id and table in SOURCE_APPS:
            if table not in PLAINTEXT_TABLES:
                refs.append(RecordRef(table, record_id))
    return unique(refs)


def unique(refs: Sequence[RecordRef]) -> list[RecordRef]:
    """``refs`` without repeats, first occurrence kept."""
    seen: set[str] = set()
    out: list[RecordRef] = []
    for ref in refs:
        if ref.qualified not in seen:
            seen.add(ref.qualified)
            out.append(ref)
    return out
