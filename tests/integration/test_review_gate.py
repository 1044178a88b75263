"""The review gate against the real web app's executor (issue 12, finding 1).

Verified in the real app (``WEB/data/ai/missions/server-iteration-executor.ts`` run under Bun on rows we
wrote): a device runs every ``planned`` step of a ``source: server`` iteration it has no marker for, skips
every other status, and then marks the *iteration* as done on that device. :func:`app_device_sync` encodes
exactly that rule, so these tests check our rows against the app's behaviour.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.planner.recorder import PlannedStep
from mana_ai.runner.iteration import Plan, plan_to_iteration
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.gate import step_status
from mana_ai.workbench.proposals import proposals_of_mission
from tests.integration.test_workbench_logic import ref, seed, server_iteration
from tests.integration.test_workbench_proposals import decider, mission_state, rows_of

TTL = dt.timedelta(days=7)


def app_device_sync(mission: dict[str, Any], markers: set[str]) -> list[str]:
    """The step ids one app device runs when it syncs ``mission`` (the verified executor rule)."""
    ran: list[str] = []
    for iteration in mission.get("iterations") or []:
        if iteration.get("source") != "server" or iteration["id"] in markers:
            continue
        planned = [s for s in iteration.get("plan") or [] if s.get("status") == "planned"]
        if not planned:
            continue
        ran.extend(s["id"] for s in planned)
        markers.add(iteration["id"])
    return ran


def test_policy_decides_between_planned_and_staged() -> None:
    # Resolution like WEB/data/ai/policy.ts: tool, then module, then defaultForAi, then the catalog default.
    assert step_status("create_task", None) == ("staged", "propose")
    assert step_status("create_task", {"tools": {"create_task": "auto"}}) == ("planned", "auto")
    assert step_status("create_note", {"defaultsByModule": {"notes": "auto"}}) == ("planned", "auto")
    assert step_status("create_note", {"tools": {}, "defaultForAi": "auto"}) == ("planned", "auto")
    assert step_status("create_task", {"tools": {"create_task": "propose"}, "defaultForAi": "auto"}) == (
        "staged",
        "propose",
    )
    assert step_status("no_such_tool", {"defaultForAi": "auto"}) == ("staged", "propose")

    policy = {"tools": {"log_drink": "auto"}}
    steps = (PlannedStep("Wasser", "log_drink", {}), PlannedStep("Aufgabe", "create_task", {"title": "x"}))
    it = plan_to_iteration(
        Plan("p", steps), "it1", "2026-03-18T10:00:00.000Z", lambda t: step_status(t, policy)
    )
    assert [(s["status"], s["policy"]) for s in it["plan"]] == [("planned", "auto"), ("staged", "propose")]
    assert it["overallStatus"] == "awaiting-review"
    # The app runs only the auto step; the staged one is a proposal in our inbox.
    assert app_device_sync({"iterations": [it]}, set()) == ["it1-0"]
    open_steps = proposals_of_mission({"id": "m1", "iterations": [it]}, ttl=TTL)
    assert [p.ref.step_id for p in open_steps] == ["it1-1"]


async def test_server_executor_runs_approved_steps_once_and_the_app_runs_none(
    db: Database, admin_db: Database
) -> None:
    it = server_iteration("it1", [("create_task", {"title": "A"}), ("create_task", {"title": "B"})])
    await seed(db, iterations=[it])
    device_a: set[str] = set()
    assert app_device_sync(await mission_state(db), device_a) == []

    approved = await decider(db).approve("u1", ref(it, 0))
    rejected = await decider(db).reject("u1", ref(it, 1), feedback="nein")
    again = await decider(db).approve("u1", ref(it, 0))
    assert (approved.outcome, rejected.status, again.already) == ("done", "rejected", True)

    mission = await mission_state(db)
    assert [s["status"] for s in mission["iterations"][0]["plan"]] == ["approved", "rejected"]
    assert len(mission["iterations"]) == 1
    # Neither this device nor a fresh one runs anything: the approved step ran here, the rejected one nowhere.
    assert app_device_sync(mission, device_a) == [] and app_device_sync(mission, set()) == []
    assert len(await rows_of(admin_db, "tasks")) == 1


async def test_webapp_executor_hands_an_approved_step_to_the_app_in_a_new_iteration(
    db: Database, admin_db: Database
) -> None:
    # An auto step and two reviewed ones in one iteration: a device runs the auto step at once and marks the
    # iteration; a step approved later must still run, so it cannot just flip to planned in place.
    policy = {"tools": {"create_note": "auto"}}
    steps = (
        PlannedStep("Notiz", "create_note", {"content": "x"}),
        PlannedStep("A", "create_task", {"title": "A"}),
        PlannedStep("B", "create_task", {"title": "B"}),
    )
    it = plan_to_iteration(Plan("p", steps), "it1", to_js_iso(utcnow()), lambda t: step_status(t, policy))
    await seed(db, iterations=[it])
    device = set[str]()
    assert app_device_sync(await mission_state(db), device) == ["it1-0"]

    webapp = decider(db, executor="webapp")
    first = await webapp.approve("u1", ref(it, 1), params={"title": "A!", "priority": "high"})
    assert (first.status, first.outcome) == ("approved", "pending")
    await webapp.reject("u1", ref(it, 2))
    assert (await webapp.approve("u1", ref(it, 1))).already

    mission = await mission_state(db)
    original, handoff = mission["iterations"][0], mission["iterations"][1]
    assert [s["status"] for s in original["plan"]] == ["planned", "approved", "rejected"]
    assert original["plan"][1]["execution"] == {
        "state": "pending",
        "by": "mana-app",
        "iterationId": handoff["id"],
    }
    assert handoff["source"] == "server" and len(handoff["plan"]) == 1
    step = handoff["plan"][0]
    assert step["status"] == "planned" and step["approvedStep"] == ref(it, 1).key
    assert step["intent"] == {
        "kind": "toolCall",
        "toolName": "create_task",
        "params": {"title": "A!", "priority": "high"},
    }
    # The device that already ran it1 runs the approved step exactly once; the rejected step never runs.
    assert app_device_sync(mission, device) == [step["id"]]
    assert app_device_sync(mission, device) == []
    assert await rows_of(admin_db, "tasks") == []  # nothing ran here
    # The hand-off is not a proposal of ours.
    assert [p.ref.key for p in open_proposals(mission)] == []


def open_proposals(mission: dict[str, Any]) -> list[Any]:
    return proposals_of_mission({"id": "m1", **mission}, ttl=TTL)


async def test_tools_without_an_executor_go_to_the_app_in_server_mode_and_expiry_still_works(
    db: Database,
) -> None:
    old = server_iteration(
        "old", [("create_task", {"title": "alt"})], started=utcnow() - dt.timedelta(days=8)
    )
    it = server_iteration("it1", [("save_news_article", {"url": "https://example.org/a"})])
    await seed(db, iterations=[old, it])
    result = await decider(db).approve("u1", ref(it, 0))
    assert result.outcome == "pending"
    assert await decider(db).expire("u1", [ref(old, 0)]) == 1
    mission = await mission_state(db)
    assert mission["iterations"][0]["plan"][0]["status"] == "skipped"
    assert app_device_sync(mission, set()) == [mission["iterations"][2]["plan"][0]["id"]]
