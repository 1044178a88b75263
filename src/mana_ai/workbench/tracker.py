"""Feeding executed steps' domain events to the goal tracker and into the event log (SPEC §23).

Runs inside the approval's transaction, after the executor: each active goal that one of the step's events
matches is locked (the same per-record advisory lock every writer of ours takes), replayed from the log,
advanced with :func:`~mana_ai.workbench.goals.advance` and written once with all of the step's events applied
(two updates of one record in one transaction would share a ``created_at`` and could replay in either order).
Goals are locked in id order, after the mission, so two approvals cannot deadlock.

Progress updates are attributed to the system actor ``system:rule`` ("Regel"): the tracker is a rule the
user set up, not the agent. Event payloads are stored as the web app emits them, except that text fields of
encrypted tables are left out for a user with a master key (the log of events must not become a plaintext
copy of encrypted records).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from psycopg.types.json import Jsonb

from mana_ai.db.connector import AsyncConn
from mana_ai.db.queries import q
from mana_ai.synclog.actor import system_actor
from mana_ai.workbench.context import ExecContext
from mana_ai.workbench.goals import DomainEvent, advance, is_active, matches
from mana_ai.workbench.shapes import ENCRYPTED_FIELDS, GOALS

GOAL_ACTOR: Final = system_actor("system:rule")
TEXT_KEYS: Final = frozenset({"title", "name", "description", "content", "notes", "note", "withWhom"})


@dataclass(frozen=True, slots=True)
class EventOrigin:
    """The proposal an event came from (timeline filters)."""

    mission_id: str | None = None
    iteration_id: str | None = None
    step_id: str | None = None
    agent_id: str | None = None
    module: str | None = None


async def track_goals(ctx: ExecContext) -> list[DomainEvent]:
    """Advance the user's goals by ``ctx.events``; the ``GoalReached`` events are returned and appended."""
    events = list(ctx.events)
    if not events:
        return []
    candidates = sorted(
        str(goal["id"])
        for goal in await ctx.list(GOALS)
        if is_active(goal) and any(matches(goal, event) for event in events)
    )
    reached: list[DomainEvent] = []
    for goal_id in candidates:
        goal = await ctx.get(GOALS, goal_id, lock=True)
        if goal is None:
            continue
        step = advance(goal, events, now=ctx.now, tz=ctx.tz)
        if step is None:
            continue
        await ctx.update(GOALS, goal_id, step.fields, actor=GOAL_ACTOR)
        reached.extend(step.reached)
    ctx.events.extend(reached)
    return reached


def stored_payload(event: DomainEvent, *, encrypted_user: bool) -> dict[str, Any]:
    """The payload as stored: without free-text fields of encrypted tables when the user has a master key."""
    if encrypted_user and event.table in ENCRYPTED_FIELDS:
        return {k: v for k, v in event.payload.items() if k not in TEXT_KEYS}
    return dict(event.payload)


async def store_events(
    conn: AsyncConn,
    user_id: str,
    events: Sequence[DomainEvent],
    origin: EventOrigin,
    *,
    encrypted_user: bool,
) -> None:
    """Append ``events`` to ``mana_ai.domain_events`` (inside ``with_user``)."""
    for event in events:
        await conn.execute(
            q("workbench_insert_event"),
            {
                "user_id": user_id,
                "event_type": event.type,
                "app_id": event.app_id,
                "table": event.table,
                "record_id": event.record_id,
                "payload": Jsonb(stored_payload(event, encrypted_user=encrypted_user)),
                "mission_id": origin.mission_id,
                "iteration_id": origin.iteration_id,
                "step_id": origin.step_id,
                "agent_id": origin.agent_id,
                "module": origin.module,
            },
        )
