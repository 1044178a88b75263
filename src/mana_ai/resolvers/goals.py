"""The plaintext ``goals`` resolver (SPEC §7, with the web app's real goal shape: W17).

The web app's goal tracker keeps goals in app ``companion``, table ``companionGoals`` (the app and table of
its ``GoalReached`` domain event, SPEC §23) and writes them in plaintext (``companionGoals`` is on the
encryption registry's plaintext list, §17.5). A goal stores its period under ``target.period``, not at the
top level as the original resolver read it. No grant is needed and no decrypt is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mana_ai.planner.prompts import ResolvedInput
from mana_ai.resolvers.formats import goal_content
from mana_ai.resolvers.registry import InputRef, ResolverContext
from mana_ai.synclog.store import replay_record

GOALS_APP_ID: Final = "companion"
GOALS_LABEL: Final = "Goal"


@dataclass(frozen=True, slots=True)
class GoalsResolver:
    """Reads one goal from the sync log; ``None`` when it does not exist or is deleted."""

    app_id: str = GOALS_APP_ID

    async def __call__(self, ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None:
        async with ctx.db.with_user(ctx.user_id) as conn:
            state = await replay_record(
                conn, user_id=ctx.user_id, app_id=self.app_id, table=ref.table, record_id=ref.id
            )
        if state is None or not state.is_live():
            return None
        record = state.record
        title = record.get("title")
        return ResolvedInput(
            id=ref.id,
            module=ref.module,
            table=ref.table,
            title=title if isinstance(title, str) and title else GOALS_LABEL,
            content=goal_content(record),
        )
