"""Workbench commands for scripting: ``proposals list|approve|reject`` and ``goals list|create``.

They do what the workbench page does (:mod:`mana_ai.workbench`): the same decisions, written the same way
(through the sync log, under the mission's record lock, idempotent), with the same executors and goal tracker.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import click
import orjson
from rich.box import SIMPLE_HEAD
from rich.table import Table
from rich.text import Text

from mana_ai.app import App
from mana_ai.cli.common import async_command, console, open_app
from mana_ai.cli.data import say, user_option, warn
from mana_ai.cli.records import InvalidOption, match_ref, short_ids, short_time
from mana_ai.privacy.keyfiles import read_master_key_file
from mana_ai.timefmt import utcnow
from mana_ai.workbench.decide import Decider, DecisionResult
from mana_ai.workbench.goals import GOAL_TEMPLATES, goal_from_tool, goal_record
from mana_ai.workbench.proposals import Proposal, StepRef
from mana_ai.workbench.store import WorkbenchStore

_MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer JavaScript (and so the web app) reads exactly."""


def _master_key_option(func: Any) -> Any:
    return click.option(
        "--master-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="MANA_AI_MASTER_KEY_FILE",
        show_envvar=True,
        default=None,
        help="The user's master key (32 bytes raw, hex or base64): records are encrypted as the web app does.",
    )(func)


