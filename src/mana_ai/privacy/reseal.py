"""Re-sealed record copies: how the runner reads granted records with nothing but the mission key (W2, W3).

The web app encrypts record fields with the user's *master key*; a grant gives the runner only the *mission
data key* (MDK = HKDF(master key, mission id, scope)). Nothing the server holds can turn one into the other,
so the client that issues the grant (it holds the master key) also re-seals, once per grant, every encrypted
field of every granted record under the MDK and pushes the result through the sync log as a record of its
own::

    app "ai", table "missionGrantRecords", id "<missionId>:<grantId>:<table>:<recordId>"
    {"id": ..., "missionId": ..., "grantId": ..., "table": ..., "recordId": ...,
     "fields": {"<field>": "enc:1:…" (the field's JSON value sealed with the MDK)},
     "sourceFieldMeta": {"<field>": "<ISO stamp of the source field that was re-sealed>"},
     "sourceUpdatedAt": "<newest of those stamps>" | null}

The mission's own encrypted ``title``, ``objective`` and ``conceptMarkdown`` get a copy too (table
``aiMissions``, record id = mission id), so the prompt and the research trigger can see them.

``grantId`` is a short hash of the grant's ``wrappedKey`` (random per issue, because RSA-OAEP is
randomised). It is part of the record id because a sync-log delete is a tombstone for good: after a revoke
the copies of the old grant stay deleted, and a new grant writes new ids. It also binds a copy to exactly one
grant, so a stale copy of an earlier grant is never read.

On the server, :func:`open_copy` merges a source record with its copy: plaintext fields come from the source
as it is now, encrypted fields from the copy, decrypted with the MDK. A source field that is encrypted but
has no counterpart in the copy is dropped (the model never sees ciphertext), and a source field changed
after the copy was made marks the result *stale* (the client's ``grants refresh`` re-seals).

Everything here is pure: no I/O, no clock, no global state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from mana_ai.crypto.aead import AeadKey, aead_for, decrypt_value, encrypt_value, is_encrypted
from mana_ai.errors import CryptoError

GRANT_APP_ID: Final = "ai"
"""Sync app of the re-sealed copies (the missions' own app)."""
GRANT_RECORDS_TABLE: Final = "missionGrantRecords"
"""Sync table of the re-sealed copies."""
MISSION_TABLE: Final = "aiMissions"
MISSION_TEXT_FIELDS: Final = ("title", "objective", "conceptMarkdown")
"""The mission fields the web app encrypts (SPEC §6.1)."""

FailureReason = Literal[
    "ciphertext-malformed", "ciphertext-tampered-or-wrong-key", "decrypt-failed", "resealed-copy-missing"
]
"""Reasons of a ``failed`` decrypt-audit row."""

STALE_REASON: Final = "resealed-copy-stale"
"""Reason stored on an ``ok`` audit row when the source changed after the copy was made."""

_TAMPERED = re.compile(r"OperationError|decrypt", re.IGNORECASE)


class ResealError(CryptoError):
    """A granted record cannot be re-sealed (usually: the master key is not the one it was encrypted with)."""


# --- ids ------------------------------------------------------------------------------------------------


def grant_id(wrapped_key: str) -> str:
    """The short id of one issued grant: 16 hex digits of SHA-256 over its ``wrappedKey``."""
    return hashlib.sha256(wrapped_key.encode("utf-8")).hexdigest()[:16]


def copies_prefix(mission_id: str) -> str:
    """Every copy of every grant of a mission has a record id starting with this."""
    return mission_id + ":"


def copy_id(mission_id: str, grant: str, table: str, record_id: str) -> str:
    """Record id of the copy of ``<table>:<record_id>`` made for grant ``grant`` of ``mission_id``."""
    return mission_id + ":" + grant + ":" + table + ":" + record_id


def failure_reason(exc: BaseException) -> FailureReason:
    """Map a decrypt error to its audit reason, as the original did (by message)."""
    text = str(exc)
    if "malformed" in text.lower():
        return "ciphertext-malformed"
    if _TAMPERED.search(text) or _TAMPERED.search(type(exc).__name__):
        return "ciphertext-tampered-or-wrong-key"
    return "decrypt-failed"


# --- client side: make a copy ---------------------------------------------------------------------------


def _stamp(meta: Mapping[str, Any], name: str) -> str:
    value = meta.get(name)
    return value if isinstance(value, str) else ""


def reseal_record(
    *,
    mission_id: str,
    grant: str,
    table: str,
    record_id: str,
    source: Mapping[str, Any],
    source_field_meta: Mapping[str, Any],
    master_key: AeadKey,
    mdk: AeadKey,
    only_fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Build the copy of one source record: each encrypted field re-sealed from the master key to the MDK.

    Args:
        mission_id: the mission the grant is for.
        grant: :func:`grant_id` of the grant.
        table: the source table (``notes``, ``tasks`` ...), or ``aiMissions`` for the mission's own text.
        record_id: the source record id.
        source: the source record's fields as the sync log has them now.
        source_field_meta: the source record's per-field timestamps (for the staleness check).
        master_key: the user's master key (32 bytes); it never leaves the client.
        mdk: the mission data key.
        only_fields: restrict re-sealing to these fields (the mission's text fields).

    Returns:
        The copy record (see the module docstring).

    Raises:
        ResealError: a field does not decrypt with ``master_key``.
    """
    master, mission_key = aead_for(master_key), aead_for(mdk)
    wanted = set(only_fields) if only_fields is not None else None
    fields: dict[str, str] = {}
    stamps: dict[str, str] = {}
    for name, value in source.items():
        if not is_encrypted(value) or (wanted is not None and name not in wanted):
            continue
        try:
            plain = decrypt_value(value, master)
        except CryptoError as exc:
            raise ResealError(
                "cannot decrypt "
                + table
                + ":"
                + record_id
                + " field "
                + repr(name)
                + " with this master key ("
                + str(exc)
                + ")"
            ) from None
        fields[name] = encrypt_value(plain, mission_key)
        stamps[name] = _stamp(source_field_meta, name)
    newest = max((s for s in stamps.values() if s), default=None)
    return {
        "id": copy_id(mission_id, grant, table, record_id),
        "missionId": mission_id,
        "grantId": grant,
        "table": table,
        "recordId": record_id,
        "fields": fields,
        "sourceFieldMeta": stamps,
        "sourceUpdatedAt": newest,
    }


# --- server side: open a copy ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """A source record with its encrypted fields replaced by the decrypted copy."""

    record: dict[str, Any]
    """Plaintext fields from the source, decrypted fields from the copy; no ``enc:1:`` value is left."""
    decrypted: tuple[str, ...]
    """Names of the fields decrypted from the copy (what ``decrypts_total`` counts)."""
    stale: bool
    """The source changed after the copy was made (or has encrypted fields the copy lacks)."""

    ok: Literal[True] = True


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """Nothing of the record may be used."""

    reason: FailureReason
    ok: Literal[False] = False


def open_copy(
    *,
    mission_id: str,
    grant: str,
    table: str,
    record_id: str,
    source: Mapping[str, Any],
    source_field_meta: Mapping[str, Any],
    copy: Mapping[str, Any] | None,
    mdk: AeadKey,
) -> Opened | OpenFailed:
    """Decrypt a granted record through its copy (all fields or nothing).

    Args:
        mission_id: the mission being planned.
        grant: :func:`grant_id` of the mission's current grant.
        table: the source table.
        record_id: the source record id.
        source: the source record as the sync log has it now.
        source_field_meta: its per-field timestamps.
        copy: the copy record, ``None`` when there is none (or it was deleted).
        mdk: the unwrapped mission data key.

    Returns:
        :class:`Opened`, or :class:`OpenFailed` with the audit reason.
    """
    encrypted = [name for name, value in source.items() if is_encrypted(value)]
    if not encrypted:
        # Nothing to decrypt (a user without a vault): no copy is needed, and the audit still says "ok".
        return Opened(dict(source), (), False)
    if copy is None:
        return OpenFailed("resealed-copy-missing")
    fields = copy.get("fields")
    copy_stamps = copy.get("sourceFieldMeta")
    if (
        copy.get("missionId") != mission_id
        or copy.get("grantId") != grant
        or copy.get("table") != table
        or copy.get("recordId") != record_id
        or not isinstance(fields, Mapping)
    ):
        # A copy that does not describe exactly this record of this grant is not used.
        return OpenFailed("ciphertext-malformed")
    if not isinstance(copy_stamps, Mapping):
        copy_stamps = {}
    try:
        aead = aead_for(mdk)
    except CryptoError as exc:
        return OpenFailed(failure_reason(exc))
    record = dict(source)
    decrypted: list[str] = []
    stale = False
    for name in encrypted:
        blob = fields.get(name)
        if blob is None:
            # Encrypted after the grant was issued: we cannot read it, and the model must not see ciphertext.
            del record[name]
            stale = True
            continue
        if not is_encrypted(blob):
            return OpenFailed("ciphertext-malformed")
        try:
            record[name] = decrypt_value(blob, aead)
        except CryptoError as exc:
            return OpenFailed(failure_reason(exc))
        decrypted.append(name)
        if _stamp(source_field_meta, name) > _stamp(copy_stamps, name):
            stale = True
    return Opened(record, tuple(decrypted), stale)
