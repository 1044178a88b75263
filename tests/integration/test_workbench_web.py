"""The workbench over real HTTP (uvicorn on loopback, aiohttp client): pages, CSRF, htmx fragments, paging, modes."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from mana_ai.app import App
from mana_ai.db.connector import Database
from mana_ai.scheduler.cadence import DailyCadence, next_run
from mana_ai.synclog.store import replay_record
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.web.router import STATE_KEY
from tests.integration.helpers import put_row
from tests.integration.http_helpers import free_port, serve_http
from tests.integration.runner_helpers import running_app
from tests.integration.test_workbench_logic import ref, seed, server_iteration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@asynccontextmanager
async def workbench(
    app_db_url: str, **overrides: Any
) -> AsyncIterator[tuple[App, str, aiohttp.ClientSession]]:
    async with FakeLlmServer(
        default=conversation_responder(tool_name="create_task", arguments={"title": "Plan"})
    ) as llm:
        async with running_app(app_db_url, llm, **overrides) as app, serve_http(app) as base:
            jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 (an IP host)
            async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as client:
                yield app, base, client


async def page(client: aiohttp.ClientSession, path: str) -> tuple[int, str, str]:
    async with client.get(path) as response:
        text = await response.text()
        match = CSRF.search(text)
        return response.status, text, match.group(1) if match else ""


async def step_status(db: Database, mission_id: str = "m1") -> list[str]:
    async with db.with_user("local") as conn:
        state = await replay_record(
            conn, user_id="local", app_id="ai", table="aiMissions", record_id=mission_id
        )
    assert state is not None
    return [s["status"] for s in state.record["iterations"][0]["plan"]]


def mission_form(token: str, **fields: str) -> dict[str, str]:
    """The workbench's new-mission form: daily at 07:30, no agent, no zone of its own, unless ``fields`` say."""
    form = {
        "csrf_token": token,
        "title": "Mission",
        "objective": "Plane meine Mahlzeiten",
        "concept": "",
        "agent_id": "",
        "cadence": "daily",
        "cadence_value": "07:30",
        "tz": "",
        "inputs": "",
    }
    return {**form, **fields}


def action(it: dict[str, Any], index: int, verb: str) -> str:
    r = ref(it, index)
    return "/workbench/proposals/" + r.mission_id + "/" + r.iteration_id + "/" + r.step_id + "/" + verb


