"""Sealing granted records under the grant data key, and opening the copies (pure)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from mana_ai.crypto.aead import encrypt_value, is_encrypted
from mana_ai.errors import CryptoError
from mana_ai.privacy.reseal import (
    Opened,
    OpenFailed,
    ResealError,
    SealedCopy,
    copy_aad,
    failure_reason,
    grant_id,
    open_copy,
    open_sealed,
    reseal_record,
    seal_copy,
)

MASTER = bytes(range(1, 33))
OTHER = bytes(range(2, 34))
KEY = os.urandom(32)


def source_note() -> dict[str, object]:
    return {
        "id": "n1",
        "title": encrypt_value("Einkauf", MASTER),
        "content": encrypt_value({"blocks": ["Milch", "Brot"]}, MASTER),
        "pinned": True,
    }


def make_copy(source: dict[str, object], meta: dict[str, str] | None = None) -> SealedCopy:
    return reseal_record(
        mission_id="m1",
        table="notes",
        record_id="n1",
        source=source,
        source_field_meta=meta or {},
        master_key=MASTER,
        data_key=KEY,
    )


def open_note(
    source: dict[str, object],
    copy: SealedCopy | None,
    meta: dict[str, str] | None = None,
    *,
    key: bytes = KEY,
) -> Opened | OpenFailed:
    return open_copy(
        mission_id="m1",
        table="notes",
        record_id="n1",
        source=source,
        source_field_meta=meta or {},
        copy=copy,
        key=key,
    )


def test_grant_id_and_aad() -> None:
    assert (
        grant_id("abc") == grant_id("abc")
        and len(grant_id("abc")) == 16
        and grant_id("abd") != grant_id("abc")
    )
    # The additional data is JSON.stringify of an array: a value with a quote cannot forge another record's.
    assert copy_aad("m1", "notes", "n1") == b'["mana-ai-grant-copy-v2","m1","notes","n1"]'
    assert copy_aad('m1","notes', "x", "n1") != copy_aad("m1", 'notes","x', "n1")


def test_reseal_seals_every_encrypted_field_and_no_plaintext_field() -> None:
    copy = make_copy(source_note(), {"title": "2026-01-01T00:00:00.000Z"})
    assert (copy.table, copy.record_id) == ("notes", "n1")
    assert copy.source_field_meta == {"title": "2026-01-01T00:00:00.000Z", "content": ""}
    assert "Einkauf" not in copy.sealed and "sealed" not in repr(copy)
    fields = open_sealed(KEY, mission_id="m1", table="notes", record_id="n1", sealed=copy.sealed)
    assert fields == {"title": "Einkauf", "content": {"blocks": ["Milch", "Brot"]}}


def test_reseal_only_fields_and_wrong_master_key() -> None:
    mission = {"title": encrypt_value("Plan", MASTER), "state": "active", "grant": encrypt_value("x", MASTER)}
    copy = reseal_record(
        mission_id="m1",
        table="aiMissions",
        record_id="m1",
        source=mission,
        source_field_meta={},
        master_key=MASTER,
        data_key=KEY,
        only_fields=("title", "objective"),
    )
    assert open_sealed(KEY, mission_id="m1", table="aiMissions", record_id="m1", sealed=copy.sealed) == {
        "title": "Plan"
    }
    with pytest.raises(ResealError, match="notes:n1 field 'title'"):
        reseal_record(
            mission_id="m1",
            table="notes",
            record_id="n1",
            source=source_note(),
            source_field_meta={},
            master_key=OTHER,
            data_key=KEY,
        )


def test_open_copy_decrypts_and_keeps_plaintext_from_the_source() -> None:
    source = source_note()
    opened = open_note(source, make_copy(source))
    assert isinstance(opened, Opened)
    assert opened.record == {
        "id": "n1",
        "title": "Einkauf",
        "content": {"blocks": ["Milch", "Brot"]},
        "pinned": True,
    }
    assert sorted(opened.decrypted) == ["content", "title"] and not opened.stale


def test_plaintext_record_needs_no_copy() -> None:
    assert open_note({"id": "n1", "title": "plain"}, None) == Opened(
        {"id": "n1", "title": "plain"}, (), False
    )


def test_failures_missing_tampered_wrong_key_and_moved_copies() -> None:
    source = source_note()
    copy = make_copy(source)
    assert open_note(source, None) == OpenFailed("resealed-copy-missing")
    tampered = dataclasses.replace(
        copy, sealed=copy.sealed[:-6] + ("AAAAA=" if not copy.sealed.endswith("AAAAA=") else "BBBBB=")
    )
    assert open_note(source, tampered) == OpenFailed("ciphertext-tampered-or-wrong-key")
    assert open_note(source, copy, key=OTHER) == OpenFailed("ciphertext-tampered-or-wrong-key")
    assert open_note(source, dataclasses.replace(copy, sealed="no-separator")) == OpenFailed(
        "ciphertext-malformed"
    )
    # A copy stored under another record's name is refused by its table/id, and its AAD would not verify anyway.
    assert open_note(source, dataclasses.replace(copy, record_id="n2")) == OpenFailed("ciphertext-malformed")
    with pytest.raises(CryptoError):
        open_sealed(KEY, mission_id="m2", table="notes", record_id="n1", sealed=copy.sealed)
    with pytest.raises(CryptoError):
        open_sealed(KEY, mission_id="m1", table="notes", record_id="n2", sealed=copy.sealed)
    # A copy whose fields are themselves ciphertext is never handed on.
    cipher_inside = seal_copy(
        KEY, mission_id="m1", table="notes", record_id="n1", fields={"title": encrypt_value("x", MASTER)}
    )
    assert open_note(source, dataclasses.replace(copy, sealed=cipher_inside)) == OpenFailed(
        "ciphertext-malformed"
    )


def test_staleness_and_fields_encrypted_after_the_copy() -> None:
    source = source_note()
    copy = make_copy(source, {"title": "2026-01-01T00:00:00.000Z"})
    newer = open_note(source, copy, {"title": "2026-02-01T00:00:00.000Z"})
    assert isinstance(newer, Opened) and newer.stale and newer.record["title"] == "Einkauf"
    same = open_note(source, copy, {"title": "2026-01-01T00:00:00.000Z"})
    assert isinstance(same, Opened) and not same.stale
    grown = dict(source, location=encrypt_value("Berlin", MASTER))
    opened = open_note(grown, copy)
    assert isinstance(opened, Opened) and opened.stale
    assert "location" not in opened.record  # never hand ciphertext on
    assert not any(is_encrypted(v) for v in opened.record.values())


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("malformed encrypted blob (missing iv/ct separator)", "ciphertext-malformed"),
        ("decrypt failed: ciphertext tampered or wrong key", "ciphertext-tampered-or-wrong-key"),
        ("OperationError", "ciphertext-tampered-or-wrong-key"),
        ("something else", "decrypt-failed"),
    ],
)
def test_failure_reason_mapping(message: str, reason: str) -> None:
    assert failure_reason(CryptoError(message)) == reason
