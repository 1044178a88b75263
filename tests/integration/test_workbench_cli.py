"""CLI parity: ``mana-ai proposals list|approve|reject`` and ``mana-ai goals list|create``."""

from __future__ import annotations

import asyncio
import json
import logging

import click
from click.testing import CliRunner, Result

from mana_ai.cli import workbench as workbench_cli
from mana_ai.db.connector import Database
from mana_ai.synclog.store import replay_record
from tests.integration.test_workbench_logic import seed, server_iteration


def run_cli(args: list[str], env: dict[str, str]) -> Result:
    group = click.Group("mana-ai")
    workbench_cli.register(group)
    package_logger = logging.getLogger("mana_ai")
    level = package_logger.level
    try:
        return CliRunner().invoke(group, args, env=env)
    finally:
        package_logger.setLevel(level)


async def cli(args: list[str], app_db_url: str) -> Result:
    env = {"SYNC_DATABASE_URL": app_db_url, "MANA_AI_USER": "u1", "COLUMNS": "200", "NO_COLOR": "1"}
    return await asyncio.to_thread(run_cli, args, env)


async def test_proposals_list_approve_reject(db: Database, app_db_url: str) -> None:
    it = server_iteration(
        "3f2c9a1e-0000-4000-8000-000000000001",
        [("create_task", {"title": "Einkaufen"}), ("create_task", {"title": "Putzen"})],
    )
    await seed(db, iterations=[it])
    listed = await cli(["proposals", "list", "--json"], app_db_url)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["tool"], r["params"]["title"], r["agent"]) for r in rows] == [
        ("create_task", "Einkaufen", "Planer"),
        ("create_task", "Putzen", "Planer"),
    ]
    table = await cli(["proposals", "list"], app_db_url)
    assert table.exit_code == 0 and "Step 1: create_task" in table.output and "3f2c9a1e-1" in table.output

    bad = await cli(["proposals", "approve", rows[0]["id"], "--params", '{"title": 5}'], app_db_url)
    assert bad.exit_code != 0 and "Parameter title must be a string" in bad.output
    ok = await cli(
        ["proposals", "approve", it["plan"][0]["id"], "--params", '{"title": "Einkaufen gehen"}'], app_db_url
    )
    assert ok.exit_code == 0, ok.output
    assert "approved" in ok.output and "Task created: Einkaufen gehen" in ok.output
    again = await cli(["proposals", "approve", rows[0]["id"]], app_db_url)
    assert again.exit_code == 0 and "decided earlier" in again.output
    rejected = await cli(["proposals", "reject", "3f2c9a1e-1", "--feedback", "Nicht heute"], app_db_url)
    assert rejected.exit_code == 0 and "rejected" in rejected.output

    async with db.with_user("u1") as conn:
        state = await replay_record(conn, user_id="u1", app_id="ai", table="aiMissions", record_id="m1")
    assert state is not None
    iteration = state.record["iterations"][0]
    assert [s["status"] for s in iteration["plan"]] == ["approved", "rejected"]
    assert iteration["userFeedback"].endswith("Nicht heute")
    empty = await cli(["proposals", "list"], app_db_url)
    assert "No open proposals." in empty.output
    unknown = await cli(["proposals", "approve", "zzzzzzzz"], app_db_url)
    assert unknown.exit_code != 0 and "unknown proposal" in unknown.output


async def test_goals_create_and_list(db: Database, app_db_url: str) -> None:
    created = await cli(["goals", "create", "--template", "tpl-water-daily"], app_db_url)
    assert created.exit_code == 0, created.output
    custom = await cli(
        [
            "goals",
            "create",
            "--title",
            "2 l Wasser",
            "--event",
            "DrinkLogged",
            "--filter",
            "drinkType=water",
            "--sum-field",
            "quantityMl",
            "--target",
            "2000",
        ],
        app_db_url,
    )
    assert custom.exit_code == 0, custom.output
    for target in ("inf", "-inf", "nan"):  # inf: an OverflowError traceback from int()
        args = ["goals", "create", "--title", "x", "--event", "DrinkLogged", "--target", target]
        odd = await cli(args, app_db_url)
        assert odd.exit_code != 0 and not isinstance(odd.exception, ArithmeticError), odd.exception
        assert odd.output.startswith("Error: --target must be a finite number"), odd.output
    # A huge whole number became a Python int orjson cannot write: a TypeError traceback.
    huge = await cli(
        ["goals", "create", "--title", "x", "--event", "DrinkLogged", "--target", "1e308"], app_db_url
    )
    assert huge.exit_code == 0, huge.exception
    broken = await cli(["goals", "create", "--title", "x", "--target", "3"], app_db_url)
    assert broken.exit_code != 0 and "domain event" in broken.output
    listed = await cli(["goals", "list"], app_db_url)
    assert listed.exit_code == 0
    assert (
        "2 l Wasser" in listed.output
        and "0 / 2000 per day" in listed.output
        and "DrinkLogged" in listed.output
    )
