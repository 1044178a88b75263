"""Checking what a client uploads to the grant API before it is stored (pure: no I/O, no clock).

``PUT /api/v1/me/missions/{id}/grant`` takes ``{"grant": {...}, "keyBox": "enc:1:…", "copies": [...]}``;
``PUT …/grant/copies`` takes ``{"grantId": "…", "copies": [...], "removed": [{"table", "recordId"}]}``.
The server holds the runner's private key, so it verifies a grant exactly as the runner will: a v2 grant
whose terms were edited (later ``expiresAt``, wider scope, another mission) does not unwrap and is refused
here already. Copies may only be of records the grant covers, of the mission itself, or of its agent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from mana_ai.crypto.grants import GRANT_V2, MAX_TTL, MIN_TTL, MissionGrant, UnwrapFailed, unwrap_grant
from mana_ai.errors import CryptoError
from mana_ai.privacy.reseal import AGENT_TABLE, MISSION_TABLE, SealedCopy, grant_id
from mana_ai.timefmt import parse_iso

MAX_SEALED_CHARS: Final = 512 * 1024
MAX_KEY_BOX_CHARS: Final = 1024
MAX_COPIES: Final = 1002
"""Every granted record (at most 1000), the mission's text and the agent's persona."""
_SLACK: Final = dt.timedelta(minutes=5)


class UploadRefused(ValueError):
    """The upload is refused (400); ``code`` is stable, the message safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class GrantUpload:
    grant: MissionGrant
    grant_id: str
    expires_at: dt.datetime
    key_box: str | None
    copies: tuple[SealedCopy, ...]


@dataclass(frozen=True, slots=True)
class CopiesUpload:
    grant_id: str
    copies: tuple[SealedCopy, ...]
    removed: tuple[tuple[str, str], ...]


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UploadRefused("BAD_REQUEST", what + " must be an object")
    return value


def parse_copy(value: Any) -> SealedCopy:
    item = _obj(value, "each copy")
    table, record_id, sealed = item.get("table"), item.get("recordId"), item.get("sealed")
    meta = item.get("sourceFieldMeta", {})
    if not all(isinstance(v, str) and v for v in (table, record_id, sealed)):
        raise UploadRefused("BAD_REQUEST", "a copy needs table, recordId and sealed (non-empty strings)")
    assert isinstance(table, str) and isinstance(record_id, str) and isinstance(sealed, str)
    if len(sealed) > MAX_SEALED_CHARS:
        raise UploadRefused(
            "TOO_LARGE", "a sealed copy must not exceed " + str(MAX_SEALED_CHARS) + " characters"
        )
    if not isinstance(meta, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise UploadRefused("BAD_REQUEST", "sourceFieldMeta must map field names to ISO stamps")
    return SealedCopy(table, record_id, sealed, dict(meta))


def _check_scope(grant: MissionGrant, copies: tuple[SealedCopy, ...], mission_id: str) -> None:
    allowed = set(grant.derivation.record_ids)
    agents = {c.record_id for c in copies if c.table == AGENT_TABLE}
    if len(agents) > 1:
        raise UploadRefused("OUT_OF_SCOPE", "copies of more than one agent")
    for copy in copies:
        if copy.table == MISSION_TABLE and copy.record_id != mission_id:
            raise UploadRefused("OUT_OF_SCOPE", "a mission copy must be of this mission")
        if (
            copy.table not in (MISSION_TABLE, AGENT_TABLE)
            and copy.table + ":" + copy.record_id not in allowed
        ):
            raise UploadRefused("OUT_OF_SCOPE", "a copy of a record the grant does not cover")


def parse_grant_upload(
    body: Any, *, mission_id: str, private_key: rsa.RSAPrivateKey, now: dt.datetime
) -> GrantUpload:
    """Validate a grant upload for ``mission_id``.

    Raises:
        UploadRefused: the body's shape, a grant that is not v2, not for this mission, does not verify
            (edited terms), is expired or longer than 30 days, or copies outside its scope.
    """
    data = _obj(body, "the body")
    try:
        grant = MissionGrant.from_json(data.get("grant"))
    except CryptoError as exc:
        raise UploadRefused("BAD_REQUEST", str(exc)) from None
    if grant.derivation.version != GRANT_V2:
        raise UploadRefused("UNSUPPORTED_GRANT", "only v2 grants can be stored (see docs/privacy.md)")
    if grant.derivation.mission_id != mission_id:
        raise UploadRefused("WRONG_MISSION", "the grant is for another mission")
    result = unwrap_grant(grant.to_json(), private_key, now=now)
    if isinstance(result, UnwrapFailed):
        code = "GRANT_EXPIRED" if result.reason == "expired" else "GRANT_REJECTED"
        raise UploadRefused(code, "the grant does not verify (" + result.reason + ")")
    try:
        issued, expires = parse_iso(grant.issued_at), parse_iso(grant.expires_at)
    except (ValueError, OverflowError):
        raise UploadRefused("BAD_LIFETIME", "issuedAt and expiresAt must be ISO timestamps") from None
    lifetime = expires - issued
    if lifetime < MIN_TTL - _SLACK or lifetime > MAX_TTL + _SLACK or issued > now + _SLACK:
        raise UploadRefused("BAD_LIFETIME", "a grant lives between 1 hour and 30 days from its issue time")
    key_box = data.get("keyBox")
    if key_box is not None and (not isinstance(key_box, str) or len(key_box) > MAX_KEY_BOX_CHARS):
        raise UploadRefused("BAD_REQUEST", "keyBox must be a short string")
    copies = _copies(data.get("copies", []))
    _check_scope(grant, copies, mission_id)
    return GrantUpload(grant, grant_id(grant.wrapped_key), expires, key_box, copies)


def _copies(value: Any) -> tuple[SealedCopy, ...]:
    if not isinstance(value, list):
        raise UploadRefused("BAD_REQUEST", "copies must be an array")
    if len(value) > MAX_COPIES:
        raise UploadRefused("TOO_LARGE", "at most " + str(MAX_COPIES) + " copies")
    copies = tuple(parse_copy(item) for item in value)
    if len({(c.table, c.record_id) for c in copies}) != len(copies):
        raise UploadRefused("BAD_REQUEST", "a record has more than one copy")
    return copies


def parse_copies_upload(body: Any, *, mission_id: str, current: MissionGrant) -> CopiesUpload:
    """Validate a refresh of the copies of the mission's ``current`` grant.

    Raises:
        UploadRefused: shape, a grant id that is not the current one, or copies outside its scope.
    """
    data = _obj(body, "the body")
    given = data.get("grantId")
    if given != grant_id(current.wrapped_key):
        raise UploadRefused("STALE_GRANT", "grantId is not the mission's current grant")
    copies = _copies(data.get("copies", []))
    _check_scope(current, copies, mission_id)
    removed_raw = data.get("removed", [])
    if not isinstance(removed_raw, list) or len(removed_raw) > MAX_COPIES:
        raise UploadRefused("BAD_REQUEST", "removed must be an array")
    removed: list[tuple[str, str]] = []
    for item in removed_raw:
        entry = _obj(item, "each removed entry")
        table, record_id = entry.get("table"), entry.get("recordId")
        if not isinstance(table, str) or not isinstance(record_id, str):
            raise UploadRefused("BAD_REQUEST", "a removed entry needs table and recordId")
        removed.append((table, record_id))
    return CopiesUpload(str(given), copies, tuple(removed))
