"""The pure builders behind `mana-ai agents|missions|demo` (mana_ai.cli.records)."""

from __future__ import annotations

import datetime as dt

import click
import pytest
from click.testing import CliRunner

from mana_ai.cli import data
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
    parse_every,
    parse_input_ref,
    parse_weekly,
    resume_fields,
    short_ids,
    short_time,
    shown,
    step_row,
)
from mana_ai.scheduler.cadence import (
    CronCadence,
    DailyCadence,
    IntervalCadence,
    InvalidCadence,
    ManualCadence,
    WeeklyCadence,
)

NOW = dt.datetime(2026, 3, 28, 12, 0, 0, 123456, tzinfo=dt.UTC)
NOW_ISO = "2026-03-28T12:00:00.123Z"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("90m", 90), ("90min", 90), ("2h", 120), ("1d", 1440), ("1h30m", 90), (" 1d 2h ", 1560)],
)
def test_parse_every(text: str, minutes: int) -> None:
    assert parse_every(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1.5h", "m", "30s", "h1"])
def test_parse_every_rejects(text: str) -> None:
    with pytest.raises(InvalidOption, match="--every must look like"):
        parse_every(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mon@9", (1, 9)),
        ("Monday@09:00", (1, 9)),
        ("0@7", (0, 7)),
        ("so@7", (0, 7)),
        ("Sa@23", (6, 23)),
        ("do@5", (4, 5)),
    ],
)
def test_parse_weekly(text: str, expected: tuple[int, int]) -> None:
    assert parse_weekly(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("mon", "day@hour"), ("someday@9", "unknown day"), ("mon@9:30", "full hour"), ("mon@nine", "time like")],
)
def test_parse_weekly_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_weekly(text)


def test_cadence_from_options_each_kind() -> None:
    assert cadence_from_options() == ManualCadence()
    assert cadence_from_options(manual=True, timezone="Europe/Berlin") == ManualCadence(
        timezone="Europe/Berlin"
    )
    assert cadence_from_options(every="2h") == IntervalCadence(every_minutes=120)
    assert cadence_from_options(daily="7:05", timezone="Europe/Berlin") == DailyCadence(
        7, 5, timezone="Europe/Berlin"
    )
    assert cadence_from_options(weekly="fri@18") == WeeklyCadence(5, 18)
    assert cadence_from_options(cron=" 30  2 * * 1-5 ") == CronCadence("30 2 * * 1-5")


def test_cadence_from_options_errors() -> None:
    with pytest.raises(InvalidOption, match="choose one cadence, not --every and --cron"):
        cadence_from_options(every="1h", cron="* * * * *")
    with pytest.raises(InvalidCadence, match="unknown time zone 'Mars/Olympus'"):
        cadence_from_options(daily="07:00", timezone="Mars/Olympus")
    with pytest.raises(InvalidCadence, match="invalid cron expression"):
        cadence_from_options(cron="61 * * * *")
    with pytest.raises(InvalidCadence, match="atHour must be between 0 and 23"):
        cadence_from_options(daily="25:00")
    with pytest.raises(InvalidCadence, match="everyMinutes must be between 1"):
        cadence_from_options(every="0m")


def test_describe_cadence() -> None:
    assert describe_cadence({"kind": "manual"}) == "manual"
    assert describe_cadence({"kind": "interval", "everyMinutes": 90}) == "every 1h30m"
    assert describe_cadence({"kind": "daily", "atHour": 7, "atMinute": 5, "timezone": "Europe/Berlin"}) == (
        "daily 07:05 Europe/Berlin"
    )
    assert describe_cadence({"kind": "weekly", "dayOfWeek": 0, "atHour": 9}) == "weekly Sun 09:00"
    assert describe_cadence({"kind": "cron", "expression": "0 * * * *"}) == "cron 0 * * * *"
    assert describe_cadence({"kind": "hourly"}).startswith("invalid (unknown cadence kind 'hourly'")


def test_first_run() -> None:
    assert first_run(ManualCadence(), now=NOW, run_now=False, default_tz="UTC") is None
    assert first_run(ManualCadence(), now=NOW, run_now=True, default_tz="UTC") == NOW_ISO
    assert (
        first_run(IntervalCadence(60), now=NOW, run_now=False, default_tz="UTC") == "2026-03-28T13:00:00.123Z"
    )
    # 07:30 Berlin on 29 March 2026 is CEST (UTC+2): the DST switch is that night.
    assert first_run(DailyCadence(7, 30), now=NOW, run_now=False, default_tz="Europe/Berlin") == (
        "2026-03-29T05:30:00.000Z"
    )


