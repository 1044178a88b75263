"""Agent policy resolution and filtering (SPEC §16.1), including malformed user-synced policies."""

from __future__ import annotations

from typing import Any

import pytest

from mana_ai.planner.recorder import PlanRecorder
from mana_ai.planner.types import ToolCall
from mana_ai.runner.iteration import Plan, plan_to_iteration
from mana_ai.tools.catalog import CATALOG_BY_NAME, PROPOSABLE
from mana_ai.tools.policy import filter_tools, resolve_decision
from mana_ai.tools.schema import clear_toolset_cache, toolset_for_policy
from mana_ai.workbench.gate import step_status

CREATE_TASK = CATALOG_BY_NAME["create_task"]
LOG_DRINK = CATALOG_BY_NAME["log_drink"]


def test_no_policy_falls_back_to_default_policy() -> None:
    assert resolve_decision(CREATE_TASK, None) == "propose"
    assert resolve_decision(LOG_DRINK, None) == "auto"


def test_per_tool_wins_over_module_and_default() -> None:
    policy = {"tools": {"create_task": "auto"}, "defaultsByModule": {"todo": "deny"}, "defaultForAi": "deny"}
    assert resolve_decision(CREATE_TASK, policy) == "auto"
    assert resolve_decision(CATALOG_BY_NAME["complete_task"], policy) == "deny"


def test_module_default_wins_over_default_for_ai() -> None:
    policy = {"tools": {}, "defaultsByModule": {"todo": "propose"}, "defaultForAi": "deny"}
    assert resolve_decision(CREATE_TASK, policy) == "propose"
    assert resolve_decision(LOG_DRINK, policy) == "deny"


def test_default_for_ai_then_catalog_default() -> None:
    assert resolve_decision(LOG_DRINK, {"tools": {}, "defaultForAi": "propose"}) == "propose"
    assert resolve_decision(LOG_DRINK, {"tools": {}}) == "auto"


def test_empty_string_is_falsy_and_falls_through() -> None:
    policy = {"tools": {"create_task": ""}, "defaultsByModule": {"todo": ""}, "defaultForAi": "deny"}
    assert resolve_decision(CREATE_TASK, policy) == "deny"


def test_deny_by_module_removes_whole_module() -> None:
    kept = filter_tools(
        PROPOSABLE, {"tools": {}, "defaultsByModule": {"quiz": "deny"}, "defaultForAi": "propose"}
    )
    assert len(kept) == 62 - 5
    assert all(t.module != "quiz" for t in kept)
    assert [t.name for t in kept] == [t.name for t in PROPOSABLE if t.module != "quiz"]


def test_per_tool_allow_overrides_module_deny() -> None:
    policy = {
        "tools": {"create_quiz": "propose"},
        "defaultsByModule": {"quiz": "deny"},
        "defaultForAi": "propose",
    }
    assert [t.name for t in filter_tools(PROPOSABLE, policy) if t.module == "quiz"] == ["create_quiz"]


def test_default_for_ai_deny_removes_everything_unlisted() -> None:
    policy = {"tools": {"create_task": "auto", "undo_drink": "propose"}, "defaultForAi": "deny"}
    assert [t.name for t in filter_tools(PROPOSABLE, policy)] == ["create_task", "undo_drink"]


def test_none_policy_keeps_tools_unchanged() -> None:
    assert filter_tools(PROPOSABLE, None) == PROPOSABLE


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"tools": None, "defaultsByModule": None, "defaultForAi": None},
        {"tools": ["create_task"], "defaultsByModule": "deny", "defaultForAi": 3},
        {"tools": {"create_task": ["deny"]}, "defaultForAi": {"x": 1}},
        {"tools": {"create_task": "DENY"}, "defaultForAi": "never"},
        {"tools": {"create_task": True}},
    ],
)
def test_malformed_policies_never_raise_and_keep_tools(policy: dict[str, Any]) -> None:
    assert resolve_decision(CREATE_TASK, policy) == "propose"
    assert filter_tools(PROPOSABLE, policy) == PROPOSABLE


def test_unknown_decision_falls_through_to_module_deny() -> None:
    policy = {"tools": {"create_task": "yes please"}, "defaultsByModule": {"todo": "deny"}}
    assert resolve_decision(CREATE_TASK, policy) == "deny"


def test_non_mapping_policy_is_treated_as_absent() -> None:
    assert resolve_decision(CREATE_TASK, "deny") == "propose"  # type: ignore[arg-type]
    assert filter_tools(PROPOSABLE, ["deny"]) == PROPOSABLE  # type: ignore[arg-type]


def test_auto_tools_named_propose_in_the_policy_are_offered_to_the_server():
    from mana_ai.tools.schema import clear_toolset_cache, toolset_for_policy

    clear_toolset_cache()
    default = toolset_for_policy({"tools": {}, "defaultForAi": "propose"})
    assert "log_drink" not in default and "list_tasks" not in default
    promoted = toolset_for_policy({"tools": {"log_drink": "propose"}, "defaultForAi": "propose"})
    assert "log_drink" in promoted and len(promoted) == len(default) + 1
    # A module default or defaultForAi never exposes read tools.
    module_wide = toolset_for_policy(
        {"tools": {}, "defaultsByModule": {"todo": "propose"}, "defaultForAi": "propose"}
    )
    assert "list_tasks" not in module_wide and "get_task_stats" not in module_wide


@pytest.mark.parametrize("garbled", ["DENY", "deny ", "Propose", "nein"])
def test_unrecognised_per_tool_decision_never_becomes_planned(garbled: str) -> None:
    clear_toolset_cache()
    policy = {"tools": {"create_task": garbled}, "defaultForAi": "auto"}
    rec = PlanRecorder(toolset_for_policy(policy), "enforce", mission_id="m-1")
    # (a garbled entry still offers the tool: that is the existing fall-through, kept)
    arguments = {"title": "Pay the rent"}
    PlanRecorder.record(rec, ToolCall("c1", "create_task", '{"title":"Pay the rent"}', arguments))
    assert [s.tool_name for s in rec.steps] == ["create_task"]
    iteration = plan_to_iteration(
        Plan("p", tuple(rec.steps)), "it1", "2026-03-18T10:00:00.000Z", lambda t: step_status(t, policy)
    )
    assert iteration["plan"][0]["status"] == "staged"


def test_unrecognised_module_decision_never_becomes_planned() -> None:
    policy = {"defaultsByModule": {"todo": "Deny"}, "defaultForAi": "auto"}
    assert step_status("create_task", policy)[0] == "staged"
