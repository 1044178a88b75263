"""Mission key grants: issue (client side) and unwrap (mana-ai side), SPEC §6.5 and §17.2–17.3.

A grant lets mana-ai read a fixed set of encrypted records for one mission while no browser is open. It is
stored in plaintext on the mission as camelCase JSON::

    {"wrappedKey": "<base64>", "derivation": {"version": "v1"|"v2", "missionId": "...",
     "tables": [...], "recordIds": ["<table>:<id>", ...]}, "issuedAt": "<ISO>", "expiresAt": "<ISO>"}

**v2** (this project's protocol, docs/privacy.md): the client draws a fresh random 32-byte *grant data key*
and wraps it with mana-ai's RSA public key (RSA-OAEP, SHA-256, MGF1-SHA-256) with the **OAEP label** set to
:func:`grant_label` — the mission id, tables, record ids, ``issuedAt`` and ``expiresAt``. OAEP authenticates
the label, so a grant whose plaintext terms were edited (later expiry, more records, another mission) no
longer unwraps (``wrap-rejected``). WebCrypto can do all of it with a non-extractable master key.

**v1** (mana-auth's ``POST /api/v1/me/ai-mission-grant``): the mission data key (MDK,
:mod:`mana_ai.crypto.derive`) derived from the master key, wrapped with an empty label. Nothing binds its
terms; it is still accepted, but only ever opens records that need no decrypting.

:func:`unwrap_grant` never raises: every failure becomes an :class:`UnwrapFailed` with a fixed reason
that the caller records in the decrypt audit. Python cannot reliably zero ``bytes``, so unlike the
original the raw key material is not wiped; the MDK is at least kept out of ``repr``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mana_ai.crypto.aead import b64decode_forgiving, b64encode, js_json_stringify
from mana_ai.crypto.derive import DERIVATION_VERSION, MDK_LENGTH, derive_mission_data_key, js_sorted
from mana_ai.errors import ConfigError, CryptoError
from mana_ai.timefmt import parse_iso, to_js_iso

DEFAULT_TTL: Final = dt.timedelta(days=7)
MIN_TTL: Final = dt.timedelta(hours=1)
MAX_TTL: Final = dt.timedelta(days=30)
MAX_RECORD_IDS: Final = 1000

GRANT_V2: Final = "v2"
"""Derivation version of a grant whose terms are bound into the wrap (OAEP label)."""
LABEL_TAG: Final = "mana-ai-grant-v2"

UnwrapFailureReason = Literal["not-configured", "expired", "malformed", "wrap-rejected"]

_PEM_ARMOR = re.compile(r"-----(?:BEGIN|END) [^-]+-----")
_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class GrantNotConfigured(ConfigError):
    """Mission grants are not configured (no mana-ai public key)."""


class ZeroKnowledgeGrantForbidden(CryptoError):
    """The user's vault is zero-knowledge: the server holds no master key, so no grant can be issued."""


class InvalidGrantRequest(CryptoError):
    """The grant request is invalid."""


# --- keys -------------------------------------------------------------------------------------------------


def _pem_to_der(pem: str) -> bytes:
    # Like the original: drop any BEGIN/END armour lines and all whitespace, base64-decode the rest.
    # Env files often carry the PEM on one line with literal "\n"; a backslash is never base64, so
    # turning those back into newlines first is safe.
    body = _PEM_ARMOR.sub("", pem.replace("\\n", "\n"))
    return b64decode_forgiving(re.sub(r"\s+", "", body))


def generate_runner_keypair(bits: int = 2048) -> tuple[str, str]:
    """Create mana-ai's grant keypair.

    Returns:
        ``(private PKCS#8 PEM, public SPKI PEM)``: the private half for ``MANA_AI_PRIVATE_KEY_PEM``,
        the public half for mana-auth's ``MANA_AI_PUBLIC_KEY_PEM``.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return private_pem, public_key_pem_from_private(key)


def load_private_key(pem: str | None) -> rsa.RSAPrivateKey | None:
    """Load the runner's RSA private key from a PKCS#8 PEM, tolerantly.

    Returns:
        The key, or ``None`` when ``pem`` is empty, not base64, not PKCS#8 DER, or not RSA (the caller
        treats ``None`` as "grants not configured").
    """
    if not pem or not pem.strip():
        return None
    try:
        key = serialization.load_der_private_key(_pem_to_der(pem), password=None)
    except (CryptoError, ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Load an RSA public key from an SPKI PEM (armour and whitespace tolerated).

    Raises:
        CryptoError: when the text is not an RSA SPKI public key.
    """
    try:
        key = serialization.load_der_public_key(_pem_to_der(pem))
    except (CryptoError, ValueError, TypeError) as exc:
        raise CryptoError("invalid RSA public key PEM") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("public key is not RSA")
    return key


