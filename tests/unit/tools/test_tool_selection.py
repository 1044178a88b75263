"""Offering only the tools a mission can use, within the tool budget of the context window."""

from __future__ import annotations

from mana_ai.tools.schema import toolset_for_policy
from mana_ai.tools.select import estimate_tokens, select_tools, tool_budget

ALL = toolset_for_policy(None)


def test_everything_fits_in_a_large_window_and_the_set_is_reused() -> None:
    chosen = select_tools(ALL, mission_text="Plane meine Woche", budget_tokens=tool_budget(32768, 1024))
    assert chosen is ALL


def test_a_small_window_keeps_the_linked_module_and_stays_in_budget() -> None:
    budget = tool_budget(4096, 1024)
    assert estimate_tokens(ALL) > budget  # the whole catalog does not fit: something must be cut
    chosen = select_tools(ALL, mission_text="Something", linked_modules={"quiz"}, budget_tokens=budget)
    assert {t.name for t in ALL if t.module == "quiz"} <= chosen.names
    assert estimate_tokens(chosen) <= budget
    assert 0 < len(chosen) < len(ALL)


def test_german_mission_text_ranks_the_matching_module_first() -> None:
    chosen = select_tools(
        ALL, mission_text="Erinnere mich, genug Wasser zu trinken", budget_tokens=10**6, max_tools=3
    )
    assert len(chosen) == 3
    assert "undo_drink" in chosen.names


def test_max_tools_caps_the_count_and_keeps_catalog_order() -> None:
    chosen = select_tools(ALL, mission_text="Aufgaben für heute", budget_tokens=10**6, max_tools=5)
    assert len(chosen) == 5
    assert "create_task" in chosen.names
    order = [t.name for t in ALL]
    assert [t.name for t in chosen] == sorted(chosen.names, key=order.index)


def test_policy_denied_tools_are_never_offered() -> None:
    policy = {"tools": {"create_task": "deny"}, "defaultForAi": "propose"}
    allowed = toolset_for_policy(policy)
    chosen = select_tools(allowed, mission_text="Aufgaben Aufgabe todo", budget_tokens=10**6, max_tools=3)
    assert "create_task" not in chosen.names
