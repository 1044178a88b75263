"""Shared plumbing of the workbench's pages: templates, the acting user, CSRF, errors, the background tick.

:class:`Workbench` holds what every route needs (the :class:`~mana_ai.app.App`, the read store, the decider,
the Jinja2 environment). Routes declare ``user: str = Depends(wb.reader)`` (pages) or ``Depends(wb.writer)``
(every POST: also checks the CSRF token); :func:`route_class` turns the workbench's exceptions into pages:
403 for refused requests, the login page (JWT mode) for missing identities, and a 400 page naming the problem
for user errors, so a handler only has the happy path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from importlib import resources
from typing import Any, Final

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from mana_ai.app import App
from mana_ai.cli.records import InvalidOption
from mana_ai.errors import ManaAiError, StorageError
from mana_ai.scheduler.cadence import InvalidCadence
from mana_ai.timefmt import utcnow
from mana_ai.tools.catalog import CATALOG_BY_NAME, MODULES
from mana_ai.web.charts import bar_chart
from mana_ai.web.forms import field_value
from mana_ai.web.security import COOKIE_PATH, CSRF_COOKIE, Forbidden, Gate, Unauthenticated, WorkbenchConfig
from mana_ai.workbench.decide import Decider, ProposalError
from mana_ai.workbench.executors import has_executor
from mana_ai.workbench.store import WorkbenchStore
from mana_ai.workbench.writes import RecordMissing

logger = logging.getLogger(__name__)

PREFIX: Final = "/workbench"
STATIC_FILES: Final = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "workbench.css": "text/css; charset=utf-8",
    "htmx.LICENSE.txt": "text/plain; charset=utf-8",
}
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
USER_ERRORS: Final = (InvalidOption, InvalidCadence, ProposalError, RecordMissing, ManaAiError, ValueError)


class TickKicker:
    """Runs the runner's tick in the background for "run now", at most one at a time (later kicks coalesce)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def kick(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="workbench-tick")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.app.ticker.tick()
            except Exception:  # the tick logs its own failures; a kick must never crash the server
                logger.warning(
                    "background tick failed", exc_info=True, extra={"action": "workbench.tick_failed"}
                )
            if not self._again:
                return

    async def wait(self) -> None:
        """Wait until no kicked tick is running (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


class Workbench:
    def __init__(self, app: App, config: WorkbenchConfig) -> None:
        self.app = app
        self.config = config
        settings = app.settings
        self.gate = Gate(settings, config)
        self.kicker = TickKicker(app)
        self._store: WorkbenchStore | None = None
        self._decider: Decider | None = None
        self.env = Environment(
            loader=PackageLoader("mana_ai.web", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            prefix=PREFIX,
            catalog=CATALOG_BY_NAME,
            modules=MODULES,
            has_executor=has_executor,
            field_value=field_value,
            bar_chart=bar_chart,
        )

    # The router is built before the App opens its pool (the HTTP lifespan opens it), so these are lazy.
    @property
    def store(self) -> WorkbenchStore:
        db = self.app.db
        if self._store is None or self._store.db is not db:
            settings = self.app.settings
            self._store = WorkbenchStore(db, ttl=settings.proposal_ttl, tz=settings.default_tz)
        return self._store

    @property
    def decider(self) -> Decider:
        db = self.app.db
        if self._decider is None or self._decider.db is not db:
            settings = self.app.settings
            self._decider = Decider(
                db,
                ttl=settings.proposal_ttl,
                tz=settings.default_tz,
                master_key=self.config.master_key,
                executor=settings.executor,
            )
        return self._decider

    # --- dependencies -----------------------------------------------------------------------------------
    async def reader(self, request: Request) -> str:
        user = await self.gate.user(request)
        request.state.user = user
        return user

    async def writer(self, request: Request) -> str:
        user = await self.reader(request)
        await self.gate.check_csrf(request)
        return user

    # --- responses --------------------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200
    ) -> HTMLResponse:
        token, new = self.gate.csrf_token(request)
        values = {
            "request": request,
            "csrf": token,
            "user": getattr(request.state, "user", None),
            "mode": self.config.mode,
            "encrypted": self.config.master_key is not None,
            "now": utcnow(),
            **(context or {}),
        }
        html = self.env.get_template(template).render(values)
        response = HTMLResponse(html, status_code=status)
        self.secure(response)
        if new:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=self.gate.secure(request),
                path=COOKIE_PATH,
            )
        return response

    @staticmethod
    def secure(response: Response) -> None:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"

    @staticmethod
    def is_htmx(request: Request) -> bool:
        return request.headers.get("hx-request") == "true"

    @staticmethod
    def redirect(path: str) -> RedirectResponse:
        return RedirectResponse(PREFIX + path, status_code=303)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        template = "_error.html" if self.is_htmx(request) else "error.html"
        response = self.render(request, template, {"status": status, "message": message}, status=status)
        if self.is_htmx(request):
            # htmx ignores 4xx bodies by default; retarget the message into the page's flash area.
            response.headers["HX-Retarget"] = "#flash"
            response.headers["HX-Reswap"] = "innerHTML"
        return response

    @staticmethod
    def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body = (resources.files("mana_ai.web") / "static" / name).read_bytes()
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


def route_class(wb: Workbench) -> type[APIRoute]:
    """An ``APIRoute`` that renders the workbench's exceptions as pages (see the module docstring)."""

    class WorkbenchRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                if "\x00" in request.url.path or "%00" in str(request.url.query):
                    # Postgres text cannot hold NUL: refuse here instead of failing in the database.
                    return wb.error(request, 400, "NUL characters are not allowed")
                try:
                    return await handler(request)
                except Forbidden as exc:
                    return wb.error(request, 403, str(exc))
                except StorageError as exc:
                    logger.warning("workbench storage error", extra={"action": "workbench.storage_error"})
                    return wb.error(request, 503, str(exc))
                except Unauthenticated as exc:
                    if request.method == "GET" and not wb.is_htmx(request):
                        return wb.render(request, "login.html", {"message": str(exc)}, status=401)
                    return wb.error(request, 401, str(exc))
                except USER_ERRORS as exc:
                    return wb.error(request, 400, str(exc))

            return guarded

    return WorkbenchRoute