def test_parse_input_ref() -> None:
    assert parse_input_ref("notes:n1") == {"module": "notes", "table": "notes", "id": "n1"}
    assert parse_input_ref("tasks:t1") == {"module": "todo", "table": "tasks", "id": "t1"}
    assert parse_input_ref("events:e1") == {"module": "calendar", "table": "events", "id": "e1"}
    assert parse_input_ref("journalEntries:j") == {"module": "journal", "table": "journalEntries", "id": "j"}
    assert parse_input_ref("kontextDoc:k") == {"module": "kontext", "table": "kontextDoc", "id": "k"}
    assert parse_input_ref("companionGoals:g") == {"module": "goals", "table": "companionGoals", "id": "g"}
    assert parse_input_ref("userContext") == {"module": "profile", "table": "userContext", "id": "singleton"}
    assert parse_input_ref("userContext:singleton")["id"] == "singleton"
    with pytest.raises(InvalidOption, match="unknown table 'foo'"):
        parse_input_ref("foo:1")
    with pytest.raises(InvalidOption, match="needs table:id"):
        parse_input_ref("notes:")
    with pytest.raises(InvalidOption, match="only the id 'singleton'"):
        parse_input_ref("userContext:me")


def test_build_agent_full_shape() -> None:
    record = build_agent(
        agent_id="a1",
        now=NOW,
        name=" Ada ",
        role="Planer",
        persona="Sei knapp.",
        max_concurrent=2,
        max_tokens_per_day=0,
        deny_tools=["create_task", "create_task"],
        deny_modules=["finance"],
        known_tools={"create_task"},
        known_modules={"finance"},
    )
    assert record == {
        "id": "a1",
        "createdAt": NOW_ISO,
        "updatedAt": NOW_ISO,
        "name": "Ada",
        "role": "Planer",
        "systemPrompt": "Sei knapp.",
        "policy": {
            "tools": {"create_task": "deny"},
            "defaultsByModule": {"finance": "deny"},
            "defaultForAi": "propose",
        },
        "maxTokensPerDay": 0,
        "maxConcurrentMissions": 2,
        "state": "active",
    }


def test_build_agent_minimal_and_errors() -> None:
    record = build_agent(agent_id="a1", now=NOW, name="Bob")
    assert "systemPrompt" not in record and "maxTokensPerDay" not in record
    assert record["maxConcurrentMissions"] == 1
    assert record["policy"] == {"tools": {}, "defaultsByModule": {}, "defaultForAi": "propose"}
    with pytest.raises(InvalidOption, match="--name must not be empty"):
        build_agent(agent_id="a", now=NOW, name="  ")
    with pytest.raises(InvalidOption, match="--max-concurrent must be at least 1"):
        build_agent(agent_id="a", now=NOW, name="x", max_concurrent=0)
    with pytest.raises(InvalidOption, match="--max-tokens-per-day must be 0 or more"):
        build_agent(agent_id="a", now=NOW, name="x", max_tokens_per_day=-1)
    with pytest.raises(InvalidOption, match="--deny-tool: unknown tool 'rm_rf'"):
        build_agent(agent_id="a", now=NOW, name="x", deny_tools=["rm_rf"], known_tools={"create_task"})


def test_build_mission_shape() -> None:
    record = build_mission(
        mission_id="m1",
        now=NOW,
        title="T",
        objective="O",
        cadence=DailyCadence(7, 0, timezone="Europe/Berlin"),
        next_run_at="2026-03-29T05:00:00.000Z",
        agent_id="a1",
        inputs=[{"module": "notes", "table": "notes", "id": "n1"}],
    )
    assert record == {
        "id": "m1",
        "createdAt": NOW_ISO,
        "updatedAt": NOW_ISO,
        "title": "T",
        "conceptMarkdown": "",
        "objective": "O",
        "inputs": [{"module": "notes", "table": "notes", "id": "n1"}],
        "cadence": {"kind": "daily", "atHour": 7, "atMinute": 0, "timezone": "Europe/Berlin"},
        "state": "active",
        "iterations": [],
        "nextRunAt": "2026-03-29T05:00:00.000Z",
        "agentId": "a1",
    }
    bare = build_mission(
        mission_id="m2", now=NOW, title="T", objective="O", cadence=ManualCadence(), next_run_at=None
    )
    assert "nextRunAt" not in bare and "agentId" not in bare
    with pytest.raises(InvalidOption, match="--objective must not be empty"):
        build_mission(
            mission_id="m", now=NOW, title="T", objective=" ", cadence=ManualCadence(), next_run_at=None
        )