def public_key_pem_from_private(private_key: rsa.RSAPrivateKey | str) -> str:
    """The SPKI PEM of the public half of ``private_key`` (a key object or a PKCS#8 PEM).

    Raises:
        CryptoError: when a PEM string cannot be loaded.
    """
    key = load_private_key(private_key) if isinstance(private_key, str) else private_key
    if key is None:
        raise CryptoError("invalid RSA private key PEM")
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def _oaep(label: bytes | None) -> padding.OAEP:
    if not label:
        return _OAEP
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def wrap_key(mdk: bytes, public_pem: str, *, label: bytes | None = None) -> str:
    """Wrap a key with RSA-OAEP-SHA256 for the holder of ``public_pem`` (``label``: the OAEP label).

    Returns:
        Standard padded base64 of the ciphertext.
    """
    return b64encode(load_public_key(public_pem).encrypt(bytes(mdk), _oaep(label)))


def grant_label(
    mission_id: str, tables: Iterable[str], record_ids: Iterable[str], issued_at: str, expires_at: str
) -> bytes:
    """The OAEP label of a v2 grant: UTF-8 of ``JSON.stringify([tag, missionId, tables, recordIds,
    issuedAt, expiresAt])`` with the lists in the order the grant stores them (the client sorts them)."""
    terms = [LABEL_TAG, mission_id, list(tables), list(record_ids), issued_at, expires_at]
    return js_json_stringify(terms).encode("utf-8")


# --- grant shapes -----------------------------------------------------------------------------------------


