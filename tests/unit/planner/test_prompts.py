"""Prompt builders (SPEC §9)."""

from __future__ import annotations

from typing import Any

import pytest

from mana_ai.planner.prompts import (
    USER_PROMPT_CLOSING,
    ResolvedInput,
    build_system_prompt,
    build_user_prompt,
)


def _user(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "title": "Wochenplan",
        "concept": "Konzepttext",
        "objective": "Ziel",
        "inputs": [],
        "iterations": [],
    }
    args.update(overrides)
    out: str = build_user_prompt(**args)
    return out


# --- system prompt -----------------------------------------------------------------------


def test_system_prompt_without_agent_has_no_blocks() -> None:
    out = build_system_prompt(None, None)
    assert "<agent_persona>" not in out
    assert "<agent_memory>" not in out
    assert "Wichtig:" in out
    assert "5 Planungsrunden" in out


def test_system_prompt_with_persona_and_memory() -> None:
    out = build_system_prompt("  Du bist Kalle.  ", "Mag Listen.\n")
    assert out.endswith(
        "\n\n<agent_persona>\nDu bist Kalle.\n</agent_persona>\n\n<agent_memory>\nMag Listen.\n</agent_memory>"
    )


@pytest.mark.parametrize("empty", ["", "   \n", None])
def test_system_prompt_omits_empty_blocks(empty: str | None) -> None:
    out = build_system_prompt(empty, "Gedächtnis")
    assert "<agent_persona>" not in out
    assert out.endswith("<agent_memory>\nGedächtnis\n</agent_memory>")


def test_system_prompt_omits_ciphertext() -> None:
    out = build_system_prompt("enc:1:abc.def", " enc:1:xyz.uvw")
    assert "<agent_persona>" not in out
    assert "<agent_memory>" not in out
    assert "enc:1:" not in out


# --- user prompt -------------------------------------------------------------------------


def test_user_prompt_full_layout_with_fallbacks() -> None:
    out = build_user_prompt(title="T", concept="", objective=None, inputs=[], iterations=[])
    assert out == "\n".join(
        [
            "# Mission: T",
            "",
            "## Konzept",
            "_(leer)_",
            "",
            "## Konkretes Ziel",
            "_(nicht gesetzt)_",
            "",
            "## Verlinkte Inputs",
            "_(keine verlinkten Inputs)_",
            "",
            "## Letzte Iterationen (max. 3)",
            "_(erste Iteration)_",
            "",
            "---",
            "",
            USER_PROMPT_CLOSING,
        ]
    )


def test_user_prompt_inputs_use_title_or_id() -> None:
    inputs = [
        ResolvedInput(id="n1", module="notes", table="notes", content="Inhalt 1", title="Notiz"),
        ResolvedInput(id="t9", module="todo", table="tasks", content="Inhalt 2"),
    ]
    out = _user(inputs=inputs)
    block = "### notes/notes: Notiz\nInhalt 1\n\n### todo/tasks: t9\nInhalt 2"
    assert "## Verlinkte Inputs\n" + block + "\n\n## Letzte Iterationen" in out


def test_user_prompt_concept_and_objective_verbatim() -> None:
    out = _user(concept="# Plan\n- a", objective="Drei Tasks anlegen")
    assert "## Konzept\n# Plan\n- a\n\n## Konkretes Ziel\nDrei Tasks anlegen\n\n" in out


def test_user_prompt_iteration_format() -> None:
    iteration = {
        "id": "i1",
        "startedAt": "2026-04-15T12:00:00.000Z",
        "overallStatus": "approved",
        "summary": "Zwei Tasks",
        "userFeedback": "Bitte kürzer",
        "plan": [
            {"id": "s1", "summary": "create_task", "status": "approved"},
            {"id": "s2", "summary": "update_task", "status": "failed"},
        ],
    }
    out = _user(iterations=[iteration])
    expected = (
        "**2026-04-15T12:00:00.000Z** (approved):\n"
        "  Summary: Zwei Tasks\n"
        "  - [approved] create_task\n"
        "  - [failed] update_task\n"
        "  Nutzer-Feedback: Bitte kürzer"
    )
    assert "## Letzte Iterationen (max. 3)\n" + expected + "\n\n---\n\n" in out


def test_user_prompt_shows_only_last_three_iterations() -> None:
    iterations = [
        {
            "startedAt": "T" + str(i),
            "overallStatus": "approved",
            "plan": [{"summary": "s", "status": "planned"}],
        }
        for i in range(5)
    ]
    out = _user(iterations=iterations)
    assert "**T0**" not in out
    assert "**T1**" not in out
    history = out.split("## Letzte Iterationen (max. 3)\n")[1].split("\n\n---")[0]
    assert history.split("\n\n") == ["**T" + str(i) + "** (approved):\n  - [planned] s" for i in (2, 3, 4)]


def test_user_prompt_skips_garbage_iterations_and_fields() -> None:
    iterations: list[Any] = [
        {"startedAt": "A", "overallStatus": "approved"},
        "garbage",
        None,
        42,
        {
            "startedAt": 1234,
            "overallStatus": ["x"],
            "summary": {"not": "text"},
            "userFeedback": False,
            "plan": [
                "nope",
                {"status": "planned"},
                {"status": "staged", "intent": {"kind": "toolCall", "toolName": "create_task"}},
                {"summary": "ok", "status": None},
            ],
        },
        {"plan": "not a list"},
    ]
    out = _user(iterations=iterations)
    history = out.split("## Letzte Iterationen (max. 3)\n")[1].split("\n\n---")[0]
    assert history.split("\n\n") == [
        "**A** (approved):",
        "**1234** (?):\n  - [staged] create_task\n  - [?] ok",
        "**?** (?):",
    ]


@pytest.mark.parametrize("iterations", [None, "text", {"a": 1}, [None, "x"]])
def test_user_prompt_non_array_history_is_first_iteration(iterations: Any) -> None:
    assert "## Letzte Iterationen (max. 3)\n_(erste Iteration)_\n" in _user(iterations=iterations)


def test_resolved_input_is_frozen() -> None:
    r = ResolvedInput(id="a", module="m", table="t", content="c")
    assert r.title is None
    with pytest.raises(AttributeError):
        r.id = "b"