def test_resume_fields() -> None:
    interval = {"kind": "interval", "everyMinutes": 30}
    future = {"state": "paused", "cadence": interval, "nextRunAt": "2026-03-28T12:30:00.000Z"}
    assert resume_fields(future, now=NOW, default_tz="UTC") == ({"state": "active"}, None)
    past = {"state": "paused", "cadence": interval, "nextRunAt": "2026-03-28T11:00:00.000Z"}
    assert resume_fields(past, now=NOW, default_tz="UTC") == (
        {"state": "active", "nextRunAt": "2026-03-28T12:30:00.123Z"},
        None,
    )
    missing = {"state": "paused", "cadence": {"kind": "daily", "atHour": 13, "atMinute": 0}}
    assert resume_fields(missing, now=NOW, default_tz="UTC")[0]["nextRunAt"] == "2026-03-28T13:00:00.000Z"
    # A manual mission's stale next run is cleared, so resuming it does not fire it at once.
    manual_past = {"state": "paused", "cadence": {"kind": "manual"}, "nextRunAt": "2026-03-01T00:00:00.000Z"}
    assert resume_fields(manual_past, now=NOW, default_tz="UTC") == (
        {"state": "active", "nextRunAt": None},
        None,
    )
    manual_none = {"state": "paused", "cadence": {"kind": "manual"}}
    assert resume_fields(manual_none, now=NOW, default_tz="UTC") == ({"state": "active"}, None)
    fields, warning = resume_fields(
        {"state": "paused", "cadence": {"kind": "nope"}}, now=NOW, default_tz="UTC"
    )
    assert fields == {"state": "active"}
    assert warning is not None and "cadence is invalid" in warning


def test_match_ref() -> None:
    candidates = [("3f2c9a1e-0000", "Planer"), ("3f2d0000-1111", "Scout"), ("abcd1234-2222", "planer 2")]
    assert match_ref("3f2c9a1e-0000", candidates, kind="agent") == "3f2c9a1e-0000"
    assert match_ref("PLANER", candidates, kind="agent") == "3f2c9a1e-0000"
    assert match_ref("abcd", candidates, kind="agent") == "abcd1234-2222"
    with pytest.raises(InvalidOption, match="give at least 4 characters of the agent id, not '3f'"):
        match_ref("3f", candidates, kind="agent")
    with pytest.raises(InvalidOption, match="'3f2c' matches"):
        match_ref("3f2c", [*candidates, ("3f2c0000", "x")], kind="agent")
    with pytest.raises(InvalidOption, match=r"unknown mission 'nope' \(see `mana-ai missions list`\)"):
        match_ref("nope", candidates, kind="mission")
    with pytest.raises(InvalidOption, match="2 agents are named 'twin'"):
        match_ref("twin", [("a", "Twin"), ("b", "twin")], kind="agent")


def test_check_unique_name() -> None:
    check_unique_name("Ada", ["Bob"])
    with pytest.raises(InvalidOption, match="an agent named 'ada' already exists"):
        check_unique_name(" ada ", ["Bob", "ADA"])


def test_short_ids_grow_until_unique() -> None:
    assert short_ids(["0123456789ab", "fedcba987654"]) == {
        "0123456789ab": "01234567",
        "fedcba987654": "fedcba98",
    }
    assert short_ids(["012345678a", "012345678b", "x"]) == {
        "012345678a": "012345678a",
        "012345678b": "012345678b",
        "x": "x",
    }
    assert short_ids([]) == {}


def test_short_time() -> None:
    assert short_time("2026-03-28T12:00:59.999Z") == "2026-03-28 12:00Z"
    assert short_time(None) == "-"
    assert short_time("soon") == "soon"


