"""Data commands for a local user: ``agents``, ``missions`` and ``demo``.

They let a newcomer see the whole loop without the web app. Every write is a ``sync_changes`` row exactly
as the web app's sync would store it (SPEC §4.1–4.3): an ``insert`` with the full record, or a field-level
``update`` whose ``field_meta`` stamps each field with the time of the change; the actor is the user
(``displayName`` "Du") and the client id ``mana-ai-cli``. Each write runs inside ``Database.with_user`` so
row-level security applies as it does for the service. Reads fold the log into the snapshot tables first
and then read those, so they show what the runner will see.

The pure parts (option parsing, record shapes) live in :mod:`mana_ai.cli.records`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from rich.box import SIMPLE_HEAD
from rich.table import Table
from rich.text import Text

from mana_ai.app import App
from mana_ai.cli.common import async_command, console, err_console, open_app
from mana_ai.cli.records import (
    InvalidOption,
    build_agent,
    build_mission,
    cadence_from_options,
    check_unique_name,
    describe_cadence,
    error_line,
    first_run,
    is_due,
    match_ref,
    parse_input_ref,
    required_text,
    resume_fields,
    short_ids,
    short_time,
    shown,
    step_row,
)
from mana_ai.db.queries import q
from mana_ai.scheduler.budget import budget_line
from mana_ai.scheduler.cadence import DailyCadence
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.store import CLI_CLIENT_ID, insert_record, replay_record, update_fields
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.tools.catalog import CATALOG_BY_NAME, MODULES
from mana_ai.workbench.context import zone_for_user

F = TypeVar("F", bound=Callable[..., Any])

APP_ID = "ai"
MISSIONS = "aiMissions"
AGENTS = "agents"
DEMO_AGENT_NAME = "Demo-Agent"
DEMO_MISSION_TITLE = "Demo: Tagesplanung"

_ID_CAPTION = "ids are shortened: any unique prefix (or the name) works in other commands"
_NO_WRAP = frozenset({"id", "state", "at once", "tokens/day", "next run"})
# Space left by the fixed columns goes to the free-text ones in these proportions.
_RATIOS = {
    "name": 2,
    "role": 3,
    "denied": 2,
    "title": 3,
    "cadence": 3,
    "agent": 2,
    "iterations": 2,
    "state": 1,
}

FieldsFn = Callable[[Mapping[str, Any]], tuple[dict[str, Any] | None, str]]
"""Given a record's current state: the fields to write (``None``: nothing to do) and a message."""


def user_option(func: F) -> F:
    """The ``--user`` option every data command takes."""
    return click.option(
        "--user",
        envvar="MANA_AI_USER",
        default="local",
        show_default=True,
        show_envvar=True,
        help="Whose data to read and write (the local single user by default).",
    )(func)


