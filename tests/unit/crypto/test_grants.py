"""Mission key grants (SPEC §17.2–17.3; §24.1 cases 33–37; §24.3 mana-auth ``mission-grant.test.ts``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mana_ai.crypto.aead import decrypt_value, encrypt_value
from mana_ai.crypto.derive import derive_mission_data_key
from mana_ai.crypto.grants import (
    GrantDerivation,
    GrantNotConfigured,
    InvalidGrantRequest,
    MissionGrant,
    UnwrapFailed,
    UnwrapOk,
    ZeroKnowledgeGrantForbidden,
    generate_runner_keypair,
    issue_grant,
    load_private_key,
    public_key_pem_from_private,
    unwrap_grant,
    wrap_key,
)
from mana_ai.errors import ConfigError, CryptoError
from mana_ai.timefmt import parse_iso, to_js_iso

MASTER = bytes(range(1, 33))
NOW = dt.datetime(2026, 4, 15, 12, 0, 0, 123456, tzinfo=dt.UTC)
DERIVATION = GrantDerivation(
    version="v1", mission_id="mission-abc", tables=("notes",), record_ids=("notes:n1",)
)


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return generate_runner_keypair()


@pytest.fixture(scope="module")
def other_keypair() -> tuple[str, str]:
    return generate_runner_keypair()


@pytest.fixture(scope="module")
def private_key(keypair: tuple[str, str]) -> rsa.RSAPrivateKey:
    key = load_private_key(keypair[0])
    assert key is not None
    return key


def make_grant(
    public_pem: str, *, mdk: bytes | None = None, expires_in: dt.timedelta = dt.timedelta(days=1)
) -> dict[str, Any]:
    if mdk is None:
        mdk = derive_mission_data_key(MASTER, "mission-abc", ["notes"], ["notes:n1"])
    return MissionGrant(
        wrapped_key=wrap_key(mdk, public_pem),
        derivation=DERIVATION,
        issued_at=to_js_iso(NOW),
        expires_at=to_js_iso(NOW + expires_in),
    ).to_json()


# --- unwrap (unwrap-grant.test.ts) ------------------------------------------------------------------------


def test_round_trip_unwrapped_mdk_decrypts_data_of_the_derived_mdk(
    keypair: tuple[str, str], private_key: rsa.RSAPrivateKey
) -> None:  # case 33
    derived = derive_mission_data_key(MASTER, "mission-abc", ["notes"], ["notes:n1"])
    blob = encrypt_value("geheimer inhalt", derived)
    result = unwrap_grant(make_grant(keypair[1]), private_key, now=NOW)
    assert isinstance(result, UnwrapOk)
    assert result.ok is True
    assert result.mdk == derived
    assert result.allowlist == frozenset({"notes:n1"})
    assert result.derivation == DERIVATION
    assert decrypt_value(blob, result.mdk) == "geheimer inhalt"
    assert derived.hex() not in repr(result)


def test_never_configured_is_not_configured(keypair: tuple[str, str]) -> None:  # case 34
    assert unwrap_grant(make_grant(keypair[1]), None, now=NOW) == UnwrapFailed("not-configured")


@pytest.mark.parametrize(
    "pem", [None, "", "   ", "not a pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"]
)
def test_configured_with_nothing_or_garbage_is_not_configured(
    keypair: tuple[str, str], pem: str | None
) -> None:  # case 35
    key = load_private_key(pem)
    assert key is None
    assert unwrap_grant(make_grant(keypair[1]), key, now=NOW) == UnwrapFailed("not-configured")


def test_expired_one_second_ago(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:  # case 36
    grant = make_grant(keypair[1], expires_in=dt.timedelta(seconds=-1))
    assert unwrap_grant(grant, private_key, now=NOW) == UnwrapFailed("expired")


def test_expiry_exactly_now_is_still_valid(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:
    grant = make_grant(keypair[1], expires_in=dt.timedelta(0))
    now = parse_iso(grant["expiresAt"])
    assert isinstance(unwrap_grant(grant, private_key, now=now), UnwrapOk)


def test_wrapped_for_another_key_is_wrap_rejected(
    other_keypair: tuple[str, str], private_key: rsa.RSAPrivateKey
) -> None:  # case 37
    assert unwrap_grant(make_grant(other_keypair[1]), private_key, now=NOW) == UnwrapFailed("wrap-rejected")


@pytest.mark.parametrize("expires_at", ["not a date", "", None, 12345])
def test_unparseable_expiry_is_expired(
    keypair: tuple[str, str], private_key: rsa.RSAPrivateKey, expires_at: Any
) -> None:
    grant = make_grant(keypair[1])
    grant["expiresAt"] = expires_at
    assert unwrap_grant(grant, private_key, now=NOW) == UnwrapFailed("expired")


@pytest.mark.parametrize(
    "garble",
    [
        lambda g: "{not json",
        lambda g: "garbage",
        lambda g: 42,
        lambda g: None,
        lambda g: [g],
        lambda g: {**g, "wrappedKey": 42},
        lambda g: {**g, "wrappedKey": "***not base64***"},
        lambda g: {**g, "derivation": "v1"},
        lambda g: {**g, "derivation": {**g["derivation"], "recordIds": "notes:n1"}},
        lambda g: {**g, "derivation": {**g["derivation"], "tables": [1]}},
        lambda g: {k: v for k, v in g.items() if k != "issuedAt"},
    ],
)
def test_garbled_grant_is_malformed(
    keypair: tuple[str, str], private_key: rsa.RSAPrivateKey, garble: Any
) -> None:
    assert unwrap_grant(garble(make_grant(keypair[1])), private_key, now=NOW) == UnwrapFailed("malformed")


def test_grant_as_json_text_is_accepted(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:
    assert isinstance(unwrap_grant(json.dumps(make_grant(keypair[1])), private_key, now=NOW), UnwrapOk)


def test_plaintext_of_wrong_length_is_malformed(
    keypair: tuple[str, str], private_key: rsa.RSAPrivateKey
) -> None:
    grant = make_grant(keypair[1], mdk=bytes(16))
    assert unwrap_grant(grant, private_key, now=NOW) == UnwrapFailed("malformed")


def test_check_order(
    keypair: tuple[str, str], other_keypair: tuple[str, str], private_key: rsa.RSAPrivateKey
) -> None:
    expired_garbled = {**make_grant(keypair[1], expires_in=dt.timedelta(seconds=-1)), "wrappedKey": "***"}
    assert unwrap_grant(expired_garbled, None, now=NOW) == UnwrapFailed("not-configured")
    assert unwrap_grant(expired_garbled, private_key, now=NOW) == UnwrapFailed("expired")
    garbled_foreign = {**make_grant(other_keypair[1]), "derivation": None}
    assert unwrap_grant(garbled_foreign, private_key, now=NOW) == UnwrapFailed("malformed")


# --- keys ---------------------------------------------------------------------------------------------------


def test_private_key_pem_is_read_tolerantly(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:
    private_pem, public_pem = keypair
    body = "".join(line for line in private_pem.splitlines() if "-----" not in line)
    one_line_env = private_pem.strip().replace("\n", "\\n")
    for variant in (
        body,
        "  " + private_pem + "\n\n",
        one_line_env,
        private_pem.replace("PRIVATE KEY", "RSA KEY"),
    ):
        key = load_private_key(variant)
        assert key is not None
        assert key.private_numbers() == private_key.private_numbers()
    assert public_key_pem_from_private(private_pem) == public_pem
    assert public_key_pem_from_private(private_key) == public_pem


def test_generated_pems_have_the_expected_armour(keypair: tuple[str, str]) -> None:
    private_pem, public_pem = keypair
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, not PKCS#1
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")  # SPKI


def test_wrap_key_rejects_a_bad_public_key() -> None:
    with pytest.raises(CryptoError):
        wrap_key(bytes(32), "not a key")


def test_wrap_key_output_is_padded_base64(keypair: tuple[str, str]) -> None:
    wrapped = wrap_key(bytes(32), keypair[1])
    assert len(base64.b64decode(wrapped, validate=True)) == 256  # RSA-2048 ciphertext


# --- grant JSON ---------------------------------------------------------------------------------------------


def test_grant_json_round_trip_uses_camel_case() -> None:
    grant = MissionGrant(wrapped_key="d2s=", derivation=DERIVATION, issued_at="a", expires_at="b")
    obj = grant.to_json()
    assert obj == {
        "wrappedKey": "d2s=",
        "derivation": {
            "version": "v1",
            "missionId": "mission-abc",
            "tables": ["notes"],
            "recordIds": ["notes:n1"],
        },
        "issuedAt": "a",
        "expiresAt": "b",
    }
    assert MissionGrant.from_json(obj) == grant
    assert MissionGrant.from_json(json.dumps(obj)) == grant


@pytest.mark.parametrize(
    "bad",
    [
        "{",
        "[]",
        1,
        {"wrappedKey": "x"},
        {"wrappedKey": "x", "derivation": {}, "issuedAt": "a", "expiresAt": "b"},
    ],
)
def test_grant_from_json_raises_on_garbage(bad: Any) -> None:
    with pytest.raises(CryptoError):
        MissionGrant.from_json(bad)


# --- issue (mana-auth mission-grant.test.ts) ------------------------------------------------------------


def issue(public_pem: str | None, **overrides: Any) -> MissionGrant:
    args: dict[str, Any] = {
        "master_key": MASTER,
        "mission_id": "mission-abc",
        "tables": ["tasks", "notes"],
        "record_ids": ["tasks:t1", "notes:n1"],
        "public_key_pem": public_pem,
        "ttl": None,
        "now": NOW,
    }
    args.update(overrides)
    return issue_grant(**args)


def test_issued_grant_unwraps_to_the_hkdf_mdk(
    keypair: tuple[str, str], private_key: rsa.RSAPrivateKey
) -> None:
    grant = issue(keypair[1])
    assert grant.derivation == GrantDerivation(
        "v1", "mission-abc", ("notes", "tasks"), ("notes:n1", "tasks:t1")
    )
    result = unwrap_grant(grant.to_json(), private_key, now=NOW)
    assert isinstance(result, UnwrapOk)
    assert result.mdk.hex() == "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"
    assert result.allowlist == frozenset({"notes:n1", "tasks:t1"})


def test_unsorted_inputs_give_the_same_mdk(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:
    a = unwrap_grant(issue(keypair[1]).to_json(), private_key, now=NOW)
    b = unwrap_grant(
        issue(keypair[1], tables=["notes", "tasks"], record_ids=["notes:n1", "tasks:t1"]).to_json(),
        private_key,
        now=NOW,
    )
    assert isinstance(a, UnwrapOk) and isinstance(b, UnwrapOk)
    assert a.mdk == b.mdk


def test_zero_knowledge_user_is_forbidden(keypair: tuple[str, str]) -> None:
    with pytest.raises(ZeroKnowledgeGrantForbidden):
        issue(keypair[1], master_key=None)


@pytest.mark.parametrize("pem", [None, "", "  "])
def test_no_public_key_is_not_configured(pem: str | None) -> None:
    with pytest.raises(GrantNotConfigured) as info:
        issue(pem, master_key=None)  # configuration is checked before the vault
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tables": []}, "tables must be a non-empty array"),
        ({"record_ids": []}, "recordIds must be a non-empty array"),
        ({"record_ids": ["notes:n" + str(i) for i in range(1001)]}, "recordIds must not exceed 1000 entries"),
        ({"mission_id": ""}, "missionId"),
        ({"tables": "notes"}, "tables"),
        ({"record_ids": ["notes:n1", 7]}, "recordIds"),
    ],
)
def test_invalid_requests_are_rejected(
    keypair: tuple[str, str], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidGrantRequest, match=message):
        issue(keypair[1], master_key=None, **overrides)  # validation precedes the vault check


def test_thousand_record_ids_are_allowed(keypair: tuple[str, str]) -> None:
    grant = issue(keypair[1], tables=["notes"], record_ids=["notes:n" + str(i) for i in range(1000)])
    assert len(grant.derivation.record_ids) == 1000


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (None, dt.timedelta(days=7)),
        (dt.timedelta(days=365), dt.timedelta(days=30)),
        (dt.timedelta(minutes=1), dt.timedelta(hours=1)),
        (dt.timedelta(hours=-5), dt.timedelta(hours=1)),
        (dt.timedelta(days=2), dt.timedelta(days=2)),
    ],
)
def test_ttl_default_and_clamp(
    keypair: tuple[str, str], ttl: dt.timedelta | None, expected: dt.timedelta
) -> None:
    grant = issue(keypair[1], ttl=ttl)
    assert grant.issued_at == "2026-04-15T12:00:00.123Z"
    assert parse_iso(grant.expires_at) - parse_iso(grant.issued_at) == expected


def test_naive_now_is_taken_as_utc(keypair: tuple[str, str], private_key: rsa.RSAPrivateKey) -> None:
    grant = make_grant(keypair[1], expires_in=dt.timedelta(seconds=-1))
    assert unwrap_grant(grant, private_key, now=NOW.replace(tzinfo=None)) == UnwrapFailed("expired")
