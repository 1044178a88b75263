"""Who is asking, and is the request really from our page: the workbench's authentication and CSRF defence.

**Modes.** By default the workbench runs in *local* single-user mode: every request acts as the local user
(``MANA_AI_USER``, default ``local``, the CLI's default too), and it only answers when the service is bound to
a loopback address and the request comes from one — a single-user page must never be reachable from the
network. With ``MANA_AUTH_URL`` (or ``JWT_ISSUER``) set, or ``MANA_AI_WORKBENCH_AUTH=jwt``, it runs in *JWT*
mode for multi-user deployments: the mana JWT is verified exactly like the API's (``http/auth.py``), taken from
``Authorization: Bearer`` or from the ``mana_ai_token`` cookie that ``/workbench/login`` sets.

**CSRF.** Every state-changing request (all of them are POSTs) must carry the double-submit token: the
``mana_ai_csrf`` cookie (random, ``HttpOnly``, ``SameSite=Strict``, path ``/workbench``) and the same value in the
form field ``csrf_token`` or the ``X-CSRF-Token`` header (htmx sends it from ``hx-headers``). A page on another
origin can neither read the cookie nor make the browser send it. When the browser sends ``Origin`` (or only
``Referer``) it must name this host as well. Anything else is refused with 403 before the handler runs.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from fastapi import Request

from mana_ai.errors import ConfigError
from mana_ai.http.auth import AuthError, JwtVerifier
from mana_ai.settings import Settings

logger = logging.getLogger(__name__)

CSRF_COOKIE: Final = "mana_ai_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
TOKEN_COOKIE: Final = "mana_ai_token"
COOKIE_PATH: Final = "/workbench"

Mode = Literal["local", "jwt"]


class Forbidden(Exception):
    """The request is refused (403); the message is safe to show."""


class Unauthenticated(Exception):
    """No valid identity (401 / the login page); the message is safe to show."""


@dataclass(frozen=True, slots=True)
class WorkbenchConfig:
    """How the workbench authenticates and which keys it holds."""

    mode: Mode
    local_user: str = "local"
    master_key: bytes | None = None
    """Always ``None`` in the service (:func:`refuse_master_key`); only tests hand a key to the executors."""
    page_size: int = 25
    secure_cookies: bool = False
    """Always mark cookies ``Secure``; they are anyway when the request came over HTTPS (or a proxy says so)."""


def workbench_mode(settings: Settings) -> Mode:
    """``MANA_AI_WORKBENCH_AUTH``, else jwt when MANA_AUTH_URL or JWT_ISSUER is set, else local."""
    return settings.workbench_auth or ("jwt" if (settings.auth_url or settings.jwt_issuer) else "local")


def refuse_master_key(settings: Settings) -> None:
    """The service process never holds a user's master key (docs/privacy.md).

    In JWT mode a configured ``MANA_AI_MASTER_KEY_FILE`` is refused outright (it would be one user's key in a
    multi-user process); in local mode it is ignored with a warning (the CLI still uses it).

    Raises:
        ConfigError: JWT mode with ``MANA_AI_MASTER_KEY_FILE`` set.
    """
    if settings.master_key_file is None:
        return
    if workbench_mode(settings) == "jwt":
        raise ConfigError(
            "MANA_AI_MASTER_KEY_FILE is set, but the service never reads a master key: in JWT mode every user "
            "would act with it. Unset it for `mana-ai serve`; the CLI (`grants create`, `proposals approve`) "
            "and the web app's grant module are where master keys are used"
        )
    logger.warning(
        "MANA_AI_MASTER_KEY_FILE is ignored by the service; the CLI uses it",
        extra={"action": "workbench.master_key_ignored"},
    )


def config_from_env(settings: Settings) -> WorkbenchConfig:
    """The workbench's configuration from the settings (MANA_AI_WORKBENCH_AUTH, MANA_AI_USER; jwt mode by
    default when MANA_AUTH_URL or JWT_ISSUER is set). The master key is never read here.

    Raises:
        ConfigError: JWT mode with a master key file configured (:func:`refuse_master_key`).
    """
    refuse_master_key(settings)
    return WorkbenchConfig(mode=workbench_mode(settings), local_user=settings.local_user.strip() or "local")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Gate:
    """Resolves the acting user of a request and checks CSRF tokens."""

    def __init__(self, settings: Settings, config: WorkbenchConfig) -> None:
        self.settings = settings
        self.config = config
        self.verifier = JwtVerifier(settings) if config.mode == "jwt" else None

    async def user(self, request: Request) -> str:
        """The user id the request acts for.

        Raises:
            Forbidden: local mode on a non-loopback bind or from a non-loopback client.
            Unauthenticated: JWT mode without a valid token.
        """
        if self.config.mode == "local":
            if not is_loopback(self.settings.host):
                raise Forbidden(
                    "the workbench's local single-user mode only runs on a loopback address "
                    "(MANA_AI_HOST=127.0.0.1); set MANA_AUTH_URL for multi-user JWT mode"
                )
            client = request.client.host if request.client else None
            if client is not None and not is_loopback(client):
                raise Forbidden("the workbench's local mode answers loopback clients only")
            return self.config.local_user
        assert self.verifier is not None
        header = request.headers.get("authorization")
        cookie = request.cookies.get(TOKEN_COOKIE)
        try:
            principal = await self.verifier.authenticate(header or ("Bearer " + cookie if cookie else None))
        except AuthError as exc:
            raise Unauthenticated(str(exc)) from None
        return principal.user_id

    def secure(self, request: Request) -> bool:
        """Whether cookies for this request get the ``Secure`` flag."""
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return self.config.secure_cookies or request.url.scheme == "https" or forwarded == "https"

    @staticmethod
    def csrf_token(request: Request) -> tuple[str, bool]:
        """The request's CSRF token and whether it is new (then the response must set the cookie)."""
        existing = request.cookies.get(CSRF_COOKIE)
        if existing and 20 <= len(existing) <= 200:
            return existing, False
        return secrets.token_urlsafe(32), True

    async def check_csrf(self, request: Request) -> None:
        """Refuse a state-changing request without a matching double-submit token or from another origin.

        Raises:
            Forbidden: missing or mismatching token, or a foreign ``Origin``/``Referer``.
        """
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        given = request.headers.get(CSRF_HEADER) or ""
        if not given:
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else ""
        if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
            raise Forbidden("missing or invalid CSRF token; reload the page and try again")
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise Forbidden("cross-origin request refused")
