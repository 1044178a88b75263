"""The goal tracker of SPEC §23, as pure functions: domain events move the progress of matching goals.

A goal (``companion/companionGoals``, plaintext) looks like::

    {id, title, description?, metric: {source: event_count|event_sum, eventType, filterField?, filterValue?,
     sumField?}, target: {value, period: day|week|month, comparison: gte|lte}, moduleId,
     status: active|paused|completed|abandoned, currentValue, currentPeriodStart, createdAt, updatedAt}

For every event, each active, non-deleted goal whose ``metric.eventType`` equals the event's type and whose
optional filter matches (``str(payload[filterField]) == filterValue``) gains 1 (``event_count``) or the
numeric ``payload[sumField]`` (``event_sum``); the value restarts at 0 when the period start changed (day =
the date, week = that week's Monday, month = ``YYYY-MM-01``; all in the user's zone, where the web app
mixes UTC and local dates).

These goals are ours only: the web app keeps ``companionGoals`` in each device's IndexedDB (the table is in no
module's sync tables), so its goals never reach the sync log and ours never reach the app.

``GoalReached`` (app ``companion``, table ``companionGoals``, payload ``{goalId, title, value, target,
period}``) fires when the new value meets the target and the previous one did not (or the period just
restarted), as in the web app, and additionally at most once per period: the goal remembers the period it was
last reached in (``lastReachedPeriodStart``, a field the web app ignores). With ``lte`` goals, whose value only
grows, this means "within the limit so far" is reported once, on the first matching event of a period.

Pure: no I/O; the clock and the time zone are arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mana_ai.timefmt import to_js_iso
from mana_ai.workbench.shapes import GOALS, day_of, local_now

PERIODS: Final = ("day", "week", "month")
COMPARISONS: Final = ("gte", "lte")
SOURCES: Final = ("event_count", "event_sum")
REACHED_MARK: Final = "lastReachedPeriodStart"


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """One domain event, as the web app's ``emitDomainEvent(type, appId, table, recordId, payload)``."""

    type: str
    app_id: str
    table: str
    record_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)


GOAL_TEMPLATES: Final[Mapping[str, Mapping[str, Any]]] = {
    "tpl-water-daily": {
        "title": "8 Gläser Wasser am Tag",
        "description": "Jeden Tag acht Gläser Wasser trinken",
        "moduleId": "drink",
        "metric": {
            "source": "event_count",
            "eventType": "DrinkLogged",
            "filterField": "drinkType",
            "filterValue": "water",
        },
        "target": {"value": 8, "period": "day", "comparison": "gte"},
    },
    "tpl-tasks-daily": {
        "title": "5 Aufgaben am Tag",
        "description": "Jeden Tag mindestens fünf Aufgaben erledigen",
        "moduleId": "todo",
        "metric": {"source": "event_count", "eventType": "TaskCompleted"},
        "target": {"value": 5, "period": "day", "comparison": "gte"},
    },
    "tpl-meals-daily": {
        "title": "Alle Mahlzeiten erfassen",
        "description": "Mindestens drei Mahlzeiten am Tag eintragen",
        "moduleId": "food",
        "metric": {"source": "event_count", "eventType": "MealLogged"},
        "target": {"value": 3, "period": "day", "comparison": "gte"},
    },
    "tpl-calories-daily": {
        "title": "Kalorienziel halten",
        "description": "Höchstens 2000 kcal am Tag",
        "moduleId": "food",
        "metric": {"source": "event_sum", "eventType": "MealLogged", "sumField": "calories"},
        "target": {"value": 2000, "period": "day", "comparison": "lte"},
    },
    "tpl-places-weekly": {
        "title": "Neue Orte entdecken",
        "description": "Mindestens drei Orte pro Woche besuchen",
        "moduleId": "places",
        "metric": {"source": "event_count", "eventType": "PlaceVisited"},
        "target": {"value": 3, "period": "week", "comparison": "gte"},
    },
    "tpl-coffee-limit": {
        "title": "Kaffee-Limit",
        "description": "Höchstens drei Kaffee am Tag",
        "moduleId": "drink",
        "metric": {
            "source": "event_count",
            "eventType": "DrinkLogged",
            "filterField": "drinkType",
            "filterValue": "coffee",
        },
        "target": {"value": 3, "period": "day", "comparison": "lte"},
    },
}
"""The web app's goal templates (ids, metrics and targets as there; titles in our words)."""


class InvalidGoal(ValueError):
    """A goal definition is incomplete or out of range; the message says what to fix."""


def period_start(period: str, now: dt.datetime, tz: str) -> str:
    """The ISO date on which the period containing ``now`` (in ``tz``) starts."""
    if period == "week":
        day = local_now(now, tz).date()
        return (day - dt.timedelta(days=day.weekday())).isoformat()
    if period == "month":
        return local_now(now, tz).date().replace(day=1).isoformat()
    return day_of(now, tz)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return value
    return None


def is_active(goal: Mapping[str, Any]) -> bool:
    return goal.get("status", "active") == "active" and not goal.get("deletedAt")


def matches(goal: Mapping[str, Any], event: DomainEvent) -> bool:
    metric = _mapping(goal.get("metric"))
    if metric.get("eventType") != event.type:
        return False
    field_name, wanted = metric.get("filterField"), metric.get("filterValue")
    if field_name and wanted:
        return str(event.payload.get(str(field_name))) == str(wanted)
    return True


def increment(goal: Mapping[str, Any], event: DomainEvent) -> float | int:
    metric = _mapping(goal.get("metric"))
    if metric.get("source", "event_count") == "event_count":
        return 1
    if metric.get("source") == "event_sum" and metric.get("sumField"):
        return _number(event.payload.get(str(metric["sumField"]))) or 0
    return 0


