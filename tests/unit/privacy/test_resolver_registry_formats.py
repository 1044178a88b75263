"""The resolver registry (concurrency, order, failures) and each family's prompt text (W17 shapes)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from mana_ai.metrics import Metrics
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.resolvers import formats
from mana_ai.resolvers.registry import (
    InputRef,
    ResolverContext,
    ResolverRegistry,
    default_registry,
    parse_refs,
)


def context() -> ResolverContext:
    return ResolverContext(
        db=cast(Any, None),
        metrics=Metrics(process=False),
        audit=cast(Any, None),
        user_id="u1",
        mission_id="m1",
        iteration_id="it1",
        grant=None,
    )


async def test_resolve_all_is_concurrent_ordered_and_skips_unknown_and_failing() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    async def slow(ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None:
        started.append(ref.id)
        if len(started) == 2:
            both_started.set()
        # Only returns once the other resolver has started too: proves they run at the same time.
        await asyncio.wait_for(both_started.wait(), 2)
        return ResolvedInput(id=ref.id, module=ref.module, table=ref.table, content="c-" + ref.id)

    async def boom(ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None:
        raise RuntimeError("resolver bug")

    async def nothing(ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None:
        return None

    registry = ResolverRegistry({"a": slow, "boom": boom, "none": nothing})
    refs = [
        InputRef("a", "t", "1"),
        InputRef("ghost", "t", "x"),
        InputRef("boom", "t", "b"),
        InputRef("none", "t", "n"),
        InputRef("a", "t", "2"),
    ]
    results = await registry.resolve_all(refs, context())
    assert [r.id for r in results] == ["1", "2"]
    registry.unregister("a")
    assert registry.get("a") is None and await registry.resolve_all(refs[:1], context()) == []


def test_default_registry_and_ref_parsing() -> None:
    assert default_registry().modules() == sorted(
        ["goals", "notes", "tasks", "todo", "calendar", "journal", "kontext", "profile"]
    )
    refs = parse_refs(
        [
            {"module": "notes", "table": "notes", "id": "n1"},
            {"module": "notes"},
            5,
            {"module": "", "table": "t", "id": "i"},
        ]
    )
    assert refs == [InputRef("notes", "notes", "n1")] and refs[0].qualified == "notes:n1"


def test_task_content_uses_is_completed() -> None:
    task = {"title": "Steuer", "description": "Belege sammeln", "dueDate": "2026-05-01", "isCompleted": False}
    assert formats.task_content(task) == "[offen] Steuer — Belege sammeln (faellig: 2026-05-01)"
    assert formats.task_content({"isCompleted": True}) == "[erledigt] (ohne Titel)"
    assert formats.task_content({"status": "waiting", "title": "x"}) == "[waiting] x"  # legacy shape


def test_event_content_uses_start_iso() -> None:
    event = {"title": "Zahnarzt", "startIso": "2026-05-02T09:00:00.000Z", "location": "Praxis"}
    assert formats.event_content(event) == "Zahnarzt @ 2026-05-02T09:00:00.000Z in Praxis"
    assert formats.event_content({"startDate": "2026-05-02"}) == "(ohne Titel) @ 2026-05-02"


def test_notes_journal_kontext_profile_and_truncation() -> None:
    assert formats.note_content({"content": "x" * 600}) == "x" * 500 + "…"
    assert formats.note_content({"content": {"a": 1}}) == '{"a":1}'
    assert formats.note_content({}) == ""
    assert formats.journal_content({"content": 5}) == ""
    assert len(formats.kontext_content({"content": "k" * 2000})) == 1501
    profile = {"about": "  Ich  ", "interests": ["Kochen"], "routine": "", "freeform": "frei", "other": "no"}
    assert formats.profile_content(profile) == 'Ich\n["Kochen"]\nfrei'


def test_goal_content_reads_target_period() -> None:
    goal = {
        "title": "Wasser",
        "currentValue": 3.0,
        "target": {"value": 8, "period": "day", "comparison": "gte"},
    }
    assert formats.goal_content(goal) == "Fortschritt: 3 / 8 (day)"
    assert formats.goal_content({"period": "week"}) == "Fortschritt: 0 / ? (week)"
    assert formats.goal_content({}) == "Fortschritt: 0 / ? (unbekannt)"