async def test_inbox_and_csrf(db: Database, app_db_url: str) -> None:
    it = server_iteration(
        "it1", [("create_task", {"title": "Einkaufen"}), ("log_mood", {"level": 6, "emotion": "calm"})]
    )
    await seed(db, user="local", iterations=[it])
    async with workbench(app_db_url) as (_app, base, client):
        async with client.get("/workbench", allow_redirects=False) as response:
            assert response.status in (303, 307) and response.headers["location"].endswith("/workbench/inbox")
        status, html, token = await page(client, "/workbench/inbox")
        assert status == 200 and token
        assert "Einkaufen" in html and "Planer" in html and "🧭" in html and "2 open proposal(s)" in html
        assert 'src="/workbench/static/htmx.min.js"' in html
        assert any(c.key == "mana_ai_csrf" for c in client.cookie_jar)

        # No token, a wrong token, a foreign origin: all refused, nothing decided.
        async with client.post(action(it, 0, "approve"), data={"param.title": "X"}) as response:
            assert response.status == 403 and "CSRF" in await response.text()
        async with client.post(action(it, 0, "approve"), data={"csrf_token": "wrong" * 8}) as response:
            assert response.status == 403
        headers = {"Origin": "http://evil.example"}
        async with client.post(
            action(it, 0, "approve"), data={"csrf_token": token}, headers=headers
        ) as response:
            assert response.status == 403 and "cross-origin" in await response.text()
        assert await step_status(db) == ["staged", "staged"]

        # With the token (form field): done, and a plain form POST redirects back to the inbox.
        async with client.post(
            action(it, 0, "approve"),
            data={"csrf_token": token, "param.title": "Einkaufen gehen"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303 and response.headers["location"] == "/workbench/inbox?page=1"
        # htmx: header token, fragment back.
        hx = {"HX-Request": "true", "X-CSRF-Token": token, "Origin": base}
        async with client.post(
            action(it, 1, "reject"), data={"feedback": "Keine Lust"}, headers=hx
        ) as response:
            fragment = await response.text()
            assert response.status == 200 and 'data-status="rejected"' in fragment and "<html" not in fragment
        assert await step_status(db) == ["approved", "rejected"]
        _, html, _ = await page(client, "/workbench/inbox")
        assert "0 open proposal(s)" in html and "Nothing to review" in html


async def test_invalid_edits_come_back_with_the_problems(db: Database, app_db_url: str) -> None:
    it = server_iteration("it1", [("log_drink", {"drinkType": "water", "quantityMl": 250})])
    await seed(db, user="local", iterations=[it])
    async with workbench(app_db_url) as (_app, base, client):
        _, _, token = await page(client, "/workbench/inbox")
        hx = {"HX-Request": "true", "X-CSRF-Token": token}
        data = {"param.drinkType": "water", "param.quantityMl": "viel"}
        async with client.post(action(it, 0, "approve"), data=data, headers=hx) as response:
            fragment = await response.text()
        assert "Parameter quantityMl must be a number" in fragment and 'class="errors"' in fragment
        assert await step_status(db) == ["staged"]
        data["param.quantityMl"] = "500"
        async with client.post(action(it, 0, "approve"), data=data, headers=hx) as response:
            fragment = await response.text()
        assert 'data-status="approved"' in fragment and "DrinkLogged" in fragment


async def test_five_hundred_open_proposals_are_paged(db: Database, app_db_url: str) -> None:
    iterations = [
        server_iteration(
            "it" + str(n), [("create_task", {"title": "T" + str(n) + "-" + str(i)}) for i in range(10)]
        )
        for n in range(50)
    ]
    await seed(db, user="local", iterations=iterations)
    async with workbench(app_db_url) as (_app, _base, client):
        status, html, _ = await page(client, "/workbench/inbox")
        assert status == 200 and "500 open proposal(s)" in html and "page 1 of 20" in html
        assert html.count('class="card proposal"') == 25
        status, html, _ = await page(client, "/workbench/inbox?page=20")
        assert status == 200 and "page 20 of 20" in html and html.count('class="card proposal"') == 25
        assert 'rel="next"' not in html and 'rel="prev"' in html


async def test_modes_jwt_and_non_loopback(db: Database, app_db_url: str) -> None:
    async with workbench(app_db_url, auth_url="http://127.0.0.1:9") as (_app, _base, client):
        status, html, token = await page(client, "/workbench/inbox")
        assert status == 401 and "Sign in" in html and token
        async with client.get("/workbench/inbox", headers={"Authorization": "Bearer not-a-jwt"}) as response:
            assert response.status == 401
    async with workbench(app_db_url, host="0.0.0.0") as (_app, _base, client):
        status, html, _ = await page(client, "/workbench/inbox")
        assert status == 403 and "loopback" in html


async def test_agents_missions_run_now_and_the_other_pages(db: Database, app_db_url: str) -> None:
    async with workbench(app_db_url) as (app, base, client):
        _, html, token = await page(client, "/workbench/agents")
        assert "No agents yet" in html
        form = {
            "csrf_token": token,
            "name": "Koch",
            "avatar": "🍳",
            "role": "plant Essen",
            "persona": "Du kochst gern.",
            "max_concurrent": "2",
            "max_tokens_per_day": "",
            "default_for_ai": "propose",
            "module.finance": "deny",
            "tool_overrides": "create_note=deny",
        }
        async with client.post("/workbench/agents", data=form, allow_redirects=False) as response:
            assert response.status == 303
            agent_url = response.headers["location"]
        async with client.post("/workbench/agents", data=form) as response:
            assert response.status == 400 and "already exists" in await response.text()
        status, html, _ = await page(client, agent_url)
        assert status == 200 and "Koch" in html and "create_note=deny" in html
        agent_id = agent_url.rsplit("/", 1)[1]
        edit = {**form, "name": "Köchin", "max_tokens_per_day": "50000", "tool_overrides": ""}
        async with client.post(agent_url, data=edit) as response:
            html = await response.text()
            assert response.status == 200 and "Köchin" in html and 'value="50000"' in html
        async with client.post(
            agent_url + "/state", data={"csrf_token": token, "action": "pause"}
        ) as response:
            assert response.status == 200 and ">paused<" in await response.text()
        async with client.post(
            agent_url + "/state", data={"csrf_token": token, "action": "resume"}
        ) as response:
            assert response.status == 200

        mission = mission_form(token, title="Wochenplan", agent_id=agent_id, tz="Europe/Berlin")
        async with client.post("/workbench/missions", data=mission, allow_redirects=False) as response:
            assert response.status == 303
            mission_url = response.headers["location"]
        status, html, _ = await page(client, mission_url)
        assert status == 200 and "daily 07:30 Europe/Berlin" in html
        async with client.post(
            mission_url + "/run", data={"csrf_token": token}, allow_redirects=False
        ) as response:
            assert response.status == 303 and response.headers["location"].endswith("?queued=1")
        await app.extra[STATE_KEY].kicker.wait()
        _, html, _ = await page(client, "/workbench/inbox")
        assert "1 open proposal(s)" in html and "Wochenplan" in html and "Köchin" in html
        async with client.post(
            mission_url + "/state", data={"csrf_token": token, "action": "pause"}
        ) as response:
            assert response.status == 200
        async with client.post(mission_url + "/run", data={"csrf_token": token}) as response:
            assert response.status == 400 and "resume it first" in await response.text()
        bad = {**mission, "cadence": "cron", "cadence_value": "not cron"}
        async with client.post(mission_url, data=bad) as response:
            assert response.status == 400
        for path in ("/workbench/timeline", "/workbench/goals", "/workbench/audit", mission_url + "/grant"):
            status, html, _ = await page(client, path)
            assert status == 200, path
        _, html, _ = await page(client, "/workbench/timeline?agent=" + agent_id)
        assert "planned 1 step(s) (server)" in html
        _, html, _ = await page(client, "/workbench/agents")
        assert "tokens" in html and "<svg" in html
        async with client.get("/workbench/static/htmx.min.js") as response:
            body = await response.text()
            assert response.status == 200 and response.content_type == "text/javascript"
            assert body.startswith("/*! htmx 2.") and "Zero-Clause BSD" in body
        async with client.get("/workbench/static/../settings.py") as response:
            assert response.status == 404


@asynccontextmanager
async def jwks_server() -> AsyncIterator[tuple[str, Callable[[str], str]]]:
    """A loopback mana-auth JWKS endpoint and a function that signs a token for a user."""
    key = ed25519.Ed25519PrivateKey.generate()
    x = base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()
    keys = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA"}]}

    async def serve(_request: web.Request) -> web.Response:
        return web.json_response(keys)

    server = web.Application()
    server.router.add_get("/api/v1/auth/jwks", serve)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = "http://127.0.0.1:" + str(port)

    def token(sub: str) -> str:
        claims = {"sub": sub, "aud": "mana", "iss": url, "exp": int(time.time()) + 3600}
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})

    try:
        yield url, token
    finally:
        await runner.cleanup()


