"""Issuing, refreshing and revoking mission key grants on the user's side (``mana-ai grants …``).

This is the part of the design that holds the user's master key, so it runs where the user is (the CLI
here; the web app runs the same protocol in WebCrypto with ``mana-ai-grants.js``), never in the runner process.
Creating a grant (docs/privacy.md, protocol v2):

1. validates the request as mana-auth does (non-empty tables and ids, at most 1000 ids, TTL clamped to
   [1 h, 30 d], refusal without a master key, i.e. for zero-knowledge vaults);
2. draws a fresh random 32-byte grant data key and wraps it with the runner's RSA public key, the grant's
   terms (mission, scope, ``issuedAt``, ``expiresAt``) bound in as the OAEP label;
3. seals every granted record, the mission's own encrypted text and its agent's persona under the data key
   (:mod:`mana_ai.privacy.reseal`), and the data key itself under the master key (the *key box*, so a later
   refresh can re-seal without a new grant);
4. stores grant and copies in mana-ai's own tables (:mod:`mana_ai.privacy.grant_store`) and sets
   ``mission.grant`` in the sync log (the user's consent, as the web app's ``setMissionGrant`` writes it),
   all in one user-scoped transaction.

Revoking removes the stored grant with its copies and sets ``mission.grant`` to null. Refreshing re-seals the
copies whose source changed since they were made, and removes those whose source is gone.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from mana_ai.crypto.aead import b64decode_forgiving, b64encode, decrypt_value, encrypt_value, is_encrypted
from mana_ai.crypto.grants import (
    InvalidGrantRequest,
    MissionGrant,
    ZeroKnowledgeGrantForbidden,
    clamp_ttl,
    issue_grant_v2,
    load_public_key,
)
from mana_ai.db.connector import AsyncConn, Database
from mana_ai.errors import ConfigError, CryptoError
from mana_ai.privacy.copy_store import (
    GrantTargetMissing,
    live_agent,
    live_mission,
    live_source,
    lock_mission,
    mission_state,
    set_mission_grant,
)
from mana_ai.privacy.grant_store import delete_grant, get_grant, list_copy_meta, put_copies, put_grant
from mana_ai.privacy.refs import RecordRef, refs_from_inputs, split_qualified, unique
from mana_ai.privacy.reseal import (
    AGENT_TABLE,
    AGENT_TEXT_FIELDS,
    MISSION_TABLE,
    MISSION_TEXT_FIELDS,
    ResealError,
    SealedCopy,
    grant_id,
    reseal_record,
)
from mana_ai.synclog.lww import RecordState
from mana_ai.timefmt import parse_iso, to_js_iso

__all__ = [
    "DEFAULT_RUNNER_URL",
    "GrantIssued",
    "GrantRefreshed",
    "GrantRevoked",
    "GrantTargetMissing",
    "create_grant",
    "fetch_runner_public_key",
    "refresh_grant",
    "revoke_grant",
]

logger = logging.getLogger(__name__)

DEFAULT_RUNNER_URL: Final = "http://127.0.0.1:3067"
PUBKEY_PATH: Final = "/api/v1/ai-runner-pubkey"


async def fetch_runner_public_key(base_url: str = DEFAULT_RUNNER_URL, *, timeout_s: float = 10.0) -> str:
    """``GET {base_url}/api/v1/ai-runner-pubkey`` → the runner's SPKI PEM (checked to be an RSA key).

    Raises:
        ConfigError: unreachable, a non-200 answer, or no valid key in the answer.
    """
    url = base_url.rstrip("/") + PUBKEY_PATH
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise ConfigError(
                    "the runner at " + base_url + " answered " + str(response.status) + " for its "
                    "public key (are mission grants configured there?)"
                )
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            "cannot fetch the runner's public key from " + url + ": " + type(exc).__name__
        ) from None
    pem = body.get("publicKeyPem") if isinstance(body, Mapping) else None
    if not isinstance(pem, str):
        raise ConfigError("the runner's answer at " + url + " has no publicKeyPem")
    try:
        load_public_key(pem)
    except CryptoError:
        raise ConfigError("the runner's publicKeyPem is not an RSA public key") from None
    return pem


# --- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantIssued:
    grant: MissionGrant
    grant_id: str
    records: int
    """Granted records (each has a copy)."""
    sealed_fields: int
    """Encrypted fields re-sealed, the mission's own text included."""
    removed_copies: int
    """Copies of earlier grants deleted."""
    ttl: dt.timedelta
    """The lifetime after clamping."""


@dataclass(frozen=True, slots=True)
class GrantRevoked:
    had_grant: bool
    removed_copies: int


@dataclass(frozen=True, slots=True)
class GrantRefreshed:
    updated: int
    """Copies re-sealed because their source changed (or that were missing)."""
    unchanged: int
    removed: int
    """Copies deleted because their source record is gone."""


