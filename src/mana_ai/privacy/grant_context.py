"""The unwrapped grant of one mission's planning.

:func:`open_grant` turns ``mission.grant`` into a :class:`GrantContext` (the mission data key as an AES-GCM
object plus the allowlist) or a skip reason. A GrantContext is made per mission per run and dropped when that
mission's planning ends; it is never cached across missions or ticks, so a revoked or expired grant stops
decrypts from the next run on. The key stays out of every ``repr`` and log line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mana_ai.crypto.grants import UnwrapFailed, UnwrapFailureReason, unwrap_grant
from mana_ai.privacy.reseal import grant_id


@dataclass(frozen=True, slots=True)
class GrantContext:
    """What one mission's planning may decrypt, and the key to do it."""

    mission_id: str
    version: str
    """``v2`` (terms bound, copies in mana-ai's tables) or ``v1`` (mana-auth's; no copies)."""
    grant_id: str
    """:func:`~mana_ai.privacy.reseal.grant_id` of the grant: selects the re-sealed copies to read."""
    allowlist: frozenset[str]
    """Qualified record ids ``"<table>:<id>"``."""
    expires_at: str
    aead: AESGCM = field(repr=False, compare=False)
    """The grant data key, ready to decrypt (the raw bytes are not kept)."""

    def allows(self, table: str, record_id: str) -> bool:
        """True when ``<table>:<record_id>`` is in the grant's allowlist."""
        return table + ":" + record_id in self.allowlist


@dataclass(frozen=True, slots=True)
class GrantSkipped:
    """The mission has a grant that cannot be used; ``reason`` labels ``mana_ai_grant_skips_total``."""

    reason: UnwrapFailureReason


def open_grant(
    mission_id: str,
    grant: Mapping[str, Any] | None,
    private_key: rsa.RSAPrivateKey | None,
    *,
    now: dt.datetime,
) -> GrantContext | GrantSkipped | None:
    """Unwrap a mission's grant. Never raises.

    Args:
        mission_id: the mission being planned.
        grant: ``mission.grant`` (``None`` when the mission has none: no decrypts).
        private_key: the runner's key, ``None`` when grants are not configured.
        now: the current time (expiry check).

    Returns:
        ``None`` without a grant, :class:`GrantSkipped` when it cannot be used, else the context.
    """
    if grant is None:
        return None
    if not isinstance(grant, Mapping):
        return GrantSkipped("malformed")
    result = unwrap_grant(grant, private_key, now=now)
    if isinstance(result, UnwrapFailed):
        return GrantSkipped(result.reason)
    if result.derivation.mission_id != mission_id:
        # A grant copied from another mission: its key was derived for that mission, so nothing of this
        # mission's copies would decrypt. Say so once instead of auditing a failure per record.
        return GrantSkipped("malformed")
    wrapped = grant.get("wrappedKey")
    assert isinstance(wrapped, str)  # unwrap_grant succeeded, so the shape was checked
    expires = grant.get("expiresAt")
    return GrantContext(
        mission_id=mission_id,
        version=result.derivation.version,
        grant_id=grant_id(wrapped),
        allowlist=result.allowlist,
        expires_at=expires if isinstance(expires, str) else "",
        aead=AESGCM(result.mdk),
    )
