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
``Referer``) it must name this host as well. Anything else is refused with 403 before the handler runs. The
token is bound to the user it was issued for (``nonce.HMAC(key, user, nonce)``, the key derived from
``MANA_SERVICE_KEY``): a token planted for one user is refused for another.

**DNS rebinding.** In local mode the ``Host`` header must name a loopback host (``localhost``,
``*.localhost``, ``127.0.0.0/8``, ``[::1]``): a page on ``rebind.attacker.example`` whose name now resolves
to 127.0.0.1 reaches the port but not the workbench. Do not put a proxy in front of local mode.

**Secure cookies.** Cookies get ``Secure`` when the request came over HTTPS, when a proxy says so
(``X-Forwarded-Proto: https`` or ``Forwarded: proto=https``), or always with ``MANA_AI_SECURE_COOKIES``.
"""

from __future__ import annotations

import base64
import hashlib
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
    return WorkbenchConfig(
        mode=workbench_mode(settings),
        local_user=settings.local_user.strip() or "local",
        secure_cookies=settings.secure_cookies,
    )


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str | None) -> bool:
    """Whether a ``Host`` header names a loopback host (any port)."""
    if not value:
        return False
    host = value.strip()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


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
            if not is_loopback_host_header(request.headers.get("host")):
                # DNS rebinding: the client is local, but the page that sent it is not ours.
                raise Forbidden("the workbench's local mode answers requests for a loopback host name only")
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
        rfc7239 = request.headers.get("forwarded", "").split(",")[0].lower().replace(" ", "")
        behind_tls = forwarded == "https" or "proto=https" in rfc7239.split(";")
        return self.config.secure_cookies or request.url.scheme == "https" or behind_tls

    def _sign(self, user: str, nonce: str) -> str:
        key = hashlib.sha256(
            b"mana-ai workbench csrf v1\0" + self.settings.service_key.get_secret_value().encode()
        )
        mac = hmac.new(key.digest(), user.encode() + b"\0" + nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _valid_for(self, token: str, user: str) -> bool:
        nonce, _, mac = token.partition(".")
        if not nonce or not mac or len(token) > 200:
            return False
        return hmac.compare_digest(mac.encode(), self._sign(user, nonce).encode())

    def csrf_token(self, request: Request) -> tuple[str, bool]:
        """The request's CSRF token for its user and whether it is new (then the response sets the cookie)."""
        user = getattr(request.state, "user", None) or ""
        existing = request.cookies.get(CSRF_COOKIE)
        if existing and self._valid_for(existing, user):
            return existing, False
        nonce = secrets.token_urlsafe(24)
        return nonce + "." + self._sign(user, nonce), True

    async def _user_or_anonymous(self, request: Request) -> str:
        user = getattr(request.state, "user", None)
        if user is not None:
            return str(user)
        try:
            return await self.user(request)
        except (Unauthenticated, Forbidden):
            return ""

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
        if not self._valid_for(given, await self._user_or_anonymous(request)):
            raise Forbidden("the CSRF token belongs to another user; reload the page and try again")
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise Forbidden("cross-origin request refused")
