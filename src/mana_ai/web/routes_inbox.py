"""Inbox (open proposals, approve/edit/reject) and timeline pages."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from mana_ai.timefmt import utcnow
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.web.attention import needing_attention
from mana_ai.web.base import Workbench
from mana_ai.web.forms import params_from_form
from mana_ai.workbench.decide import DecisionResult, InvalidParams
from mana_ai.workbench.proposals import StepRef


def _ttl_text(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours = rest // 3600
    if days and not hours:
        return str(days) + " day(s)"
    return (str(days) + " day(s) " if days else "") + str(hours) + " hour(s)"


def register(router: APIRouter, wb: Workbench) -> None:
    reader, writer = Depends(wb.reader), Depends(wb.writer)

    @router.get("", include_in_schema=False)
    @router.get("/", include_in_schema=False)
    async def root() -> Response:
        return wb.redirect("/inbox")

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        return wb.static(name)

    @router.get("/inbox", summary="Open proposals, grouped by mission (server-side pages)")
    async def inbox(
        request: Request, page: int = 1, mission: str | None = None, user: str = reader
    ) -> Response:
        store = wb.store
        await store.refresh()
        now = utcnow()
        expired_now = 0
        expired = await store.expired(user, now=now)
        if expired:
            expired_now = await wb.decider.expire(user, [p.ref for p in expired], now=now)
            await store.refresh()
        data = await store.inbox(
            user, page=page, page_size=wb.config.page_size, mission_id=mission or None, now=now
        )
        recent = [d for d in await store.decisions(user, limit=50) if d["decision"] == "expired"][:10]
        records = await store.missions(user)
        titles = {str(m.get("id")): m.get("title") for m in records} if recent else {}
        return wb.render(
            request,
            "inbox.html",
            {
                "active": "inbox",
                "inbox": data,
                "mission": mission or "",
                "expired_now": expired_now,
                "recent_expired": recent,
                "titles": titles,
                "attention": needing_attention(records, await store.run_errors(user)) if not mission else [],
                "ttl": _ttl_text(wb.app.settings.proposal_ttl.total_seconds()),
            },
        )

    async def _decided(request: Request, result: DecisionResult, page: str) -> Response:
        if not wb.is_htmx(request):
            return wb.redirect("/inbox?page=" + (page if page.isdigit() else "1"))
        found = await wb.store.step(request.state.user, result.ref)
        # The page's open count is swapped out of band, so it follows every decision.
        await wb.store.refresh()
        open_now = await wb.store.inbox(
            request.state.user, page=1, page_size=1, mission_id=None, now=utcnow()
        )
        return wb.render(
            request,
            "_decided.html",
            {
                "open_total": open_now.total,
                "result": result,
                "summary": found.summary if found else "",
                "tool_name": found.tool_name if found else "",
            },
        )

    @router.post(
        "/proposals/{mission_id}/{iteration_id}/{step_id}/approve", summary="Approve (and run) a proposal"
    )
    async def approve(
        request: Request, mission_id: str, iteration_id: str, step_id: str, user: str = writer
    ) -> Response:
        ref = StepRef(mission_id, iteration_id, step_id)
        form = await request.form()
        found = await wb.store.step(user, ref)
        tool = CATALOG_BY_NAME.get(found.tool_name) if found else None
        params: dict[str, Any] | None = None
        if tool is not None and any(k.startswith("param.") for k in form):
            params = params_from_form(tool, form)
        page = str(form.get("page") or "1")
        try:
            result = await wb.decider.approve(user, ref, params=params)
        except InvalidParams as exc:
            if found is None or not wb.is_htmx(request):
                raise
            edited = dataclasses.replace(found, params=params or {})
            return wb.render(
                request, "_proposal.html", {"p": edited, "errors": exc.problems, "page_number": page}
            )
        return await _decided(request, result, page)

    @router.post("/proposals/{mission_id}/{iteration_id}/{step_id}/reject", summary="Reject a proposal")
    async def reject(
        request: Request, mission_id: str, iteration_id: str, step_id: str, user: str = writer
    ) -> Response:
        form = await request.form()
        feedback = form.get("feedback")
        result = await wb.decider.reject(
            user,
            StepRef(mission_id, iteration_id, step_id),
            feedback=feedback if isinstance(feedback, str) else None,
        )
        return await _decided(request, result, str(form.get("page") or "1"))

    @router.get("/timeline", summary="What agents planned, what you decided, what happened")
    async def timeline(
        request: Request,
        agent: str | None = None,
        module: str | None = None,
        mission: str | None = None,
        user: str = reader,
    ) -> Response:
        store = wb.store
        await store.refresh()
        entries = await store.timeline(
            user, agent_id=agent or None, module=module or None, mission_id=mission or None, limit=200
        )
        return wb.render(
            request,
            "timeline.html",
            {
                "active": "timeline",
                "entries": entries,
                "agents": await store.agents(user),
                "missions": await store.missions(user),
                "f_agent": agent or "",
                "f_module": module or "",
                "f_mission": mission or "",
            },
        )
