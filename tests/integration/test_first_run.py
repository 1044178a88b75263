"""A first run against a real-shaped server: kept steps, stop reasons, the offered tools, `/` and no CDN docs."""

from __future__ import annotations

import aiohttp
import orjson

from mana_ai.runner.writeback import TOO_LARGE
from mana_ai.testing.fake_llm import FakeLlmServer
from tests.integration.helpers import mission, put_row
from tests.integration.http_helpers import serve_http
from tests.integration.runner_helpers import agent_record, running_app


async def last_iteration(admin_db, mission_id):
    row = await admin_db.fetchrow(
        "SELECT data FROM public.sync_changes WHERE record_id = %s AND client_id = 'mana-ai-runner'"
        " ORDER BY created_at DESC LIMIT 1",
        (mission_id,),
    )
    return row["data"]["iterations"][-1]


async def test_steps_of_earlier_rounds_are_kept_when_a_later_round_fails(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1"))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        llm.reply_tool_calls([("create_task", {"title": "Wochenplan"})], usage=(100, 10))
        llm.reply_error(400, body={"error": {"message": "context length exceeded"}})
        stats = await app.ticker.tick()
        llm.assert_complete()
    assert stats.decisions["ran"] == 1, stats.to_json()
    it = await last_iteration(admin_db, "m1")
    assert [s["intent"]["toolName"] for s in it["plan"]] == ["create_task"]
    assert it["overallStatus"] == "awaiting-review"
    assert it["stopReason"] == "llm-error"
    assert "Planning stopped in round 2: LLM server (model mana/reasoning) 400" in it["summary"]
    assert "kept" in it["summary"]


async def test_a_run_without_tool_calls_says_so(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        llm.reply_text("Ich würde dir raten, mehr Wasser zu trinken.")
        await app.ticker.tick()
        llm.assert_complete()
    it = await last_iteration(admin_db, "m1")
    assert it["plan"] == [] and it["stopReason"] == "no-tool-calls"
    assert "without calling a tool" in it["summary"]


async def test_a_failed_run_records_its_stop_reason(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        llm.reply_error(400)
        stats = await app.ticker.tick()
    assert stats.decisions["failed"] == 1
    it = await last_iteration(admin_db, "m1")
    assert it["overallStatus"] == "failed" and it["stopReason"] == "error"
    assert it["errorDetails"]["message"].startswith("LLM server (model mana/reasoning) 400")


async def test_a_small_context_window_offers_fewer_tools_and_sends_max_tokens(db, app_db_url):
    await put_row(
        db,
        "u1",
        "aiMissions",
        "m1",
        "insert",
        mission(
            "m1",
            objective="Lege Aufgaben für heute an",
            inputs=[{"module": "todo", "table": "tasks", "id": "t1"}],
        ),
    )
    await put_row(
        db, "u1", "aiMissions", "m2", "insert", mission("m2", objective="Lege Aufgaben für heute an")
    )
    async with FakeLlmServer() as llm:
        llm.reply_text("ok").reply_text("ok")
        async with running_app(app_db_url, llm, llm_context_tokens=4096, llm_max_tokens=512) as app:
            await app.ticker.tick()
        large, small = None, None
        for request in llm.requests:
            tools = request.json["tools"]
            assert request.json["max_tokens"] == 512
            assert len(orjson.dumps(tools)) // 4 <= (4096 - 512) // 2
            names = {t["function"]["name"] for t in tools}
            assert "create_task" in names
            small = len(tools) if small is None else min(small, len(tools))
            large = len(tools) if large is None else max(large, len(tools))
        assert large is not None and large < 62


async def test_string_arguments_are_limited_when_configured(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", objective="Lege Aufgaben an"))
    async with FakeLlmServer() as llm:
        llm.reply_tool_calls([("create_task", {"title": "x" * 41})])
        llm.reply_tool_calls([("create_task", {"title": "Wasser trinken", "priority": "high"})])
        llm.reply_text("fertig")
        async with running_app(app_db_url, llm, llm_max_argument_chars=40) as app:
            await app.ticker.tick()
        llm.assert_complete()
    first, second, _ = llm.requests
    props = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in first.json["tools"]}
    assert props["create_task"]["title"]["maxLength"] == 40
    assert "maxLength" not in props["create_task"]["priority"]  # an enum is bounded already
    assert all(
        p.get("maxLength") == 40
        for tool in props.values()
        for p in tool.values()
        if p["type"] == "string" and "enum" not in p
    )
    rejected = second.json["messages"][-1]
    assert rejected["role"] == "tool" and "title must be at most 40 characters" in rejected["content"]
    it = await last_iteration(admin_db, "m1")
    assert [s["intent"]["params"] for s in it["plan"]] == [{"title": "Wasser trinken", "priority": "high"}]


async def test_root_redirects_to_the_workbench_and_docs_need_no_cdn(db, app_db_url):
    async with (
        FakeLlmServer() as llm,
        running_app(app_db_url, llm) as app,
        serve_http(app) as base,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(base + "/", allow_redirects=False) as resp:
            assert resp.status == 307 and resp.headers["Location"] == "/workbench"
        async with http.get(base + "/docs") as resp:
            assert resp.status == 404  # Swagger UI would load its scripts from a CDN
        async with http.get(base + "/openapi.json") as resp:
            assert resp.status == 200 and "/health" in (await resp.json())["paths"]


async def test_inbox_and_mission_page_show_failing_and_paused_missions(db, app_db_url, admin_db):
    from mana_ai.runner.iteration import failed_iteration
    from tests.integration.test_workbench_logic import seed, server_iteration
    from tests.integration.test_workbench_web import action, page, workbench

    failing = [
        failed_iteration("f1", "2026-01-01T00:00:00.000Z", name="provider-unreachable", message="first"),
        failed_iteration(
            "f2", "2026-01-01T01:00:00.000Z", name="provider-unreachable", message="LLM server down"
        ),
    ]
    await seed(db, user="local", mission_id="m-fail", iterations=failing)
    await put_row(db, "local", "aiMissions", "m-paused", "insert", mission("m-paused", state="paused"))
    # Paused by the runner without a failed iteration (its iterations too large for another one): the reason
    # is its last run's error.
    await put_row(db, "local", "aiMissions", "m-big", "insert", mission("m-big", state="paused"))
    await admin_db.execute(
        "INSERT INTO mana_ai.mission_runs (user_id, mission_id, due_at, state, owner, lease_until, last_error)"
        " VALUES ('local', 'm-big', 'x', 'failed', 'w', now(), %s)",
        (TOO_LARGE,),
    )
    it = server_iteration("it1", [("create_task", {"title": "A"}), ("create_task", {"title": "B"})])
    await seed(db, user="local", mission_id="m1", agent_id=None, iterations=[it])
    async with workbench(app_db_url) as (_app, base, client):
        _, html, token = await page(client, "/workbench/inbox")
        assert "3 mission(s) need attention" in html
        assert 'data-attention="m-big"' in html and "iterations are too large" in html
        assert 'data-attention="m-fail"' in html and "failed 2 time(s) in a row" in html
        assert "LLM server down" in html
        assert 'data-attention="m-paused"' in html and "paused by you" in html
        assert 'data-attention="m1"' not in html
        # After an htmx decision the open count comes back out of band.
        hx = {"HX-Request": "true", "X-CSRF-Token": token, "Origin": base}
        async with client.post(action(it, 0, "reject"), data={"feedback": "no"}, headers=hx) as response:
            fragment = await response.text()
        assert 'id="open-count" hx-swap-oob="true">1 open proposal(s)' in fragment
        _, big_html, _ = await page(client, "/workbench/missions/m-big")
        assert 'id="attention"' in big_html and "iterations are too large" in big_html
        _, mission_html, _ = await page(client, "/workbench/missions/m-fail")
        assert 'id="attention"' in mission_html and "LLM server down" in mission_html
        assert "stopped: error" in mission_html
