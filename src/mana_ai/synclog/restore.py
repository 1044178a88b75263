"""Restoring server iterations and step decisions a device edit dropped (issue 12, finding 5; W11).

The web app writes a mission's ``iterations`` as one field: any edit from a device re-sends the whole array
it has (``WEB/data/database.ts`` ``updating`` hook; Dexie compares arrays by reference), so an edit from a
device that synced *before* our write-back replaces our iteration, or a decision made in the workbench, with
its stale copy, and field-level last-writer-wins keeps the device's array.

Every server iteration we write and every decision we make is *marked* (``mana_ai.iteration_marks``: ids and
statuses). After each snapshot refresh, :func:`restore_lost` compares the marks of the missions that
changed with their new state; a mission that lost something is rebuilt from its own history in the log
(union by iteration id; per step the latest decision wins, a decision beats an open status) and written back
with **one** field-level update of ``iterations``, stamped after what it read, so every device converges.

The pure part (:func:`missing`, :func:`restored_iterations`) has no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.errors import ConnectionLostError
from mana_ai.synclog.actor import system_actor
from mana_ai.synclog.lww import RecordState
from mana_ai.synclog.store import replay_record, update_iterations
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.workbench.proposals import overall_status

logger = logging.getLogger(__name__)

OPEN: Final = ("staged", "planned")
RESTORE_ACTOR: Final = "system:mana-ai-restore"
RESTORE_CLIENT_ID: Final = "mana-ai-restore"

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Mark:
    iteration_id: str
    step_id: str
    """``""`` for the iteration itself."""
    status: str


@dataclass
class RestoreStats:
    iterations: int = 0
    decisions: int = 0


def _by_id(iterations: Any) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for it in iterations if isinstance(iterations, list) else []:
        if isinstance(it, Mapping) and isinstance(it.get("id"), str):
            out[it["id"]] = it
    return out


def _step(iteration: Mapping[str, Any], step_id: str) -> Mapping[str, Any] | None:
    plan = iteration.get("plan")
    for step in plan if isinstance(plan, list) else []:
        if isinstance(step, Mapping) and step.get("id") == step_id:
            return step
    return None


def missing(iterations: Any, marks: Iterable[Mark]) -> tuple[set[str], set[tuple[str, str]]]:
    """``(iteration ids gone, (iteration, step) decided by us but open again)`` in ``iterations``."""
    present = _by_id(iterations)
    gone: set[str] = set()
    reopened: set[tuple[str, str]] = set()
    for mark in marks:
        iteration = present.get(mark.iteration_id)
        if iteration is None:
            gone.add(mark.iteration_id)
        elif mark.step_id and mark.status not in OPEN:
            step = _step(iteration, mark.step_id)
            if step is not None and step.get("status") in OPEN:
                reopened.add((mark.iteration_id, mark.step_id))
    return gone, reopened


def _rank(step: Mapping[str, Any]) -> tuple[int, str]:
    decided_at = step.get("decidedAt")
    return (0 if step.get("status") in OPEN else 1, decided_at if isinstance(decided_at, str) else "")


def merged_history(arrays: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Every iteration ever seen in ``arrays`` (oldest first): its latest version, each step replaced by its
    most decided version (decided beats open; then the later ``decidedAt``; then the later array)."""
    merged: dict[str, dict[str, Any]] = {}
    best: dict[tuple[str, str], Mapping[str, Any]] = {}
    for array in arrays:
        for iteration_id, iteration in _by_id(array).items():
            merged[iteration_id] = dict(iteration)
            plan = iteration.get("plan")
            for step in plan if isinstance(plan, list) else []:
                if not isinstance(step, Mapping) or not isinstance(step.get("id"), str):
                    continue
                key = (iteration_id, step["id"])
                if key not in best or _rank(step) >= _rank(best[key]):
                    best[key] = step
    for iteration_id, iteration in merged.items():
        plan = iteration.get("plan")
        if isinstance(plan, list):
            iteration["plan"] = [
                dict(best.get((iteration_id, str(s.get("id"))), s)) if isinstance(s, Mapping) else s
                for s in plan
            ]
    return merged


