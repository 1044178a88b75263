"""The workbench at ``/workbench``: one ``APIRouter`` the HTTP app includes.

Server-rendered with Jinja2 (``web/templates``); htmx (shipped in ``web/static``, no CDN) swaps a decided
proposal in place, and every form also works without JavaScript (POST, then a redirect). See
:mod:`mana_ai.web.security` for the local and JWT modes and the CSRF defence, and the README's "Workbench"
section for a tour.
"""

from __future__ import annotations

from fastapi import APIRouter

from mana_ai.app import App
from mana_ai.web import routes_inbox, routes_manage, routes_privacy
from mana_ai.web.base import PREFIX, Workbench, route_class
from mana_ai.web.security import WorkbenchConfig, config_from_env

STATE_KEY = "workbench"
"""``app.extra[STATE_KEY]`` holds the :class:`~mana_ai.web.base.Workbench` (tests wait on its tick kicker)."""


def build_workbench_router(app: App, config: WorkbenchConfig | None = None) -> APIRouter:
    """The workbench's routes, mounted under ``/workbench``.

    Args:
        app: the process's App (its database is used once it is open).
        config: authentication mode, local user and master key; by default read from the environment
            (:func:`~mana_ai.web.security.config_from_env`).
    """
    wb = Workbench(app, config if config is not None else config_from_env(app.settings))
    app.extra[STATE_KEY] = wb
    # HTML pages, not API: kept out of the OpenAPI document (and so out of the API fuzzing).
    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=route_class(wb))
    routes_inbox.register(router, wb)
    routes_manage.register(router, wb)
    routes_privacy.register(router, wb)
    return router
