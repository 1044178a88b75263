"""Workbench decisions on real Postgres (plain role): approve/edit/reject, idempotency, expiry, paging, feedback."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from mana_ai.db.connector import Database
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.store import replay_record
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.decide import Decider, InvalidParams, ProposalNotFound
from mana_ai.workbench.store import WorkbenchStore
from tests.integration.helpers import put_row
from tests.integration.runner_helpers import agent_record, running_app
from tests.integration.test_workbench_logic import ref, seed, server_iteration

TTL = dt.timedelta(days=7)


def decider(db: Database, **kw: Any) -> Decider:
    return Decider(db, ttl=TTL, tz="UTC", **kw)


async def mission_state(db: Database, mission_id: str = "m1", user: str = "u1") -> dict[str, Any]:
    async with db.with_user(user) as conn:
        state = await replay_record(conn, user_id=user, app_id="ai", table="aiMissions", record_id=mission_id)
    assert state is not None
    return state.record


async def rows_of(admin_db: Database, table: str) -> list[dict[str, Any]]:
    return await admin_db.fetch(
        "SELECT app_id, record_id, op, data, actor, client_id, origin FROM public.sync_changes"
        " WHERE table_name = %s ORDER BY created_at, id",
        (table,),
    )


async def test_approve_runs_the_step_and_writes_the_decision_back(db: Database, admin_db: Database) -> None:
    it = server_iteration(
        "it1",
        [("create_task", {"title": "Einkaufen", "priority": "high"}), ("create_note", {"content": "x"})],
    )
    await seed(db, iterations=[it])
    result = await decider(db).approve("u1", ref(it, 0))
    assert (result.status, result.outcome, result.already) == ("approved", "done", False)
    assert result.events == ("TaskCreated",)

    tasks = await rows_of(admin_db, "tasks")
    assert len(tasks) == 1
    task = tasks[0]
    assert (task["app_id"], task["op"], task["client_id"], task["origin"]) == (
        "todo",
        "insert",
        "mana-ai-workbench",
        "agent",
    )
    assert task["data"]["title"] == "Einkaufen" and task["data"]["priority"] == "high"
    assert task["data"]["isCompleted"] is False and task["data"]["id"] == task["record_id"]
    assert task["actor"]["kind"] == "ai" and task["actor"]["principalId"] == "a1"
    assert task["actor"]["iterationId"] == "it1" and task["actor"]["displayName"] == "Planer"

    record = await mission_state(db)
    step = record["iterations"][0]["plan"][0]
    assert step["status"] == "approved" and step["execution"]["state"] == "done"
    assert step["execution"]["records"] == [
        {"appId": "todo", "table": "tasks", "id": task["record_id"], "op": "insert"}
    ]
    assert record["iterations"][0]["overallStatus"] == "awaiting-review"  # the note step is still open
    missions = await rows_of(admin_db, "aiMissions")
    assert missions[-1]["actor"] == {"kind": "user", "principalId": "u1", "displayName": "Du"}
    assert missions[-1]["origin"] == "user" and list(missions[-1]["data"]) == ["iterations"]

    again = await decider(db).approve("u1", ref(it, 0))
    assert again.already and again.status == "approved" and again.outcome == "done"
    assert len(await rows_of(admin_db, "tasks")) == 1


async def test_edited_arguments_are_validated_again(db: Database, admin_db: Database) -> None:
    it = server_iteration("it1", [("create_task", {"title": "Alt"})])
    await seed(db, iterations=[it])
    with pytest.raises(InvalidParams) as info:
        await decider(db).approve(
            "u1", ref(it, 0), params={"title": "Neu", "priority": "urgent", "color": "red"}
        )
    assert info.value.problems == [
        "Parameter priority must be one of: low, medium, high",
        "Unknown parameter: color",
    ]
    assert await rows_of(admin_db, "tasks") == []
    assert (await mission_state(db))["iterations"][0]["plan"][0]["status"] == "staged"

    result = await decider(db).approve("u1", ref(it, 0), params={"title": "Neu", "dueDate": "2026-05-01"})
    assert result.status == "approved"
    assert (await rows_of(admin_db, "tasks"))[0]["data"]["title"] == "Neu"
    step = (await mission_state(db))["iterations"][0]["plan"][0]
    assert step["intent"]["params"] == {"title": "Neu", "dueDate": "2026-05-01"}
    assert step["originalParams"] == {"title": "Alt"}
    assert (await mission_state(db))["iterations"][0]["overallStatus"] == "approved"


async def test_reject_with_feedback_and_overall_status(db: Database) -> None:
    it = server_iteration("it1", [("create_task", {"title": "A"}), ("create_task", {"title": "B"})])
    await seed(db, iterations=[it])
    first = await decider(db).reject("u1", ref(it, 0), feedback="Nicht heute")
    assert (first.status, first.outcome) == ("rejected", "none")
    await decider(db).reject("u1", ref(it, 1))
    iteration = (await mission_state(db))["iterations"][0]
    assert iteration["overallStatus"] == "rejected"
    assert iteration["userFeedback"] == "Step 0: create_task: Nicht heute"
    assert (
        iteration["plan"][0]["userFeedback"] == "Nicht heute" and "userFeedback" not in iteration["plan"][1]
    )
    with pytest.raises(ProposalNotFound):
        await decider(db).reject("u1", ref(it, 0, mission_id="nope"))
    decisions = await WorkbenchStore(db, ttl=TTL).decisions("u1")
    assert sorted((d["decision"], d["feedback"] or "") for d in decisions) == [
        ("rejected", ""),
        ("rejected", "Nicht heute"),
    ]


async def test_two_sessions_approving_at_once_run_the_step_once(db: Database, admin_db: Database) -> None:
    it = server_iteration("it1", [("log_drink", {"drinkType": "water", "quantityMl": 250})])
    await seed(db, iterations=[it])
    # Two independent deciders, as two browser tabs or two devices would have.
    results = await asyncio.gather(
        decider(db).approve("u1", ref(it, 0)), decider(db).approve("u1", ref(it, 0))
    )
    assert sorted(r.already for r in results) == [False, True]
    assert all(r.status == "approved" for r in results)
    assert len(await rows_of(admin_db, "drinkEntries")) == 1
    events = await WorkbenchStore(db, ttl=TTL).events("u1", event_type="DrinkLogged")
    assert len(events) == 1


async def test_expired_proposals_expire_visibly(db: Database) -> None:
    old = server_iteration("old", [("create_task", {"title": "A"})], started=utcnow() - dt.timedelta(days=8))
    new = server_iteration("new", [("create_task", {"title": "B"})])
    await seed(db, iterations=[old, new])
    store = WorkbenchStore(db, ttl=TTL)
    await store.refresh()
    page = await store.inbox("u1")
    assert [p.ref.iteration_id for p in page.proposals] == ["new"] and page.total == 1
    expired = await store.expired("u1")
    assert [p.ref.iteration_id for p in expired] == ["old"]
    assert await decider(db).expire("u1", [p.ref for p in expired]) == 1
    assert await decider(db).expire("u1", [p.ref for p in expired]) == 0
    iteration = (await mission_state(db))["iterations"][0]
    assert iteration["plan"][0]["status"] == "skipped" and iteration["plan"][0]["decidedBy"] == "auto-expire"
    assert iteration["overallStatus"] == "rejected"
    await store.refresh()
    assert await store.expired("u1") == []
    decisions = await store.decisions("u1")
    assert [(d["decision"], d["decided_by"]) for d in decisions] == [("expired", "auto-expire")]


async def test_approving_an_expired_proposal_does_not_run_it(db: Database, admin_db: Database) -> None:
    old = server_iteration("old", [("create_task", {"title": "A"})], started=utcnow() - dt.timedelta(days=8))
    await seed(db, iterations=[old])
    result = await decider(db).approve("u1", ref(old, 0))
    assert (result.status, result.outcome) == ("skipped", "none")
    assert await rows_of(admin_db, "tasks") == []


async def test_tools_without_executor_wait_for_the_mana_app(db: Database) -> None:
    it = server_iteration("it1", [("save_news_article", {"url": "https://example.org/a"})])
    await seed(db, iterations=[it])
    result = await decider(db).approve("u1", ref(it, 0))
    assert (result.status, result.outcome) == ("approved", "pending")
    iterations = (await mission_state(db))["iterations"]
    step = iterations[0]["plan"][0]
    assert step["execution"] == {"state": "pending", "by": "mana-app", "iterationId": iterations[1]["id"]}
    assert iterations[1]["plan"][0]["status"] == "planned"


async def test_failures_and_policy_denials_are_shown_on_the_step(db: Database, admin_db: Database) -> None:
    it = server_iteration("it1", [("complete_task", {"taskId": "ghost"}), ("create_task", {"title": "X"})])
    agent = agent_record(
        "a1", name="Planer", policy={"tools": {"create_task": "deny"}, "defaultForAi": "propose"}
    )
    await seed(db, iterations=[it], agent=agent)
    missing = await decider(db).approve("u1", ref(it, 0))
    assert (missing.status, missing.error) == ("failed", "task ghost not found")
    denied = await decider(db).approve("u1", ref(it, 1))
    assert denied.status == "failed" and "not available to AI actors" in (denied.error or "")
    iteration = (await mission_state(db))["iterations"][0]
    assert iteration["plan"][0]["summary"].endswith("(FEHLER: task ghost not found)")
    assert iteration["overallStatus"] == "failed"
    assert await rows_of(admin_db, "tasks") == []


async def test_inbox_pages_group_by_mission_and_name_the_agent(db: Database) -> None:
    steps = [("create_task", {"title": "T" + str(i)}) for i in range(10)]
    await seed(
        db,
        mission_id="m1",
        iterations=[server_iteration("i1", steps, started=utcnow() - dt.timedelta(hours=2))],
    )
    await put_row(db, "u1", "agents", "a2", "insert", agent_record("a2", name="Scout", avatar="🔭"))
    from tests.integration.helpers import mission

    await put_row(
        db,
        "u1",
        "aiMissions",
        "m2",
        "insert",
        mission("m2", agentId="a2", nextRunAt=None, iterations=[server_iteration("i2", steps[:5])]),
    )
    await put_row(
        db, "u2", "aiMissions", "m3", "insert", mission("m3", iterations=[server_iteration("i3", steps)])
    )
    store = WorkbenchStore(db, ttl=TTL)
    await refresh_snapshots(db)
    first = await store.inbox("u1", page=1, page_size=6)
    assert (first.total, first.pages) == (15, 3)
    assert [(g.mission_id, g.agent_name, g.agent_avatar, len(g.proposals)) for g in first.groups] == [
        ("m2", "Scout", "🔭", 5),
        ("m1", "Planer", "🧭", 1),
    ]
    last = await store.inbox("u1", page=3, page_size=6)
    assert [p.params["title"] for p in last.proposals] == ["T7", "T8", "T9"]
    assert (await store.inbox("u1", page=9, page_size=6)).proposals == ()


async def test_rejected_feedback_reaches_the_next_planning_round(db: Database, app_db_url: str) -> None:
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", name="Planer"))
    from tests.integration.helpers import mission

    await put_row(
        db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1", nextRunAt=to_js_iso(utcnow()))
    )
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        llm.reply_tool_calls([("create_task", {"title": "Joggen"}), ("create_task", {"title": "Lesen"})])
        llm.reply_text("Zwei Vorschläge.")
        stats = await app.ticker.tick()
        assert stats.plans_written_back == 1, stats.to_json()
        store = WorkbenchStore(app.db, ttl=TTL)
        await store.refresh()
        page = await store.inbox("u1")
        by_title = {p.params["title"]: p.ref for p in page.proposals}
        await decider(app.db).reject("u1", by_title["Lesen"], feedback="Lesen mache ich abends selbst")
        await decider(app.db).approve("u1", by_title["Joggen"])

        # Due again; the next plan must see the decision and the feedback.
        from mana_ai.synclog.actor import user_actor
        from mana_ai.synclog.store import update_fields

        async with app.db.with_user("u1") as conn:
            await update_fields(
                conn,
                user_id="u1",
                app_id="ai",
                table="aiMissions",
                record_id="m1",
                fields={"nextRunAt": to_js_iso(utcnow() - dt.timedelta(minutes=1))},
                at=to_js_iso(utcnow() + dt.timedelta(seconds=5)),
                client_id="test",
                actor=user_actor("u1"),
            )
        llm.reply_text("Nichts weiter.")
        stats = await app.ticker.tick()
        assert stats.plans_written_back == 1, stats.to_json()
        llm.assert_complete()
        prompt = [m for m in llm.requests[-1].json["messages"] if m["role"] == "user"][0]["content"]
        assert "Nutzer-Feedback: " in prompt and "Lesen mache ich abends selbst" in prompt
        assert "[approved]" in prompt and "[rejected]" in prompt


async def test_one_task_completed_from_two_missions_at_once_counts_once(db: Database) -> None:
    """Two missions propose completing the same task; the user approves both at the same moment (two tabs).
    The task is completed once, so TaskCompleted must fire once and a 'tasks per day' goal gain 1."""
    import asyncio

    from mana_ai.workbench.goals import goal_from_tool
    from mana_ai.workbench.store import WorkbenchStore

    await put_row(db, "u1", "tasks", "t1", "insert", {"id": "t1", "title": "Steuer", "isCompleted": False},
                  app_id="todo")  # fmt: skip
    store = WorkbenchStore(db, ttl=dt.timedelta(days=7))
    await store.create_goal(
        "u1", goal_from_tool("g1", {"templateId": "tpl-tasks-daily"}, now=utcnow(), tz="UTC")
    )
    it1 = server_iteration("it1", [("complete_task", {"taskId": "t1"})])
    it2 = server_iteration("it2", [("complete_task", {"taskId": "t1"})])
    await seed(db, mission_id="m1", iterations=[it1])
    await seed(db, mission_id="m2", agent_id="a2", iterations=[it2])
    decider = Decider(db, ttl=dt.timedelta(days=7))
    results = await asyncio.gather(
        decider.approve("u1", ref(it1, 0, "m1")), decider.approve("u1", ref(it2, 0, "m2"))
    )
    events = [r.events for r in results]
    goal = (await store.goals("u1"))[0]
    assert sum(e.count("TaskCompleted") for e in events) == 1, events
    assert goal["currentValue"] == 1
