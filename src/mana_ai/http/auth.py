"""Bearer-JWT authentication for the user-facing API (SPEC §20).

Keys come from the JWKS of mana-auth (``{MANA_AUTH_URL}/api/v1/auth/jwks``), fetched with aiohttp, cached,
and fetched again when a token names an unknown key id. EdDSA (Ed25519) and RS256 are accepted, each only
with a key of its own type; the issuer must be ``MANA_AUTH_URL`` (or ``JWT_ISSUER``), as mana's own services
check it; the audience is ``mana``; ``exp``/``nbf`` are enforced. A development bypass exists only with
``NODE_ENV=development`` *and* ``DEV_BYPASS_AUTH=true``.

Fetching never makes requests queue behind mana-auth: one fetch at a time is shared by every request that
waits for it; a request whose key is cached but stale is answered at once while the refresh runs in the
background; a failed fetch is not retried before a backoff (5 s doubling to 5 min) has passed, so a flood of
tokens during an outage costs one fetch, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from mana_ai.settings import Settings

logger = logging.getLogger(__name__)

ALGORITHMS = ("EdDSA", "RS256")
DEFAULT_AUTH_URL = "http://localhost:3001"
JWKS_TTL_S = 600.0
UNKNOWN_KID_REFETCH_S = 10.0
FETCH_TIMEOUT_S = 5.0
FAILURE_BACKOFF_S = (5.0, 300.0)


class AuthError(Exception):
    """The request is not authenticated; the message is safe to return to the client."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str | None = None
    role: str = "user"
    tier: str = "public"


class JwtVerifier:
    def __init__(self, settings: Settings, *, fetch_timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.settings = settings
        base = (settings.auth_url or DEFAULT_AUTH_URL).rstrip("/")
        self.jwks_url = f"{base}/api/v1/auth/jwks"
        # Exactly what mana-auth signs with (its BASE_URL) plus an explicit extra: no hard-coded issuers.
        issuers = [settings.auth_url or DEFAULT_AUTH_URL, settings.jwt_issuer]
        self.issuers = [i for i in issuers if i]
        self.fetch_timeout_s = fetch_timeout_s
        self.fetches = 0
        """JWKS fetches started (for tests and the logs)."""
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -JWKS_TTL_S
        self._next_fetch_at = 0.0
        self._failures = 0
        self._inflight: asyncio.Task[None] | None = None

    @property
    def bypass(self) -> bool:
        return self.settings.node_env == "development" and self.settings.dev_bypass_auth

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.bypass:
            return Principal(self.settings.dev_user_id)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError("Missing authorization header")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("Invalid or expired token") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError("Invalid or expired token")
        key = await self._key(header.get("kid"), alg)
        if key is None:
            raise AuthError("Invalid or expired token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.settings.jwt_audience,
                issuer=self.issuers,
                options={"require": ["exp", "sub"]},
                leeway=5,
            )
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "sub":
                raise AuthError("Token missing subject claim") from None
            raise AuthError("Invalid or expired token") from None
        except (jwt.PyJWTError, TypeError, ValueError):  # a key that does not fit is an invalid token
            raise AuthError("Invalid or expired token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or "\x00" in sub:
            # Blank or NUL: no user's rows can match it (with_user refuses it, Postgres cannot store NUL).
            raise AuthError("Token missing subject claim")
        return Principal(
            sub, claims.get("email"), claims.get("role") or "user", claims.get("tier") or "public"
        )

    async def _key(self, kid: Any, alg: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        key = self._lookup(kid, alg)
        if now - self._fetched_at >= JWKS_TTL_S or key is None:
            fetch = self._start_fetch(now)
            if key is None and fetch is not None:
                # Shielded: one caller giving up (its request cancelled) must not cancel the shared fetch.
                await asyncio.shield(fetch)
                key = self._lookup(kid, alg)
        return key

    def _lookup(self, kid: Any, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            key = self._keys.get(kid)
        else:
            candidates = [k for k in self._keys.values() if k.algorithm_name == alg]
            key = candidates[0] if len(candidates) == 1 else None
        # A key only verifies tokens of its own algorithm: an RS256 header naming an Ed25519 key is refused
        # here (PyJWT would fail on the key type with an error that is not a PyJWTError).
        return key if key is not None and key.algorithm_name == alg else None

    def _start_fetch(self, now: float) -> asyncio.Task[None] | None:
        """The running fetch, a new one, or ``None`` while the last attempt's backoff lasts."""
        if self._inflight is not None and not self._inflight.done():
            return self._inflight
        if now < self._next_fetch_at:
            return None
        self.fetches += 1
        self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        return self._inflight

    async def _fetch(self) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.fetch_timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.jwks_url) as resp:
                resp.raise_for_status()
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failures += 1
            first, cap = FAILURE_BACKOFF_S
            delay = min(first * 2 ** (self._failures - 1), cap)
            self._next_fetch_at = time.monotonic() + delay
            logger.warning(
                "JWKS fetch failed",
                extra={"action": "auth.jwks_failed", "error": type(exc).__name__, "retry_in_s": delay},
            )
            return
        self._failures = 0
        # Unknown key ids trigger a refetch at most this often, so bad tokens cannot hammer mana-auth.
        self._next_fetch_at = time.monotonic() + UNKNOWN_KID_REFETCH_S
        keys: dict[str, jwt.PyJWK] = {}
        listed = body.get("keys") if isinstance(body, dict) else None
        for index, jwk in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(jwk, dict):
                continue
            try:
                parsed = jwt.PyJWK(jwk)
            except (jwt.PyJWTError, TypeError, ValueError):
                continue
            keys[str(jwk.get("kid", f"#{index}"))] = parsed
        self._keys = keys
        self._fetched_at = time.monotonic()