async def test_jwt_mode_serves_each_user_their_own_proposals(db: Database, app_db_url: str) -> None:
    alice = server_iteration("ia", [("create_task", {"title": "Alice-Aufgabe"})])
    bob = server_iteration("ib", [("create_task", {"title": "Bob-Aufgabe"})])
    await seed(db, user="alice", iterations=[alice])
    await seed(db, user="bob", iterations=[bob])
    async with (
        jwks_server() as (auth_url, token),
        workbench(app_db_url, auth_url=auth_url) as (_app, _base, client),
    ):
        async with client.get(
            "/workbench/inbox", headers={"Authorization": "Bearer " + token("alice")}
        ) as response:
            html = await response.text()
        assert response.status == 200 and "Alice-Aufgabe" in html and "Bob-Aufgabe" not in html
        # Sign in through the page: the token goes into an HttpOnly cookie.
        status, _html, csrf = await page(client, "/workbench/inbox")
        assert status == 401 and csrf
        form = {"csrf_token": csrf, "token": token("bob")}
        async with client.post("/workbench/login", data=form, allow_redirects=False) as response:
            assert response.status == 303
            assert (
                "HttpOnly" in response.headers["set-cookie"]
                and "SameSite=strict" in response.headers["set-cookie"]
            )
        status, html, csrf = await page(client, "/workbench/inbox")
        assert status == 200 and "Bob-Aufgabe" in html and "Alice-Aufgabe" not in html
        # Bob cannot decide Alice's proposal: under his identity her iteration does not exist.
        async with client.post(action(alice, 0, "approve"), data={"csrf_token": csrf}) as response:
            assert response.status == 400 and "no proposal" in await response.text()
        async with db.with_user("alice") as conn:
            state = await replay_record(
                conn, user_id="alice", app_id="ai", table="aiMissions", record_id="m1"
            )
        assert state is not None and state.record["iterations"][0]["plan"][0]["status"] == "staged"


