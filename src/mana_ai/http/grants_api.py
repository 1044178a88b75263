"""The user's grant and audit API (Bearer JWT), and CORS for the web app's origin on ``/api/v1/``.

* ``PUT /api/v1/me/missions/{id}/grant`` — store a new v2 grant with its sealed copies (replaces the
  mission's earlier grant and every copy of it). The grant is verified as the runner will verify it, so a grant
  whose terms were edited is refused with 400 (``GRANT_REJECTED``).
* ``PUT /api/v1/me/missions/{id}/grant/copies`` — ``refreshGrant``: replace or remove copies of the current
  grant.
* ``GET /api/v1/me/missions/{id}/grant`` — the stored grant, its key box and its copies' stamps (never their
  sealed text), 404 without one.
* ``DELETE /api/v1/me/missions/{id}/grant`` — revoke: the grant and all its copies are deleted (204).
* ``GET /client/mana-ai-grants.js`` — the browser module that issues, refreshes and revokes grants.
* ``GET /api/v1/me/ai-audit?missionId=&limit=&format=json|csv`` — the decrypt audit with the scope of each
  current grant.

Every store access runs inside ``Database.with_user`` of the token's subject (row-level security). Nothing
here ever decrypts: the server cannot open a key box, and copies are opened only by the runner.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

import orjson
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mana_ai.app import App
from mana_ai.crypto.grants import MissionGrant, load_private_key
from mana_ai.errors import CryptoError
from mana_ai.http.auth import AuthError, JwtVerifier
from mana_ai.pgtext import NUL, has_nul
from mana_ai.privacy.audit import clamp_limit, read_audit
from mana_ai.privacy.audit_export import audit_csv, audit_json, grant_scope
from mana_ai.privacy.copy_store import lock_mission
from mana_ai.privacy.grant_store import (
    delete_grant,
    get_grant,
    list_copy_meta,
    list_grants,
    put_copies,
    put_grant,
)
from mana_ai.privacy.grant_upload import UploadRefused, parse_copies_upload, parse_grant_upload
from mana_ai.timefmt import utcnow

CORS_PREFIXES: Final = ("/api/v1/", "/client/")
CLIENT_MODULE: Final = "mana-ai-grants.js"
MAX_BODY_BYTES: Final = 32 * 1024 * 1024


class ApiCors:
    """CORS for ``/api/v1/`` and ``/client/`` only (the workbench pages are same-origin, with their CSRF defence)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.plain = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(CORS_PREFIXES):
            await self.cors(scope, receive, send)
        else:
            await self.plain(scope, receive, send)


def _nul_refusal(name: str, value: str | None) -> JSONResponse | None:
    """A 400 for a NUL character in a path or query value: Postgres text cannot hold one, so no stored id
    has it, and the statement would fail with a 500."""
    if value is None or NUL not in value:
        return None
    return JSONResponse(
        {"error": name + " must not contain NUL characters", "code": "BAD_REQUEST"}, status_code=400
    )


def _refused(exc: UploadRefused) -> JSONResponse:
    return JSONResponse({"error": str(exc), "code": exc.code}, status_code=400)


