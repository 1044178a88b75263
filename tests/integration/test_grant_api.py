"""The grant API and the audit export over real HTTP (JWKS from a loopback server, the plain DB role), and CORS."""

from __future__ import annotations

import asyncio
import copy
import csv
import datetime as dt
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from mana_ai.crypto.aead import encrypt_value
from mana_ai.crypto.grants import generate_runner_keypair, issue_grant_v2, load_private_key
from mana_ai.db.connector import Database
from mana_ai.http.app import create_http_app
from mana_ai.http.grants_api import MAX_BODY_BYTES
from mana_ai.privacy.copy_store import lock_mission
from mana_ai.privacy.grant_store import put_grant
from mana_ai.privacy.grant_upload import parse_grant_upload
from mana_ai.privacy.reseal import reseal_record
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import utcnow
from tests.integration.http_helpers import serve_http
from tests.integration.runner_helpers import running_app
from tests.integration.test_audit_api import auth_server  # noqa: F401  (the JWKS fixture)

ORIGIN = "https://mana.example"
MASTER = bytes(range(9, 41))


def upload(public_pem: str, mission_id: str = "m1") -> dict[str, Any]:
    key = os.urandom(32)
    grant = issue_grant_v2(
        data_key=key, mission_id=mission_id, tables=["notes"], record_ids=["notes:n1"],
        public_key_pem=public_pem, ttl=dt.timedelta(days=1), now=utcnow(),
    )  # fmt: skip
    sealed = reseal_record(
        mission_id=mission_id, table="notes", record_id="n1", source={"content": encrypt_value("geheim", MASTER)},
        source_field_meta={"content": "2026-01-01T00:00:00.000Z"}, master_key=MASTER, data_key=key,
    )  # fmt: skip
    return {"grant": grant.to_json(), "keyBox": encrypt_value("k", MASTER), "copies": [sealed.to_json()]}


async def test_put_get_delete_grant_scoped_to_the_caller(
    db: Database,
    admin_db: Database,
    app_db_url: str,
    auth_server: Any,  # noqa: F811
) -> None:
    auth_url, token = auth_server
    private_pem, public_pem = generate_runner_keypair()
    async with (
        FakeLlmServer() as llm,
        running_app(
            app_db_url, llm, auth_url=auth_url, private_key_pem=private_pem, cors_origins=ORIGIN
        ) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):

        async def call(
            method: str, path: str, who: str | None = "alice", body: Any = None
        ) -> tuple[int, Any]:
            headers = {"Authorization": "Bearer " + token(who)} if who else {}
            async with http.request(method, base + path, headers=headers, json=body) as resp:
                text = await resp.text()
                return resp.status, (await resp.json() if text and "json" in resp.content_type else text)

        good = upload(public_pem)
        assert (await call("PUT", "/api/v1/me/missions/m1/grant", None, good))[0] == 401
        status, body = await call("PUT", "/api/v1/me/missions/m1/grant", body=good)
        assert status == 200 and body["copies"] == 1
        status, body = await call("GET", "/api/v1/me/missions/m1/grant")
        assert status == 200 and body["grant"] == good["grant"] and body["keyBox"] == good["keyBox"]
        assert body["copies"][0]["sourceFieldMeta"] == {"content": "2026-01-01T00:00:00.000Z"}
        assert "sealed" not in body["copies"][0]
        # Row-level security: bob sees nothing of alice's grant and cannot delete it.
        assert (await call("GET", "/api/v1/me/missions/m1/grant", "bob"))[0] == 404
        assert (await call("DELETE", "/api/v1/me/missions/m1/grant", "bob"))[0] == 204
        assert (await call("GET", "/api/v1/me/missions/m1/grant"))[0] == 200

        # Edited terms are refused: a later expiry, a wider scope, another mission's path.
        for edit in ("expiresAt", "recordIds", "mission"):
            bad = copy.deepcopy(good)
            if edit == "expiresAt":
                bad["grant"]["expiresAt"] = "2099-01-01T00:00:00.000Z"
            elif edit == "recordIds":
                bad["grant"]["derivation"]["recordIds"].append("notes:n2")
            status, body = await call(
                "PUT", "/api/v1/me/missions/" + ("m2" if edit == "mission" else "m1") + "/grant", body=bad
            )
            assert status == 400, (edit, body)
            assert body["code"] == ("WRONG_MISSION" if edit == "mission" else "GRANT_REJECTED")
        # A copy outside the scope, and a refresh of another grant, are refused too.
        outside = copy.deepcopy(good)
        outside["copies"][0]["recordId"] = "n2"
        assert (await call("PUT", "/api/v1/me/missions/m1/grant", body=outside))[1]["code"] == "OUT_OF_SCOPE"
        stale = {"grantId": "0000000000000000", "copies": []}
        assert (await call("PUT", "/api/v1/me/missions/m1/grant/copies", body=stale))[1][
            "code"
        ] == "STALE_GRANT"
        stored = await admin_db.fetchrow(
            "SELECT grant_json FROM mana_ai.mission_grants WHERE user_id = 'alice'"
        )
        assert stored is not None and stored["grant_json"] == good["grant"]  # still the original

        # The audit export: JSON with the grant's scope, CSV with a line per granted record and decrypt.
        async with db.with_user("alice") as conn:
            await conn.execute(
                "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id,"
                " status, reason) VALUES ('alice', 'm1', 'it-1', 'notes', 'n1', 'ok', NULL),"
                " ('alice', 'm1', 'it-1', 'notes', '=HYPERLINK(1)', 'scope-violation', 'record-not-in-grant-allowlist')"
            )
        status, body = await call("GET", "/api/v1/me/ai-audit?format=json")
        assert status == 200 and len(body["rows"]) == 2
        assert body["grants"] == [{"missionId": "m1", "version": "v2", "tables": ["notes"], "recordIds": ["notes:n1"],
                                   "issuedAt": good["grant"]["issuedAt"], "expiresAt": good["grant"]["expiresAt"]}]  # fmt: skip
        async with http.get(
            base + "/api/v1/me/ai-audit?format=csv", headers={"Authorization": "Bearer " + token("alice")}
        ) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert "attachment" in resp.headers["Content-Disposition"]
            lines = list(csv.reader(io.StringIO(await resp.text())))
        assert lines[0] == [
            "kind",
            "ts",
            "missionId",
            "iterationId",
            "table",
            "recordId",
            "status",
            "reason",
            "expiresAt",
        ]
        assert lines[1][:7] == ["grant", good["grant"]["issuedAt"], "m1", "", "notes", "n1", "granted"]
        assert sorted(line[6] for line in lines[2:]) == ["ok", "scope-violation"]
        assert "'=HYPERLINK(1)" in [line[5] for line in lines[2:]]  # no formula in a spreadsheet
        assert (await call("GET", "/api/v1/me/ai-audit?format=xml"))[0] == 400
        assert (await call("GET", "/api/v1/me/ai-audit?format=csv", "bob"))[1].count(
            "\r\n"
        ) == 1  # header only

        # Revoke: the grant and its copies are gone.
        assert (await call("DELETE", "/api/v1/me/missions/m1/grant"))[0] == 204
        assert (await call("GET", "/api/v1/me/missions/m1/grant"))[0] == 404
        left = await admin_db.fetchrow("SELECT count(*) AS n FROM mana_ai.mission_grant_copies")
        assert left is not None and left["n"] == 0


