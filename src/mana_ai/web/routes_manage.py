"""Agents, missions and goals: list, create, edit, pause/resume/archive, run now.

Agents and missions are written exactly as the CLI writes them (the pure builders of
:mod:`mana_ai.cli.records`): an ``insert`` with the web app's record shape, edits as field-level updates of the
changed fields only (:mod:`mana_ai.workbench.writes`). Persona and mission texts are stored in plaintext, as
the CLI stores them, so the runner can read them without a grant.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from mana_ai.cli.records import (
    InvalidOption,
    build_agent,
    build_mission,
    check_unique_name,
    describe_cadence,
    first_run,
    required_text,
    resume_fields,
    shown,
)
from mana_ai.scheduler.budget import budget_line
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.web.attention import attention_for
from mana_ai.web.base import Workbench
from mana_ai.web.forms import (
    cadence_fields,
    cadence_from_form,
    inputs_from_text,
    inputs_text,
    optional_int,
    overrides_text,
    policy_from_form,
)
from mana_ai.workbench.context import zone_for_user
from mana_ai.workbench.goals import GOAL_TEMPLATES, goal_from_tool, goal_record
from mana_ai.workbench.writes import RecordMissing, insert_user_record, update_user_record

AGENT_ACTIONS = {"pause": ("paused", ("active",)), "resume": ("active", ("paused", "archived")),
                 "archive": ("archived", ("active", "paused"))}  # fmt: skip


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _find(records: list[dict[str, Any]], record_id: str, kind: str) -> dict[str, Any]:
    for record in records:
        if str(record.get("id")) == record_id:
            return record
    raise RecordMissing(kind + " " + record_id + " not found")


def register(router: APIRouter, wb: Workbench) -> None:
    reader, writer = Depends(wb.reader), Depends(wb.writer)

    async def zone_of(user: str) -> str:
        return await zone_for_user(wb.app.db, user, wb.app.settings.default_tz)

    # --- agents -----------------------------------------------------------------------------------------
    async def agents_page(request: Request, user: str, *, edit: dict[str, Any] | None = None) -> Response:
        store = wb.store
        await store.refresh()
        budget = ""
        if edit is not None:
            used, reserved = await wb.app.ticker.store.agent_budget(user, str(edit.get("id")))
            tokens = edit.get("maxTokensPerDay")
            cap = int(tokens) if isinstance(tokens, int | float) and not isinstance(tokens, bool) else None
            budget = budget_line(used, reserved, cap)
        return wb.render(
            request,
            "agent.html" if edit is not None else "agents.html",
            {
                "active": "agents",
                "agents": await store.agents(user),
                "agent": edit,
                "budget": budget,
                "usage": await store.token_usage(user),
                "overrides_text": overrides_text,
                "shown": shown,
            },
        )

    @router.get("/agents", summary="Agents: list, token usage, create")
    async def agents(request: Request, user: str = reader) -> Response:
        return await agents_page(request, user)

    @router.post("/agents", summary="Create an agent")
    async def agents_create(request: Request, user: str = writer) -> Response:
        form = await request.form()
        now = utcnow()
        record = build_agent(
            agent_id=str(uuid.uuid4()),
            now=now,
            name=_text(form, "name"),
            role=_text(form, "role"),
            persona=_text(form, "persona") or None,
            max_concurrent=optional_int(form.get("max_concurrent"), "at once", minimum=1) or 1,
            max_tokens_per_day=optional_int(form.get("max_tokens_per_day"), "tokens per day"),
        )
        record["policy"] = policy_from_form(form)
        if _text(form, "avatar"):
            record["avatar"] = _text(form, "avatar")[:8]
        await wb.store.refresh()
        check_unique_name(record["name"], (shown(a.get("name")) for a in await wb.store.agents(user)))
        await insert_user_record(wb.app.db, user, "ai", "agents", record)
        return wb.redirect("/agents/" + record["id"])

    @router.get("/agents/{agent_id}", summary="One agent: edit persona, policy, limits; usage")
    async def agent(request: Request, agent_id: str, user: str = reader) -> Response:
        await wb.store.refresh()
        return await agents_page(request, user, edit=_find(await wb.store.agents(user), agent_id, "agent"))

    @router.post("/agents/{agent_id}", summary="Edit an agent")
    async def agent_edit(request: Request, agent_id: str, user: str = writer) -> Response:
        form = await request.form()
        name = required_text(_text(form, "name"), "name")
        await wb.store.refresh()
        others = [a for a in await wb.store.agents(user) if str(a.get("id")) != agent_id]
        check_unique_name(name, (shown(a.get("name")) for a in others))
        fields: dict[str, Any] = {
            "name": name,
            "role": _text(form, "role"),
            "avatar": _text(form, "avatar")[:8] or None,
            "systemPrompt": _text(form, "persona") or None,
            "policy": policy_from_form(form),
            "maxConcurrentMissions": optional_int(form.get("max_concurrent"), "at once", minimum=1) or 1,
            "maxTokensPerDay": optional_int(form.get("max_tokens_per_day"), "tokens per day"),
        }

        def fields_for(current: Mapping[str, Any]) -> dict[str, Any]:
            if (
                fields["systemPrompt"] == "(encrypted)"
                and shown(current.get("systemPrompt")) == "(encrypted)"
            ):
                return {k: v for k, v in fields.items() if k != "systemPrompt"}
            return fields

        await update_user_record(wb.app.db, user, "ai", "agents", agent_id, fields_for)
        return wb.redirect("/agents/" + agent_id)

    @router.post("/agents/{agent_id}/state", summary="Pause, resume or archive an agent")
    async def agent_state(request: Request, agent_id: str, user: str = writer) -> Response:
        action = _text(await request.form(), "action")
        if action not in AGENT_ACTIONS:
            raise InvalidOption("unknown action " + repr(action[:20]))
        target, allowed = AGENT_ACTIONS[action]

        def fields_for(current: Mapping[str, Any]) -> dict[str, Any] | None:
            state = current.get("state", "active")
            if state == target:
                return None
            if state not in allowed:
                raise InvalidOption("the agent is " + str(state) + ": it cannot be " + target)
            return {"state": target}

        await update_user_record(wb.app.db, user, "ai", "agents", agent_id, fields_for)
        return wb.redirect("/agents/" + agent_id)

    # --- missions ---------------------------------------------------------------------------------------
    @router.get("/missions", summary="Missions: list and create")
    async def missions(request: Request, user: str = reader) -> Response:
        await wb.store.refresh()
        return wb.render(
            request,
            "missions.html",
            {
                "active": "missions",
                "missions": await wb.store.missions(user),
                "agents": await wb.store.agents(user),
                "describe_cadence": describe_cadence,
                "shown": shown,
                "default_tz": wb.app.settings.default_tz,
            },
        )

    @router.post("/missions", summary="Create a mission")
    async def missions_create(request: Request, user: str = writer) -> Response:
        form = await request.form()
        now = utcnow()
        cadence = cadence_from_form(form)
        agent_id = _text(form, "agent_id") or None
        if agent_id is not None:
            await wb.store.refresh()
            _find(await wb.store.agents(user), agent_id, "agent")
        record = build_mission(
            mission_id=str(uuid.uuid4()),
            now=now,
            title=_text(form, "title"),
            objective=_text(form, "objective"),
            concept=_text(form, "concept"),
            cadence=cadence,
            next_run_at=first_run(
                cadence, now=now, run_now=form.get("run_now") == "on", default_tz=await zone_of(user)
            ),
            agent_id=agent_id,
            inputs=inputs_from_text(_text(form, "inputs")),
        )
        await insert_user_record(wb.app.db, user, "ai", "aiMissions", record)
        return wb.redirect("/missions/" + record["id"])

    @router.get("/missions/{mission_id}", summary="One mission: iterations, edit, run now, grant")
    async def mission(request: Request, mission_id: str, user: str = reader) -> Response:
        await wb.store.refresh()
        record = _find(await wb.store.missions(user), mission_id, "mission")
        kind, value, tz = cadence_fields(record.get("cadence"))
        return wb.render(
            request,
            "mission.html",
            {
                "active": "missions",
                "m": record,
                "agents": await wb.store.agents(user),
                "cadence": {"kind": kind, "value": value, "tz": tz},
                "inputs_text": inputs_text(record.get("inputs")),
                "describe_cadence": describe_cadence,
                "shown": shown,
                "queued": request.query_params.get("queued") == "1",
                "attention": attention_for(record, (await wb.store.run_errors(user)).get(mission_id)),
            },
        )

    @router.post("/missions/{mission_id}", summary="Edit a mission")
    async def mission_edit(request: Request, mission_id: str, user: str = writer) -> Response:
        form = await request.form()
        cadence = cadence_from_form(form)
        agent_id = _text(form, "agent_id") or None
        inputs = inputs_from_text(_text(form, "inputs"))
        title = required_text(_text(form, "title"), "title")
        objective = required_text(_text(form, "objective"), "objective")
        default_tz = await zone_of(user)

        def fields_for(current: Mapping[str, Any]) -> dict[str, Any]:
            fields: dict[str, Any] = {
                "title": title,
                "objective": objective,
                "conceptMarkdown": _text(form, "concept"),
                "agentId": agent_id,
                "inputs": inputs,
                "cadence": cadence.to_json(),
            }
            if cadence.to_json() != current.get("cadence") and current.get("state", "active") == "active":
                fields["nextRunAt"] = first_run(cadence, now=utcnow(), run_now=False, default_tz=default_tz)
            # Encrypted texts the user did not retype stay as they are (the form shows "(encrypted)").
            for name in ("title", "objective", "conceptMarkdown"):
                if fields[name] == "(encrypted)" and shown(current.get(name)) == "(encrypted)":
                    del fields[name]
            return fields

        await update_user_record(wb.app.db, user, "ai", "aiMissions", mission_id, fields_for)
        return wb.redirect("/missions/" + mission_id)

    @router.post("/missions/{mission_id}/run", summary="Make a mission due now and plan it")
    async def mission_run(request: Request, mission_id: str, user: str = writer) -> Response:
        def fields_for(current: Mapping[str, Any]) -> dict[str, Any]:
            if current.get("state", "active") != "active":
                raise InvalidOption("the mission is " + str(current.get("state")) + ": resume it first")
            return {"nextRunAt": to_js_iso(utcnow())}

        await update_user_record(wb.app.db, user, "ai", "aiMissions", mission_id, fields_for)
        wb.kicker.kick()
        return wb.redirect("/missions/" + mission_id + "?queued=1")

    @router.post("/missions/{mission_id}/state", summary="Pause or resume a mission")
    async def mission_state(request: Request, mission_id: str, user: str = writer) -> Response:
        action = _text(await request.form(), "action")
        now, default_tz = utcnow(), await zone_of(user)

        def fields_for(current: Mapping[str, Any]) -> dict[str, Any] | None:
            state = current.get("state", "active")
            if action == "pause":
                return None if state == "paused" else {"state": "paused"}
            if action == "resume":
                return (
                    None if state == "active" else resume_fields(current, now=now, default_tz=default_tz)[0]
                )
            raise InvalidOption("unknown action " + repr(action[:20]))

        await update_user_record(wb.app.db, user, "ai", "aiMissions", mission_id, fields_for)
        return wb.redirect("/missions/" + mission_id)

    # --- goals ------------------------------------------------------------------------------------------
    @router.get("/goals", summary="Goals and their progress")
    async def goals(request: Request, user: str = reader) -> Response:
        return wb.render(
            request,
            "goals.html",
            {
                "active": "goals",
                "goals": await wb.store.goals(user),
                "templates": GOAL_TEMPLATES,
                "event_types": sorted(
                    {
                        "TaskCompleted",
                        "TaskCreated",
                        "DrinkLogged",
                        "MealLogged",
                        "HabitLogged",
                        "JournalEntryCreated",
                        "NoteCreated",
                        "CalendarEventCreated",
                        "PlaceVisited",
                    }
                ),  # fmt: skip
            },
        )

    @router.post("/goals", summary="Create a goal from a template or custom")
    async def goals_create(request: Request, user: str = writer) -> Response:
        form = await request.form()
        now, tz = utcnow(), wb.app.settings.default_tz
        template = _text(form, "template")
        if template:
            record = goal_from_tool(str(uuid.uuid4()), {"templateId": template}, now=now, tz=tz)
        else:
            metric: dict[str, Any] = {
                "source": _text(form, "source") or "event_count",
                "eventType": _text(form, "event_type"),
            }
            for key, name in (
                ("filterField", "filter_field"),
                ("filterValue", "filter_value"),
                ("sumField", "sum_field"),
            ):
                if _text(form, name):
                    metric[key] = _text(form, name)
            try:
                value: float | int = float(_text(form, "target"))
                value = int(value) if value == int(value) else value
            except ValueError:
                raise InvalidOption("the target must be a number") from None
            record = goal_record(
                str(uuid.uuid4()),
                title=_text(form, "title"),
                description=_text(form, "description") or None,
                metric=metric,
                target={"value": value, "period": _text(form, "period") or "day",
                        "comparison": _text(form, "comparison") or "gte"},
                module_id=_text(form, "module") or "companion",
                now=now,
                tz=tz,
            )  # fmt: skip
        await wb.store.create_goal(user, record)
        return wb.redirect("/goals")
