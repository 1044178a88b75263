"""Sealed grant copies: how the runner reads granted records with nothing but the grant's data key (W2, W3).

The web app encrypts record fields with the user's *master key*, a non-extractable WebCrypto key: it can
encrypt and decrypt, but never be exported or derived from. So the client that issues a grant draws a fresh
random 32-byte *grant data key*, decrypts the encrypted fields of every granted record with the master key,
and seals them again, one record at a time, under the data key (:func:`seal_copy`)::

    sealed = base64(iv) "." base64(AES-GCM(data key, iv, JSON.stringify({field: value, ...}), aad))
    aad    = UTF-8 of JSON.stringify(["mana-ai-grant-copy-v2", missionId, table, recordId])

The additional data binds a copy to its mission and record: moved to another mission or record, it no
longer opens. A copy is ``{"table", "recordId", "sealed", "sourceFieldMeta"}``; ``sourceFieldMeta`` holds the
source's field timestamps at sealing time (for the staleness check). Besides the granted records, the
mission's own ``title``/``objective``/``conceptMarkdown`` (table ``aiMissions``, id = mission id) and the
agent's ``systemPrompt``/``memory`` (table ``agents``, id = agent id) get copies. Copies live in mana-ai's
own tables (:mod:`mana_ai.privacy.grant_store`), never in the sync log.

On the server, :func:`open_copy` merges a source record with its copy: plaintext fields come from the source
as it is now, encrypted fields from the copy. A source field that is encrypted but missing from the copy is
dropped (the model never sees ciphertext), and a source field changed after the copy was made marks the
result *stale* (the client's ``refreshGrant`` re-seals).

Everything here is pure: no I/O, no clock, no global state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidTag

from mana_ai.crypto.aead import (
    AeadKey,
    aead_for,
    b64decode_forgiving,
    b64encode,
    decrypt_value,
    is_encrypted,
    js_json_stringify,
)
from mana_ai.errors import CryptoError

MISSION_TABLE: Final = "aiMissions"
MISSION_TEXT_FIELDS: Final = ("title", "objective", "conceptMarkdown")
"""The mission fields the web app encrypts (SPEC §6.1)."""
AGENT_TABLE: Final = "agents"
AGENT_TEXT_FIELDS: Final = ("systemPrompt", "memory")
"""The agent fields the web app encrypts (its persona)."""
COPY_AAD_TAG: Final = "mana-ai-grant-copy-v2"

FailureReason = Literal[
    "ciphertext-malformed", "ciphertext-tampered-or-wrong-key", "decrypt-failed", "resealed-copy-missing"
]
"""Reasons of a ``failed`` decrypt-audit row."""

STALE_REASON: Final = "resealed-copy-stale"
"""Reason stored on an ``ok`` audit row when the source changed after the copy was made."""

_TAMPERED = re.compile(r"OperationError|decrypt|InvalidTag", re.IGNORECASE)


class ResealError(CryptoError):
    """A granted record cannot be re-sealed (usually: the master key is not the one it was encrypted with)."""


def grant_id(wrapped_key: str) -> str:
    """The short id of one issued grant: 16 hex digits of SHA-256 over its ``wrappedKey``."""
    return hashlib.sha256(wrapped_key.encode("utf-8")).hexdigest()[:16]


def failure_reason(exc: BaseException) -> FailureReason:
    """Map a decrypt error to its audit reason, as the original did (by message)."""
    text = str(exc)
    if "malformed" in text.lower():
        return "ciphertext-malformed"
    if _TAMPERED.search(text) or _TAMPERED.search(type(exc).__name__):
        return "ciphertext-tampered-or-wrong-key"
    return "decrypt-failed"


# --- the sealed format ----------------------------------------------------------------------------------


def copy_aad(mission_id: str, table: str, record_id: str) -> bytes:
    """The AES-GCM additional data of one copy."""
    return js_json_stringify([COPY_AAD_TAG, mission_id, table, record_id]).encode("utf-8")


def seal_copy(
    key: AeadKey,
    *,
    mission_id: str,
    table: str,
    record_id: str,
    fields: Mapping[str, Any],
    iv: bytes | None = None,
) -> str:
    """Seal the decrypted fields of one record under the grant data key."""
    nonce = iv if iv is not None else os.urandom(12)
    plain = js_json_stringify(dict(fields)).encode("utf-8")
    ct = aead_for(key).encrypt(nonce, plain, copy_aad(mission_id, table, record_id))
    return b64encode(nonce) + "." + b64encode(ct)


def open_sealed(key: AeadKey, *, mission_id: str, table: str, record_id: str, sealed: str) -> dict[str, Any]:
    """The fields of a sealed copy.

    Raises:
        CryptoError: ``malformed`` text, or a tag that does not verify (wrong key, mission or record).
    """
    iv_text, sep, ct_text = sealed.partition(".")
    if not sep:
        raise CryptoError("malformed sealed copy (missing iv/ct separator)")
    iv, ct = b64decode_forgiving(iv_text), b64decode_forgiving(ct_text)
    if len(iv) != 12 or len(ct) < 16:
        raise CryptoError("malformed sealed copy (bad iv or ciphertext length)")
    try:
        plain = aead_for(key).decrypt(iv, ct, copy_aad(mission_id, table, record_id))
    except InvalidTag:
        raise CryptoError("OperationError: the sealed copy does not decrypt") from None
    try:
        value = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CryptoError("malformed sealed copy (not JSON)") from None
    if not isinstance(value, dict):
        raise CryptoError("malformed sealed copy (not an object)")
    return value


@dataclass(frozen=True, slots=True)
class SealedCopy:
    """One record's copy as stored and sent: the sealed fields and the source's stamps at sealing time."""

    table: str
    record_id: str
    sealed: str = field(repr=False)
    source_field_meta: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "recordId": self.record_id,
            "sealed": self.sealed,
            "sourceFieldMeta": dict(self.source_field_meta),
        }


# --- client side: make a copy ---------------------------------------------------------------------------


def _stamp(meta: Mapping[str, Any], name: str) -> str:
    value = meta.get(name)
    return value if isinstance(value, str) else ""


def reseal_record(
    *,
    mission_id: str,
    table: str,
    record_id: str,
    source: Mapping[str, Any],
    source_field_meta: Mapping[str, Any],
    master_key: AeadKey,
    data_key: AeadKey,
    only_fields: Iterable[str] | None = None,
) -> SealedCopy:
    """Build the copy of one source record: its encrypted fields, decrypted with the master key, sealed.

    Raises:
        ResealError: a field does not decrypt with ``master_key``.
    """
    master = aead_for(master_key)
    wanted = set(only_fields) if only_fields is not None else None
    fields: dict[str, Any] = {}
    stamps: dict[str, str] = {}
    for name, value in source.items():
        if not is_encrypted(value) or (wanted is not None and name not in wanted):
            continue
        try:
            fields[name] = decrypt_value(value, master)
        except CryptoError as exc:
            where = table + ":" + record_id + " field " + repr(name)
            raise ResealError(
                "cannot decrypt " + where + " with this master key (" + str(exc) + ")"
            ) from None
        stamps[name] = _stamp(source_field_meta, name)
    sealed = seal_copy(data_key, mission_id=mission_id, table=table, record_id=record_id, fields=fields)
    return SealedCopy(table, record_id, sealed, stamps)


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
    table: str,
    record_id: str,
    source: Mapping[str, Any],
    source_field_meta: Mapping[str, Any],
    copy: SealedCopy | None,
    key: AeadKey,
) -> Opened | OpenFailed:
    """Decrypt a granted record through its copy (all fields or nothing).

    Args:
        mission_id: the mission being planned.
        table: the source table.
        record_id: the source record id.
        source: the source record as the sync log has it now.
        source_field_meta: its per-field timestamps.
        copy: the copy of the mission's current grant, ``None`` when there is none.
        key: the unwrapped grant data key.

    Returns:
        :class:`Opened`, or :class:`OpenFailed` with the audit reason.
    """
    encrypted = [name for name, value in source.items() if is_encrypted(value)]
    if not encrypted:
        # Nothing to decrypt (a user without a vault): no copy is needed, and the audit still says "ok".
        return Opened(dict(source), (), False)
    if copy is None:
        return OpenFailed("resealed-copy-missing")
    if copy.table != table or copy.record_id != record_id:
        return OpenFailed("ciphertext-malformed")
    try:
        fields = open_sealed(key, mission_id=mission_id, table=table, record_id=record_id, sealed=copy.sealed)
    except CryptoError as exc:
        return OpenFailed(failure_reason(exc))
    record = dict(source)
    decrypted: list[str] = []
    stale = False
    for name in encrypted:
        if name not in fields:
            # Encrypted after the grant was issued: we cannot read it, and the model must not see ciphertext.
            del record[name]
            stale = True
            continue
        value = fields[name]
        if is_encrypted(value):
            return OpenFailed("ciphertext-malformed")
        record[name] = value
        decrypted.append(name)
        if _stamp(source_field_meta, name) > _stamp(copy.source_field_meta, name):
            stale = True
    return Opened(record, tuple(decrypted), stale)