async def test_cors_only_for_the_configured_origin_and_the_api(app_db_url: str, auth_server: Any) -> None:  # noqa: F811
    auth_url, _token = auth_server
    async with (
        FakeLlmServer() as llm,
        running_app(
            app_db_url, llm, auth_url=auth_url, cors_origins=ORIGIN + "/, https://other.example"
        ) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):

        async def preflight(path: str, origin: str) -> tuple[int, str | None]:
            headers = {"Origin": origin, "Access-Control-Request-Method": "PUT",
                       "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
            async with http.options(base + path, headers=headers) as resp:
                return resp.status, resp.headers.get("Access-Control-Allow-Origin")

        assert await preflight("/api/v1/me/missions/m1/grant", ORIGIN) == (200, ORIGIN)
        assert await preflight("/api/v1/me/ai-audit", ORIGIN) == (200, ORIGIN)
        assert (await preflight("/api/v1/me/missions/m1/grant", "https://evil.example"))[1] is None
        # Preflights are answered before routing, and still counted.
        counted = app.metrics.registry.get_sample_value
        preflights = {"method": "OPTIONS", "path": "preflight"}
        assert counted("mana_ai_http_requests_total", {**preflights, "status": "200"}) == 2
        assert counted("mana_ai_http_requests_total", {**preflights, "status": "400"}) == 1
        async with http.get(base + "/client/mana-ai-grants.js", headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert resp.headers.get("Access-Control-Allow-Origin") == ORIGIN
            assert "export async function issueGrant" in await resp.text()
        async with http.get(base + "/workbench/inbox", headers={"Origin": ORIGIN}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers  # the workbench stays same-origin


async def test_migration_0007_removes_copies_written_the_old_way(db: Database, admin_db: Database) -> None:
    from mana_ai.db.migrate import migrations
    from tests.integration.helpers import mission, put_row

    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    for user in ("u1", "u2"):
        old = {"id": "m1:g:notes:n1", "missionId": "m1", "fields": {"content": "enc:1:AAAA.BBBB"}}
        await put_row(db, user, "missionGrantRecords", old["id"], "insert", old)
    (m0007,) = [m for m in migrations() if m.version == 7]
    async with admin_db.transaction() as conn:
        await conn.execute(m0007.sql)  # type: ignore[arg-type]
    rows = await admin_db.fetch("SELECT app_id, table_name FROM public.sync_changes")
    assert [(r["app_id"], r["table_name"]) for r in rows] == [("ai", "aiMissions")]


@asynccontextmanager
async def alice_on_the_grant_api(
    app_db_url: str, jwks: Any
) -> AsyncIterator[tuple[str, aiohttp.ClientSession, str, str]]:
    """The service with a runner key over HTTP, and a session signed in as alice: (base, http, public, private)."""
    auth_url, token = jwks
    private_pem, public_pem = generate_runner_keypair()
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, auth_url=auth_url, private_key_pem=private_pem) as app,
        serve_http(app) as base,
        aiohttp.ClientSession(headers={"Authorization": "Bearer " + token("alice")}) as http,
    ):
        yield base, http, public_pem, private_pem


async def test_nul_characters_in_a_path_or_body_are_a_400_not_a_500(
    app_db_url: str,
    auth_server: Any,  # noqa: F811
) -> None:
    # Postgres text and jsonb cannot hold NUL; orjson accepts "\u0000", so the statements once failed (500).
    async with alice_on_the_grant_api(app_db_url, auth_server) as (base, http, public_pem, _):

        async def status(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, base + path, json=body) as resp:
                return resp.status, await resp.json() if resp.status != 204 else None

        good = upload(public_pem)
        assert (await status("PUT", "/api/v1/me/missions/m1/grant", good))[0] == 200
        grant = (await status("GET", "/api/v1/me/missions/m1/grant"))[1]
        refused = [
            await status("GET", "/api/v1/me/missions/m%001/grant"),
            await status("DELETE", "/api/v1/me/missions/m%001/grant"),
            await status("PUT", "/api/v1/me/missions/m%001/grant/copies", {"grantId": grant["grantId"]}),
            await status("PUT", "/api/v1/me/missions/m1/grant", {**good, "keyBox": "a\x00b"}),
            await status(
                "PUT",
                "/api/v1/me/missions/m1/grant/copies",
                {
                    "grantId": grant["grantId"],
                    "copies": [],
                    "removed": [{"table": "notes", "recordId": "n\x001"}],
                },
            ),  # fmt: skip
        ]
        assert [(code, body["code"]) for code, body in refused] == [(400, "BAD_REQUEST")] * len(refused)
        after = (await status("GET", "/api/v1/me/missions/m1/grant"))[1]
        assert after["keyBox"] == good["keyBox"] and len(after["copies"]) == 1  # nothing changed


async def test_a_chunked_body_is_refused_once_past_the_cap_not_after_reading_it_all(
    app_db_url: str,
    auth_server: Any,  # noqa: F811
) -> None:
    # Without a Content-Length the cap was checked only after the whole body was in memory.
    auth_url, token = auth_server
    private_pem, _ = generate_runner_keypair()
    chunk, chunks = 1024 * 1024, 3 * MAX_BODY_BYTES // (1024 * 1024)
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b" " * chunk, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/api/v1/me/missions/m1/grant"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [
            (b"host", b"127.0.0.1"), (b"authorization", ("Bearer " + token("alice")).encode()),
            (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked"),
        ],
    }  # fmt: skip
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm, auth_url=auth_url, private_key_pem=private_pem) as app,
    ):
        await create_http_app(app)(scope, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]
    assert read * chunk <= MAX_BODY_BYTES + chunk, f"read {read} MiB before refusing"


