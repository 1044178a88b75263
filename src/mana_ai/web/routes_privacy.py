"""The grant consent dialog, the data-access audit tab, and sign-in for JWT mode.

The grant dialog shows the mission's grant and revokes it. It cannot issue one: the service never holds a master
key (docs/privacy.md), so grants are issued where the key is — the web app with ``/client/mana-ai-grants.js``,
or ``mana-ai grants create`` — and the dialog shows that command. The data-access tab lists every decrypt and
offers the audit as CSV or JSON (the same export as ``GET /api/v1/me/ai-audit?format=``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from mana_ai.cli.records import InvalidOption, shown
from mana_ai.crypto.grants import MissionGrant, load_private_key, public_key_pem_from_private
from mana_ai.errors import CryptoError
from mana_ai.privacy.audit import read_audit
from mana_ai.privacy.audit_export import audit_csv, audit_json, grant_scope
from mana_ai.privacy.grant_client import revoke_grant
from mana_ai.privacy.grant_store import get_grant, list_grants
from mana_ai.privacy.refs import refs_from_inputs
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.web.base import Workbench
from mana_ai.web.security import COOKIE_PATH, TOKEN_COOKIE


def _grant_of(record: dict[str, Any]) -> MissionGrant | None:
    try:
        return MissionGrant.from_json(record.get("grant")) if record.get("grant") else None
    except (CryptoError, ValueError):
        return None


def register(router: APIRouter, wb: Workbench) -> None:
    reader, writer = Depends(wb.reader), Depends(wb.writer)

    def public_key() -> str | None:
        key = load_private_key(wb.app.settings.private_key_text())
        return public_key_pem_from_private(key) if key is not None else None

    async def mission_record(user: str, mission_id: str) -> dict[str, Any]:
        await wb.store.refresh()
        for record in await wb.store.missions(user):
            if str(record.get("id")) == mission_id:
                return record
        raise InvalidOption("unknown mission " + repr(mission_id))

    @router.get("/missions/{mission_id}/grant", summary="Grant dialog: which records the runner may read")
    async def grant(request: Request, mission_id: str, user: str = reader) -> Response:
        record = await mission_record(user, mission_id)
        current = _grant_of(record)
        if (
            current is not None
        ):  # the synced field is the consent; the stored grant is the one the runner uses
            async with wb.app.db.with_user(user) as conn:
                stored = await get_grant(conn, user, mission_id)
            current = _grant_of({"grant": stored.grant}) if stored is not None else current
        return wb.render(
            request,
            "grant.html",
            {
                "active": "missions",
                "m": record,
                "shown": shown,
                "candidates": [r.qualified for r in refs_from_inputs(record.get("inputs"))],
                "current": current,
                "expired": current is not None and current.expires_at < to_js_iso(utcnow()),
                "has_runner_key": public_key() is not None,
            },
        )

    @router.post("/missions/{mission_id}/grant/revoke", summary="Revoke the mission's grant")
    async def grant_revoke(request: Request, mission_id: str, user: str = writer) -> Response:
        await revoke_grant(wb.app.db, user_id=user, mission_id=mission_id, now=utcnow())
        return wb.redirect("/missions/" + mission_id + "/grant")

    @router.get("/audit", summary="Data access: every server-side decrypt of your records")
    async def audit(request: Request, mission: str | None = None, user: str = reader) -> Response:
        rows = await read_audit(wb.app.db, user_id=user, mission_id=mission or None, limit=500)
        await wb.store.refresh()
        missions = await wb.store.missions(user)
        return wb.render(
            request,
            "audit.html",
            {
                "active": "audit",
                "rows": rows,
                "missions": missions,
                "titles": {str(m.get("id")): shown(m.get("title")) for m in missions},
                "f_mission": mission or "",
            },
        )

    @router.get("/audit/export", summary="Download the data-access audit (format=csv or json)")
    async def audit_export(
        request: Request,
        format: str = "csv",
        mission: str | None = None,
        user: str = reader,  # noqa: A002
    ) -> Response:
        rows = await read_audit(wb.app.db, user_id=user, mission_id=mission or None, limit=1000)
        async with wb.app.db.with_user(user) as conn:
            stored = await list_grants(conn, user)
        scopes = [
            grant_scope(g.mission_id, g.grant) for g in stored if not mission or g.mission_id == mission
        ]
        if format == "json":
            body = json.dumps(audit_json(rows, scopes), ensure_ascii=False, indent=1)
            kind, name = "application/json", "mana-ai-audit.json"
        else:
            body, kind, name = audit_csv(rows, scopes), "text/csv; charset=utf-8", "mana-ai-audit.csv"
        disposition = 'attachment; filename="' + name + '"'
        return Response(body, media_type=kind, headers={"Content-Disposition": disposition})

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        await wb.gate.check_csrf(request)
        form = await request.form()
        token = form.get("token")
        if wb.config.mode != "jwt" or not isinstance(token, str) or not token.strip():
            return wb.redirect("/inbox")
        response = wb.redirect("/inbox")
        response.set_cookie(
            TOKEN_COOKIE,
            token.strip(),
            httponly=True,
            samesite="strict",
            secure=wb.gate.secure(request),
            path=COOKIE_PATH,
        )
        return response

    @router.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await wb.gate.check_csrf(request)
        response = wb.redirect("/inbox")
        response.delete_cookie(TOKEN_COOKIE, path=COOKIE_PATH)
        return response