# --- operations -----------------------------------------------------------------------------------------


def seal_key_box(data_key: bytes, master_key: bytes) -> str:
    """The grant data key sealed under the master key, in the web app's ``enc:1:`` format (a base64 string)."""
    return encrypt_value(b64encode(data_key), master_key)


def open_key_box(key_box: str | None, master_key: bytes) -> bytes:
    """The grant data key from its key box.

    Raises:
        ResealError: no key box, or it does not open with ``master_key``.
    """
    if not is_encrypted(key_box):
        raise ResealError("the stored grant has no key box; create a new grant")
    try:
        text = decrypt_value(key_box, master_key)
        key = b64decode_forgiving(text) if isinstance(text, str) else b""
    except CryptoError as exc:
        raise ResealError(
            "the grant's key box does not open with this master key (" + str(exc) + ")"
        ) from None
    if len(key) != 32:
        raise ResealError("the grant's key box holds no 32-byte key")
    return key


async def _targets(
    conn: AsyncConn, user_id: str, mission: RecordState, refs: Sequence[RecordRef]
) -> list[tuple[str, str, RecordState | None, tuple[str, ...] | None]]:
    """``(table, record id, source or None, only fields)`` of every copy a grant of ``mission`` needs."""
    out: list[tuple[str, str, RecordState | None, tuple[str, ...] | None]] = [
        (ref.table, ref.record_id, await live_source(conn, user_id, ref), None) for ref in refs
    ]
    mission_id = str(mission.record.get("id"))
    out.append((MISSION_TABLE, mission_id, mission, MISSION_TEXT_FIELDS))
    agent_id = mission.record.get("agentId")
    if isinstance(agent_id, str) and agent_id:
        out.append((AGENT_TABLE, agent_id, await live_agent(conn, user_id, agent_id), AGENT_TEXT_FIELDS))
    return out


def _needs_copy(source: RecordState, only: tuple[str, ...] | None) -> bool:
    return any(is_encrypted(v) and (only is None or k in only) for k, v in source.record.items())


def _seal(
    mission_id: str, table: str, record_id: str, source: RecordState, only: tuple[str, ...] | None,
    master_key: bytes, data_key: bytes,
) -> SealedCopy:  # fmt: skip
    return reseal_record(
        mission_id=mission_id,
        table=table,
        record_id=record_id,
        source=source.record,
        source_field_meta=source.field_meta,
        master_key=master_key,
        data_key=data_key,
        only_fields=only,
    )


async def create_grant(
    db: Database,
    *,
    user_id: str,
    mission_id: str,
    records: Sequence[RecordRef] | None,
    master_key: bytes | None,
    public_key_pem: str | None,
    ttl: dt.timedelta | None,
    now: dt.datetime,
) -> GrantIssued:
    """Issue a v2 grant for ``records`` (default: the mission's encrypted inputs) and seal the copies.

    Args:
        db: the database; all writes happen in one transaction scoped to ``user_id``.
        user_id: the user who owns the mission and the records.
        mission_id: the mission.
        records: the records to grant; ``None`` takes the mission's encrypted-table inputs.
        master_key: the user's 32-byte master key (``None``: a zero-knowledge vault, refused).
        public_key_pem: the runner's SPKI public key.
        ttl: lifetime, clamped to [1 h, 30 d]; ``None`` means 7 days.
        now: issue time.

    Raises:
        InvalidGrantRequest: no records, more than 1000, an unknown table.
        GrantNotConfigured: no public key.
        ZeroKnowledgeGrantForbidden: no master key.
        GrantTargetMissing: the mission or a record does not exist.
        ResealError: a record does not decrypt with ``master_key``.
    """
    now_iso = to_js_iso(now)
    async with db.with_user(user_id) as conn:
        await lock_mission(conn, user_id, mission_id)
        mission = await live_mission(conn, user_id, mission_id)
        refs = unique(records) if records is not None else refs_from_inputs(mission.record.get("inputs"))
        if not refs:
            raise InvalidGrantRequest(
                "no records to grant: the mission links no encrypted inputs; pass --record <table>:<id>"
            )
        data_key = os.urandom(32)
        grant = issue_grant_v2(
            data_key=data_key,
            mission_id=mission_id,
            tables=sorted({r.table for r in refs}),
            record_ids=[r.qualified for r in refs],
            public_key_pem=public_key_pem,
            ttl=ttl,
            now=now,
        )
        if master_key is None:
            raise ZeroKnowledgeGrantForbidden()
        copies: list[SealedCopy] = []
        for table, record_id, source, only in await _targets(conn, user_id, mission, refs):
            if source is None:
                if only is not None:
                    continue  # the mission's agent is gone: nothing to seal
                where = table + ":" + record_id
                raise GrantTargetMissing("record " + where + " not found for user " + repr(user_id))
            if only is None or _needs_copy(source, only):
                copies.append(_seal(mission_id, table, record_id, source, only, master_key, data_key))
        tag = grant_id(grant.wrapped_key)
        removed = len(await list_copy_meta(conn, user_id, mission_id))
        await put_grant(
            conn,
            user_id,
            mission_id,
            grant_id=tag,
            grant=grant.to_json(),
            key_box=seal_key_box(data_key, master_key),
            expires_at=parse_iso(grant.expires_at),
            copies=copies,
        )
        await set_mission_grant(conn, user_id, mission_id, grant.to_json(), now_iso)
    logger.info(
        "mission grant issued",
        extra={
            "action": "privacy.grant_issued",
            "mission_id": mission_id,
            "records": len(refs),
            "expires_at": grant.expires_at,
        },
    )
    return GrantIssued(
        grant=grant,
        grant_id=tag,
        records=len(refs),
        sealed_fields=sum(len(c.source_field_meta) for c in copies),
        removed_copies=removed,
        ttl=clamp_ttl(ttl),
    )


