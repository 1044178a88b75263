"""Grants issued by the browser module in real Chromium, from a non-extractable master key (issue 13).

The page runs on an origin of its own (the web app's, allowed by ``MANA_AI_CORS_ORIGINS``) and imports
``/client/mana-ai-grants.js`` cross-origin from ``mana-ai serve``'s HTTP app. It imports a master key with
``extractable: false`` (as the web app's vault client does), encrypts records the web app's way (``enc:1:``,
AES-GCM, JSON plaintext), and issues a grant through the module with a mana JWT. The test then writes what the
web app's sync would push (the records and ``mission.grant``) and runs a real tick: the fake LLM sees the
decrypted text. A copy made for one mission does not open for another; refresh re-seals a changed record;
revoke stops the decrypts. There is no skip: without Chromium the test fails and says how to install it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from mana_ai.crypto.grants import generate_runner_keypair
from mana_ai.db.connector import Database
from mana_ai.privacy.audit import read_audit
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.store import update_fields
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.acceptance.test_workbench_browser import CHROMIUM_ARGS, chromium_or_fail
from tests.integration.helpers import mission, put_row
from tests.integration.http_helpers import free_port, serve_http
from tests.integration.runner_helpers import agent_record, running_app
from tests.integration.test_audit_api import auth_server  # noqa: F401  (the JWKS fixture)

USER = "alice"
MASTER_HEX = "".join(f"{i:02x}" for i in range(100, 132))
NOTE = "Milch, Eier, Mehl"
TASK = "Steuererklärung abgeben"
TASK_NEW = "Steuererklärung bis Freitag abgeben"
OBJECTIVE = "Plane den Wocheneinkauf"
PERSONA = "Du bist sparsam und planst regional."

# The web app's field encryption (@mana/shared-crypto wrapValue): AES-GCM-256, random 12-byte IV, plaintext
# = JSON.stringify(value), "enc:1:" + base64(iv) + "." + base64(ciphertext||tag). Written here independently
# of the module under test.
SETUP_JS = """
async ([moduleUrl, masterHex, values]) => {
  const m = await import(moduleUrl);
  const raw = new Uint8Array(masterHex.match(/../g).map((h) => parseInt(h, 16)));
  const masterKey = await crypto.subtle.importKey('raw', raw, { name: 'AES-GCM', length: 256 }, false,
                                                  ['encrypt', 'decrypt']);
  let exportError = null;
  try { await crypto.subtle.exportKey('raw', masterKey); } catch (e) { exportError = e.name; }
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const enc = async (value) => {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, masterKey,
                                           new TextEncoder().encode(JSON.stringify(value)));
    return 'enc:1:' + b64(iv) + '.' + b64(new Uint8Array(ct));
  };
  window.grantsModule = m;
  window.masterKey = masterKey;
  window.enc = enc;
  const out = {};
  for (const [name, value] of Object.entries(values)) out[name] = await enc(value);
  return { exportError, extractable: masterKey.extractable, encrypted: out };
}
"""

ISSUE_JS = """
async ([baseUrl, token, mission, agent, records]) =>
  window.grantsModule.issueGrant({ baseUrl, token, masterKey: window.masterKey, mission, agent, records,
                                   ttlMs: 24 * 3600 * 1000 })
"""


async def page_server() -> tuple[web.AppRunner, str]:
    """The web app's origin: an empty page (the module is imported from the runner's origin)."""

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>mana</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def push(db: Database, app_id: str, table: str, record: dict[str, Any]) -> None:
    await put_row(db, USER, table, record["id"], "insert", record, app_id=app_id)


async def set_fields(db: Database, mission_id: str, fields: dict[str, Any], *, app_id: str = "ai",
                     table: str = "aiMissions") -> None:  # fmt: skip
    """A field-level update as the web app's sync pushes it (e.g. setMissionGrant)."""
    async with db.with_user(USER) as conn:
        await update_fields(
            conn,
            user_id=USER,
            app_id=app_id,
            table=table,
            record_id=mission_id,
            fields=fields,
            at=to_js_iso(utcnow() + dt.timedelta(seconds=1)),
            client_id="web-app",
            actor=user_actor(USER),
        )


async def due_again(db: Database, mission_id: str) -> None:
    await set_fields(db, mission_id, {"nextRunAt": to_js_iso(utcnow() - dt.timedelta(minutes=5))})


def prompts(llm: FakeLlmServer, since: int = 0) -> list[str]:
    out = []
    for request in llm.requests[since:]:
        messages = request.json["messages"]
        if len(messages) == 2:  # a fresh planning conversation: system + user
            out.append(messages[0]["content"] + "\n" + messages[1]["content"])
    return out


async def audit(db: Database, mission_id: str) -> list[tuple[str, str, str, str | None]]:
    rows = await read_audit(db, user_id=USER, mission_id=mission_id)
    return sorted((r.table_name, r.record_id, r.status, r.reason) for r in rows)


