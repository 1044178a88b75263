"""v2 grants: the terms are the OAEP label, so an edited grant does not unwrap and is refused on upload."""

from __future__ import annotations

import copy
import datetime as dt
import os
from typing import Any

import pytest

from mana_ai.crypto.aead import encrypt_value
from mana_ai.crypto.grants import (
    GrantNotConfigured,
    InvalidGrantRequest,
    UnwrapFailed,
    UnwrapOk,
    generate_runner_keypair,
    grant_label,
    issue_grant_v2,
    load_private_key,
    unwrap_grant,
    wrap_key,
)
from mana_ai.privacy.grant_upload import UploadRefused, parse_copies_upload, parse_grant_upload
from mana_ai.privacy.reseal import reseal_record

PRIVATE, PUBLIC = generate_runner_keypair()
KEY = load_private_key(PRIVATE)
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
DATA_KEY = os.urandom(32)


def issue(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "data_key": DATA_KEY,
        "mission_id": "m1",
        "tables": ["tasks", "notes"],
        "record_ids": ["tasks:t1", "notes:n1"],
        "public_key_pem": PUBLIC,
        "ttl": dt.timedelta(days=1),
        "now": NOW,
    }
    values.update(overrides)
    return issue_grant_v2(**values).to_json()


def test_v2_grant_unwraps_to_the_data_key_with_sorted_terms() -> None:
    grant = issue()
    assert grant["derivation"] == {
        "version": "v2",
        "missionId": "m1",
        "tables": ["notes", "tasks"],
        "recordIds": ["notes:n1", "tasks:t1"],
    }
    assert (grant["issuedAt"], grant["expiresAt"]) == ("2026-05-01T12:00:00.000Z", "2026-05-02T12:00:00.000Z")
    result = unwrap_grant(grant, KEY, now=NOW)
    assert isinstance(result, UnwrapOk) and result.mdk == DATA_KEY
    assert result.allowlist == {"notes:n1", "tasks:t1"}
    assert grant_label("m1", ["a"], ["a:1"], "x", "y") == b'["mana-ai-grant-v2","m1",["a"],["a:1"],"x","y"]'


@pytest.mark.parametrize(
    "edit",
    [
        lambda g: g.__setitem__("expiresAt", "2099-01-01T00:00:00.000Z"),
        lambda g: g.__setitem__("issuedAt", "2026-05-01T12:00:01.000Z"),
        lambda g: g["derivation"]["recordIds"].append("notes:n9"),
        lambda g: g["derivation"].__setitem__("recordIds", ["notes:n1"]),
        lambda g: g["derivation"]["tables"].append("events"),
        lambda g: g["derivation"].__setitem__("missionId", "m2"),
    ],
    ids=["extend-expiry", "move-issue", "widen-ids", "narrow-ids", "widen-tables", "other-mission"],
)
def test_an_edited_grant_is_rejected_by_the_runner_and_on_upload(edit: Any) -> None:
    grant = copy.deepcopy(issue())
    edit(grant)
    assert unwrap_grant(grant, KEY, now=NOW) == UnwrapFailed("wrap-rejected")
    mission = grant["derivation"]["missionId"]
    with pytest.raises(UploadRefused) as info:
        parse_grant_upload({"grant": grant, "copies": []}, mission_id=mission, private_key=KEY, now=NOW)
    assert info.value.code == "GRANT_REJECTED"


def test_issue_v2_validation() -> None:
    with pytest.raises(GrantNotConfigured):
        issue(public_key_pem="")
    with pytest.raises(InvalidGrantRequest):
        issue(record_ids=[])
    with pytest.raises(InvalidGrantRequest):
        issue(record_ids=[f"notes:{i}" for i in range(1001)])


