"""The goal tracker end to end: approved steps emit events, goals move, GoalReached fires once, the resolver reads it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.privacy.audit import AuditLog
from mana_ai.resolvers.goals import GoalsResolver
from mana_ai.resolvers.registry import InputRef, ResolverContext
from mana_ai.synclog.store import replay_record
from mana_ai.timefmt import utcnow
from mana_ai.workbench.decide import Decider
from mana_ai.workbench.goals import goal_record
from mana_ai.workbench.store import WorkbenchStore
from tests.integration.helpers import put_row
from tests.integration.test_workbench_logic import ref, seed, server_iteration

TTL = dt.timedelta(days=7)


async def goal_state(db: Database, goal_id: str) -> dict[str, Any]:
    async with db.with_user("u1") as conn:
        state = await replay_record(
            conn, user_id="u1", app_id="companion", table="companionGoals", record_id=goal_id
        )
    assert state is not None
    return state.record


async def add_goal(db: Database, goal_id: str, target: int = 2, **metric: Any) -> None:
    record = goal_record(
        goal_id,
        title="Wasser " + goal_id,
        metric={"source": "event_count", "eventType": "DrinkLogged", **metric},
        target={"value": target, "period": "day", "comparison": "gte"},
        module_id="drink",
        now=utcnow(),
        tz="UTC",
    )
    await WorkbenchStore(db, ttl=TTL).create_goal("u1", record)


def drink(kind: str = "water") -> tuple[str, dict[str, Any]]:
    return ("log_drink", {"drinkType": kind, "quantityMl": 250})


async def test_drinks_move_the_water_goal_and_goal_reached_fires_once(db: Database) -> None:
    await add_goal(db, "g-water", filterField="drinkType", filterValue="water")
    await add_goal(db, "g-ml", target=600, source="event_sum", sumField="quantityMl")
    it = server_iteration("it1", [drink(), drink("coffee"), drink(), drink()])
    await seed(db, iterations=[it])
    decider = Decider(db, ttl=TTL, tz="UTC")
    results = [await decider.approve("u1", ref(it, i)) for i in range(4)]
    assert [r.events for r in results] == [
        ("DrinkLogged",),
        ("DrinkLogged",),
        ("DrinkLogged", "GoalReached", "GoalReached"),
        ("DrinkLogged",),
    ]
    water = await goal_state(db, "g-water")
    assert water["currentValue"] == 3 and water["currentPeriodStart"] == utcnow().date().isoformat()
    assert (await goal_state(db, "g-ml"))["currentValue"] == 1000
    reached = await WorkbenchStore(db, ttl=TTL).events("u1", event_type="GoalReached")
    assert sorted(e["record_id"] for e in reached) == ["g-ml", "g-water"]
    water_event = next(e for e in reached if e["record_id"] == "g-water")
    assert water_event["payload"] == {
        "goalId": "g-water",
        "title": "Wasser g-water",
        "value": 2,
        "target": 2,
        "period": "day",
    }
    assert (water_event["app_id"], water_event["table_name"], water_event["mission_id"]) == (
        "companion",
        "companionGoals",
        "m1",
    )

    # The goals resolver feeds the progress into the planner prompt.
    context = ResolverContext(db, Metrics(), AuditLog(db), "u1", "m1", None, None)
    resolved = await GoalsResolver()(InputRef("goals", "companionGoals", "g-water"), context)
    assert resolved is not None and resolved.content == "Fortschritt: 3 / 2 (day)"


async def test_concurrent_approvals_do_not_lose_goal_progress(db: Database) -> None:
    await add_goal(db, "g-water", filterField="drinkType", filterValue="water")
    its = []
    for n in range(3):
        it = server_iteration("it" + str(n), [drink()])
        await seed(db, mission_id="m" + str(n), agent_id="a" + str(n), iterations=[it])
        its.append((it, "m" + str(n)))
    results = await asyncio.gather(
        *(Decider(db, ttl=TTL).approve("u1", ref(it, 0, mission_id)) for it, mission_id in its)
    )
    assert all(r.outcome == "done" for r in results)
    assert (await goal_state(db, "g-water"))["currentValue"] == 3
    assert len(await WorkbenchStore(db, ttl=TTL).events("u1", event_type="GoalReached")) == 1


async def test_completed_tasks_count_for_task_goals(db: Database) -> None:
    await WorkbenchStore(db, ttl=TTL).create_goal(
        "u1",
        goal_record(
            "g-tasks",
            title="Tasks",
            metric={"eventType": "TaskCompleted"},
            target={"value": 1},
            module_id="todo",
            now=utcnow(),
            tz="UTC",
        ),
    )
    await put_row(
        db, "u1", "tasks", "t1", "insert", {"id": "t1", "title": "A", "isCompleted": False}, app_id="todo"
    )
    it = server_iteration("it1", [("complete_task", {"taskId": "t1"}), ("pause_goal", {"goalId": "g-tasks"})])
    await seed(db, iterations=[it])
    decider = Decider(db, ttl=TTL)
    first = await decider.approve("u1", ref(it, 0))
    assert first.events == ("TaskCompleted", "GoalReached")
    assert (await decider.approve("u1", ref(it, 1))).message == "Goal is now paused"
    goal = await goal_state(db, "g-tasks")
    assert (goal["currentValue"], goal["status"]) == (1, "paused")
    listed = await WorkbenchStore(db, ttl=TTL).goals("u1")
    assert [g["id"] for g in listed] == ["g-tasks"]
