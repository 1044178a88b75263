"""Re-sealing granted records from the master key to the mission key, and opening the copies (pure)."""

from __future__ import annotations

import pytest

from mana_ai.crypto.aead import decrypt_value, encrypt_value, is_encrypted
from mana_ai.crypto.derive import derive_mission_data_key
from mana_ai.errors import CryptoError
from mana_ai.privacy.reseal import (
    Opened,
    OpenFailed,
    ResealError,
    copies_prefix,
    copy_id,
    failure_reason,
    grant_id,
    open_copy,
    reseal_record,
)

MASTER = bytes(range(1, 33))
OTHER = bytes(range(2, 34))
MDK = derive_mission_data_key(MASTER, "m1", ["notes"], ["notes:n1"])


def source_note() -> dict[str, object]:
    return {
        "id": "n1",
        "title": encrypt_value("Einkauf", MASTER),
        "content": encrypt_value({"blocks": ["Milch", "Brot"]}, MASTER),
        "pinned": True,
    }


def make_copy(source: dict[str, object], meta: dict[str, str] | None = None) -> dict[str, object]:
    return reseal_record(
        mission_id="m1",
        grant="g1",
        table="notes",
        record_id="n1",
        source=source,
        source_field_meta=meta or {},
        master_key=MASTER,
        mdk=MDK,
    )


def test_ids_and_grant_id() -> None:
    assert copy_id("m1", "g1", "notes", "a:b") == "m1:g1:notes:a:b"
    assert copy_id("m1", "g1", "notes", "x").startswith(copies_prefix("m1"))
    gid = grant_id("wrapped-key-base64")
    assert len(gid) == 16 and gid == grant_id("wrapped-key-base64") and gid != grant_id("other")


def test_reseal_moves_every_encrypted_field_to_the_mission_key() -> None:
    copy = make_copy(source_note(), {"title": "2026-01-01T00:00:00.000Z"})
    assert copy["id"] == "m1:g1:notes:n1"
    assert (copy["missionId"], copy["grantId"], copy["table"], copy["recordId"]) == (
        "m1",
        "g1",
        "notes",
        "n1",
    )
    fields = copy["fields"]
    assert isinstance(fields, dict) and set(fields) == {
        "title",
        "content",
    }  # plaintext 'pinned' is not copied
    assert decrypt_value(fields["title"], MDK) == "Einkauf"
    assert decrypt_value(fields["content"], MDK) == {"blocks": ["Milch", "Brot"]}
    with pytest.raises(CryptoError):
        decrypt_value(fields["title"], MASTER)  # really re-sealed, not copied
    assert copy["sourceFieldMeta"] == {"title": "2026-01-01T00:00:00.000Z", "content": ""}
    assert copy["sourceUpdatedAt"] == "2026-01-01T00:00:00.000Z"


def test_reseal_only_fields_and_wrong_master_key() -> None:
    mission = {
        "id": "m1",
        "title": encrypt_value("T", MASTER),
        "objective": encrypt_value("O", MASTER),
        "other": encrypt_value("x", MASTER),
    }
    copy = reseal_record(
        mission_id="m1",
        grant="g1",
        table="aiMissions",
        record_id="m1",
        source=mission,
        source_field_meta={},
        master_key=MASTER,
        mdk=MDK,
        only_fields=("title", "objective", "conceptMarkdown"),
    )
    assert set(copy["fields"]) == {"title", "objective"}
    with pytest.raises(ResealError, match="notes:n1 field 'title'"):
        reseal_record(
            mission_id="m1",
            grant="g1",
            table="notes",
            record_id="n1",
            source=source_note(),
            source_field_meta={},
            master_key=OTHER,
            mdk=MDK,
        )


def open_note(
    source: dict[str, object],
    copy: dict[str, object] | None,
    meta: dict[str, str] | None = None,
    mdk: bytes = MDK,
) -> Opened | OpenFailed:
    return open_copy(
        mission_id="m1",
        grant="g1",
        table="notes",
        record_id="n1",
        source=source,
        source_field_meta=meta or {},
        copy=copy,
        mdk=mdk,
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
    opened = open_note({"id": "n1", "title": "plain"}, None)
    assert isinstance(opened, Opened) and opened.decrypted == () and opened.record["title"] == "plain"


def test_failures_missing_malformed_tampered_wrong_key_foreign_copy() -> None:
    source = source_note()
    copy = make_copy(source)
    assert open_note(source, None) == OpenFailed("resealed-copy-missing")
    tampered = dict(copy, fields={**copy["fields"], "title": copy["fields"]["title"][:-6] + "AAAAA="})  # type: ignore[index, dict-item]
    assert open_note(source, tampered) == OpenFailed("ciphertext-tampered-or-wrong-key")
    assert open_note(source, copy, mdk=OTHER) == OpenFailed("ciphertext-tampered-or-wrong-key")
    broken = dict(copy, fields={**copy["fields"], "title": "enc:1:no-separator"})  # type: ignore[dict-item]
    assert open_note(source, broken) == OpenFailed("ciphertext-malformed")
    not_cipher = dict(copy, fields={**copy["fields"], "title": "plain text"})  # type: ignore[dict-item]
    assert open_note(source, not_cipher) == OpenFailed("ciphertext-malformed")
    # A copy made for another record or grant is never used.
    assert open_note(source, dict(copy, recordId="n2")) == OpenFailed("ciphertext-malformed")
    assert open_note(source, dict(copy, grantId="old")) == OpenFailed("ciphertext-malformed")


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