def copy_of(table: str, record_id: str, mission_id: str = "m1") -> dict[str, Any]:
    master = bytes(range(32))
    sealed = reseal_record(
        mission_id=mission_id,
        table=table,
        record_id=record_id,
        source={"content": encrypt_value("x", master)},
        source_field_meta={},
        master_key=master,
        data_key=DATA_KEY,
    )
    return sealed.to_json()


def test_upload_checks_mission_lifetime_version_and_scope() -> None:
    grant = issue()
    ok = parse_grant_upload(
        {
            "grant": grant,
            "keyBox": "enc:1:x",
            "copies": [copy_of("notes", "n1"), copy_of("aiMissions", "m1"), copy_of("agents", "a1")],
        },
        mission_id="m1",
        private_key=KEY,
        now=NOW,
    )
    assert len(ok.copies) == 3 and ok.expires_at == dt.datetime(2026, 5, 2, 12, tzinfo=dt.UTC)

    def refused(body: dict[str, Any], mission_id: str = "m1", now: dt.datetime = NOW) -> str:
        with pytest.raises(UploadRefused) as info:
            parse_grant_upload(body, mission_id=mission_id, private_key=KEY, now=now)
        return info.value.code

    assert refused({"grant": grant}, mission_id="m2") == "WRONG_MISSION"
    assert refused({"grant": grant}, now=NOW + dt.timedelta(days=2)) == "GRANT_EXPIRED"
    assert refused({"grant": grant, "copies": [copy_of("notes", "n2")]}) == "OUT_OF_SCOPE"
    assert refused({"grant": grant, "copies": [copy_of("aiMissions", "m2")]}) == "OUT_OF_SCOPE"
    assert (
        refused({"grant": grant, "copies": [copy_of("agents", "a1"), copy_of("agents", "a2")]})
        == "OUT_OF_SCOPE"
    )
    assert (
        refused({"grant": grant, "copies": [copy_of("notes", "n1"), copy_of("notes", "n1")]}) == "BAD_REQUEST"
    )
    assert (
        refused({"grant": {**grant, "derivation": {**grant["derivation"], "version": "v1"}}})
        == "UNSUPPORTED_GRANT"
    )
    assert (
        refused({"grant": issue(ttl=dt.timedelta(days=30), now=NOW + dt.timedelta(days=1))}) == "BAD_LIFETIME"
    )
    assert refused({"grant": "nope"}) == "BAD_REQUEST"

    current = ok.grant
    with pytest.raises(UploadRefused) as info:
        parse_copies_upload({"grantId": "other", "copies": []}, mission_id="m1", current=current)
    assert info.value.code == "STALE_GRANT"
    refresh = parse_copies_upload(
        {
            "grantId": ok.grant_id,
            "copies": [copy_of("tasks", "t1")],
            "removed": [{"table": "notes", "recordId": "n1"}],
        },
        mission_id="m1",
        current=current,
    )
    assert refresh.removed == (("notes", "n1"),) and len(refresh.copies) == 1


@pytest.mark.parametrize("issued_at", ["not-a-date", "0001-01-01T00:00:00+14:00"])
def test_an_upload_whose_issued_at_is_no_timestamp_is_refused(issued_at: str) -> None:
    # The label binds issuedAt as text only, and the runner's public key is public: anyone can wrap a grant
    # whose issuedAt is any text (the second one lies before year 1 in UTC).
    grant = issue()
    label = grant_label("m1", grant["derivation"]["tables"], grant["derivation"]["recordIds"], issued_at,
                        grant["expiresAt"])  # fmt: skip
    crafted = {**grant, "issuedAt": issued_at, "wrappedKey": wrap_key(DATA_KEY, PUBLIC, label=label)}
    assert isinstance(
        unwrap_grant(crafted, KEY, now=NOW), UnwrapOk
    )  # it verifies: only the upload can refuse
    with pytest.raises(UploadRefused) as info:
        parse_grant_upload({"grant": crafted, "copies": []}, mission_id="m1", private_key=KEY, now=NOW)
    assert info.value.code == "BAD_LIFETIME"