def _str_list(obj: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = obj.get(name)
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise CryptoError("grant derivation." + name + " must be a list of strings")
    return tuple(value)


def _str_field(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise CryptoError(where + "." + name + " must be a string")
    return value


@dataclass(frozen=True, slots=True)
class GrantDerivation:
    """What the MDK was derived from; ``record_ids`` doubles as the read allowlist."""

    version: str
    """Derivation version, ``"v1"``."""
    mission_id: str
    tables: tuple[str, ...]
    """Tables covered (mana-auth stores them sorted)."""
    record_ids: tuple[str, ...]
    """Qualified ids ``"<table>:<id>"`` (mana-auth stores them sorted)."""

    def to_json(self) -> dict[str, Any]:
        """The web app's camelCase JSON object."""
        return {
            "version": self.version,
            "missionId": self.mission_id,
            "tables": list(self.tables),
            "recordIds": list(self.record_ids),
        }

    @classmethod
    def from_json(cls, obj: Any) -> GrantDerivation:
        """Parse the camelCase JSON object.

        Raises:
            CryptoError: when ``obj`` does not have the right shape.
        """
        if not isinstance(obj, Mapping):
            raise CryptoError("grant derivation must be an object")
        return cls(
            version=_str_field(obj, "version", "derivation"),
            mission_id=_str_field(obj, "missionId", "derivation"),
            tables=_str_list(obj, "tables"),
            record_ids=_str_list(obj, "recordIds"),
        )


@dataclass(frozen=True, slots=True)
class MissionGrant:
    """A wrapped MDK as stored on ``Mission.grant``. Timestamps stay ISO strings for a lossless round trip."""

    wrapped_key: str
    """Base64 RSA-OAEP ciphertext of the 32-byte MDK."""
    derivation: GrantDerivation
    issued_at: str
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        """The web app's camelCase JSON object."""
        return {
            "wrappedKey": self.wrapped_key,
            "derivation": self.derivation.to_json(),
            "issuedAt": self.issued_at,
            "expiresAt": self.expires_at,
        }

    @classmethod
    def from_json(cls, obj: Any) -> MissionGrant:
        """Parse the camelCase JSON object (or its JSON text).

        Raises:
            CryptoError: when ``obj`` does not have the right shape.
        """
        if isinstance(obj, str | bytes):
            try:
                obj = json.loads(obj)
            except ValueError as exc:
                raise CryptoError("grant is not valid JSON") from exc
        if not isinstance(obj, Mapping):
            raise CryptoError("grant must be an object")
        return cls(
            wrapped_key=_str_field(obj, "wrappedKey", "grant"),
            derivation=GrantDerivation.from_json(obj.get("derivation")),
            issued_at=_str_field(obj, "issuedAt", "grant"),
            expires_at=_str_field(obj, "expiresAt", "grant"),
        )


# --- unwrap (mana-ai) -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnwrapOk:
    """The grant was valid: the MDK and the records it may read."""

    mdk: bytes = field(repr=False)
    """The raw 32-byte mission data key (kept out of ``repr`` so it never lands in logs)."""
    allowlist: frozenset[str]
    """Qualified record ids ``"<table>:<id>"`` the mission may decrypt."""
    derivation: GrantDerivation

    ok: Literal[True] = True


@dataclass(frozen=True, slots=True)
class UnwrapFailed:
    """The grant could not be used; ``reason`` is one of the four fixed audit reasons."""

    reason: UnwrapFailureReason
    ok: Literal[False] = False


def unwrap_grant(
    grant_json: Any, private_key: rsa.RSAPrivateKey | None, *, now: dt.datetime
) -> UnwrapOk | UnwrapFailed:
    """Unwrap a mission grant with the runner's private key. Never raises.

    Checks, in this order (the first failing one wins):

    1. no private key → ``not-configured``;
    2. ``expiresAt`` missing, unparseable or before ``now`` → ``expired``;
    3. grant not of the right shape, or ``wrappedKey`` not base64 → ``malformed``;
    4. RSA-OAEP decryption fails → ``wrap-rejected``;
    5. plaintext not 32 bytes → ``malformed``.

    A v2 grant is unwrapped with its :func:`grant_label`: edited terms fail step 4.

    Args:
        grant_json: the grant as found on the mission (object, or JSON text); anything is accepted.
        private_key: the runner's key from :func:`load_private_key`, or ``None``.
        now: the current time (naive is taken as UTC).

    Returns:
        :class:`UnwrapOk` or :class:`UnwrapFailed`.
    """
    if private_key is None:
        return UnwrapFailed("not-configured")
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)  # naive means UTC, as in mana_ai.timefmt
    try:
        obj = json.loads(grant_json) if isinstance(grant_json, str | bytes) else grant_json
    except ValueError:
        return UnwrapFailed("malformed")
    if not isinstance(obj, Mapping):
        return UnwrapFailed("malformed")
    expires_at = obj.get("expiresAt")
    try:
        # Like Date.parse: anything unreadable counts as expired.
        if not isinstance(expires_at, str) or parse_iso(expires_at) < now:
            return UnwrapFailed("expired")
    except (ValueError, OverflowError):
        return UnwrapFailed("expired")
    try:
        grant = MissionGrant.from_json(obj)
        wrapped = b64decode_forgiving(grant.wrapped_key)
    except CryptoError:
        return UnwrapFailed("malformed")
    label = None
    if grant.derivation.version == GRANT_V2:
        d = grant.derivation
        label = grant_label(d.mission_id, d.tables, d.record_ids, grant.issued_at, grant.expires_at)
    try:
        mdk = private_key.decrypt(wrapped, _oaep(label))
    except (ValueError, TypeError):
        return UnwrapFailed("wrap-rejected")
    if len(mdk) != MDK_LENGTH:
        return UnwrapFailed("malformed")
    return UnwrapOk(mdk=mdk, allowlist=frozenset(grant.derivation.record_ids), derivation=grant.derivation)


# --- issue (mana-auth, client side) -----------------------------------------------------------------------


def clamp_ttl(ttl: dt.timedelta | None) -> dt.timedelta:
    """``ttl`` or the 7-day default, clamped to [1 hour, 30 days]."""
    if ttl is None:
        return DEFAULT_TTL
    return max(MIN_TTL, min(MAX_TTL, ttl))


_SHAPE_ERROR: Final = "missionId (string), tables (string[]), recordIds (string[]) are required"


def _string_list(value: object) -> list[str]:
    # A bare string is iterable but is not a string[]; reject it like the JSON shape check would.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidGrantRequest(_SHAPE_ERROR)
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise InvalidGrantRequest(_SHAPE_ERROR)
    return items


def _validated_request(
    mission_id: object, tables: object, record_ids: object
) -> tuple[str, list[str], list[str]]:
    if not isinstance(mission_id, str) or not mission_id:
        raise InvalidGrantRequest(_SHAPE_ERROR)
    table_list = _string_list(tables)
    id_list = _string_list(record_ids)
    if not table_list:
        raise InvalidGrantRequest("tables must be a non-empty array")
    if not id_list:
        raise InvalidGrantRequest("recordIds must be a non-empty array")
    if len(id_list) > MAX_RECORD_IDS:
        raise InvalidGrantRequest("recordIds must not exceed 1000 entries")
    return mission_id, js_sorted(table_list), js_sorted(id_list)


def issue_grant(
    *,
    master_key: bytes | None,
    mission_id: str,
    tables: Iterable[str],
    record_ids: Iterable[str],
    public_key_pem: str | None,
    ttl: dt.timedelta | None,
    now: dt.datetime,
) -> MissionGrant:
    """Issue a grant the way mana-auth's ``POST /api/v1/me/ai-mission-grant`` does.

    Check order follows mana-auth: configuration, request validation, then the vault (zero-knowledge).

    Args:
        master_key: the user's 32-byte vault master key; ``None`` for a zero-knowledge vault.
        mission_id: the mission the grant is for (non-empty).
        tables: tables covered (non-empty; stored sorted).
        record_ids: qualified ids ``"<table>:<id>"`` (1..1000; stored sorted).
        public_key_pem: mana-ai's SPKI public key; ``None``/empty when not configured.
        ttl: lifetime; ``None`` means 7 days; clamped to [1 hour, 30 days].
        now: issue time (aware).

    Returns:
        The grant.

    Raises:
        GrantNotConfigured: no public key.
        InvalidGrantRequest: bad mission id, tables or record ids.
        ZeroKnowledgeGrantForbidden: ``master_key`` is ``None``.
        CryptoError: invalid public key or master key.
    """
    if not public_key_pem or not public_key_pem.strip():
        raise GrantNotConfigured()
    mission_id, sorted_tables, sorted_ids = _validated_request(mission_id, tables, record_ids)
    if master_key is None:
        raise ZeroKnowledgeGrantForbidden()
    mdk = derive_mission_data_key(master_key, mission_id, sorted_tables, sorted_ids, DERIVATION_VERSION)
    lifetime = clamp_ttl(ttl)
    return MissionGrant(
        wrapped_key=wrap_key(mdk, public_key_pem),
        derivation=GrantDerivation(
            version=DERIVATION_VERSION,
            mission_id=mission_id,
            tables=tuple(sorted_tables),
            record_ids=tuple(sorted_ids),
        ),
        issued_at=to_js_iso(now),
        expires_at=to_js_iso(now + lifetime),
    )


def issue_grant_v2(
    *,
    data_key: bytes,
    mission_id: str,
    tables: Iterable[str],
    record_ids: Iterable[str],
    public_key_pem: str | None,
    ttl: dt.timedelta | None,
    now: dt.datetime,
) -> MissionGrant:
    """Issue a v2 grant: ``data_key`` (fresh, random, 32 bytes) wrapped with the terms as OAEP label.

    The same validation and limits as :func:`issue_grant` (mana-auth's), without a master key: the key
    that the copies are sealed with is ``data_key`` itself. The browser module does the same in WebCrypto.

    Raises:
        GrantNotConfigured: no public key.
        InvalidGrantRequest: bad mission id, tables or record ids.
        CryptoError: invalid public key, or ``data_key`` not 32 bytes.
    """
    if not public_key_pem or not public_key_pem.strip():
        raise GrantNotConfigured()
    mission_id, sorted_tables, sorted_ids = _validated_request(mission_id, tables, record_ids)
    if len(data_key) != MDK_LENGTH:
        raise CryptoError("expected a 32-byte grant data key")
    issued_at = to_js_iso(now)
    expires_at = to_js_iso(now + clamp_ttl(ttl))
    label = grant_label(mission_id, sorted_tables, sorted_ids, issued_at, expires_at)
    return MissionGrant(
        wrapped_key=wrap_key(data_key, public_key_pem, label=label),
        derivation=GrantDerivation(
            version=GRANT_V2, mission_id=mission_id, tables=tuple(sorted_tables), record_ids=tuple(sorted_ids)
        ),
        issued_at=issued_at,
        expires_at=expires_at,
    )
