"""Master-key files, the runner's key pair on disk, record refs and unwrapping a mission's grant."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest

from mana_ai.crypto.aead import decrypt_value, encrypt_value
from mana_ai.crypto.derive import derive_mission_data_key
from mana_ai.crypto.grants import InvalidGrantRequest, generate_runner_keypair, issue_grant, load_private_key
from mana_ai.errors import ConfigError
from mana_ai.privacy.grant_context import GrantContext, GrantSkipped, open_grant
from mana_ai.privacy.keyfiles import (
    MasterKeyError,
    parse_master_key,
    read_master_key_file,
    write_runner_keypair,
)
from mana_ai.privacy.refs import RecordRef, check_record_count, parse_record_ref, refs_from_inputs
from mana_ai.privacy.reseal import grant_id
from mana_ai.timefmt import to_js_iso

MASTER = bytes(range(1, 33))
NOW = dt.datetime(2026, 4, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_runner_keypair()


@pytest.mark.parametrize(
    "data",
    [
        MASTER,
        MASTER.hex().encode(),
        (MASTER.hex().upper() + "\n").encode(),
        base64.b64encode(MASTER) + b"\n",
        base64.urlsafe_b64encode(MASTER).rstrip(b"="),
    ],
)
def test_master_key_forms(data: bytes) -> None:
    assert parse_master_key(data) == MASTER


@pytest.mark.parametrize(
    "data", [b"", b"short", bytes(31), bytes(33), b"zz" * 32, base64.b64encode(bytes(16))]
)
def test_master_key_rejects(data: bytes) -> None:
    with pytest.raises(MasterKeyError):
        parse_master_key(data)


def test_master_key_file(tmp_path: Path) -> None:
    path = tmp_path / "mk"
    path.write_bytes(MASTER)
    assert read_master_key_file(path) == MASTER
    with pytest.raises(ConfigError, match="cannot be read"):
        read_master_key_file(tmp_path / "missing")


def test_write_runner_keypair(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    files = write_runner_keypair(out)
    assert stat.S_IMODE(files.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.public_path.stat().st_mode) == 0o644
    assert load_private_key(files.private_path.read_text()) is not None
    assert "BEGIN PUBLIC KEY" in files.public_path.read_text()
    with pytest.raises(ConfigError, match="exists"):
        write_runner_keypair(out)
    again = write_runner_keypair(out, force=True)
    assert again.public_pem != files.public_pem


def test_parse_record_refs() -> None:
    assert parse_record_ref("notes:abc") == RecordRef("notes", "abc")
    assert parse_record_ref("todo:t:1") == RecordRef("tasks", "t:1")  # module alias, ids may hold ':'
    assert parse_record_ref("calendar:e1").app_id == "calendar"
    assert parse_record_ref("tasks:t1").qualified == "tasks:t1"
    for bad in ("notes", "notes:", ":x", "secrets:x"):
        with pytest.raises(InvalidGrantRequest):
            parse_record_ref(bad)
    with pytest.raises(InvalidGrantRequest, match="1000"):
        check_record_count([RecordRef("notes", str(i)) for i in range(1001)])
    check_record_count([RecordRef("notes", "same")] * 1001)  # duplicates count once


def test_refs_from_mission_inputs() -> None:
    inputs = [
        {"module": "notes", "table": "notes", "id": "n1"},
        {"module": "goals", "table": "companionGoals", "id": "g1"},  # plaintext: no grant needed
        {"module": "todo", "table": "tasks", "id": "t1"},
        {"module": "x", "table": "unknown", "id": "u"},
        "garbage",
    ]
    assert refs_from_inputs(inputs) == [RecordRef("notes", "n1"), RecordRef("tasks", "t1")]
    assert refs_from_inputs(None) == []


def grant_json(
    public_pem: str, *, mission_id: str = "m1", ttl: dt.timedelta | None = None
) -> dict[str, object]:
    grant = issue_grant(
        master_key=MASTER,
        mission_id=mission_id,
        tables=["notes"],
        record_ids=["notes:n1"],
        public_key_pem=public_pem,
        ttl=ttl,
        now=NOW,
    )
    return grant.to_json()


def test_open_grant_ok_and_key_matches_the_derivation(keys: tuple[str, str]) -> None:
    private_pem, public_pem = keys
    grant = grant_json(public_pem)
    opened = open_grant("m1", grant, load_private_key(private_pem), now=NOW)
    assert isinstance(opened, GrantContext)
    assert (
        opened.allows("notes", "n1") and not opened.allows("notes", "n2") and not opened.allows("tasks", "n1")
    )
    assert opened.grant_id == grant_id(str(grant["wrappedKey"]))
    mdk = derive_mission_data_key(MASTER, "m1", ["notes"], ["notes:n1"])
    assert decrypt_value(encrypt_value("x", mdk), opened.aead) == "x"
    assert "aead" not in repr(opened)  # the key never shows up in a repr


def test_open_grant_skips(keys: tuple[str, str]) -> None:
    private_pem, public_pem = keys
    key = load_private_key(private_pem)
    other_private, other_public = generate_runner_keypair()
    assert open_grant("m1", None, key, now=NOW) is None
    assert open_grant("m1", grant_json(public_pem), None, now=NOW) == GrantSkipped("not-configured")
    expired = grant_json(public_pem, ttl=dt.timedelta(hours=1))
    assert open_grant("m1", expired, key, now=NOW + dt.timedelta(hours=2)) == GrantSkipped("expired")
    assert open_grant("m1", grant_json(other_public), key, now=NOW) == GrantSkipped("wrap-rejected")
    garbled = {
        "wrappedKey": "!!!",
        "derivation": {},
        "issuedAt": to_js_iso(NOW),
        "expiresAt": to_js_iso(NOW + dt.timedelta(days=1)),
    }
    assert open_grant("m1", garbled, key, now=NOW) == GrantSkipped("malformed")
    # A grant copied from another mission is not used for this one.
    assert open_grant("m2", grant_json(public_pem), key, now=NOW) == GrantSkipped("malformed")
    assert other_private  # the other key pair is a real, different key


async def test_fetch_runner_public_key_over_http(keys: tuple[str, str]) -> None:
    from aiohttp import web

    from mana_ai.privacy.grant_client import fetch_runner_public_key

    answers: dict[str, web.Response] = {
        "/good/api/v1/ai-runner-pubkey": web.json_response({"publicKeyPem": keys[1]}),
        "/off/api/v1/ai-runner-pubkey": web.json_response({"error": "not configured"}, status=503),
        "/junk/api/v1/ai-runner-pubkey": web.json_response({"publicKeyPem": "not a key"}),
    }

    async def handle(request: web.Request) -> web.Response:
        return answers[request.path]

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = "http://" + str(host) + ":" + str(port)
    try:
        assert await fetch_runner_public_key(base + "/good/") == keys[1]
        with pytest.raises(ConfigError, match="answered 503"):
            await fetch_runner_public_key(base + "/off")
        with pytest.raises(ConfigError, match="not an RSA public key"):
            await fetch_runner_public_key(base + "/junk")
    finally:
        await runner.cleanup()
    with pytest.raises(ConfigError, match="cannot fetch"):
        await fetch_runner_public_key(base + "/good", timeout_s=2)  # nothing listens any more
