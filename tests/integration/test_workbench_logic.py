"""Workbench: the pure parts (proposals, goals, shapes, forms, charts) and helpers the other workbench tests use."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mana_ai.db.connector import Database
from mana_ai.planner.prompts import build_user_prompt
from mana_ai.planner.recorder import PlannedStep
from mana_ai.runner.iteration import Plan, plan_to_iteration
from mana_ai.synclog.lww import next_stamp
from mana_ai.timefmt import to_js_iso
from mana_ai.tools.catalog import CATALOG_BY_NAME
from mana_ai.web.charts import bar_chart
from mana_ai.web.forms import cadence_from_form, params_from_form, policy_from_form
from mana_ai.workbench.goals import DomainEvent, InvalidGoal, advance, goal_from_tool, period_start
from mana_ai.workbench.proposals import (
    Decision,
    StepRef,
    apply_decision,
    merged_feedback,
    overall_status,
    proposals_of_mission,
)
from mana_ai.workbench.shapes import drink_record, task_record, with_tag
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record

NOW = dt.datetime(2026, 3, 18, 10, 30, tzinfo=dt.UTC)  # a Wednesday


# --- helpers for the workbench tests ---------------------------------------------------------------------


def server_iteration(
    iteration_id: str, steps: list[tuple[str, dict[str, Any]]], *, started: dt.datetime | None = None
) -> dict[str, Any]:
    """A server iteration exactly as the runner writes it (``plan_to_iteration``)."""
    planned = tuple(
        PlannedStep("Step " + str(i) + ": " + tool, tool, params) for i, (tool, params) in enumerate(steps)
    )
    return plan_to_iteration(
        Plan("Vorschläge", planned), iteration_id, to_js_iso(started or dt.datetime.now(dt.UTC))
    )


async def seed(
    db: Database,
    *,
    user: str = "u1",
    mission_id: str = "m1",
    agent_id: str | None = "a1",
    iterations: list[dict[str, Any]] | None = None,
    agent: dict[str, Any] | None = None,
) -> None:
    """An agent (unless ``agent_id`` is None) and a mission whose iterations are ``iterations``."""
    if agent_id is not None:
        await put_row(
            db,
            user,
            "agents",
            agent_id,
            "insert",
            agent or agent_record(agent_id, name="Planer", avatar="🧭"),
        )
    fields: dict[str, Any] = {"iterations": iterations or [], "nextRunAt": None}
    if agent_id is not None:
        fields["agentId"] = agent_id
    await put_row(db, user, "aiMissions", mission_id, "insert", mission(mission_id, **fields))


def ref(iteration: dict[str, Any], index: int, mission_id: str = "m1") -> StepRef:
    return StepRef(mission_id, iteration["id"], iteration["plan"][index]["id"])


# --- proposals ----------------------------------------------------------------------------------------------


def test_step_ref_round_trip_and_errors() -> None:
    ref_ = StepRef("m", "it", "it-0")
    assert StepRef.parse(ref_.key) == ref_
    with pytest.raises(ValueError, match="mission"):
        StepRef.parse("only/two")


def test_overall_status_follows_spec_11() -> None:
    def plan(*statuses: str) -> list[dict[str, str]]:
        return [{"status": s} for s in statuses]

    assert overall_status(plan("approved", "planned")) == "awaiting-review"
    assert overall_status(plan("failed", "failed")) == "failed"
    assert overall_status(plan("failed", "approved")) == "approved"
    assert overall_status(plan("rejected", "failed")) == "rejected"
    assert overall_status(plan("skipped")) == "rejected"
    assert overall_status([]) == "approved"


def test_apply_decision_edits_fails_and_collects_feedback() -> None:
    it = server_iteration(
        "it1", [("create_task", {"title": "A"}), ("create_task", {"title": "B"})], started=NOW
    )
    iterations = [{"id": "old", "plan": []}, it]
    edited = apply_decision(
        iterations,
        ref(it, 0),
        Decision("approved", "2026-03-18T10:31:00.000Z", params={"title": "A!"}, execution={"state": "done"}),
    )
    assert iterations[1]["plan"][0]["status"] == "staged"  # the input is not modified
    step = edited[1]["plan"][0]
    assert step["intent"]["params"] == {"title": "A!"} and step["originalParams"] == {"title": "A"}
    assert step["decidedBy"] == "user" and edited[1]["overallStatus"] == "awaiting-review"
    done = apply_decision(edited, ref(it, 1), Decision("rejected", "t", feedback="Nicht heute"))
    assert done[1]["plan"][1]["userFeedback"] == "Nicht heute"
    assert done[1]["userFeedback"] == "Step 1: create_task: Nicht heute"
    assert done[1]["overallStatus"] == "approved"
    failed = apply_decision(iterations, ref(it, 0), Decision("failed", "t", error="kaputt"))
    assert failed[1]["plan"][0]["summary"].endswith(" (FEHLER: kaputt)")
    assert merged_feedback("a: x", "b", "y") == "a: x; b: y"


def test_feedback_reaches_the_planner_prompt() -> None:
    it = server_iteration("it1", [("create_task", {"title": "A"})], started=NOW)
    decided = apply_decision([it], ref(it, 0), Decision("rejected", "t", feedback="Lieber morgen"))
    prompt = build_user_prompt(title="T", concept="", objective="O", inputs=[], iterations=decided)
    assert "Nutzer-Feedback: Step 0: create_task: Lieber morgen" in prompt
    assert "[rejected] Step 0: create_task" in prompt


def test_proposals_of_mission_skips_browser_iterations_and_decided_steps() -> None:
    it = server_iteration(
        "it1", [("create_task", {"title": "A"}), ("log_mood", {"level": 5, "emotion": "calm"})]
    )
    browser = {**server_iteration("it2", [("create_task", {"title": "B"})]), "source": "browser"}
    it["plan"][1]["status"] = "approved"
    found = proposals_of_mission(
        {"id": "m1", "title": "M", "iterations": [it, browser, "junk"]}, ttl=dt.timedelta(days=7)
    )
    assert [(p.tool_name, p.module) for p in found] == [("create_task", "todo")]
    assert found[0].expires_at is not None and found[0].known_tool


def test_next_stamp_is_strictly_after_what_was_read() -> None:
    assert next_stamp({}, ["a"], "2026-01-01T00:00:00.000Z") == "2026-01-01T00:00:00.000Z"
    assert (
        next_stamp({"a": "2026-01-01T00:00:00.000Z"}, ["a"], "2026-01-01T00:00:00.000Z")
        == "2026-01-01T00:00:00.001Z"
    )
    assert (
        next_stamp({"a": "2030-01-01T00:00:00.000Z"}, ["a", "b"], "2026-01-01T00:00:00.000Z")
        == "2030-01-01T00:00:00.001Z"
    )


# --- shapes ------------------------------------------------------------------------------------------------------


def test_record_shapes_follow_the_web_app() -> None:
    task = task_record("t1", {"title": " Einkaufen ", "priority": "high"}, NOW)
    assert task["title"] == "Einkaufen" and task["isCompleted"] is False and task["dueDate"] is None
    assert "description" not in task and task["priority"] == "high"
    drink = drink_record("d1", {"drinkType": "water", "quantityMl": 250}, NOW, "Europe/Berlin")
    assert (drink["name"], drink["date"], drink["time"]) == ("water", "2026-03-18", "11:30")
    assert with_tag("Hallo", "natur pur") == "Hallo\n#natur_pur"
    assert with_tag("Hallo #natur_pur", "#natur pur") is None


# --- goals ------------------------------------------------------------------------------------------------


def water_goal(**fields: Any) -> dict[str, Any]:
    goal = goal_from_tool("g1", {"templateId": "tpl-water-daily"}, now=NOW, tz="UTC")
    goal["target"]["value"] = 2
    goal.update(fields)
    return goal


def drink(kind: str = "water", ml: int = 250) -> DomainEvent:
    return DomainEvent("DrinkLogged", "drink", "drinkEntries", "d", {"drinkType": kind, "quantityMl": ml})


def test_period_starts() -> None:
    assert period_start("day", NOW, "UTC") == "2026-03-18"
    assert period_start("week", NOW, "UTC") == "2026-03-16"
    assert period_start("month", NOW, "UTC") == "2026-03-01"
    late = dt.datetime(2026, 3, 18, 23, 30, tzinfo=dt.UTC)
    assert period_start("day", late, "Europe/Berlin") == "2026-03-19"


def test_goal_counts_filters_and_fires_once_per_period() -> None:
    goal = water_goal()
    assert advance(goal, [drink("coffee")], now=NOW, tz="UTC") is None
    first = advance(goal, [drink(), drink("coffee")], now=NOW, tz="UTC")
    assert first is not None and first.fields["currentValue"] == 1 and not first.reached
    second = advance({**goal, **first.fields}, [drink()], now=NOW, tz="UTC")
    assert second is not None and second.fields["currentValue"] == 2
    assert [e.type for e in second.reached] == ["GoalReached"]
    assert second.reached[0].payload == {
        "goalId": "g1",
        "title": goal["title"],
        "value": 2,
        "target": 2,
        "period": "day",
    }
    third = advance({**goal, **first.fields, **second.fields}, [drink(), drink()], now=NOW, tz="UTC")
    assert third is not None and third.fields["currentValue"] == 4 and not third.reached
    tomorrow = NOW + dt.timedelta(days=1)
    later = advance({**goal, **second.fields}, [drink(), drink()], now=tomorrow, tz="UTC")
    assert later is not None and later.fields["currentValue"] == 2 and len(later.reached) == 1
    assert later.fields["currentPeriodStart"] == "2026-03-19"


def test_goal_sums_and_ignores_paused_goals() -> None:
    goal = water_goal(metric={"source": "event_sum", "eventType": "DrinkLogged", "sumField": "quantityMl"})
    goal["target"]["value"] = 500
    step = advance(goal, [drink(ml=300), drink("tea", ml=300)], now=NOW, tz="UTC")
    assert step is not None and step.fields["currentValue"] == 600 and len(step.reached) == 1
    assert advance({**goal, "status": "paused"}, [drink()], now=NOW, tz="UTC") is None


def test_goal_definitions_are_checked() -> None:
    with pytest.raises(InvalidGoal, match="template"):
        goal_from_tool("g", {"templateId": "tpl-nope"}, now=NOW, tz="UTC")
    with pytest.raises(InvalidGoal, match="event"):
        goal_from_tool("g", {"title": "x", "targetValue": 3}, now=NOW, tz="UTC")
    custom = goal_from_tool(
        "g",
        {"title": "Sport", "targetValue": 3, "period": "week", "eventType": "HabitLogged"},
        now=NOW,
        tz="UTC",
    )
    assert custom["target"] == {"value": 3, "period": "week", "comparison": "gte"}
    assert custom["currentPeriodStart"] == "2026-03-16" and custom["status"] == "active"


# --- forms and charts ---------------------------------------------------------------------------------------------


def test_form_params_are_typed_and_bad_values_reach_validation() -> None:
    tool = CATALOG_BY_NAME["log_drink"]
    form = {"param.drinkType": "water", "param.quantityMl": "250", "param.name": "", "csrf_token": "x"}
    assert params_from_form(tool, form) == {"drinkType": "water", "quantityMl": 250}
    assert params_from_form(tool, {"param.quantityMl": "viel"}) == {"quantityMl": "viel"}
    mood = CATALOG_BY_NAME["create_event"]
    assert params_from_form(mood, {"param.isAllDay": "true"}) == {"isAllDay": True}


def test_policy_and_cadence_forms() -> None:
    policy = policy_from_form(
        {"module.finance": "deny", "tool_overrides": "create_task=auto\n", "default_for_ai": "propose"}
    )
    assert policy == {
        "tools": {"create_task": "auto"},
        "defaultsByModule": {"finance": "deny"},
        "defaultForAi": "propose",
    }
    with pytest.raises(ValueError, match="tool override"):
        policy_from_form({"tool_overrides": "no_such_tool=deny"})
    cadence = cadence_from_form({"cadence": "cron", "cadence_value": "0 8 * * 1-5", "tz": "Europe/Berlin"})
    assert cadence.to_json() == {"kind": "cron", "expression": "0 8 * * 1-5", "timezone": "Europe/Berlin"}
    assert cadence_from_form({"cadence": "daily", "cadence_value": "07:30"}).to_json() == {
        "kind": "daily",
        "atHour": 7,
        "atMinute": 30,
    }


def test_bar_chart_scales_and_escapes() -> None:
    svg = str(bar_chart([0, 50, 100], ["<a>", "b", "c"], title="T & U"))
    assert svg.startswith("<svg") and 'aria-label="T &amp; U"' in svg
    assert "&lt;a&gt;" in svg and "<a>" not in svg
    assert svg.count("<rect") == 3 and "max 100" in svg
