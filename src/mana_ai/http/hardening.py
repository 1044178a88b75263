"""The HTTP server's own defences: connection timeouts, bounded concurrency, relative slash redirects.

* **Slowloris.** uvicorn times out idle keep-alive connections but not a request head that never ends: a
  client sending one header byte every few seconds holds a connection (and a file descriptor) forever.
  :class:`HeaderTimeoutProtocol` closes a connection whose request head is not complete within
  ``MANA_AI_HTTP_HEADER_TIMEOUT_S`` of its start (or of the previous response). ``limit_concurrency`` answers
  503 beyond a fixed number of connections instead of running out of descriptors; the systemd unit raises
  ``LimitNOFILE`` above it.
* **Host-based redirects.** Starlette redirects ``/path/`` to ``/path`` with an absolute URL built from the
  ``Host`` header, so a forged Host turns the service into an open redirect (and a cache-poisoning aid).
  :class:`SlashRedirect` redirects to the path alone, never to a host.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import h11
import uvicorn
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mana_ai.errors import ConfigError
from mana_ai.settings import Settings

MAX_CONNECTIONS = 4096
"""Connections (and running requests) at once before new ones get 503; well below the unit's LimitNOFILE."""


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head."""

    header_timeout_s: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        # IDLE: no complete request head since the deadline was armed (partial bytes or none at all).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def refuse_weak_service_key(settings: Settings) -> None:
    """``serve`` on a non-loopback address needs a real service key: the default one is in every copy of
    this code, and it opens ``POST /internal/tick``.

    Raises:
        ConfigError: a non-loopback ``MANA_AI_HOST`` with a default or short ``MANA_SERVICE_KEY``.
    """
    from mana_ai.web.security import is_loopback

    problem = settings.service_key_problem()
    if problem and not is_loopback(settings.host):
        raise ConfigError(
            f"{problem}, and MANA_AI_HOST={settings.host} is reachable from the network: set a random key "
            "(openssl rand -hex 32) or bind to 127.0.0.1"
        )


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": seconds})


def server_config(asgi_app: ASGIApp, settings: Settings, *, port: int | None = None) -> uvicorn.Config:
    """The uvicorn configuration of ``mana-ai serve`` (also used by tests that run the server for real)."""
    return uvicorn.Config(
        asgi_app,
        host=settings.host,
        port=settings.port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=protocol_with_header_timeout(settings.http_header_timeout_s),
        timeout_keep_alive=5,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=16 * 1024,
    )


class SlashRedirect:
    """Redirect ``/a/b/`` to ``/a/b`` (relative, query kept) when only the latter is a route."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    def _matches(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/") and not self._matches(scope):
                # One leading slash: "//evil.example/" must not become the protocol-relative "//evil.example".
                target = "/" + path.strip("/")
                if target != path and self._matches({**scope, "path": target}):
                    query = scope.get("query_string", b"").decode("latin-1")
                    location = quote(target) + ("?" + query if query else "")
                    await RedirectResponse(location, status_code=307)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def wrap(api: Any) -> None:
    """Install :class:`SlashRedirect` on a FastAPI app built with ``redirect_slashes=False``."""
    api.add_middleware(SlashRedirect, routes=api.router.routes)