def register_grant_api(api: FastAPI, app: App, verifier: JwtVerifier) -> None:
    """Add the routes above and the CORS wrapper (``MANA_AI_CORS_ORIGINS``) to ``api``."""
    api.add_middleware(ApiCors, origins=app.settings.cors_origin_list())
    private_key = load_private_key(app.settings.private_key_text())

    async def user_of(authorization: str | None) -> str | JSONResponse:
        try:
            return (await verifier.authenticate(authorization)).user_id
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)

    async def json_body(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise UploadRefused("TOO_LARGE", "the body is too large")  # refused before reading it
        # Counted while reading: a chunked body has no Content-Length, and must not be buffered past the cap.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise UploadRefused("TOO_LARGE", "the body is too large")
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks))
        except ValueError:
            raise UploadRefused("BAD_REQUEST", "the body is not JSON") from None
        if has_nul(body):  # as in _nul_refusal: Postgres text and jsonb cannot hold it
            raise UploadRefused("BAD_REQUEST", "the body must not contain NUL characters")
        return body

    @api.get("/client/" + CLIENT_MODULE, summary="The browser grant module (ES module)")
    async def client_module() -> Response:
        body = (resources.files("mana_ai.web") / "static" / CLIENT_MODULE).read_bytes()
        return Response(
            body, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    @api.put("/api/v1/me/missions/{mission_id}/grant", summary="Store a v2 grant and its sealed copies")
    async def put_mission_grant(
        mission_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Response:
        user = await user_of(authorization)
        if isinstance(user, JSONResponse):
            return user
        if (refused := _nul_refusal("the mission id", mission_id)) is not None:
            return refused
        if private_key is None:
            return JSONResponse(
                {"error": "mission grants are not configured", "code": "GRANT_NOT_CONFIGURED"},
                status_code=503,
            )
        try:
            upload = parse_grant_upload(
                await json_body(request), mission_id=mission_id, private_key=private_key, now=utcnow()
            )
        except UploadRefused as exc:
            return _refused(exc)
        async with app.db.with_user(user) as conn:
            await lock_mission(conn, user, mission_id)
            await put_grant(
                conn,
                user,
                mission_id,
                grant_id=upload.grant_id,
                grant=upload.grant.to_json(),
                key_box=upload.key_box,
                expires_at=upload.expires_at,
                copies=upload.copies,
            )
        return JSONResponse({"grantId": upload.grant_id, "copies": len(upload.copies)})

    @api.put("/api/v1/me/missions/{mission_id}/grant/copies", summary="Replace or remove copies of the grant")
    async def put_grant_copies(
        mission_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Response:
        user = await user_of(authorization)
        if isinstance(user, JSONResponse):
            return user
        if (refused := _nul_refusal("the mission id", mission_id)) is not None:
            return refused
        try:
            body = await json_body(request)
        except UploadRefused as exc:
            return _refused(exc)
        async with app.db.with_user(user) as conn:
            # Every writer of the mission's grant takes this lock first: a grant replaced meanwhile is read
            # here after its commit (STALE_GRANT), its copies never overwritten by the old grant's.
            await lock_mission(conn, user, mission_id)
            stored = await get_grant(conn, user, mission_id)
            if stored is None:
                return JSONResponse(
                    {"error": "the mission has no grant", "code": "NO_GRANT"}, status_code=404
                )
            try:
                upload = parse_copies_upload(
                    body, mission_id=mission_id, current=MissionGrant.from_json(stored.grant)
                )
            except (UploadRefused, CryptoError) as exc:
                return _refused(
                    exc if isinstance(exc, UploadRefused) else UploadRefused("BAD_REQUEST", str(exc))
                )
            await put_copies(
                conn, user, mission_id, grant_id=upload.grant_id, copies=upload.copies, removed=upload.removed
            )
        return JSONResponse(
            {"grantId": upload.grant_id, "copies": len(upload.copies), "removed": len(upload.removed)}
        )

    @api.get("/api/v1/me/missions/{mission_id}/grant", summary="The mission's stored grant (no sealed text)")
    async def get_mission_grant(
        mission_id: str, authorization: str | None = Header(default=None)
    ) -> Response:
        user = await user_of(authorization)
        if isinstance(user, JSONResponse):
            return user
        if (refused := _nul_refusal("the mission id", mission_id)) is not None:
            return refused
        async with app.db.with_user(user) as conn:
            stored = await get_grant(conn, user, mission_id)
            copies = await list_copy_meta(conn, user, mission_id) if stored is not None else []
        if stored is None:
            return JSONResponse({"error": "the mission has no grant", "code": "NO_GRANT"}, status_code=404)
        return JSONResponse({**stored.to_json(), "copies": [c.to_json() for c in copies]})

    @api.delete("/api/v1/me/missions/{mission_id}/grant", summary="Revoke: delete the grant and its copies")
    async def delete_mission_grant(
        mission_id: str, authorization: str | None = Header(default=None)
    ) -> Response:
        user = await user_of(authorization)
        if isinstance(user, JSONResponse):
            return user
        if (refused := _nul_refusal("the mission id", mission_id)) is not None:
            return refused
        async with app.db.with_user(user) as conn:
            await lock_mission(conn, user, mission_id)
            await delete_grant(conn, user, mission_id)
        return Response(status_code=204)

    @api.get("/api/v1/me/ai-audit", summary="The caller's decrypt audit and grant scopes (Bearer JWT)")
    async def ai_audit(
        missionId: str | None = None,  # noqa: N803  (the original's query parameter name)
        limit: str | None = None,
        format: str | None = None,  # noqa: A002  (the query parameter's name)
        authorization: str | None = Header(default=None),
    ) -> Response:
        user = await user_of(authorization)
        if isinstance(user, JSONResponse):
            return user
        if (refused := _nul_refusal("missionId", missionId)) is not None:
            return refused
        if format not in (None, "", "json", "csv"):
            return JSONResponse({"error": "format must be json or csv"}, status_code=400)
        rows = await read_audit(app.db, user_id=user, mission_id=missionId, limit=clamp_limit(limit))
        async with app.db.with_user(user) as conn:
            stored = await list_grants(conn, user)
        scopes = [
            grant_scope(g.mission_id, g.grant) for g in stored if not missionId or g.mission_id == missionId
        ]
        if format == "csv":
            return Response(
                audit_csv(rows, scopes),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="mana-ai-audit.csv"'},
            )
        return JSONResponse(audit_json(rows, scopes))