def _reached(value: float | int, target: Mapping[str, Any]) -> bool:
    goal_value = _number(target.get("value"))
    if goal_value is None:
        return False
    return value <= goal_value if target.get("comparison") == "lte" else value >= goal_value


@dataclass(frozen=True, slots=True)
class GoalAdvance:
    """What matching events did to one goal."""

    fields: dict[str, Any]
    """The fields to write: ``currentValue``, ``currentPeriodStart``, ``updatedAt`` (and the reached mark)."""
    reached: tuple[DomainEvent, ...]
    """``GoalReached`` events to emit, at most one."""


def advance(
    goal: Mapping[str, Any], events: Sequence[DomainEvent], *, now: dt.datetime, tz: str
) -> GoalAdvance | None:
    """Apply ``events`` in order to ``goal``; ``None`` when the goal is inactive or no event matches."""
    if not is_active(goal):
        return None
    matching = [e for e in events if matches(goal, e)]
    if not matching:
        return None
    target = _mapping(goal.get("target"))
    period = target.get("period") or goal.get("period") or "day"
    current_period = period_start(str(period), now, tz)
    value = _number(goal.get("currentValue")) or 0
    start = goal.get("currentPeriodStart")
    reached_in = goal.get(REACHED_MARK)
    reached: list[DomainEvent] = []
    for event in matching:
        reset = start != current_period
        previous = 0 if reset else value
        value = previous + increment(goal, event)
        start = current_period
        crossed = _reached(value, target) and (reset or not _reached(previous, target))
        if crossed and reached_in != current_period:
            reached_in = current_period
            reached.append(
                DomainEvent(
                    "GoalReached",
                    GOALS.app_id,
                    GOALS.table,
                    str(goal.get("id", "")),
                    {
                        "goalId": goal.get("id"),
                        "title": goal.get("title"),
                        "value": value,
                        "target": target.get("value"),
                        "period": period,
                    },
                )
            )
    fields: dict[str, Any] = {
        "currentValue": value,
        "currentPeriodStart": current_period,
        "updatedAt": to_js_iso(now),
    }
    if reached:
        fields[REACHED_MARK] = reached_in
    return GoalAdvance(fields, tuple(reached))


def goal_record(
    goal_id: str,
    *,
    title: str,
    metric: Mapping[str, Any],
    target: Mapping[str, Any],
    module_id: str,
    now: dt.datetime,
    tz: str,
    description: str | None = None,
) -> dict[str, Any]:
    """A new active goal (``goalStore.create``), checked.

    Raises:
        InvalidGoal: empty title or event type, unknown source/period/comparison, a target that is not a
            positive number, ``event_sum`` without ``sumField``.
    """
    title = title.strip()
    if not title:
        raise InvalidGoal("a goal needs a title")
    metric, target = dict(metric), dict(target)
    if not isinstance(metric.get("eventType"), str) or not metric["eventType"].strip():
        raise InvalidGoal("a goal needs the domain event to count, e.g. DrinkLogged or TaskCompleted")
    metric.setdefault("source", "event_count")
    if metric["source"] not in SOURCES:
        raise InvalidGoal("metric source must be one of " + ", ".join(SOURCES))
    if metric["source"] == "event_sum" and not metric.get("sumField"):
        raise InvalidGoal("an event_sum goal needs sumField, the payload field to add up")
    value = _number(target.get("value"))
    if value is None or value <= 0:
        raise InvalidGoal("the target value must be a positive number")
    target.setdefault("period", "day")
    target.setdefault("comparison", "gte")
    if target["period"] not in PERIODS:
        raise InvalidGoal("period must be one of " + ", ".join(PERIODS))
    if target["comparison"] not in COMPARISONS:
        raise InvalidGoal("comparison must be one of " + ", ".join(COMPARISONS))
    iso = to_js_iso(now)
    record: dict[str, Any] = {
        "id": goal_id,
        "title": title,
        "metric": {k: v for k, v in metric.items() if v not in (None, "")},
        "target": target,
        "moduleId": module_id,
        "status": "active",
        "currentValue": 0,
        "currentPeriodStart": period_start(str(target["period"]), now, tz),
        "createdAt": iso,
        "updatedAt": iso,
    }
    if description:
        record["description"] = description
    return record


def goal_from_tool(goal_id: str, params: Mapping[str, Any], *, now: dt.datetime, tz: str) -> dict[str, Any]:
    """The goal ``create_goal`` describes: a template (``templateId``) or a custom ``event_count`` goal.

    Raises:
        InvalidGoal: unknown template or an incomplete custom goal.
    """
    template_id = params.get("templateId")
    if template_id:
        template = GOAL_TEMPLATES.get(str(template_id))
        if template is None:
            raise InvalidGoal(
                "unknown goal template " + repr(template_id) + "; known: " + ", ".join(GOAL_TEMPLATES)
            )
        return goal_record(
            goal_id,
            title=template["title"],
            description=template["description"],
            metric=template["metric"],
            target=template["target"],
            module_id=template["moduleId"],
            now=now,
            tz=tz,
        )
    return goal_record(
        goal_id,
        title=str(params.get("title") or ""),
        description=params.get("description") or None,
        metric={"source": "event_count", "eventType": params.get("eventType")},
        target={
            "value": params.get("targetValue"),
            "period": params.get("period") or "day",
            "comparison": params.get("comparison") or "gte",
        },
        module_id=str(params.get("moduleId") or "companion"),
        now=now,
        tz=tz,
    )