async def test_copies_for_a_grant_replaced_meanwhile_are_refused_not_stored_over_the_new_ones(
    db: Database,
    admin_db: Database,
    app_db_url: str,
    auth_server: Any,  # noqa: F811
) -> None:
    # Two tabs: one replaces the grant while the other refreshes the old grant's copies. The copies were
    # keyed by record only, so the old grant's copy replaced the new one and the runner found none.
    async with alice_on_the_grant_api(app_db_url, auth_server) as (base, http, public_pem, private_pem):
        first = upload(public_pem)
        async with http.put(base + "/api/v1/me/missions/m1/grant", json=first) as resp:
            assert resp.status == 200
            first_id = (await resp.json())["grantId"]
        second = parse_grant_upload(
            upload(public_pem), mission_id="m1", private_key=load_private_key(private_pem), now=utcnow()
        )
        refresh = {"grantId": first_id, "copies": first["copies"]}

        async def refresh_old_copies() -> tuple[int, Any]:
            async with http.put(base + "/api/v1/me/missions/m1/grant/copies", json=refresh) as resp:
                return resp.status, await resp.json()

        async with db.with_user("alice") as conn:  # the other tab's replacement, as the grant commands do it
            await lock_mission(conn, "alice", "m1")
            await put_grant(
                conn, "alice", "m1", grant_id=second.grant_id, grant=second.grant.to_json(),
                key_box=second.key_box, expires_at=second.expires_at, copies=second.copies,
            )  # fmt: skip
            racing = asyncio.ensure_future(refresh_old_copies())
            await asyncio.sleep(0.5)  # the refresh has read the grant it sees and waits for our rows
        status, body = await racing
        assert (status, body.get("code")) == (400, "STALE_GRANT"), body
        rows = await admin_db.fetch(
            "SELECT grant_id FROM mana_ai.mission_grant_copies WHERE user_id = 'alice'"
        )
        assert [r["grant_id"] for r in rows] == [second.grant_id]
