"""The grant consent dialog, the data-access audit tab, and sign-in for JWT mode.

The grant dialog does in the page what ``mana-ai grants create|revoke`` does (docs/privacy.md): the user
picks which of the mission's encrypted inputs the runner may read and for how long; the workbench, holding the
local user's master key (``MANA_AI_MASTER_KEY_FILE``), issues the grant and re-seals the chosen records. The
runner's public key comes from its own private key (``MANA_AI_PRIVATE_KEY_PEM``/``_FILE``): the workbench runs
in the service process. Without a master key or without a runner key the dialog says what is missing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from fastapi import APIRouter, Depends, Request, Response

from mana_ai.cli.records import InvalidOption, shown
from mana_ai.crypto.grants import MissionGrant, load_private_key, public_key_pem_from_private
from mana_ai.errors import CryptoError
from mana_ai.privacy.audit import read_audit
from mana_ai.privacy.grant_client import create_grant, revoke_grant
from mana_ai.privacy.refs import parse_record_ref, refs_from_inputs
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.web.base import Workbench
from mana_ai.web.security import COOKIE_PATH, TOKEN_COOKIE

TTL_CHOICES: Final = {"1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7),
                      "30d": dt.timedelta(days=30)}  # fmt: skip


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
        return wb.render(
            request,
            "grant.html",
            {
                "active": "missions",
                "m": record,
                "shown": shown,
                "candidates": [r.qualified for r in refs_from_inputs(record.get("inputs"))],
                "granted": set(current.derivation.record_ids) if current else set(),
                "current": current,
                "expired": current is not None and current.expires_at < to_js_iso(utcnow()),
                "ttls": list(TTL_CHOICES),
                "has_master_key": wb.config.master_key is not None,
                "has_runner_key": public_key() is not None,
            },
        )

    @router.post("/missions/{mission_id}/grant", summary="Issue a grant for the chosen records")
    async def grant_issue(request: Request, mission_id: str, user: str = writer) -> Response:
        form = await request.form()
        chosen = [v for v in form.getlist("record") if isinstance(v, str)]
        extra = form.get("extra")
        chosen += [line for line in (extra if isinstance(extra, str) else "").splitlines() if line.strip()]
        refs = [parse_record_ref(text) for text in chosen]
        if not refs:
            raise InvalidOption("choose at least one record the runner may read")
        ttl = TTL_CHOICES.get(str(form.get("ttl") or "7d"))
        if ttl is None:
            raise InvalidOption("unknown duration")
        await create_grant(
            wb.app.db,
            user_id=user,
            mission_id=mission_id,
            records=refs,
            master_key=wb.config.master_key,
            public_key_pem=public_key(),
            ttl=ttl,
            now=utcnow(),
        )
        return wb.redirect("/missions/" + mission_id + "/grant")

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
