"""MDK derivation (SPEC §17.1; §24.2 ``missions/grant.test.ts``)."""

from __future__ import annotations

import pytest

from mana_ai.crypto.derive import canonical_info_string, derive_mission_data_key, js_sorted
from mana_ai.errors import CryptoError

MASTER = bytes(range(1, 33))
GOLDEN_MDK = "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"


def test_info_string_exact_format() -> None:
    info = canonical_info_string("v1", ["notes", "tasks"], ["notes:n1", "tasks:t1"])
    assert info == "mana-ai-mission-grant:v1:tables=notes,tasks:ids=notes:n1,tasks:t1"


def test_info_string_is_order_independent() -> None:
    a = canonical_info_string("v1", ["tasks", "notes"], ["tasks:t1", "notes:n1"])
    b = canonical_info_string("v1", ["notes", "tasks"], ["notes:n1", "tasks:t1"])
    assert a == b


def test_golden_vector() -> None:
    mdk = derive_mission_data_key(MASTER, "mission-abc", ["notes", "tasks"], ["notes:n1", "tasks:t1"])
    assert mdk.hex() == GOLDEN_MDK


def test_mdk_is_32_bytes_and_deterministic() -> None:
    a = derive_mission_data_key(MASTER, "m", ["notes"], ["notes:n1"])
    b = derive_mission_data_key(MASTER, "m", ["notes"], ["notes:n1"])
    assert len(a) == 32
    assert a == b


def test_mdk_differs_per_mission() -> None:
    assert derive_mission_data_key(MASTER, "m1", ["notes"], ["notes:n1"]) != derive_mission_data_key(
        MASTER, "m2", ["notes"], ["notes:n1"]
    )


def test_mdk_differs_per_scope() -> None:
    base = derive_mission_data_key(MASTER, "m", ["notes"], ["notes:n1"])
    assert derive_mission_data_key(MASTER, "m", ["notes", "tasks"], ["notes:n1"]) != base
    assert derive_mission_data_key(MASTER, "m", ["notes"], ["notes:n1", "notes:n2"]) != base


def test_mdk_is_order_independent() -> None:
    a = derive_mission_data_key(MASTER, "mission-abc", ["tasks", "notes"], ["tasks:t1", "notes:n1"])
    assert a.hex() == GOLDEN_MDK


def test_unsupported_version_rejected() -> None:
    with pytest.raises(CryptoError, match="unsupported derivation version"):
        derive_mission_data_key(MASTER, "m", ["notes"], ["notes:n1"], version="v0")


def test_short_master_key_rejected() -> None:
    with pytest.raises(CryptoError, match="expected 32-byte master key"):
        derive_mission_data_key(bytes(16), "m", ["notes"], ["notes:n1"])


def test_sort_uses_utf16_code_units_like_javascript() -> None:
    # U+1F600 is the surrogate pair D83D DE00, which sorts below U+FF5E in UTF-16 but above it by code point.
    astral, bmp = "\U0001f600", "\uff5e"
    assert sorted([astral, bmp]) == [bmp, astral]
    assert js_sorted([bmp, astral]) == [astral, bmp]
    assert (
        canonical_info_string("v1", [bmp, astral], [])
        == "mana-ai-mission-grant:v1:tables=" + astral + "," + bmp + ":ids="
    )