def params_from_json(text: str) -> dict[str, Any]:
    """``--params``: a JSON object.

    Raises:
        InvalidOption: not a JSON object.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidOption("--params must be a JSON object: " + str(exc)) from None
    if not isinstance(value, dict):
        raise InvalidOption("--params must be a JSON object")
    return value


def target_number(value: float) -> int | float:
    """``--target`` as the goal stores it: a whole number as an int (as JSON writes it), else the float.

    Raises:
        InvalidOption: not a finite number (``inf`` overflowed ``int()``; ``1e308`` overflowed JSON's integers).
    """
    if not math.isfinite(value):
        raise InvalidOption("--target must be a finite number, got " + str(value))
    return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value


def _store(app: App) -> WorkbenchStore:
    return WorkbenchStore(app.db, ttl=app.settings.proposal_ttl, tz=app.settings.default_tz)


def _decider(app: App, master_key_file: Path | None) -> Decider:
    key = read_master_key_file(master_key_file) if master_key_file is not None else None
    return Decider(
        app.db,
        ttl=app.settings.proposal_ttl,
        tz=app.settings.default_tz,
        master_key=key,
        executor=app.settings.executor,
    )


async def _open_proposals(app: App, user: str) -> list[Proposal]:
    store = _store(app)
    await store.refresh()
    now = utcnow()
    expired = await store.expired(user, now=now)
    if expired:
        count = await _decider(app, None).expire(user, [p.ref for p in expired], now=now)
        if count:
            warn(str(count) + " proposal(s) older than MANA_AI_PROPOSAL_TTL expired")
        await store.refresh()
    return await store.all_open(user, now=now)


def _short_ids(proposals: list[Proposal]) -> dict[StepRef, str]:
    """Short display ids: the iteration's shortest unique prefix plus the step's suffix (``3f2c9a1e-0``).

    Step ids are ``<iteration id>-<n>`` (SPEC §11), so prefixes of step ids alone are never short.
    """
    iterations = short_ids(p.ref.iteration_id for p in proposals)
    out: dict[StepRef, str] = {}
    for p in proposals:
        step = p.ref.step_id
        suffix = step[len(p.ref.iteration_id) :] if step.startswith(p.ref.iteration_id) else "/" + step
        out[p.ref] = iterations[p.ref.iteration_id] + suffix
    return out


def _resolve(ref: str, proposals: list[Proposal]) -> StepRef:
    ref = ref.strip()
    if ref.count("/") == 2:
        return StepRef.parse(ref)
    for step_ref, short in _short_ids(proposals).items():
        if ref in (short, step_ref.step_id):
            return step_ref
    step = match_ref(ref, [(p.ref.step_id, p.ref.step_id) for p in proposals], kind="proposal")
    return next(p.ref for p in proposals if p.ref.step_id == step)


def _report(result: DecisionResult) -> None:
    status = "expired" if result.status == "skipped" else result.status
    line = "Proposal " + result.ref.step_id + ": " + status
    if result.already:
        line += " (decided earlier, nothing done now)"
    elif result.outcome == "pending":
        line += " — waits for the mana app (no executor in mana-ai)"
    say(line)
    if result.message and not result.already:
        say("  " + result.message)
    if result.status == "failed":
        raise click.ClickException(result.error or result.message)


@click.group()
def proposals() -> None:
    """Review the steps the runner planned: list, approve (and run), reject with feedback."""


@proposals.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@user_option
@async_command
async def proposals_list(as_json: bool, user: str) -> None:
    """List open proposals, oldest mission activity last. Stale ones expire first.

    Example usage:

    \b
        mana-ai proposals list
        mana-ai proposals list --json | jq .tool
    """
    async with open_app() as app:
        found = await _open_proposals(app, user)
    if as_json:
        for p in found:
            say(
                orjson.dumps(
                    {
                        "id": p.ref.key,
                        "mission": p.mission_title,
                        "agent": p.agent_name,
                        "tool": p.tool_name,
                        "params": p.params,
                        "summary": p.summary,
                        "expiresAt": p.expires_at,
                    }
                ).decode()
            )
        return
    if not found:
        say("No open proposals.")
        return
    table = Table(
        title="Open proposals of " + user,
        box=SIMPLE_HEAD,
        caption="arguments: --json",
    )
    for column, ratio in (("id", None), ("tool", None), ("mission", 2), ("summary", 3), ("expires", None)):
        table.add_column(column, no_wrap=ratio is None, ratio=ratio, overflow="fold")
    short = _short_ids(found)
    for p in found:
        table.add_row(
            *(
                Text(v)
                for v in (
                    short[p.ref],
                    p.tool_name,
                    p.mission_title + " (" + (p.agent_name or "Mana") + ")",
                    p.summary,
                    short_time(p.expires_at),
                )
            )
        )
    console.print(table)


@proposals.command("approve")
@click.argument("proposal")
@click.option("--params", "params_json", default=None, help="Edited arguments as a JSON object (validated).")
@_master_key_option
@user_option
@async_command
async def proposals_approve(
    proposal: str, params_json: str | None, master_key_file: Path | None, user: str
) -> None:
    """Approve a proposal and run it (tools without an executor wait for the mana app).

    PROPOSAL is the id `proposals list` shows, a step id, or mission/iteration/step.

    Example usage:

    \b
        mana-ai proposals approve 3f2c9a1e
        mana-ai proposals approve 3f2c9a1e --params '{"title": "Einkaufen", "priority": "high"}'
    """
    params = params_from_json(params_json) if params_json is not None else None
    async with open_app() as app:
        ref = _resolve(proposal, await _open_proposals(app, user))
        result = await _decider(app, master_key_file).approve(user, ref, params=params)
    _report(result)


@proposals.command("reject")
@click.argument("proposal")
@click.option("--feedback", default=None, help="Why: the agent sees it in its next planning round.")
@user_option
@async_command
async def proposals_reject(proposal: str, feedback: str | None, user: str) -> None:
    """Reject a proposal, optionally with feedback for the agent.

    Example usage:

    \b
        mana-ai proposals reject 3f2c9a1e --feedback "Nicht heute, lieber am Wochenende"
    """
    async with open_app() as app:
        ref = _resolve(proposal, await _open_proposals(app, user))
        result = await _decider(app, None).reject(user, ref, feedback=feedback)
    _report(result)


@click.group()
def goals() -> None:
    """Goals the tracker moves when approved steps log drinks, complete tasks, … (companion/companionGoals)."""


@goals.command("list")
@user_option
@async_command
async def goals_list(user: str) -> None:
    """List goals with their progress in the current period.

    Example usage:

    \b
        mana-ai goals list
    """
    async with open_app() as app:
        found = await _store(app).goals(user)
    if not found:
        say("No goals yet. Create one: mana-ai goals create --template tpl-water-daily")
        return
    table = Table(title="Goals of " + user, box=SIMPLE_HEAD)
    for column in ("id", "title", "event", "progress", "status"):
        table.add_column(column, overflow="fold")
    short = short_ids(str(g.get("id", "")) for g in found)
    for g in found:
        target: dict[str, Any] = g["target"] if isinstance(g.get("target"), dict) else {}
        metric: dict[str, Any] = g["metric"] if isinstance(g.get("metric"), dict) else {}
        progress = (
            str(g.get("currentValue", 0))
            + " / "
            + str(target.get("value"))
            + " per "
            + str(target.get("period"))
        )
        table.add_row(
            *(
                Text(v)
                for v in (
                    short[str(g.get("id", ""))],
                    str(g.get("title", "")),
                    str(metric.get("eventType", "")),
                    progress,
                    str(g.get("status", "")),
                )
            )
        )
    console.print(table)


@goals.command("create")
@click.option(
    "--template", type=click.Choice(sorted(GOAL_TEMPLATES)), default=None, help="Start from a template."
)
@click.option("--title", default=None, help="Title of a custom goal.")
@click.option("--event", "event_type", default=None, help="Domain event to count, e.g. DrinkLogged.")
@click.option("--target", type=float, default=None, help="Target value per period.")
@click.option("--period", type=click.Choice(["day", "week", "month"]), default="day", show_default=True)
@click.option("--comparison", type=click.Choice(["gte", "lte"]), default="gte", show_default=True)
@click.option("--filter", "filter_", default=None, help="Only events whose payload has FIELD=VALUE.")
@click.option("--sum-field", default=None, help="Sum this payload field instead of counting events.")
@click.option("--module", default="companion", show_default=True, help="Module the goal belongs to.")
@user_option
@async_command
async def goals_create(
    template: str | None,
    title: str | None,
    event_type: str | None,
    target: float | None,
    period: str,
    comparison: str,
    filter_: str | None,
    sum_field: str | None,
    module: str,
    user: str,
) -> None:
    """Create a goal from a template or from options.

    Example usage:

    \b
        mana-ai goals create --template tpl-water-daily
        mana-ai goals create --title "2 l Wasser" --event DrinkLogged --filter drinkType=water \\
            --sum-field quantityMl --target 2000
    """
    async with open_app() as app:
        now, tz = utcnow(), app.settings.default_tz
        if template is not None:
            record = goal_from_tool(str(uuid.uuid4()), {"templateId": template}, now=now, tz=tz)
        else:
            metric: dict[str, Any] = {
                "source": "event_sum" if sum_field else "event_count",
                "eventType": event_type or "",
            }
            if sum_field:
                metric["sumField"] = sum_field
            if filter_:
                field, sep, value = filter_.partition("=")
                if not sep or not field.strip() or not value.strip():
                    raise InvalidOption("--filter must look like FIELD=VALUE")
                metric["filterField"], metric["filterValue"] = field.strip(), value.strip()
            value_number = target_number(target) if target is not None else None
            record = goal_record(
                str(uuid.uuid4()),
                title=title or "",
                metric=metric,
                target={"value": value_number, "period": period, "comparison": comparison},
                module_id=module,
                now=now,
                tz=tz,
            )
        await _store(app).create_goal(user, record)
    say("Created goal " + repr(record["title"]) + " with id " + record["id"])


def register(cli: click.Group) -> None:
    """Add the ``proposals`` and ``goals`` groups to ``cli``."""
    cli.add_command(proposals)
    cli.add_command(goals)