def restored_iterations(
    current: Any, history: Mapping[str, dict[str, Any]], marks: Iterable[Mark]
) -> tuple[list[Any], RestoreStats]:
    """``current`` with the marked iterations it lacks appended (by ``startedAt``) and the marked decisions it
    reopened put back; everything else in ``current`` (the device's own changes) is kept."""
    marks = list(marks)
    gone, reopened = missing(current, marks)
    stats = RestoreStats()
    out: list[Any] = list(current) if isinstance(current, list) else []
    for index, iteration in enumerate(out):
        if not isinstance(iteration, Mapping) or not any(i == iteration.get("id") for i, _ in reopened):
            continue
        source = history.get(iteration["id"], {})
        plan = [dict(s) if isinstance(s, Mapping) else s for s in iteration.get("plan") or []]
        for j, step in enumerate(plan):
            if isinstance(step, dict) and (iteration["id"], step.get("id")) in reopened:
                decided = _step(source, step["id"]) if source else None
                if decided is not None and decided.get("status") not in OPEN:
                    plan[j] = dict(decided)
                    stats.decisions += 1
        out[index] = {**iteration, "plan": plan, "overallStatus": overall_status(plan)}
    back = [history[i] for i in gone if i in history]
    back.sort(key=lambda it: str(it.get("startedAt") or ""))
    stats.iterations = len(back)
    return [*out, *back], stats


async def restore_lost(db: Database, pending: Mapping[Key, str]) -> RestoreStats:
    """Check queued missions against our marks and restore what a device edit dropped.

    ``pending`` maps the keys the refresh queued (``restore_checks``) to the time they were queued; each is
    dequeued once checked (unless queued again meanwhile), also when its check fails on the mission's own
    data (logged: it would fail again). A lost connection stops the checks and leaves the rest queued for
    the next refresh."""
    total = RestoreStats()
    keys = list(pending)
    if not keys:
        return total
    checked: list[Key] = []
    try:
        marks = await _marks(db, keys)
        snapshots = await db.fetch(
            q("mission_snapshots_for_keys"), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]}
        )
        live = {
            (snap["user_id"], snap["record_id"]): state
            for snap in snapshots
            if (state := RecordState.from_snapshot(snap["record"], deleted=snap["deleted"])).is_live()
        }
        for key in keys:
            current = live.get(key)
            gone, reopened = (
                missing(current.record.get("iterations"), marks.get(key, [])) if current else ((), ())
            )
            if gone or reopened:
                try:
                    stats = await _restore_one(db, key, marks[key])
                except ConnectionLostError:
                    raise
                except Exception:  # one mission's problem never costs the others their restore
                    logger.warning(
                        "restoring lost iterations failed",
                        exc_info=True,
                        extra={"action": "snapshots.restore_failed", "user_id": key[0], "mission_id": key[1]},
                    )
                else:
                    total.iterations += stats.iterations
                    total.decisions += stats.decisions
            checked.append(key)
    finally:
        if checked:
            await db.execute(
                q("restore_checks_done"),
                {
                    "users": [k[0] for k in checked],
                    "ids": [k[1] for k in checked],
                    "queued": [pending[k] for k in checked],
                },
            )
    return total


async def _marks(db: Database, keys: list[Key]) -> dict[Key, list[Mark]]:
    rows = await db.fetch(
        q("marks_for_missions"), {"users": [k[0] for k in keys], "ids": [k[1] for k in keys]}
    )
    marks: dict[Key, list[Mark]] = {}
    for row in rows:
        marks.setdefault((row["user_id"], row["mission_id"]), []).append(
            Mark(row["iteration_id"], row["step_id"], row["status"])
        )
    return marks


async def _restore_one(db: Database, key: Key, marks: list[Mark]) -> RestoreStats:
    user_id, mission_id = key
    async with db.with_user(user_id) as conn:
        await conn.execute(q("lock_record"), {"user_id": user_id, "record_id": mission_id})
        arrays: list[Any] = []

        def keep_iterations(data: Mapping[str, Any]) -> None:
            if isinstance(data.get("iterations"), list):
                arrays.append(data["iterations"])

        # The write-back's own replay: rows the refresh skips (unreadable, or the merge fails on) are skipped.
        state = await replay_record(
            conn,
            user_id=user_id,
            app_id="ai",
            table="aiMissions",
            record_id=mission_id,
            on_data=keep_iterations,
        )
        if state is None or not state.is_live():
            return RestoreStats()
        iterations, stats = restored_iterations(state.record.get("iterations"), merged_history(arrays), marks)
        if not (stats.iterations or stats.decisions):
            return stats
        await update_iterations(
            conn,
            user_id=user_id,
            mission_id=mission_id,
            state=state,
            iterations=iterations,
            now_iso=to_js_iso(utcnow()),
            client_id=RESTORE_CLIENT_ID,
            actor=system_actor(RESTORE_ACTOR),
        )
    logger.info(
        "lost iterations restored",
        extra={
            "action": "snapshots.restored",
            "user_id": user_id,
            "mission_id": mission_id,
            "iterations": stats.iterations,
            "decisions": stats.decisions,
        },
    )
    return stats
