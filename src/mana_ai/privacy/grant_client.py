"""Issuing, refreshing and revoking mission key grants on the user's side (``mana-ai grants …``).

This is the part of the design that holds the user's master key, so it runs where the user is (the CLI
here, the web app in production), never in the runner process. Creating a grant:

1. validates the request as mana-auth does (non-empty tables and ids, at most 1000 ids, TTL clamped to
   [1 h, 30 d], refusal without a master key, i.e. for zero-knowledge vaults) and issues the grant: the
   mission data key (MDK) is derived from the master key and wrapped with the runner's RSA public key;
2. re-seals every encrypted field of every granted record, and of the mission's own title, objective and
   concept, from the master key to the MDK (:mod:`mana_ai.privacy.reseal`);
3. writes, in one user-scoped transaction through the sync log (user actor, client ``mana-ai-cli``), the
   copies, a delete for every copy of an earlier grant of the mission, and finally ``mission.grant``
   (a field-level update with the ``MissionGrant`` JSON).

Revoking sets ``mission.grant`` to null and deletes every copy (``op = delete``), so after a revoke nothing
is left that the runner could decrypt even with an old key. Refreshing re-seals the copies of the current
grant after source records changed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from mana_ai.crypto.derive import derive_mission_data_key
from mana_ai.crypto.grants import InvalidGrantRequest, MissionGrant, clamp_ttl, issue_grant, load_public_key
from mana_ai.db.connector import Database
from mana_ai.errors import ConfigError, CryptoError
from mana_ai.privacy.copy_store import (
    GrantTargetMissing,
    copy_state,
    delete_copies,
    delete_copy,
    insert_copy,
    list_copies,
    live_mission,
    live_source,
    lock_mission,
    mission_state,
    set_mission_grant,
    update_copy,
)
from mana_ai.privacy.refs import RecordRef, refs_from_inputs, split_qualified, unique
from mana_ai.privacy.reseal import (
    MISSION_TABLE,
    MISSION_TEXT_FIELDS,
    copies_prefix,
    copy_id,
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
    """Issue a grant for ``records`` (default: the mission's encrypted inputs) and make them readable.

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
        grant = issue_grant(
            master_key=master_key,
            mission_id=mission_id,
            tables=sorted({r.table for r in refs}),
            record_ids=[r.qualified for r in refs],
            public_key_pem=public_key_pem,
            ttl=ttl,
            now=now,
        )
        assert master_key is not None  # issue_grant refuses None
        derivation = grant.derivation
        mdk = derive_mission_data_key(master_key, mission_id, derivation.tables, derivation.record_ids)
        tag = grant_id(grant.wrapped_key)
        copies: list[dict[str, Any]] = []
        for ref in refs:
            source = await live_source(conn, user_id, ref)
            if source is None:
                where = ref.qualified + " (app " + ref.app_id + ")"
                raise GrantTargetMissing("record " + where + " not found for user " + repr(user_id))
            copies.append(_reseal(mission_id, tag, ref, source, master_key, mdk))
        copies.append(_reseal(mission_id, tag, None, mission, master_key, mdk))
        for copy in copies:
            await insert_copy(conn, user_id, copy)
        keep = copies_prefix(mission_id) + tag + ":"
        removed = await delete_copies(conn, user_id, mission_id, keep_prefix=keep, at=now_iso)
        # The grant goes last (the same transaction anyway): whoever sees it finds every copy in place.
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
        sealed_fields=sum(len(c["fields"]) for c in copies),
        removed_copies=removed,
        ttl=clamp_ttl(ttl),
    )


def _reseal(
    mission_id: str, tag: str, ref: RecordRef | None, source: RecordState, master_key: bytes, mdk: bytes
) -> dict[str, Any]:
    """The copy of a granted record, or (``ref`` ``None``) of the mission's own text fields."""
    return reseal_record(
        mission_id=mission_id,
        grant=tag,
        table=ref.table if ref is not None else MISSION_TABLE,
        record_id=ref.record_id if ref is not None else mission_id,
        source=source.record,
        source_field_meta=source.field_meta,
        master_key=master_key,
        mdk=mdk,
        only_fields=None if ref is not None else MISSION_TEXT_FIELDS,
    )


async def revoke_grant(db: Database, *, user_id: str, mission_id: str, now: dt.datetime) -> GrantRevoked:
    """Set ``mission.grant`` to null and delete every re-sealed copy of the mission.

    Raises:
        GrantTargetMissing: neither the mission nor any copy of it exists.
    """
    now_iso = to_js_iso(now)
    async with db.with_user(user_id) as conn:
        await lock_mission(conn, user_id, mission_id)
        mission = await mission_state(conn, user_id, mission_id)
        live = mission is not None and mission.is_live()
        if not live and not await list_copies(conn, user_id, mission_id):
            raise GrantTargetMissing("mission " + repr(mission_id) + " not found for user " + repr(user_id))
        had_grant = live and mission is not None and mission.record.get("grant") is not None
        if had_grant:
            await set_mission_grant(conn, user_id, mission_id, None, now_iso)
        removed = await delete_copies(conn, user_id, mission_id, keep_prefix=None, at=now_iso)
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
        GrantTargetMissing: no mission, or it has no valid, unexpired grant.
        ResealError: a record does not decrypt with ``master_key``.
    """
    now_iso = to_js_iso(now)
    async with db.with_user(user_id) as conn:
        await lock_mission(conn, user_id, mission_id)
        mission = await live_mission(conn, user_id, mission_id)
        grant = _current_grant(mission_id, mission.record.get("grant"), now)
        derivation = grant.derivation
        mdk = derive_mission_data_key(master_key, mission_id, derivation.tables, derivation.record_ids)
        tag = grant_id(grant.wrapped_key)
        targets: list[tuple[RecordRef | None, RecordState | None]] = []
        for qualified in derivation.record_ids:
            ref = split_qualified(qualified)
            if ref is not None:
                targets.append((ref, await live_source(conn, user_id, ref)))
        targets.append((None, mission))
        updated = unchanged = removed = 0
        for ref, source in targets:
            target_id = (
                copy_id(mission_id, tag, ref.table, ref.record_id)
                if ref is not None
                else copy_id(mission_id, tag, MISSION_TABLE, mission_id)
            )
            existing = await copy_state(conn, user_id, target_id)
            live = existing is not None and existing.is_live()
            if source is None:  # the source record is gone: so is its copy
                if live:
                    await delete_copy(conn, user_id, target_id, now_iso)
                    removed += 1
                continue
            copy = _reseal(mission_id, tag, ref, source, master_key, mdk)
            if existing is None:
                await insert_copy(conn, user_id, copy)
            elif not live:
                continue  # deleted for good (a revoke came first): nothing to refresh
            elif _same_source(existing.record, copy):
                unchanged += 1
                continue
            else:
                await update_copy(conn, user_id, copy, now_iso)
            updated += 1
    return GrantRefreshed(updated, unchanged, removed)


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


def _same_source(existing: Mapping[str, Any], fresh: Mapping[str, Any]) -> bool:
    """The copy was made from the same source version (ciphertexts always differ: fresh IVs)."""
    old_fields = existing.get("fields")
    return (
        isinstance(old_fields, Mapping)
        and set(old_fields) == set(fresh["fields"])
        and existing.get("sourceFieldMeta") == fresh["sourceFieldMeta"]
    )
