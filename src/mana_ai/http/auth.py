"""Bearer-JWT authentication for the user-facing API (SPEC §20).

Keys come from the JWKS of mana-auth (``{MANA_AUTH_URL}/api/v1/auth/jwks``), fetched with aiohttp, cached,
and fetched again when a token names an unknown key id. EdDSA (Ed25519) and RS256 are accepted; issuer and
audience are checked as in the original; ``exp``/``nbf`` are enforced. A development bypass exists only with
``NODE_ENV=development`` *and* ``DEV_BYPASS_AUTH=true``.
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


class AuthError(Exception):
    """The request is not authenticated; the message is safe to return to the client."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str | None = None
    role: str = "user"
    tier: str = "public"


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        base = (settings.auth_url or DEFAULT_AUTH_URL).rstrip("/")
        self.jwks_url = f"{base}/api/v1/auth/jwks"
        issuers = [settings.jwt_issuer, settings.auth_url, "https://auth.mana.how", DEFAULT_AUTH_URL]
        self.issuers = [i for i in issuers if i]
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

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
        except jwt.PyJWTError:
            raise AuthError("Invalid or expired token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("Token missing subject claim")
        return Principal(
            sub, claims.get("email"), claims.get("role") or "user", claims.get("tier") or "public"
        )

    async def _key(self, kid: Any, alg: str) -> jwt.PyJWK | None:
        fresh = time.monotonic() - self._fetched_at < JWKS_TTL_S
        if not fresh or (kid is not None and kid not in self._keys):
            async with self._lock:
                # Refetch at most every 10 s for unknown kids, so a flood of bad tokens cannot hammer mana-auth.
                if time.monotonic() - self._fetched_at > (10.0 if fresh else 0.0):
                    await self._fetch()
        if kid is not None:
            return self._keys.get(kid)
        candidates = [k for k in self._keys.values() if k.algorithm_name == alg]
        return candidates[0] if len(candidates) == 1 else None

    async def _fetch(self) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.jwks_url) as resp:
                resp.raise_for_status()
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.warning(
                "JWKS fetch failed", extra={"action": "auth.jwks_failed", "error": type(exc).__name__}
            )
            return
        keys: dict[str, jwt.PyJWK] = {}
        for index, jwk in enumerate(body.get("keys", []) if isinstance(body, dict) else []):
            try:
                parsed = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue
            keys[str(jwk.get("kid", f"#{index}"))] = parsed
        self._keys = keys
        self._fetched_at = time.monotonic()
