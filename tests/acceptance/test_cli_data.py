"""`mana-ai agents|missions|demo` in a subprocess against real Postgres, as the plain service role.

Independent invocations run concurrently (each CLI start costs a few hundred milliseconds); the rows the
commands write are checked with the admin role, field by field, against what the web app would store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from mana_ai.cli.records import build_agent
from mana_ai.db.connector import Database
from mana_ai.planner.recorder import PlannedStep
from mana_ai.runner.iteration import Plan, failed_iteration, plan_to_iteration
from mana_ai.scheduler.cadence import next_run, parse_cadence
from mana_ai.synclog.actor import system_actor, user_actor
from mana_ai.synclog.store import append_change, insert_record
from mana_ai.timefmt import is_js_iso, parse_iso, to_js_iso, utcnow

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
USER_ACTOR = {"kind": "user", "principalId": "local", "displayName": "Du"}


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def ok(self) -> Result:
        assert self.code == 0, (self.args, self.code, self.out, self.err)
        assert "Traceback" not in self.err, self.err
        return self

    def new_id(self) -> str:
        match = re.search(r"with id (" + UUID4.pattern + ")", self.out)
        assert match, self.out
        return match.group(1)

    def one_error_line(self, *fragments: str) -> None:
        assert self.code != 0, (self.args, self.out)
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, (self.args, self.err)
        assert lines[0].startswith("Error: "), lines
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def cli_env(app_db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANA_", "SYNC_", "TICK_"))}
    env.update(SYNC_DATABASE_URL=app_db_url, TICK_ENABLED="false", COLUMNS="250", NO_COLOR="1")
    return env


async def cli(env: Mapping[str, str], *args: str) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mana_ai",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Result(args, proc.returncode, out.decode(), err.decode())


async def rows(admin_db: Database, record_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await admin_db.fetch(
        "SELECT app_id, table_name, user_id, op, data, field_meta, actor, origin, client_id, space_id,"
        " schema_version FROM public.sync_changes WHERE record_id = %s ORDER BY created_at, id",
        (record_id,),
    )
    return found


def assert_cli_row(row: Mapping[str, Any], *, table: str, op: str, user: str = "local") -> None:
    assert row["app_id"] == "ai"
    assert row["table_name"] == table
    assert row["user_id"] == user
    assert row["op"] == op
    assert row["actor"] == {**USER_ACTOR, "principalId": user}
    assert row["origin"] == "user"
    assert row["client_id"] == "mana-ai-cli"
    assert row["space_id"] is None
    assert row["schema_version"] == 1


def assert_update(row: Mapping[str, Any], table: str, data: Mapping[str, Any]) -> None:
    assert_cli_row(row, table=table, op="update")
    assert row["data"] == data
    assert set(row["field_meta"]) == set(data)
    assert len(set(row["field_meta"].values())) == 1
    assert all(is_js_iso(v) for v in row["field_meta"].values())


async def test_agents_create_list_pause_resume_archive(cli_env: dict[str, str], admin_db: Database) -> None:
    ada, bob = await asyncio.gather(
        cli(
            cli_env,
            "agents",
            "create",
            "--name",
            "Ada",
            "--role",
            "Plant die Woche",
            "--persona",
            "Sei knapp.",
            "--max-concurrent",
            "2",
            "--max-tokens-per-day",
            "5000",
            "--deny-tool",
            "create_task",
            "--deny-module",
            "finance",
        ),
        cli(cli_env, "agents", "create", "--name", "Bob"),
    )
    ada_id, bob_id = ada.ok().new_id(), bob.ok().new_id()
    assert "Created agent 'Ada' with id " + ada_id in ada.out

    (insert,) = await rows(admin_db, ada_id)
    assert_cli_row(insert, table="agents", op="insert")
    assert insert["field_meta"] == {}
    data = insert["data"]
    assert is_js_iso(data["createdAt"]) and data["updatedAt"] == data["createdAt"]
    assert data == {
        "id": ada_id,
        "createdAt": data["createdAt"],
        "updatedAt": data["createdAt"],
        "name": "Ada",
        "role": "Plant die Woche",
        "systemPrompt": "Sei knapp.",
        "policy": {
            "tools": {"create_task": "deny"},
            "defaultsByModule": {"finance": "deny"},
            "defaultForAi": "propose",
        },
        "maxTokensPerDay": 5000,
        "maxConcurrentMissions": 2,
        "state": "active",
    }
    (bob_row,) = await rows(admin_db, bob_id)
    assert bob_row["data"]["policy"] == {"tools": {}, "defaultsByModule": {}, "defaultForAi": "propose"}
    assert "maxTokensPerDay" not in bob_row["data"] and bob_row["data"]["maxConcurrentMissions"] == 1

    duplicate, paused = await asyncio.gather(
        cli(cli_env, "agents", "create", "--name", "ada"),
        cli(cli_env, "agents", "pause", "Ada"),
    )
    duplicate.one_error_line("an agent named 'ada' already exists")
    assert "Agent 'Ada' is now paused" in paused.ok().out

    resumed, archived = await asyncio.gather(
        cli(cli_env, "agents", "resume", ada_id[:8]),
        cli(cli_env, "agents", "archive", bob_id),
    )
    assert "Agent 'Ada' is now active" in resumed.ok().out
    assert "Agent 'Bob' is now archived" in archived.ok().out

    ada_rows = await rows(admin_db, ada_id)
    assert [r["op"] for r in ada_rows] == ["insert", "update", "update"]
    assert_update(ada_rows[1], "agents", {"state": "paused"})
    assert_update(ada_rows[2], "agents", {"state": "active"})
    assert ada_rows[1]["field_meta"]["state"] < ada_rows[2]["field_meta"]["state"]
    assert_update((await rows(admin_db, bob_id))[1], "agents", {"state": "archived"})

    again, listing = await asyncio.gather(
        cli(cli_env, "agents", "archive", "Bob"),
        cli(cli_env, "agents", "list"),
    )
    assert "Agent 'Bob' is already archived" in again.ok().out
    assert len(await rows(admin_db, bob_id)) == 2  # a no-op writes nothing
    lines = listing.ok().out.splitlines()
    ada_line = next(line for line in lines if ada_id[:8] in line)
    bob_line = next(line for line in lines if bob_id[:8] in line)
    for text in ("Ada", "Plant die Woche", "active", "5000", "create_task", "finance.*"):
        assert text in ada_line, (text, ada_line)
    for text in ("Bob", "archived", "unlimited"):
        assert text in bob_line, (text, bob_line)
    # Snapshots were refreshed by the CLI: the runner sees the same state.
    snapshot = await admin_db.fetchrow(
        "SELECT record FROM mana_ai.agent_snapshots WHERE user_id = 'local' AND agent_id = %s", (bob_id,)
    )
    assert snapshot is not None and snapshot["record"]["state"] == "archived"


async def _write_iterations(admin_db: Database, mission_id: str) -> None:
    """Two iterations as the runner writes them back: a plan with steps, then a failure."""
    now = to_js_iso(utcnow())
    planned = plan_to_iteration(
        Plan(
            summary="Zwei Aufgaben für heute",
            steps=(
                PlannedStep("Milch kaufen", "create_task", {"title": "Milch kaufen", "priority": "high"}),
                PlannedStep("Notiz anlegen", "create_note", {"title": "Ideen"}),
            ),
        ),
        "it-1",
        now,
    )
    failed = failed_iteration(
        "it-2", now, name="ProviderError", message="LLM unreachable", phase="calling-llm"
    )
    async with admin_db.with_user("local") as conn:
        await append_change(
            conn,
            user_id="local",
            app_id="ai",
            table="aiMissions",
            record_id=mission_id,
            op="update",
            data={"iterations": [planned, failed]},
            field_meta={"iterations": now},
            client_id="mana-ai-runner",
            actor=system_actor(),
        )


async def test_missions_create_each_cadence_list_show_pause_resume(
    cli_env: dict[str, str], db: Database, admin_db: Database
) -> None:
    # The agent comes from another device (agent creation itself is covered above).
    agent_id = str(uuid.uuid4())
    async with db.with_user("local") as conn:
        await insert_record(
            conn,
            user_id="local",
            app_id="ai",
            table="agents",
            client_id="web",
            record=build_agent(agent_id=agent_id, now=utcnow(), name="Planer"),
            actor=user_actor("local"),
        )
    creates = await asyncio.gather(
        cli(
            cli_env,
            "missions",
            "create",
            "--title",
            "Interval",
            "--objective",
            "Plan my week",
            "--every",
            "90m",
            "--agent",
            "planer",
            "--concept",
            "# Konzept",
            "--input",
            "notes:n1",
            "--input",
            "tasks:t1",
            "--input",
            "userContext",
        ),
        cli(
            cli_env,
            "missions",
            "create",
            "--title",
            "Daily",
            "--objective",
            "O",
            "--daily",
            "07:30",
            "--tz",
            "Europe/Berlin",
        ),
        cli(
            cli_env,
            "missions",
            "create",
            "--title",
            "Weekly",
            "--objective",
            "O",
            "--weekly",
            "mon@9",
            "--now",
        ),
        cli(
            cli_env,
            "missions",
            "create",
            "--title",
            "Cron",
            "--objective",
            "O",
            "--cron",
            "30 2 * * 1-5",
            "--tz",
            "America/New_York",
        ),
        cli(cli_env, "missions", "create", "--title", "Manual", "--objective", "O", "--manual"),
    )
    ids = {r.args[r.args.index("--title") + 1]: r.ok().new_id() for r in creates}
    assert "Cadence: cron 30 2 * * 1-5 America/New_York; next run: 20" in creates[3].out

    inserts: dict[str, dict[str, Any]] = {}
    for title, mission_id in ids.items():
        (row,) = await rows(admin_db, mission_id)
        assert_cli_row(row, table="aiMissions", op="insert")
        assert row["field_meta"] == {}
        inserts[title] = row["data"]

    interval = inserts["Interval"]
    created = interval["createdAt"]
    assert interval == {
        "id": ids["Interval"],
        "createdAt": created,
        "updatedAt": created,
        "title": "Interval",
        "conceptMarkdown": "# Konzept",
        "objective": "Plan my week",
        "inputs": [
            {"module": "notes", "table": "notes", "id": "n1"},
            {"module": "todo", "table": "tasks", "id": "t1"},
            {"module": "profile", "table": "userContext", "id": "singleton"},
        ],
        "cadence": {"kind": "interval", "everyMinutes": 90},
        "state": "active",
        "iterations": [],
        "nextRunAt": interval["nextRunAt"],
        "agentId": agent_id,
    }
    assert parse_iso(interval["nextRunAt"]) - parse_iso(created) == dt.timedelta(minutes=90)
    assert inserts["Daily"]["cadence"] == {
        "kind": "daily",
        "atHour": 7,
        "atMinute": 30,
        "timezone": "Europe/Berlin",
    }
    assert inserts["Weekly"]["cadence"] == {"kind": "weekly", "dayOfWeek": 1, "atHour": 9}
    assert inserts["Cron"]["cadence"] == {
        "kind": "cron",
        "expression": "30 2 * * 1-5",
        "timezone": "America/New_York",
    }
    assert inserts["Manual"]["cadence"] == {"kind": "manual"}
    for title in ("Daily", "Cron"):
        record = inserts[title]
        expected = next_run(
            parse_cadence(record["cadence"]), after=parse_iso(record["createdAt"]), default_tz="UTC"
        )
        assert expected is not None
        assert record["nextRunAt"] == to_js_iso(expected), title
        assert "agentId" not in record
    assert "nextRunAt" not in inserts["Manual"]
    assert inserts["Weekly"]["nextRunAt"] == inserts["Weekly"]["createdAt"]  # --now

    await _write_iterations(admin_db, ids["Interval"])
    listing, show = await asyncio.gather(
        cli(cli_env, "missions", "list"),
        cli(cli_env, "missions", "show", ids["Interval"][:8]),
    )
    paused_daily, paused_weekly = await asyncio.gather(
        cli(cli_env, "missions", "pause", ids["Daily"]),
        cli(cli_env, "missions", "pause", "weekly"),  # by title
    )
    lines = listing.ok().out.splitlines()

    def line_of(title: str) -> str:
        return next(line for line in lines if ids[title][:8] in line)

    for title, cadence in (
        ("Interval", "every 1h30m"),
        ("Daily", "daily 07:30 Europe/Berlin"),
        ("Weekly", "weekly Mon 09:00"),
        ("Cron", "cron 30 2 * * 1-5 America/New_York"),
        ("Manual", "manual"),
    ):
        assert cadence in line_of(title), (cadence, line_of(title))
    assert "Planer" in line_of("Interval") and "2, last failed" in line_of("Interval")
    assert "(due)" in line_of("Weekly") and "(due)" not in line_of("Daily")

    out = show.ok().out
    for text in (
        "Mission 'Interval'",
        "cadence: every 1h30m",
        "agent: Planer (" + agent_id + ")",
        "objective: Plan my week",
        "concept: # Konzept",
        "inputs: notes/notes:n1, todo/tasks:t1, profile/userContext:singleton",
        "Iteration 1/2  it-1  awaiting-review  source server",
        "summary: Zwei Aufgaben für heute",
        "Iteration 2/2  it-2  failed",
        "error: ProviderError: LLM unreachable (phase calling-llm)",
    ):
        assert text in out, (text, out)
    step_lines = [line for line in out.splitlines() if "create_task" in line or "create_note" in line]
    assert len(step_lines) == 2
    assert "staged" in step_lines[0] and '{"title":"Milch kaufen","priority":"high"}' in step_lines[0]
    assert "Milch kaufen" in step_lines[0]
    assert '{"title":"Ideen"}' in step_lines[1]

    for result, title in ((paused_daily, "Daily"), (paused_weekly, "Weekly")):
        assert "Mission '" + title + "' is now paused" in result.ok().out
        assert_update((await rows(admin_db, ids[title]))[-1], "aiMissions", {"state": "paused"})

    resumed_daily, resumed_weekly, resume_active = await asyncio.gather(
        cli(cli_env, "missions", "resume", ids["Daily"]),
        cli(cli_env, "missions", "resume", ids["Weekly"]),
        cli(cli_env, "missions", "resume", ids["Interval"]),
    )
    assert "Mission 'Interval' is already active" in resume_active.ok().out
    assert len(await rows(admin_db, ids["Interval"])) == 2  # the insert and the runner's iterations only
    # A future nextRunAt is kept; a past one is replaced by the cadence's next run after now.
    assert (
        "Mission 'Daily' is now active; next run: " + inserts["Daily"]["nextRunAt"] in resumed_daily.ok().out
    )
    assert_update((await rows(admin_db, ids["Daily"]))[-1], "aiMissions", {"state": "active"})
    resume_row = (await rows(admin_db, ids["Weekly"]))[-1]
    fresh = resume_row["data"]["nextRunAt"]
    assert_update(resume_row, "aiMissions", {"state": "active", "nextRunAt": fresh})
    fresh_at = parse_iso(fresh)
    assert fresh_at > parse_iso(inserts["Weekly"]["nextRunAt"])
    assert fresh_at > parse_iso(resume_row["field_meta"]["state"]) - dt.timedelta(seconds=5)
    assert (fresh_at.weekday(), fresh_at.hour, fresh_at.minute, fresh_at.second) == (
        0,
        9,
        0,
        0,
    )  # Monday 09:00 UTC
    assert fresh_at - parse_iso(inserts["Weekly"]["createdAt"]) <= dt.timedelta(days=7)
    assert "Mission 'Weekly' is now active; next run: " + fresh in resumed_weekly.ok().out


async def test_bad_input_is_one_clear_line(cli_env: dict[str, str], admin_db: Database) -> None:
    # The other malformed options fail the same way before any database access: see tests/unit/test_cli_records.py.
    results = await asyncio.gather(
        cli(cli_env, "missions", "create", "--title", "T", "--objective", "O", "--cron", "61 * * * *"),
        cli(
            cli_env,
            "missions",
            "create",
            "--title",
            "T",
            "--objective",
            "O",
            "--daily",
            "7:30",
            "--tz",
            "Mars/X",
        ),
        cli(cli_env, "missions", "create", "--title", "T", "--objective", "O", "--agent", "nobody"),
        cli(cli_env, "missions", "show", "no-such-mission"),
        cli(cli_env, "agents", "pause", "nobody"),
    )
    expected = [
        ("invalid cron expression '61 * * * *'",),
        ("unknown time zone 'Mars/X'",),
        ("unknown agent 'nobody'", "mana-ai agents list"),
        ("unknown mission 'no-such-mission'", "mana-ai missions list"),
        ("unknown agent 'nobody'",),
    ]
    for result, fragments in zip(results, expected, strict=True):
        result.one_error_line(*fragments)
    count = await admin_db.fetchrow("SELECT count(*) AS n FROM public.sync_changes")
    assert count is not None and count["n"] == 0


async def test_demo_creates_a_due_mission(cli_env: dict[str, str], admin_db: Database) -> None:
    env = {**cli_env, "MANA_AI_USER": "alice"}
    first = (await cli(env, "demo")).ok()
    second = (await cli(env, "demo")).ok()
    assert "mana-ai tick" in first.out
    agent_ids = {UUID4.search(r.out.split("Demo agent:")[1]).group(0) for r in (first, second)}  # type: ignore[union-attr]
    assert len(agent_ids) == 1 and "(reused)" in second.out
    mission_ids = [UUID4.search(r.out.split("Demo mission:")[1]).group(0) for r in (first, second)]  # type: ignore[union-attr]
    # Idempotent: the second call reuses the demo mission (and makes it due again) instead of adding one.
    assert mission_ids[0] == mission_ids[1] and "(reused) due now" in second.out
    mission_ids = mission_ids[:1]

    (agent_row,) = await rows(admin_db, agent_ids.pop())
    assert_cli_row(agent_row, table="agents", op="insert", user="alice")
    assert agent_row["data"]["name"] == "Demo-Agent" and agent_row["data"]["state"] == "active"
    mission_row, due_again = await rows(admin_db, mission_ids[0])
    assert_cli_row(mission_row, table="aiMissions", op="insert", user="alice")
    assert mission_row["data"]["nextRunAt"] == mission_row["data"]["createdAt"]
    assert due_again["op"] == "update" and set(due_again["data"]) == {"nextRunAt"}
    assert mission_row["data"]["agentId"] == agent_row["data"]["id"]

    alice = await cli(env, "missions", "list")
    due = [line for line in alice.ok().out.splitlines() if "Demo: Tagesplanung" in line]
    assert len(due) == 1 and all("(due)" in line and "Demo-Agent" in line for line in due)
    assert sorted(line.split()[0] for line in due) == sorted(m[:8] for m in mission_ids)
    # The runner's own due query finds it.
    found = await admin_db.fetch(
        "SELECT s.record->>'id' AS id FROM mana_ai.mission_snapshots s WHERE s.user_id = 'alice'"
        " AND s.record->>'state' = 'active' AND s.record->>'nextRunAt' <= %s",
        (to_js_iso(utcnow()),),
    )
    assert sorted(r["id"] for r in found) == sorted(mission_ids)


async def device_update(
    db: Database, app_id: str, table: str, record_id: str, data: dict[str, Any], *, op: str = "update"
) -> None:
    """A row from the user's device, stamped a moment from now (newer than the CLI's writes)."""
    stamp = to_js_iso(utcnow() + dt.timedelta(seconds=1))
    async with db.with_user("local") as conn:
        await append_change(
            conn,
            user_id="local",
            app_id=app_id,
            table=table,
            record_id=record_id,
            op=op,
            data=data,
            field_meta={} if op == "insert" else dict.fromkeys(data, stamp),
            client_id="web",
            actor=user_actor("local"),
        )


async def test_a_mission_without_a_zone_first_runs_in_the_users_zone(
    cli_env: dict[str, str], db: Database, admin_db: Database
) -> None:
    # The runner computes every later run of a cadence without a zone in the user's zone (their default
    # calendar's); the first run the CLI sets must use the same one, not the deployment's (UTC here).
    calendar = {"id": "c1", "name": "Main", "timezone": "America/New_York", "isDefault": True}
    await device_update(db, "calendar", "calendars", "c1", calendar, op="insert")
    env = {**cli_env, "TZ": "UTC", "MANA_AI_DEFAULT_TZ": "UTC"}
    args = ("missions", "create", "--title", "Briefing", "--objective", "O", "--daily", "07:30")
    mission_id = (await cli(env, *args)).ok().new_id()
    cadence = parse_cadence({"kind": "daily", "atHour": 7, "atMinute": 30})

    def in_new_york() -> dt.datetime | None:
        return next_run(cadence, after=utcnow(), default_tz="America/New_York")

    (insert,) = await rows(admin_db, mission_id)
    assert parse_iso(insert["data"]["nextRunAt"]) == in_new_york()
    # Paused, and its time passes meanwhile: resuming sets the next run again.
    (await cli(env, "missions", "pause", mission_id)).ok()
    past = to_js_iso(utcnow() - dt.timedelta(days=2))
    await device_update(db, "ai", "aiMissions", mission_id, {"nextRunAt": past})
    (await cli(env, "missions", "resume", mission_id)).ok()
    resumed = (await rows(admin_db, mission_id))[-1]["data"]
    assert parse_iso(resumed["nextRunAt"]) == in_new_york()
    # A new cadence from `missions edit` too.
    (await cli(env, "missions", "edit", mission_id, "--daily", "06:15")).ok()
    edited = (await rows(admin_db, mission_id))[-1]["data"]
    at_six = parse_cadence({"kind": "daily", "atHour": 6, "atMinute": 15})
    assert parse_iso(edited["nextRunAt"]) == next_run(at_six, after=utcnow(), default_tz="America/New_York")
    # --tz alone changed nothing and said nothing: it belongs to a new cadence.
    (await cli(env, "missions", "edit", mission_id, "--tz", "Europe/Berlin")).one_error_line(
        "--tz", "--daily"
    )
    assert (await rows(admin_db, mission_id))[-1]["data"] == edited