def test_display_helpers() -> None:
    assert shown("enc:1:abc") == "(encrypted)"
    assert shown(None) == ""
    step = {
        "status": "planned",
        "summary": "Task",
        "intent": {"kind": "toolCall", "toolName": "create_task", "params": {"title": "Milch"}},
    }
    assert step_row(step) == ("planned", "create_task", '{"title":"Milch"}', "Task")
    assert step_row({"status": "staged", "intent": {"kind": "note", "body": "Merke"}}) == (
        "staged",
        "note",
        "Merke",
        "",
    )
    assert step_row("junk") == ("?", "?", "", "")
    assert error_line({"name": "ProviderError", "message": "down", "phase": "calling-llm"}) == (
        "ProviderError: down (phase calling-llm)"
    )
    assert error_line(None) is None
    assert is_due({"state": "active", "nextRunAt": NOW_ISO}, NOW)
    assert not is_due({"state": "paused", "nextRunAt": NOW_ISO}, NOW)
    assert not is_due({"state": "active", "nextRunAt": "2026-03-28T12:00:01.000Z"}, NOW)
    assert not is_due({"state": "active"}, NOW)


def test_every_command_documents_example_usage() -> None:
    group = click.Group("mana-ai")
    data.register(group)
    runner = CliRunner()
    paths = [["agents", c] for c in ("create", "list", "pause", "resume", "archive")]
    paths += [["missions", c] for c in ("create", "list", "show", "pause", "resume")]
    paths.append(["demo"])
    for path in paths:
        result = runner.invoke(group, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, result.output
        assert "Example usage:" in result.output, path
        assert "mana-ai " + " ".join(path) in result.output, path
        assert "MANA_AI_USER" in result.output, path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["missions", "create", "--every", "soon"],
            "Error: --every must look like 90m, 2h, 1d or 1h30m, got 'soon'",
        ),
        (["missions", "create", "--cron", "* * *"], "Error: cron expression must have 5 fields"),
        (
            ["missions", "create", "--every", "1h", "--daily", "07:00"],
            "Error: choose one cadence, not --every and --daily",
        ),
        (["missions", "create", "--weekly", "someday@9"], "Error: --weekly: unknown day 'someday'"),
        (["missions", "create", "--daily", "25:00"], "Error: atHour must be between 0 and 23, got 25"),
        (["missions", "create", "--input", "spreadsheets:1"], "Error: --input: unknown table 'spreadsheets'"),
        (["missions", "create", "--title", " "], "Error: --title must not be empty"),
        (
            ["agents", "create", "--name", "Eve", "--deny-tool", "rm_rf"],
            "Error: --deny-tool: unknown tool 'rm_rf'",
        ),
        (
            ["agents", "create", "--name", "Eve", "--deny-module", "nope"],
            "Error: --deny-module: unknown module 'nope'",
        ),
        (
            ["agents", "create", "--name", "Eve", "--max-concurrent", "0"],
            "Error: --max-concurrent must be at least 1",
        ),
    ],
)
def test_bad_options_fail_before_the_database_with_one_line(args: list[str], message: str) -> None:
    group = click.Group("mana-ai")
    data.register(group)
    if args[:2] == ["missions", "create"] and "--title" not in args:
        args = [*args, "--title", "T", "--objective", "O"]
    elif args[:2] == ["missions", "create"]:
        args = [*args, "--objective", "O"]
    # A database that cannot be reached: the commands must fail on the options before opening it.
    env = {"SYNC_DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none", "COLUMNS": "200"}
    result = CliRunner().invoke(group, args, env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_missions_show_prints_each_iterations_stop_reason(capsys: pytest.CaptureFixture[str]) -> None:
    # The README: `missions show` prints the stop reason (`finished`, `no-tool-calls`, … `llm-error`).
    mission = {
        "id": "m1",
        "title": "Plan",
        "objective": "Plan my day",
        "iterations": [
            {
                "id": "it-1",
                "overallStatus": "approved",
                "source": "server",
                "plan": [],
                "stopReason": "finished",
            },
            {
                "id": "it-2",
                "overallStatus": "failed",
                "source": "server",
                "plan": [],
                "stopReason": "llm-error",
            },
            {"id": "it-3", "overallStatus": "approved", "plan": []},  # a browser iteration has none
        ],
    }
    data._print_mission(mission, {}, NOW)
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Iteration ")]
    assert [h.rsplit("  ", 1)[-1] for h in headers[:2]] == ["stop finished", "stop llm-error"]
    assert "stop" not in headers[2]
