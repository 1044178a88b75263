"""The workbench in a real browser (issue 8, "Done when"): Playwright for Python driving Debian's Chromium.

A person creates an agent and a daily mission in the page, runs it (a tick against the fake LLM), sees the
proposals, edits and approves one ``create_task`` and rejects another with feedback; the task appears in the
sync log in the web app's shape; the feedback reaches the next prompt the LLM gets; ``log_drink`` approvals
move a water goal and ``GoalReached`` fires once. Screenshots of the inbox, the timeline and the data-access
tab are saved to ``docs/screenshots`` for the README.

There is no skip: without ``/usr/bin/chromium`` the test fails and says how to install it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mana_ai.db.connector import Database
from mana_ai.privacy.audit import AuditEntry, AuditLog
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.store import replay_record, update_fields
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.web.router import STATE_KEY
from mana_ai.workbench.proposals import Proposal
from tests.integration.http_helpers import serve_http
from tests.integration.runner_helpers import running_app

CHROMIUM = os.environ.get("MANA_AI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot_dir(tmp_path: Path) -> Path:
    """``docs/screenshots`` with ``MANA_AI_UPDATE_SCREENSHOTS=1`` (the README's pictures), else a temporary
    folder: a test run leaves the checkout as it found it."""
    return README_SCREENSHOTS if os.environ.get("MANA_AI_UPDATE_SCREENSHOTS") == "1" else tmp_path


USER = "local"
FEEDBACK = "Lesen mache ich lieber abends selbst"


def chromium_or_fail() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.fail(
            "no Chromium at " + CHROMIUM + ": the workbench browser test needs Debian's chromium package "
            "(`make test` installs it via scripts/system-deps.sh, or `apt-get install chromium`; "
            "MANA_AI_CHROMIUM points elsewhere)",
            pytrace=False,
        )
    return CHROMIUM


async def open_proposals(app: Any) -> list[Proposal]:
    store = app.extra[STATE_KEY].store
    await store.refresh()
    return list((await store.inbox(USER, page_size=100)).proposals)


async def name_tool_propose(db: Database, agent_id: str, tool: str) -> None:
    """Set ``policy.tools[tool] = 'propose'`` on the agent, as the web app's policy editor writes it."""
    async with db.with_user(USER) as conn:
        state = await replay_record(conn, user_id=USER, app_id="ai", table="agents", record_id=agent_id)
        assert state is not None
        policy = dict(state.record.get("policy") or {})
        policy["tools"] = {**(policy.get("tools") or {}), tool: "propose"}
        await update_fields(
            conn,
            user_id=USER,
            app_id="ai",
            table="agents",
            record_id=agent_id,
            fields={"policy": policy},
            at=to_js_iso(utcnow() + dt.timedelta(milliseconds=5)),
            client_id="test-web-app",
            actor=user_actor(USER),
        )


async def test_workbench_end_to_end_in_chromium(
    db: Database, admin_db: Database, app_db_url: str, tmp_path: Path
) -> None:
    executable = chromium_or_fail()
    from playwright.async_api import async_playwright

    shots = screenshot_dir(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app, serve_http(app) as base:
        wb = app.extra[STATE_KEY]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            # CSP violations, failed loads and script errors show up here; the page must have none.
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            try:
                # --- an agent and a daily mission, created in the page ---------------------------------
                await page.goto(base + "/workbench/agents")
                form = page.locator("#new-agent")
                await form.locator('input[name="name"]').fill("Koch")
                await form.locator('input[name="avatar"]').fill("♨")
                await form.locator('input[name="role"]').fill("Plant Haushalt und Essen")
                await form.locator('textarea[name="persona"]').fill("Du planst ruhig und konkret.")
                await form.locator('button[type="submit"]').click()
                await page.wait_for_url("**/workbench/agents/*")
                agent_id = page.url.rsplit("/", 1)[1]

                await page.goto(base + "/workbench/missions")
                form = page.locator("#new-mission")
                await form.locator('input[name="title"]').fill("Haushalt")
                await form.locator('textarea[name="objective"]').fill("Was steht heute im Haushalt an?")
                await form.locator('select[name="agent_id"]').select_option(agent_id)
                await form.locator('select[name="cadence"]').select_option("daily")
                await form.locator('input[name="cadence_value"]').fill("07:30")
                await form.locator('input[name="tz"]').fill("Europe/Berlin")
                await form.locator('button[type="submit"]').click()
                await page.wait_for_url("**/workbench/missions/*")
                mission_id = page.url.rsplit("/", 1)[1]
                assert "daily 07:30 Europe/Berlin" in await page.content()

                # log_drink is an `auto` tool (the web app runs it unasked); naming it `propose` in the agent's
                # policy, as a user can in the web app, makes the runner offer it for review.
                await name_tool_propose(db, agent_id, "log_drink")

                # --- run it: a tick against the fake LLM -----------------------------------------------
                llm.reply_tool_calls(
                    [
                        ("create_task", {"title": "Einkaufen", "priority": "high"}),
                        ("create_task", {"title": "Lesen"}),
                    ],
                    usage=(900, 120),
                )
                llm.reply_tool_calls(
                    [
                        ("log_drink", {"drinkType": "water", "quantityMl": 250}),
                        ("log_drink", {"drinkType": "water", "quantityMl": 300}),
                    ],
                    usage=(950, 40),
                )
                llm.reply_text("Zwei Aufgaben vorgeschlagen.", usage=(1000, 20))
                await page.get_by_role("button", name="Run now").click()
                await page.wait_for_url("**?queued=1")
                await wb.kicker.wait()
                proposals = await open_proposals(app)
                tasks = [p for p in proposals if p.tool_name == "create_task"]
                drinks = [p for p in proposals if p.tool_name == "log_drink"]
                assert [p.params["title"] for p in tasks] == ["Einkaufen", "Lesen"] and len(drinks) == 2

                # --- a water goal, created in the page --------------------------------------------------
                await page.goto(base + "/workbench/goals")
                form = page.locator("#goal-custom")
                await form.locator('input[name="title"]').fill("Wasser trinken")
                await form.locator('select[name="event_type"]').select_option("DrinkLogged")
                await form.locator('input[name="filter_field"]').fill("drinkType")
                await form.locator('input[name="filter_value"]').fill("water")
                await form.locator('input[name="target"]').fill("1")
                await form.locator('select[name="module"]').select_option("drink")
                await form.locator('button[type="submit"]').click()
                await page.wait_for_url("**/workbench/goals")

                # --- the inbox: proposals grouped by mission, with the agent -----------------------------
                await page.goto(base + "/workbench/inbox")
                assert "4 open proposal(s)" in await page.inner_text("#open-count")
                group = page.locator('section.group[data-mission="' + mission_id + '"]')
                assert "Koch" in await group.inner_text() and "♨" in await group.inner_text()
                await page.screenshot(path=str(shots / "workbench-inbox.png"), full_page=True)

                # Edit and approve the first create_task (htmx swaps the card in place).
                card = page.locator('article[data-step="' + tasks[0].ref.step_id + '"]')
                await card.locator('input[name="param.title"]').fill("Einkaufen gehen")
                await card.locator('select[name="param.priority"]').select_option("medium")
                await card.get_by_role("button", name="Approve").click()
                done = page.locator(
                    'article[data-step="' + tasks[0].ref.step_id + '"][data-status="approved"]'
                )
                await done.wait_for()
                assert "Task created: Einkaufen gehen" in await done.inner_text()

                # Reject the second one with feedback.
                card = page.locator('article[data-step="' + tasks[1].ref.step_id + '"]')
                await card.locator('input[name="feedback"]').fill(FEEDBACK)
                await card.get_by_role("button", name="Reject").click()
                await page.locator(
                    'article[data-step="' + tasks[1].ref.step_id + '"][data-status="rejected"]'
                ).wait_for()

                # Approve both drinks: the water goal moves, GoalReached fires once.
                for drink in drinks:
                    await (
                        page.locator('article[data-step="' + drink.ref.step_id + '"]')
                        .get_by_role("button", name="Approve")
                        .click()
                    )
                    await page.locator(
                        'article[data-step="' + drink.ref.step_id + '"][data-status="approved"]'
                    ).wait_for()

                # --- the task is in the sync log, in the web app's shape -------------------------------------
                rows = await admin_db.fetch(
                    "SELECT app_id, op, data, actor, client_id FROM public.sync_changes WHERE table_name = 'tasks'"
                )
                assert len(rows) == 1
                task = rows[0]
                assert (task["app_id"], task["op"], task["client_id"]) == (
                    "todo",
                    "insert",
                    "mana-ai-workbench",
                )
                assert {k: task["data"][k] for k in ("title", "priority", "isCompleted", "dueDate")} == {
                    "title": "Einkaufen gehen",
                    "priority": "medium",
                    "isCompleted": False,
                    "dueDate": None,
                }
                assert task["actor"]["kind"] == "ai" and task["actor"]["principalId"] == agent_id

                store = wb.store
                goals = await store.goals(USER)
                assert [(g["title"], g["currentValue"]) for g in goals] == [("Wasser trinken", 2)]
                reached = await store.events(USER, event_type="GoalReached")
                assert len(reached) == 1 and reached[0]["payload"]["value"] == 1
                await page.goto(base + "/workbench/goals")
                assert "2 / 1 per day" in await page.inner_text("table")

                # --- the next planning round sees the feedback ---------------------------------------------
                llm.reply_text("Heute nichts weiter.", usage=(800, 10))
                await page.goto(base + "/workbench/missions/" + mission_id)
                await page.get_by_role("button", name="Run now").click()
                await page.wait_for_url("**?queued=1")
                await wb.kicker.wait()
                llm.assert_complete()
                prompt = next(m["content"] for m in llm.requests[-1].json["messages"] if m["role"] == "user")
                assert "Nutzer-Feedback: " in prompt and FEEDBACK in prompt
                assert "[approved]" in prompt and "[rejected]" in prompt

                # --- timeline and data-access tab ----------------------------------------------------------
                await page.goto(base + "/workbench/timeline?mission=" + mission_id)
                text = await page.inner_text(".timeline")
                assert "GoalReached" in text and "approved create_task" in text and FEEDBACK in text
                await page.screenshot(path=str(shots / "workbench-timeline.png"), full_page=True)

                audit = AuditLog(app.db)
                for status, reason, record in (
                    ("ok", None, "n-7f3a"),
                    ("ok", "resealed-copy-stale", "t-19c2"),
                    ("scope-violation", "record-not-in-grant-allowlist", "n-99b0"),
                ):
                    table = "notes" if record.startswith("n-") else "tasks"
                    await audit.record(AuditEntry(USER, mission_id, None, table, record, status, reason))  # type: ignore[arg-type]
                await page.goto(base + "/workbench/audit")
                assert await page.locator("#audit tbody tr").count() == 3
                assert "record-not-in-grant-allowlist" in await page.inner_text("#audit")
                await page.screenshot(path=str(shots / "workbench-audit.png"), full_page=True)
                assert problems == [], problems
            finally:
                await browser.close()
    for name in ("workbench-inbox.png", "workbench-timeline.png", "workbench-audit.png"):
        assert (shots / name).stat().st_size > 10_000, name
