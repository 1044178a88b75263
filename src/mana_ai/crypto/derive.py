"""Mission data key (MDK) derivation, byte-compatible with ``deriveMissionDataKeyRaw`` (SPEC §17.1).

mana-auth derives the MDK from the user's vault master key and wraps it for mana-ai; this module is the
same derivation, used by :func:`mana_ai.crypto.grants.issue_grant` and by tests that check an unwrapped
grant against an independently derived key.

    MDK = HKDF-SHA256(IKM = master key, salt = UTF-8(missionId), info = UTF-8(canonical info), L = 32)

The canonical info string sorts tables and record ids the way JavaScript's default ``Array.sort`` does:
by UTF-16 code units. Python sorts ``str`` by code points, which differs only for characters outside the
Basic Multilingual Plane (surrogate pairs sort below U+E000..U+FFFF in UTF-16), so we sort by
:func:`utf16_sort_key`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mana_ai.errors import CryptoError

DERIVATION_VERSION: Final = "v1"
"""The only derivation version mana-auth issues."""

MASTER_KEY_LENGTH: Final = 32
MDK_LENGTH: Final = 32
INFO_PREFIX: Final = "mana-ai-mission-grant:"


def utf16_sort_key(text: str) -> bytes:
    """Sort key giving JavaScript's default string order (UTF-16 code units).

    Big-endian UTF-16 bytes compare exactly like sequences of 16-bit code units; ``surrogatepass``
    keeps lone surrogates (legal in JS strings) sortable instead of raising.
    """
    return text.encode("utf-16-be", "surrogatepass")


def js_sorted(items: Iterable[str]) -> list[str]:
    """A sorted copy in JavaScript's default ``Array.prototype.sort`` order for strings."""
    return sorted(items, key=utf16_sort_key)


def canonical_info_string(version: str, tables: Iterable[str], record_ids: Iterable[str]) -> str:
    """The HKDF info string; order of ``tables`` and ``record_ids`` does not matter.

    Returns:
        ``mana-ai-mission-grant:<version>:tables=<sorted tables>:ids=<sorted record ids>``.
    """
    return (
        INFO_PREFIX
        + version
        + ":tables="
        + ",".join(js_sorted(tables))
        + ":ids="
        + ",".join(js_sorted(record_ids))
    )


def derive_mission_data_key(
    master_key: bytes,
    mission_id: str,
    tables: Iterable[str],
    record_ids: Iterable[str],
    version: str = DERIVATION_VERSION,
) -> bytes:
    """Derive the 32-byte mission data key.

    Args:
        master_key: the user's 32-byte vault master key.
        mission_id: the mission id (HKDF salt).
        tables: tables the grant covers (any order).
        record_ids: qualified record ids ``"<table>:<id>"`` (any order).
        version: derivation version; only ``"v1"`` exists.

    Returns:
        The raw MDK (32 bytes).

    Raises:
        CryptoError: for a master key that is not 32 bytes or an unknown version.
    """
    if len(master_key) != MASTER_KEY_LENGTH:
        raise CryptoError("expected 32-byte master key, got " + str(len(master_key)))
    if version != DERIVATION_VERSION:
        raise CryptoError("unsupported derivation version: " + repr(version))
    info = canonical_info_string(version, tables, record_ids)
    hkdf = HKDF(
        algorithm=SHA256(), length=MDK_LENGTH, salt=mission_id.encode("utf-8"), info=info.encode("utf-8")
    )
    return hkdf.derive(bytes(master_key))