async def test_browser_module_issues_refreshes_and_revokes_grants(
    db: Database,
    admin_db: Database,
    app_db_url: str,
    auth_server: Any,  # noqa: F811
) -> None:
    executable = chromium_or_fail()
    from playwright.async_api import async_playwright

    auth_url, token_for = auth_server
    token = token_for(USER)
    private_pem, _public = generate_runner_keypair()
    site, origin = await page_server()
    responder = conversation_responder(tool_name="create_task", arguments={"title": "Einkaufen"})
    try:
        async with (
            FakeLlmServer(default=responder) as llm,
            running_app(
                app_db_url,
                llm,
                private_key_pem=private_pem,
                auth_url=auth_url,
                cors_origins=origin + ", https://x",
            ) as app,
            serve_http(app) as base,
            async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(origin + "/")
            values = {"noteTitle": "Einkaufszettel", "note": NOTE, "task": TASK, "taskNew": TASK_NEW,
                      "objective": OBJECTIVE, "title": "Wocheneinkauf", "persona": PERSONA}  # fmt: skip
            setup = await page.evaluate(SETUP_JS, [base + "/client/mana-ai-grants.js", MASTER_HEX, values])
            assert setup["extractable"] is False and setup["exportError"] == "InvalidAccessError"
            enc = setup["encrypted"]

            # What the web app pushes: an encrypted note and task, an agent with an encrypted persona, two
            # missions with encrypted text linking both records.
            note = {"id": "n1", "title": enc["noteTitle"], "content": enc["note"], "pinned": False}
            task = {"id": "t1", "title": enc["task"], "isCompleted": False}
            agent = agent_record("a1", systemPrompt=enc["persona"])
            await push(db, "notes", "notes", note)
            await push(db, "todo", "tasks", task)
            await push(db, "ai", "agents", agent)
            inputs = [
                {"module": "notes", "table": "notes", "id": "n1"},
                {"module": "todo", "table": "tasks", "id": "t1"},
            ]
            missions = {}
            for mission_id in ("m1", "m2"):
                missions[mission_id] = mission(
                    mission_id, title=enc["title"], objective=enc["objective"], agentId="a1", inputs=inputs
                )
                await push(db, "ai", "aiMissions", missions[mission_id])
            records = [
                {"table": "notes", "id": "n1", "record": note},
                {"table": "tasks", "id": "t1", "record": task},
            ]

            # --- issue through the module; the web app stores the result on mission.grant --------------
            grants = {}
            for mission_id in ("m1", "m2"):
                grants[mission_id] = await page.evaluate(
                    ISSUE_JS, [base, token, missions[mission_id], agent, records]
                )
                await set_fields(db, mission_id, {"grant": grants[mission_id]})
            assert grants["m1"]["derivation"] == {
                "version": "v2",
                "missionId": "m1",
                "tables": ["notes", "tasks"],
                "recordIds": ["notes:n1", "tasks:t1"],
            }
            # A copy made for m1, put in the place of m2's note copy, does not open for m2.
            m1_note = await admin_db.fetchrow(
                "SELECT sealed FROM mana_ai.mission_grant_copies WHERE mission_id = 'm1' AND record_id = 'n1'"
            )
            assert m1_note is not None and NOTE not in m1_note["sealed"]
            await admin_db.execute(
                "UPDATE mana_ai.mission_grant_copies SET sealed = %s WHERE mission_id = 'm2' AND record_id = 'n1'",
                (m1_note["sealed"],),
            )

            stats = await app.ticker.tick()
            assert stats.decisions["ran"] == 2, stats.to_json()
            seen = prompts(llm)
            assert len(seen) == 2
            m1_prompt = next(p for p in seen if NOTE in p)
            m2_prompt = next(p for p in seen if p is not m1_prompt)
            for text in (NOTE, "Einkaufszettel", TASK, OBJECTIVE, "Wocheneinkauf", PERSONA):
                assert text in m1_prompt, text
            assert "enc:1:" not in m1_prompt
            assert NOTE not in m2_prompt and TASK in m2_prompt  # only the swapped copy fails
            assert await audit(db, "m1") == [
                ("agents", "a1", "ok", None),
                ("aiMissions", "m1", "ok", None),
                ("notes", "n1", "ok", None),
                ("tasks", "t1", "ok", None),
            ]
            assert ("notes", "n1", "failed", "ciphertext-tampered-or-wrong-key") in await audit(db, "m2")

            # --- refresh: the task changed in the app; the module re-seals only that copy ----------------
            task_update = {"title": enc["taskNew"]}
            await set_fields(db, "t1", task_update, app_id="todo", table="tasks")
            refreshed = await page.evaluate(
                """async ([baseUrl, token, mission, agent, records]) =>
                     window.grantsModule.refreshGrant({ baseUrl, token, masterKey: window.masterKey, mission,
                                                        agent, records })""",
                [base, token, missions["m1"], agent, [records[0], {**records[1], "record": {**task, **task_update},
                                                                   "fieldMeta": {"title": "2099-01-01T00:00:00.000Z"}}]],
            )  # fmt: skip
            assert refreshed == {"updated": 1, "unchanged": 3, "removed": 0}

            await due_again(db, "m1")
            before = len(llm.requests)
            assert (await app.ticker.tick()).decisions["ran"] == 1
            (after_refresh,) = prompts(llm, before)
            assert TASK_NEW in after_refresh and NOTE in after_refresh

            # --- revoke through the module (mission.grant is even left in place): decrypts stop ---------
            assert await page.evaluate(
                "async ([baseUrl, token]) => window.grantsModule.revokeGrant({ baseUrl, token, missionId: 'm1' })",
                [base, token],
            )
            rows = await admin_db.fetchrow(
                "SELECT count(*) AS n FROM mana_ai.mission_grant_copies WHERE mission_id = 'm1'"
            )
            assert rows is not None and rows["n"] == 0
            await due_again(db, "m1")
            before = len(llm.requests)
            assert (await app.ticker.tick()).decisions["ran"] == 1
            (after_revoke,) = prompts(llm, before)
            for text in (NOTE, TASK_NEW, OBJECTIVE, PERSONA):
                assert text not in after_revoke, text
            m1_rows = await audit(db, "m1")
            assert ("notes", "n1", "failed", "resealed-copy-missing") in m1_rows
            assert problems == []
            await browser.close()
    finally:
        await site.cleanup()
