"""Field wire format ``enc:1:`` (SPEC §17.4; §24.1 cases 24–32) plus published AES-GCM vectors."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mana_ai.crypto.aead import (
    ENC_PREFIX,
    b64decode_forgiving,
    decrypt_record_fields,
    decrypt_value,
    encrypt_record_fields,
    encrypt_value,
    is_encrypted,
    js_json_stringify,
    open_bytes,
    seal_bytes,
)
from mana_ai.errors import CryptoError

KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(2, 34))

# McGrew & Viega, "The Galois/Counter Mode of Operation", Appendix B (the NIST GCM reference vectors),
# AES-256 with a 96-bit IV and no AAD: (key, iv, plaintext, ciphertext, tag).
GCM_VECTORS = [
    pytest.param(
        "00" * 32,
        "00" * 12,
        "00" * 16,
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
        id="test-case-14",
    ),
    pytest.param(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
        id="test-case-15",
    ),
]


@pytest.mark.parametrize(("key", "iv", "pt", "ct", "tag"), GCM_VECTORS)
def test_seal_matches_published_gcm_vector(key: str, iv: str, pt: str, ct: str, tag: str) -> None:
    blob = seal_bytes(bytes.fromhex(pt), bytes.fromhex(key), iv=bytes.fromhex(iv))
    expected = (
        ENC_PREFIX
        + base64.b64encode(bytes.fromhex(iv)).decode()
        + "."
        + base64.b64encode(bytes.fromhex(ct + tag)).decode()
    )
    assert blob == expected
    assert open_bytes(blob, bytes.fromhex(key)) == bytes.fromhex(pt)


def test_encrypt_value_seals_the_js_json_of_the_value() -> None:
    iv = bytes(12)
    assert encrypt_value({"a": [1, 2.5]}, KEY, iv=iv) == seal_bytes(b'{"a":[1,2.5]}', KEY, iv=iv)


def test_is_encrypted() -> None:  # case 24
    assert is_encrypted("enc:1:abc.def")
    assert not is_encrypted("plain string")
    assert not is_encrypted(None)
    assert not is_encrypted(42)


@pytest.mark.parametrize("value", ["hello", "Private Titel äöü 🙂", "", 0, 3.25, True, False])
def test_scalar_round_trip(value: Any) -> None:  # case 25
    blob = encrypt_value(value, KEY)
    assert is_encrypted(blob)
    assert decrypt_value(blob, KEY) == value


@pytest.mark.parametrize("value", [["a", 1, {"nested": True}], {"a": 1, "b": {"c": [None, "x"]}}])
def test_array_and_object_round_trip(value: Any) -> None:  # case 26
    assert decrypt_value(encrypt_value(value, KEY), KEY) == value


@pytest.mark.parametrize("value", [None, 42, "plain", {"a": 1}])
def test_non_encrypted_values_pass_through(value: Any) -> None:  # case 27
    assert decrypt_value(value, KEY) == value


def test_none_is_never_wrapped() -> None:
    assert encrypt_value(None, KEY) is None


def test_tampered_ciphertext_raises() -> None:  # case 28
    blob = encrypt_value("secret", KEY)
    iv_part, ct_part = blob[len(ENC_PREFIX) :].split(".")
    replacement = "B" if ct_part[0] == "A" else "A"
    tampered = ENC_PREFIX + iv_part + "." + replacement + ct_part[1:]
    with pytest.raises(CryptoError, match="decrypt"):
        decrypt_value(tampered, KEY)


def test_missing_separator_is_malformed() -> None:  # case 29
    with pytest.raises(CryptoError, match=r"malformed encrypted blob \(missing iv/ct separator\)"):
        decrypt_value("enc:1:nodot", KEY)


def test_wrong_key_raises() -> None:  # case 30
    with pytest.raises(CryptoError, match="decrypt"):
        decrypt_value(encrypt_value("secret", KEY), OTHER_KEY)


def test_iv_of_wrong_length_is_malformed() -> None:
    sealed = AESGCM(KEY).encrypt(bytes(16), b'"x"', None)
    blob = ENC_PREFIX + base64.b64encode(bytes(16)).decode() + "." + base64.b64encode(sealed).decode()
    with pytest.raises(CryptoError, match="malformed"):
        decrypt_value(blob, KEY)


@pytest.mark.parametrize(
    "bad", ["enc:1:!!!!.AAAA", "enc:1:AAAAAAAAAAAAAAAA.A", "enc:1:AAAAAAAAAAAAAAAA.AA=A"]
)
def test_invalid_base64_is_malformed(bad: str) -> None:
    with pytest.raises(CryptoError, match="malformed"):
        decrypt_value(bad, KEY)


def test_short_ciphertext_raises() -> None:
    blob = ENC_PREFIX + base64.b64encode(bytes(12)).decode() + ".AAAA"
    with pytest.raises(CryptoError, match="decrypt"):
        decrypt_value(blob, KEY)


def test_decoding_tolerates_whitespace_and_missing_padding() -> None:
    blob = encrypt_value("hallo welt", KEY)
    iv_part, ct_part = blob[len(ENC_PREFIX) :].split(".")
    assert ct_part.endswith("=")  # 12 plaintext bytes + 16 tag bytes = 28, not a multiple of 3
    spaced = (
        ENC_PREFIX
        + iv_part[:5]
        + "\n "
        + iv_part[5:]
        + "."
        + ct_part[:7]
        + "\r\n\t"
        + ct_part[7:].rstrip("=")
    )
    assert decrypt_value(spaced, KEY) == "hallo welt"


def test_output_is_padded_standard_base64() -> None:
    blob = encrypt_value("x", KEY)  # '"x"' = 3 bytes + 16 tag = 19 bytes -> needs padding
    _, ct_part = blob[len(ENC_PREFIX) :].split(".")
    assert len(ct_part) % 4 == 0 and ct_part.endswith("=")
    assert b64decode_forgiving(ct_part) == base64.b64decode(ct_part)


def test_plaintext_is_compact_json_with_non_ascii_kept() -> None:
    value = {"title": "Grüße", "tags": ["a", "b"], "n": 1.0}
    assert open_bytes(encrypt_value(value, KEY), KEY) == '{"title":"Grüße","tags":["a","b"],"n":1}'.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1e21, "1e+21"),
        (1e16, "10000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("nan"), "null"),
        ('\n"\\', '"\\n\\"\\\\"'),
        ((1, None), "[1,null]"),
    ],
)
def test_js_json_stringify_matches_javascript(value: Any, expected: str) -> None:
    assert js_json_stringify(value) == expected


def test_unserialisable_value_raises() -> None:
    with pytest.raises(CryptoError, match="set"):
        encrypt_value({1, 2}, KEY)


def test_plaintext_that_is_not_json_raises() -> None:
    with pytest.raises(CryptoError, match="JSON"):
        decrypt_value(seal_bytes(b"not json", KEY), KEY)


def test_bad_key_or_iv_length_raises() -> None:
    with pytest.raises(CryptoError, match="32-byte"):
        encrypt_value("x", bytes(16))
    with pytest.raises(CryptoError, match="12-byte"):
        encrypt_value("x", KEY, iv=bytes(8))


def test_cached_aesgcm_object_is_accepted() -> None:
    aead = AESGCM(KEY)
    assert decrypt_value(encrypt_value("x", aead), KEY) == "x"
    assert decrypt_value(encrypt_value("x", KEY), aead) == "x"


def test_random_iv_differs_per_encryption() -> None:
    assert encrypt_value("same", KEY) != encrypt_value("same", KEY)


def test_decrypt_record_fields_decrypts_only_encrypted_fields() -> None:  # case 31
    record = {
        "id": "n1",
        "createdAt": "2026-04-15T00:00:00.000Z",
        "title": encrypt_value("Private Titel", KEY),
        "content": encrypt_value("geheimer inhalt", KEY),
    }
    out, names = decrypt_record_fields(record, KEY)
    assert names == ["content", "title"]
    assert out == {
        "id": "n1",
        "createdAt": "2026-04-15T00:00:00.000Z",
        "title": "Private Titel",
        "content": "geheimer inhalt",
    }
    assert is_encrypted(record["title"])  # input left alone


def test_decrypt_record_fields_without_encrypted_fields() -> None:  # case 32
    record = {"id": "n1", "title": "plain"}
    out, names = decrypt_record_fields(record, KEY)
    assert names == []
    assert out == record


def test_decrypt_record_fields_fails_as_a_whole_on_a_bad_field() -> None:
    record = {"title": encrypt_value("a", KEY), "content": encrypt_value("b", OTHER_KEY)}
    with pytest.raises(CryptoError):
        decrypt_record_fields(record, KEY)


def test_encrypt_record_fields() -> None:
    already = encrypt_value("old", KEY)
    record = {"id": "t1", "title": "Task", "description": None, "metadata": {"p": 1}, "note": already}
    out = encrypt_record_fields(record, KEY, ["title", "description", "metadata", "note", "missing"])
    assert out["id"] == "t1"
    assert out["description"] is None
    assert "missing" not in out
    assert out["note"] == already  # not wrapped twice
    assert record["title"] == "Task"  # input left alone
    decrypted, names = decrypt_record_fields(out, KEY)
    assert names == ["metadata", "note", "title"]
    assert decrypted == {**record, "note": "old"}


def test_round_trip_with_random_keys() -> None:
    for _ in range(5):
        key = os.urandom(32)
        assert decrypt_value(encrypt_value({"k": "v"}, key), key) == {"k": "v"}