async def revoke_grant(db: Database, *, user_id: str, mission_id: str, now: dt.datetime) -> GrantRevoked:
    """Remove the stored grant with its copies and set ``mission.grant`` to null.

    Raises:
        GrantTargetMissing: neither the mission nor a stored grant of it exists.
    """
    now_iso = to_js_iso(now)
    async with db.with_user(user_id) as conn:
        await lock_mission(conn, user_id, mission_id)
        mission = await mission_state(conn, user_id, mission_id)
        live = mission is not None and mission.is_live()
        removed = len(await list_copy_meta(conn, user_id, mission_id))
        stored = await delete_grant(conn, user_id, mission_id)
        if not live and not stored:
            raise GrantTargetMissing("mission " + repr(mission_id) + " not found for user " + repr(user_id))
        had_grant = stored or (live and mission is not None and mission.record.get("grant") is not None)
        if live and mission is not None and mission.record.get("grant") is not None:
            await set_mission_grant(conn, user_id, mission_id, None, now_iso)
    logger.info(
        "mission grant revoked",
        extra={"action": "privacy.grant_revoked", "mission_id": mission_id, "removed_copies": removed},
    )
    return GrantRevoked(had_grant, removed)


async def refresh_grant(
    db: Database, *, user_id: str, mission_id: str, master_key: bytes, now: dt.datetime
) -> GrantRefreshed:
    """Re-seal the copies of the mission's current grant whose source changed since they were made.

    Raises:
        GrantTargetMissing: no mission, or it has no stored, unexpired grant.
        ResealError: a record does not decrypt with ``master_key``, or the key box does not open.
    """
    async with db.with_user(user_id) as conn:
        await lock_mission(conn, user_id, mission_id)
        mission = await live_mission(conn, user_id, mission_id)
        stored = await get_grant(conn, user_id, mission_id)
        grant = _current_grant(mission_id, stored.grant if stored is not None else None, now)
        assert stored is not None
        data_key = open_key_box(stored.key_box, master_key)
        existing = {(m.table, m.record_id): m for m in await list_copy_meta(conn, user_id, mission_id)}
        refs = [r for r in (split_qualified(q) for q in grant.derivation.record_ids) if r is not None]
        fresh: list[SealedCopy] = []
        gone: list[tuple[str, str]] = []
        unchanged = 0
        for table, record_id, source, only in await _targets(conn, user_id, mission, refs):
            old = existing.get((table, record_id))
            if source is None or (only is not None and not _needs_copy(source, only)):
                if old is not None:
                    gone.append((table, record_id))
                continue
            copy = _seal(mission_id, table, record_id, source, only, master_key, data_key)
            if (
                old is not None
                and old.grant_id == stored.grant_id
                and dict(old.source_field_meta) == dict(copy.source_field_meta)
            ):
                unchanged += 1
                continue
            fresh.append(copy)
        await put_copies(conn, user_id, mission_id, grant_id=stored.grant_id, copies=fresh, removed=gone)
    return GrantRefreshed(len(fresh), unchanged, len(gone))


def _current_grant(mission_id: str, value: Any, now: dt.datetime) -> MissionGrant:
    try:
        grant = MissionGrant.from_json(value)
        expired = parse_iso(grant.expires_at) < now
    except (CryptoError, ValueError):
        raise GrantTargetMissing("mission " + repr(mission_id) + " has no valid grant to refresh") from None
    if expired:
        raise GrantTargetMissing(
            "the grant of mission "
            + repr(mission_id)
            + " expired at "
            + grant.expires_at
            + "; create a new one"
        )
    return grant
