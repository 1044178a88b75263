"""More mission commands: ``missions run`` (plan one mission now, with live progress), ``missions edit``,
``missions delete``, and ``tools list``.

Writes go through the sync log as the user, like every other data command (:mod:`mana_ai.cli.data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.box import SIMPLE_HEAD
from rich.table import Table
from rich.text import Text

from mana_ai.banner import describe_url
from mana_ai.cli.common import async_command, console, err_console, open_app
from mana_ai.cli.data import (
    MISSIONS,
    _agents,
    _missions,
    _pick,
    _print_mission,
    _update,
    missions,
    say,
    user_option,
)
from mana_ai.cli.progress import FAILED_DECISIONS, ProgressLlm, describe_round
from mana_ai.cli.records import (
    InvalidOption,
    cadence_from_options,
    describe_cadence,
    first_run,
    required_text,
)
from mana_ai.runner.process import process_mission
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.timefmt import to_js_iso, utcnow
from mana_ai.tools.catalog import CATALOG, MODULES
from mana_ai.workbench.context import zone_for_user

_PLAIN: dict[str, Any] = {"markup": False, "highlight": False, "soft_wrap": True}


@missions.command("run")
@click.argument("mission")
@user_option
@async_command
async def missions_run(mission: str, user: str) -> None:
    """Plan one mission now, whatever its next run, and show each LLM round while it runs.

    The mission must be active (a paused one says so). Afterwards the new iteration is shown; the exit code
    is 1 when planning failed.

    Example usage:

    \b
        mana-ai missions run 3f2c9a1e
        mana-ai missions run "Demo: Tagesplanung"
    """
    now_iso = to_js_iso(utcnow())
    async with open_app() as app:
        await refresh_snapshots(app.db)
        found = _pick(await _missions(app, user), mission, "mission", "title")
        mission_id = str(found["id"])
        running = await app.ticker.store.running_claim(user, mission_id)
        if running is not None:
            # Making it due again would turn that run's plan into a stale write-back, thrown away.
            raise InvalidOption(
                f"mission {mission_id[:8]} is being planned right now by {running[0]} (claim until {running[1]});"
                f" its plan will show in `mana-ai missions show {mission_id[:8]}`"
            )

        def due_now(current: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
            state = str(current.get("state", "active"))
            if state != "active":
                raise InvalidOption(
                    f"mission {mission_id[:8]} is {state}: `mana-ai missions resume {mission_id[:8]}` first"
                )
            return {"nextRunAt": now_iso}, ""

        await _update(app, user, MISSIONS, mission_id, due_now, "mission")
        await refresh_snapshots(app.db)
        ticker = app.ticker
        [target] = await ticker.store.missions_by_key([(user, mission_id)])
        agents = await ticker.store.agents_for_users([user])
        ctx = ticker.ctx
        ctx.llm = ProgressLlm(
            ctx.llm, lambda event: err_console.print("  " + describe_round(event), **_PLAIN)
        )
        where = describe_url(app.settings.llm_url)  # never the URL's user or password
        err_console.print(f"planning {mission_id[:8]} with {app.settings.llm_model} at {where} …", **_PLAIN)
        result = await process_mission(ctx, ticker.store, target, agents)
        await refresh_snapshots(app.db)
        latest = _pick(await _missions(app, user), mission_id, "mission", "title")
        names = {str(a.get("id")): str(a.get("name")) for a in await _agents(app, user)}
    line = f"{result.decision}: {result.steps} step(s), {result.tokens:,} tokens"
    say(line + (" — " + result.detail if result.detail else ""))
    raw = latest.get("iterations")
    iterations: list[Any] = raw if isinstance(raw, list) else []
    _print_mission({**latest, "iterations": iterations[-1:]}, names, utcnow())
    if result.decision in FAILED_DECISIONS or result.decision.startswith("skipped"):
        raise SystemExit(1)


@missions.command("edit")
@click.argument("mission")
@click.option("--title", default=None, help="New title.")
@click.option("--objective", default=None, help="New objective.")
@click.option("--concept", default=None, help="New concept text (Markdown).")
@click.option("--every", default=None, help="New interval cadence: 90m, 2h, 1d.")
@click.option("--daily", default=None, help="New daily cadence at HH:MM.")
@click.option("--weekly", default=None, help="New weekly cadence DOW@HH.")
@click.option("--cron", default=None, help="New cron cadence (5 fields).")
@click.option("--manual", is_flag=True, help="No cadence any more.")
@click.option("--tz", default=None, help="Time zone of the new cadence.")
@user_option
@async_command
async def missions_edit(
    mission: str,
    title: str | None,
    objective: str | None,
    concept: str | None,
    every: str | None,
    daily: str | None,
    weekly: str | None,
    cron: str | None,
    manual: bool,
    tz: str | None,
    user: str,
) -> None:
    """Change a mission's text or cadence (a new cadence also sets the next run).

    Example usage:

    \b
        mana-ai missions edit 3f2c9a1e --objective "Plan three tasks for today"
        mana-ai missions edit 3f2c9a1e --daily 08:00 --tz Europe/Berlin
    """
    fields: dict[str, Any] = {}
    if title is not None:
        fields["title"] = required_text(title, "--title")
    if objective is not None:
        fields["objective"] = required_text(objective, "--objective")
    if concept is not None:
        fields["conceptMarkdown"] = concept
    new_cadence = any(v is not None for v in (every, daily, weekly, cron)) or manual
    if tz is not None and not new_cadence:
        raise InvalidOption(
            "--tz is the zone of a new cadence: give --every, --daily, --weekly or --cron too"
        )
    if not fields and not new_cadence:
        raise InvalidOption("nothing to change: give --title, --objective, --concept or a cadence option")
    async with open_app() as app:
        if new_cadence:
            cadence = cadence_from_options(
                every=every, daily=daily, weekly=weekly, cron=cron, manual=manual, timezone=tz
            )
            fields["cadence"] = cadence.to_json()
            # As the runner computes the later runs: a cadence without a zone runs in the user's.
            zone = await zone_for_user(app.db, user, app.settings.default_tz)
            fields["nextRunAt"] = first_run(cadence, now=utcnow(), run_now=False, default_tz=zone)
        await refresh_snapshots(app.db)
        found = _pick(await _missions(app, user), mission, "mission", "title")
        message = await _update(
            app,
            user,
            MISSIONS,
            str(found["id"]),
            lambda current: (fields, "Mission " + repr(str(current.get("title"))) + " updated"),
            "mission",
        )
    say(message + ("; cadence " + describe_cadence(fields["cadence"]) if "cadence" in fields else ""))


@missions.command("delete")
@click.argument("mission")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@user_option
@async_command
async def missions_delete(mission: str, yes: bool, user: str) -> None:
    """Delete a mission (as the web app does: the record gets ``deletedAt`` and is no longer planned).

    Example usage:

    \b
        mana-ai missions delete 3f2c9a1e --yes
    """
    async with open_app() as app:
        await refresh_snapshots(app.db)
        found = _pick(await _missions(app, user), mission, "mission", "title")
        label = repr(str(found.get("title"))) + " (" + str(found["id"])[:8] + ")"
        if not yes and not click.confirm("Delete mission " + label + "?", default=False):
            raise SystemExit(1)
        now_iso = to_js_iso(utcnow())
        message = await _update(
            app,
            user,
            MISSIONS,
            str(found["id"]),
            lambda _current: ({"deletedAt": now_iso}, "Deleted mission " + label),
            "mission",
        )
    say(message)


@click.group()
def tools() -> None:
    """The tools the planner can offer to the model."""


@tools.command("list")
@click.option("--module", "module", default=None, help="Only this module's tools.")
def tools_list(module: str | None) -> None:
    """List the catalog's tools: module, name, whether the model may propose it, parameters.

    Example usage:

    \b
        mana-ai tools list
        mana-ai tools list --module todo
    """
    if module is not None and module not in MODULES:
        raise InvalidOption("unknown module " + repr(module) + "; modules: " + ", ".join(MODULES))
    table = Table(
        box=SIMPLE_HEAD, caption="propose: offered to the model; auto: read tools run in the web app"
    )
    for column in ("module", "tool", "policy", "parameters"):
        table.add_column(column, overflow="fold")
    for tool in CATALOG:
        if module is not None and tool.module != module:
            continue
        params = ", ".join(p.name + ("*" if p.required else "") for p in tool.params)
        table.add_row(*(Text(v) for v in (tool.module, tool.name, tool.default_policy, params)))
    console.print(table)


def register(cli: click.Group) -> None:
    """``missions run|edit|delete`` are added to the ``missions`` group on import; ``tools`` here."""
    cli.add_command(tools)