async def test_grant_dialog_shows_the_cli_command_and_revokes(
    db: Database, app_db_url: str, tmp_path: Any, monkeypatch: Any
) -> None:
    from mana_ai.crypto.aead import encrypt_value
    from mana_ai.crypto.grants import generate_runner_keypair
    from mana_ai.privacy.grant_client import create_grant
    from mana_ai.privacy.grant_store import get_grant
    from mana_ai.privacy.refs import RecordRef
    from mana_ai.timefmt import utcnow
    from tests.integration.helpers import mission, put_row

    master = bytes(range(1, 33))
    (tmp_path / "master.key").write_text(master.hex())
    # Local mode: the service ignores a configured master key (it never holds one).
    monkeypatch.setenv("MANA_AI_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    private_pem, public_pem = generate_runner_keypair()
    await put_row(
        db,
        "local",
        "notes",
        "n1",
        "insert",
        {"id": "n1", "title": encrypt_value("Einkauf", master), "content": encrypt_value("Milch", master)},
        app_id="notes",
    )
    inputs = [{"module": "notes", "table": "notes", "id": "n1"}]
    await put_row(db, "local", "aiMissions", "m1", "insert", mission("m1", inputs=inputs, nextRunAt=None))
    async with workbench(app_db_url, private_key_pem=private_pem) as (app, _base, client):
        status, html, token = await page(client, "/workbench/missions/m1/grant")
        assert status == 200 and "vault key loaded" not in html
        assert "mana-ai grants create --mission m1 --record notes:n1" in html
        async with client.post(
            "/workbench/missions/m1/grant", data={"csrf_token": token, "record": "notes:n1"}
        ) as r:
            assert r.status in (404, 405)  # the page cannot issue grants: it holds no key
        await create_grant(
            app.db,
            user_id="local",
            mission_id="m1",
            records=[RecordRef("notes", "n1")],
            master_key=master,
            public_key_pem=public_pem,
            ttl=None,
            now=utcnow(),
        )
        status, html, token = await page(client, "/workbench/missions/m1/grant")
        assert "grant-current" in html and "<code>notes:n1</code>" in html and "Revoke" in html
        # The data-access tab offers the audit for download, with the grant's scope.
        _, html, _ = await page(client, "/workbench/audit?mission=m1")
        assert 'href="/workbench/audit/export?format=csv&amp;mission=m1"' in html
        async with client.get("/workbench/audit/export?format=csv") as response:
            assert response.status == 200 and response.content_type == "text/csv"
            assert "attachment" in response.headers["Content-Disposition"]
            lines = (await response.text()).splitlines()
        assert (
            lines[0].startswith("kind,ts,missionId")
            and lines[1].startswith("grant,")
            and ",m1,,notes,n1," in lines[1]
        )
        async with client.get("/workbench/audit/export?format=json") as response:
            assert (await response.json(content_type=None))["grants"][0]["recordIds"] == ["notes:n1"]
        async with client.post("/workbench/missions/m1/grant/revoke", data={"csrf_token": token}) as response:
            assert response.status == 200 and "grant-current" not in await response.text()
        async with db.with_user("local") as conn:
            state = await replay_record(
                conn, user_id="local", app_id="ai", table="aiMissions", record_id="m1"
            )
            assert await get_grant(conn, "local", "m1") is None
        assert state is not None and state.record["grant"] is None


async def test_a_mission_made_in_the_workbench_first_runs_in_the_users_zone(
    db: Database, app_db_url: str
) -> None:
    # A cadence without its own zone follows the user's zone (their default calendar's), else the
    # deployment's (mana_ai.scheduler.zones): the runner computes every later run so. The workbench computed
    # the first nextRunAt of a new, edited or resumed mission in the deployment's zone instead: a New York
    # user's "daily 07:30" on a UTC deployment first ran at 07:30 UTC (02:30 or 03:30 in New York).
    calendar = {"id": "c1", "name": "Main", "timezone": "America/New_York", "isDefault": True}
    await put_row(db, "local", "calendars", "c1", "insert", calendar, app_id="calendar")

    async def next_run_at(mission_id: str) -> str:
        async with db.with_user("local") as conn:
            state = await replay_record(
                conn, user_id="local", app_id="ai", table="aiMissions", record_id=mission_id
            )
        assert state is not None
        return state.record["nextRunAt"]

    def expected(hour: int, minute: int) -> str:
        cadence = DailyCadence(hour, minute)
        return to_js_iso(next_run(cadence, after=utcnow(), default_tz="America/New_York"))

    async with workbench(app_db_url, default_tz="UTC") as (_app, _base, client):
        _, _, token = await page(client, "/workbench/missions")
        form = mission_form(token, title="Briefing")
        async with client.post("/workbench/missions", data=form, allow_redirects=False) as response:
            assert response.status == 303
            mission_id = response.headers["location"].rsplit("/", 1)[1]
        assert await next_run_at(mission_id) == expected(7, 30)
        # Edited to another time: the new first run is in the user's zone, too.
        async with client.post(
            "/workbench/missions/" + mission_id, data={**form, "cadence_value": "08:15"}
        ) as response:
            assert response.status == 200
        assert await next_run_at(mission_id) == expected(8, 15)