def say(text: str) -> None:
    """Print one plain line: no markup (names are user input), no wrapping (ids stay copyable)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """One ``warning:`` line on stderr."""
    err_console.print("warning: " + text, markup=False, highlight=False, soft_wrap=True)


# --- storage ----------------------------------------------------------------------------------------------


async def _agents(app: App, user: str) -> list[dict[str, Any]]:
    rows = await app.db.fetch(q("agents_of_user"), {"user_id": user})
    return [r["record"] for r in rows if not r["record"].get("deletedAt")]


async def _missions(app: App, user: str) -> list[dict[str, Any]]:
    rows = await app.db.fetch(q("missions_of_user"), {"user_id": user})
    return [r["record"] for r in rows if not r["record"].get("deletedAt")]


async def _insert(app: App, user: str, table: str, record: Mapping[str, Any]) -> None:
    async with app.db.with_user(user) as conn:
        await insert_record(
            conn,
            user_id=user,
            app_id=APP_ID,
            table=table,
            record=record,
            client_id=CLI_CLIENT_ID,
            actor=user_actor(user),
        )


async def _update(app: App, user: str, table: str, record_id: str, fields_for: FieldsFn, kind: str) -> str:
    """Write the fields ``fields_for`` derives from the record's current state; returns the message.

    The state is replayed from ``sync_changes`` inside the writing transaction, under the same per-record
    lock the runner's write-back takes, so the decision is made on the latest state, not on a snapshot.
    """
    async with app.db.with_user(user) as conn:
        await conn.execute(q("lock_record"), {"user_id": user, "record_id": record_id})
        state = await replay_record(conn, user_id=user, app_id=APP_ID, table=table, record_id=record_id)
        if state is None or not state.is_live():
            raise InvalidOption("unknown " + kind + " " + repr(record_id))
        fields, message = fields_for(state.record)
        if fields:
            await update_fields(
                conn,
                user_id=user,
                app_id=APP_ID,
                table=table,
                record_id=record_id,
                fields=fields,
                at=to_js_iso(utcnow()),
                client_id=CLI_CLIENT_ID,
                actor=user_actor(user),
            )
    return message


def _mapping(obj: Any, key: str) -> Mapping[str, Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _pick(records: list[dict[str, Any]], ref: str, kind: str, label: str) -> dict[str, Any]:
    candidates = [(str(r.get("id", "")), shown(r.get(label))) for r in records]
    wanted = match_ref(ref, candidates, kind=kind)
    return next(r for r in records if r.get("id") == wanted)


# --- agents -----------------------------------------------------------------------------------------------


@click.group()
def agents() -> None:
    """Create and manage agents: named AI personas that own missions (synced as ai/agents)."""


@agents.command("create")
@click.option("--name", required=True, help="Unique name of the agent.")
@click.option("--role", default="", help="Short role description.")
@click.option("--persona", default=None, help="System prompt: how the agent thinks and writes.")
@click.option("--max-concurrent", type=int, default=1, show_default=True, help="Missions planned at once.")
@click.option("--max-tokens-per-day", type=int, default=None, help="Rolling 24 h token cap (0 = paused).")
@click.option("--deny-tool", multiple=True, help="A tool this agent may never use (repeatable).")
@click.option(
    "--deny-module", multiple=True, help="A module whose tools this agent may not use (repeatable)."
)
@user_option
@async_command
async def agents_create(
    name: str,
    role: str,
    persona: str | None,
    max_concurrent: int,
    max_tokens_per_day: int | None,
    deny_tool: tuple[str, ...],
    deny_module: tuple[str, ...],
    user: str,
) -> None:
    """Create an agent.

    Example usage:

    \b
        mana-ai agents create --name Planer --role "Plans my week"
        mana-ai agents create --name Scout --max-tokens-per-day 20000 --deny-module finance
    """
    now = utcnow()
    record = build_agent(
        agent_id=str(uuid.uuid4()),
        now=now,
        name=name,
        role=role,
        persona=persona,
        max_concurrent=max_concurrent,
        max_tokens_per_day=max_tokens_per_day,
        deny_tools=deny_tool,
        deny_modules=deny_module,
        known_tools=CATALOG_BY_NAME,
        known_modules=MODULES,
    )
    async with open_app() as app:
        await refresh_snapshots(app.db)
        check_unique_name(record["name"], (shown(a.get("name")) for a in await _agents(app, user)))
        await _insert(app, user, AGENTS, record)
    say("Created agent " + repr(record["name"]) + " with id " + record["id"])


@agents.command("list")
@user_option
@async_command
async def agents_list(user: str) -> None:
    """List the user's agents.

    Example usage:

    \b
        mana-ai agents list
    """
    async with open_app() as app:
        await refresh_snapshots(app.db)
        rows = await _agents(app, user)
    if not rows:
        say("No agents yet. Create one: mana-ai agents create --name NAME")
        return
    table = Table(title="Agents of " + user, caption=_ID_CAPTION, box=SIMPLE_HEAD)
    for column in ("id", "name", "role", "state", "at once", "tokens/day", "denied"):
        table.add_column(column, no_wrap=column in _NO_WRAP, ratio=_RATIOS.get(column))
    short = short_ids(str(a.get("id", "")) for a in rows)
    for a in rows:
        policy = a.get("policy")
        denied = [t for t, d in _mapping(policy, "tools").items() if d == "deny"]
        denied += [m + ".*" for m, d in _mapping(policy, "defaultsByModule").items() if d == "deny"]
        tokens = a.get("maxTokensPerDay")
        table.add_row(
            *(
                Text(v)
                for v in (
                    short[str(a.get("id", ""))],
                    shown(a.get("name")),
                    shown(a.get("role")),
                    str(a.get("state", "active")),
                    str(a.get("maxConcurrentMissions", 1)),
                    "unlimited" if tokens is None else str(tokens),
                    ", ".join(denied),
                )
            )
        )
    console.print(table)


@agents.command("show")
@click.argument("agent")
@user_option
@async_command
async def agents_show(agent: str, user: str) -> None:
    """Show an agent: settings and its daily token budget (used, reserved by runs in flight, cap).

    AGENT is an id, a unique id prefix or a name.

    Example usage:

    \b
        mana-ai agents show Planer
    """
    async with open_app() as app:
        await refresh_snapshots(app.db)
        a = _pick(await _agents(app, user), agent, "agent", "name")
        used, reserved = await app.ticker.store.agent_budget(user, str(a.get("id")))
    tokens = a.get("maxTokensPerDay")
    cap = int(tokens) if isinstance(tokens, int | float) and not isinstance(tokens, bool) else None
    say("Agent " + repr(shown(a.get("name"))) + "  id " + str(a.get("id")))
    say("  role: " + shown(a.get("role")) + "   state: " + str(a.get("state", "active")))
    say("  at once: " + str(a.get("maxConcurrentMissions", 1)))
    say("  budget: " + budget_line(used, reserved, cap))


def _agent_state_command(
    name: str, target: str, allowed_from: tuple[str, ...], summary: str
) -> click.Command:
    @click.argument("agent")
    @user_option
    @async_command
    async def command(agent: str, user: str) -> None:
        def fields_for(current: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
            label = repr(shown(current.get("name")))
            state = current.get("state", "active")
            if state == target:
                return None, "Agent " + label + " is already " + target
            if state not in allowed_from:
                raise InvalidOption("agent " + label + " is " + str(state) + ": cannot " + name + " it")
            return {"state": target}, "Agent " + label + " is now " + target

        async with open_app() as app:
            await refresh_snapshots(app.db)
            found = _pick(await _agents(app, user), agent, "agent", "name")
            say(await _update(app, user, AGENTS, str(found["id"]), fields_for, "agent"))

    command.__doc__ = (
        summary
        + " AGENT is an id, a unique id prefix or a name.\n\nExample usage:\n\n\b\n    mana-ai agents "
        + name
        + " Planer\n"
    )
    return click.command(name)(command)


agents.add_command(
    _agent_state_command(
        "pause", "paused", ("active",), "Pause an agent: the runner skips its missions until it is resumed."
    )
)
agents.add_command(
    _agent_state_command("resume", "active", ("paused", "archived"), "Resume a paused or archived agent.")
)
agents.add_command(
    _agent_state_command(
        "archive", "archived", ("active", "paused"), "Archive an agent: its missions are no longer planned."
    )
)


# --- missions ---------------------------------------------------------------------------------------------


@click.group()
def missions() -> None:
    """Create and inspect missions: objectives the runner plans for on a cadence (synced as ai/aiMissions)."""


@missions.command("create")
@click.option("--title", required=True, help="Short title.")
@click.option("--objective", required=True, help="What the mission should achieve.")
@click.option("--concept", default="", help="Longer concept text (Markdown).")
@click.option("--agent", default=None, help="Owning agent: id, unique id prefix or name.")
@click.option("--every", default=None, help="Interval cadence: 90m, 2h, 1d, 1h30m.")
@click.option("--daily", default=None, help="Daily cadence at HH:MM local time.")
@click.option("--weekly", default=None, help="Weekly cadence DOW@HH, e.g. mon@09 (0 or sun = Sunday).")
@click.option("--cron", default=None, help='Cron cadence, 5 fields, e.g. "30 2 * * 1-5".')
@click.option(
    "--manual", is_flag=True, help="No cadence (the default): it runs only when made due, e.g. with --now."
)
@click.option("--tz", default=None, help="IANA time zone of the cadence (default: MANA_AI_DEFAULT_TZ).")
@click.option("--input", "inputs", multiple=True, help="Linked input table:id, e.g. notes:ID (repeatable).")
@click.option("--now", "run_now", is_flag=True, help="Make the mission due right away.")
@user_option
@async_command
async def missions_create(
    title: str,
    objective: str,
    concept: str,
    agent: str | None,
    every: str | None,
    daily: str | None,
    weekly: str | None,
    cron: str | None,
    manual: bool,
    tz: str | None,
    inputs: tuple[str, ...],
    run_now: bool,
    user: str,
) -> None:
    """Create a mission; its first run is the cadence's next run (or now with --now).

    Example usage:

    \b
        mana-ai missions create --title "Wochenplan" --objective "Plan my week" --weekly mon@07 --now
        mana-ai missions create --title Digest --objective "Summarise my notes" --daily 07:30 \\
            --tz Europe/Berlin --agent Planer --input notes:NOTE_ID
        mana-ai missions create --title Nightly --objective "Tidy up tasks" --cron "30 2 * * 1-5"
    """
    title, objective = required_text(title, "--title"), required_text(objective, "--objective")
    cadence = cadence_from_options(
        every=every, daily=daily, weekly=weekly, cron=cron, manual=manual, timezone=tz
    )
    refs = [parse_input_ref(i) for i in inputs]
    now = utcnow()
    warnings: list[str] = []
    async with open_app() as app:
        await refresh_snapshots(app.db)
        agent_id: str | None = None
        if agent is not None:
            owner = _pick(await _agents(app, user), agent, "agent", "name")
            owner_name = shown(owner.get("name"))
            if owner.get("state") == "archived":
                raise InvalidOption("agent " + repr(owner_name) + " is archived")
            if owner.get("state") == "paused":
                warnings.append(
                    "agent "
                    + repr(owner_name)
                    + " is paused: the mission waits until `mana-ai agents resume "
                    + owner_name
                    + "`"
                )
            agent_id = str(owner["id"])
        zone = await zone_for_user(app.db, user, app.settings.default_tz)
        next_run_at = first_run(cadence, now=now, run_now=run_now, default_tz=zone)
        record = build_mission(
            mission_id=str(uuid.uuid4()),
            now=now,
            title=title,
            objective=objective,
            concept=concept,
            agent_id=agent_id,
            cadence=cadence,
            next_run_at=next_run_at,
            inputs=refs,
        )
        await _insert(app, user, MISSIONS, record)
    say("Created mission " + repr(record["title"]) + " with id " + record["id"])
    say("Cadence: " + describe_cadence(record["cadence"]) + "; next run: " + (next_run_at or "none (manual)"))
    for warning in warnings:
        warn(warning)


@missions.command("list")
@user_option
@async_command
async def missions_list(user: str) -> None:
    """List the user's missions, soonest next run first.

    Example usage:

    \b
        mana-ai missions list
        MANA_AI_USER=alice mana-ai missions list
    """
    now = utcnow()
    async with open_app() as app:
        await refresh_snapshots(app.db)
        rows = await _missions(app, user)
        names = {str(a.get("id")): shown(a.get("name")) for a in await _agents(app, user)}
    if not rows:
        say("No missions yet. Create one: mana-ai missions create --title T --objective O --now")
        return
    table = Table(title="Missions of " + user, caption=_ID_CAPTION + "; times in UTC", box=SIMPLE_HEAD)
    for column in ("id", "title", "state", "cadence", "next run", "agent", "iterations"):
        table.add_column(column, no_wrap=column in _NO_WRAP and column != "state", ratio=_RATIOS.get(column))
    short = short_ids(str(m.get("id", "")) for m in rows)
    for m in rows:
        raw = m.get("iterations")
        iterations: list[Any] = raw if isinstance(raw, list) else []
        last = iterations[-1] if iterations and isinstance(iterations[-1], Mapping) else {}
        state = str(m.get("state", "active")) + (" (due)" if is_due(m, now) else "")
        agent_id = m.get("agentId")
        agent = names.get(str(agent_id), str(agent_id) + " (unknown)") if agent_id else "-"
        count = str(len(iterations)) + (", last " + str(last.get("overallStatus")) if last else "")
        table.add_row(
            *(
                Text(v)
                for v in (
                    short[str(m.get("id", ""))],
                    shown(m.get("title")),
                    state,
                    describe_cadence(m.get("cadence")),
                    short_time(m.get("nextRunAt")),
                    agent,
                    count,
                )
            )
        )
    console.print(table)


@missions.command("show")
@click.argument("mission")
@user_option
@async_command
async def missions_show(mission: str, user: str) -> None:
    """Show a mission and every iteration with its plan steps (status, tool, params), summary and errors.

    Example usage:

    \b
        mana-ai missions show 3f2c9a1e
    """
    now = utcnow()
    async with open_app() as app:
        await refresh_snapshots(app.db)
        m = _pick(await _missions(app, user), mission, "mission", "title")
        names = {str(a.get("id")): shown(a.get("name")) for a in await _agents(app, user)}
    _print_mission(m, names, now)


def _print_mission(m: Mapping[str, Any], names: Mapping[str, str], now: dt.datetime) -> None:
    say("Mission " + repr(shown(m.get("title"))) + "  id " + str(m.get("id")))
    say(
        "  state: "
        + str(m.get("state", "active"))
        + "   cadence: "
        + describe_cadence(m.get("cadence"))
        + "   next run: "
        + str(m.get("nextRunAt") or "-")
        + (" (due)" if is_due(m, now) else "")
    )
    agent_id = m.get("agentId")
    if agent_id:
        say("  agent: " + names.get(str(agent_id), "(unknown)") + " (" + str(agent_id) + ")")
    say("  objective: " + shown(m.get("objective")))
    if shown(m.get("conceptMarkdown")):
        say("  concept: " + shown(m.get("conceptMarkdown")))
    inputs = m.get("inputs") if isinstance(m.get("inputs"), list) else []
    if inputs:
        say(
            "  inputs: "
            + ", ".join(
                str(i.get("module")) + "/" + str(i.get("table")) + ":" + str(i.get("id"))
                for i in inputs
                if isinstance(i, Mapping)
            )
        )
    iterations = [i for i in (m.get("iterations") or []) if isinstance(i, Mapping)]
    if not iterations:
        say("No iterations yet." + (" It is due: run `mana-ai tick`." if is_due(m, now) else ""))
        return
    for n, it in enumerate(iterations, 1):
        say("")
        say(
            "Iteration "
            + str(n)
            + "/"
            + str(len(iterations))
            + "  "
            + str(it.get("id", "?"))
            + "  "
            + str(it.get("overallStatus", "?"))
            + "  source "
            + str(it.get("source") or "browser")
            + "  started "
            + str(it.get("startedAt", "-"))
            + "  finished "
            + str(it.get("finishedAt") or "-")
            + ("  stop " + str(it["stopReason"]) if it.get("stopReason") else "")
        )
        if shown(it.get("summary")):
            say("  summary: " + shown(it.get("summary")))
        problem = error_line(it.get("errorDetails"))
        if problem:
            say("  error: " + problem)
        steps = it.get("plan") if isinstance(it.get("plan"), list) else []
        if not steps:
            say("  no plan steps")
            continue
        table = Table(box=SIMPLE_HEAD)
        table.add_column("#", justify="right")
        table.add_column("status")
        table.add_column("tool", no_wrap=True)
        table.add_column("params", overflow="fold")
        table.add_column("summary", overflow="fold")
        for k, step in enumerate(steps, 1):
            table.add_row(Text(str(k)), *(Text(v) for v in step_row(step)))
        console.print(table)


def _mission_state_command(name: str) -> click.Command:
    @click.argument("mission")
    @user_option
    @async_command
    async def command(mission: str, user: str) -> None:
        now = utcnow()
        warnings: list[str] = []

        async with open_app() as app:
            default_tz = await zone_for_user(app.db, user, app.settings.default_tz)

            def fields_for(current: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
                title = repr(shown(current.get("title")))
                state = current.get("state", "active")
                if name == "pause":
                    if state == "paused":
                        return None, "Mission " + title + " is already paused"
                    return {"state": "paused"}, "Mission " + title + " is now paused"
                if state == "active":
                    return None, "Mission " + title + " is already active"
                fields, warning = resume_fields(current, now=now, default_tz=default_tz)
                if warning:
                    warnings.append(warning)
                return fields, "Mission " + title + " is now active; next run: " + str(
                    fields.get("nextRunAt", current.get("nextRunAt")) or "none (manual)"
                )

            await refresh_snapshots(app.db)
            found = _pick(await _missions(app, user), mission, "mission", "title")
            message = await _update(app, user, MISSIONS, str(found["id"]), fields_for, "mission")
        say(message)
        for warning in warnings:
            warn(warning)

    verb = "Pause" if name == "pause" else "Resume"
    extra = (
        "The runner skips a paused mission until it is resumed."
        if name == "pause"
        else "A next run that is missing or already past is replaced by the cadence's next run."
    )
    command.__doc__ = (
        verb
        + " a mission (by id, unique id prefix or title). "
        + extra
        + "\n\nExample usage:\n\n\b\n    mana-ai missions "
        + name
        + " 3f2c9a1e\n"
    )
    return click.command(name)(command)


missions.add_command(_mission_state_command("pause"))
missions.add_command(_mission_state_command("resume"))


# --- demo -------------------------------------------------------------------------------------------------


@click.command()
@user_option
@async_command
async def demo(user: str) -> None:
    """Create a demo agent and one due mission, so the next `mana-ai tick` plans something.

    An existing agent named "Demo-Agent" and its demo mission are reused: a second call adds nothing and
    makes the demo mission due again.

    Example usage:

    \b
        mana-ai demo
        mana-ai tick
        mana-ai missions list
    """
    now = utcnow()
    async with open_app() as app:
        await refresh_snapshots(app.db)
        existing = [
            a
            for a in await _agents(app, user)
            if shown(a.get("name")).casefold() == DEMO_AGENT_NAME.casefold()
        ]
        if existing:
            agent = existing[0]
            if agent.get("state") != "active":
                raise InvalidOption(
                    "the demo agent exists but is "
                    + str(agent.get("state"))
                    + ": run `mana-ai agents resume "
                    + DEMO_AGENT_NAME
                    + "` first"
                )
        else:
            agent = build_agent(
                agent_id=str(uuid.uuid4()),
                now=now,
                name=DEMO_AGENT_NAME,
                role="Plant deinen Tag",
                persona="Du bist ein ruhiger, praktischer Planungsassistent. Schlage wenige, konkrete Schritte vor.",
                max_concurrent=1,
                max_tokens_per_day=50_000,
            )
            await _insert(app, user, AGENTS, agent)
        cadence = DailyCadence(at_hour=7, at_minute=0)
        # Idempotent: the demo mission of this agent is reused (and made due again), never duplicated.
        reused = [
            m
            for m in await _missions(app, user)
            if shown(m.get("title")) == DEMO_MISSION_TITLE and m.get("agentId") == agent["id"]
        ]
        if reused:
            mission = reused[0]
            due_now = to_js_iso(now)

            def make_due(current: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
                if current.get("state", "active") != "active":
                    return None, "is " + str(current.get("state")) + ": `mana-ai missions resume` it first"
                return {"nextRunAt": due_now}, "due now"

            status = await _update(app, user, MISSIONS, str(mission["id"]), make_due, "mission")
            say("Demo agent:   " + DEMO_AGENT_NAME + "  id " + str(agent["id"]) + " (reused)")
            say("Demo mission: " + DEMO_MISSION_TITLE + "  id " + str(mission["id"]) + "  (reused) " + status)
            return
        mission = build_mission(
            mission_id=str(uuid.uuid4()),
            now=now,
            title=DEMO_MISSION_TITLE,
            objective="Schlage mir für heute drei konkrete Aufgaben vor, die mich meinen Zielen näher bringen.",
            concept="Eine Demo-Mission von `mana-ai demo`. Sie läuft täglich um 07:00.",
            agent_id=str(agent["id"]),
            cadence=cadence,
            next_run_at=first_run(cadence, now=now, run_now=True, default_tz=app.settings.default_tz),
        )
        await _insert(app, user, MISSIONS, mission)
    say("Demo agent:   " + DEMO_AGENT_NAME + "  id " + str(agent["id"]) + (" (reused)" if existing else ""))
    say("Demo mission: " + mission["title"] + "  id " + mission["id"] + "  due now")
    say(
        "Next: `mana-ai tick` plans it (with the LLM at MANA_LLM_URL), then `mana-ai missions show "
        + mission["id"][:8]
        + "` shows the plan."
    )


def register(cli: click.Group) -> None:
    """Add the ``agents`` and ``missions`` groups and the ``demo`` command to ``cli``."""
    cli.add_command(agents)
    cli.add_command(missions)
    cli.add_command(demo)
