"""Hostile missions next to a healthy one (review: "malformed or hostile rows must never corrupt data, plan a
mission twice, or stop other users' work").

Table-driven: every case is one mission (and maybe an agent and input records) a user's device could write,
each for a user of its own, next to a healthy user's due mission. Two ticks run; then:

* no tick raises or reports an error, and no mission ends in ``error``;
* the healthy mission is planned exactly once;
* each hostile mission is planned at most once, or skipped / failed with a reason; never planned twice;
* every row mana-ai wrote to ``sync_changes`` is one mana-ai's own refresh accepts, has no NUL, and its last
  iteration has the documented shape.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from mana_ai.app import App
from mana_ai.synclog.validate import MAX_ROW_BYTES, check_row, fits_printed, too_long
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, make_settings

DUE = to_js_iso(utcnow() - timedelta(seconds=1))

DAILY = {"kind": "daily", "atHour": 7, "atMinute": 0}
WEEKLY = {"kind": "weekly", "dayOfWeek": 3, "atHour": 9}
CRON_FIXED = {"kind": "cron", "expression": "0 8 * * *"}
CRON_REAL = {"kind": "cron", "expression": "*/5 * * * *"}
INTERVAL = {"kind": "interval", "everyMinutes": 60}

ODD_TEXT = "a\u202eb\u200bc\u2066d\ufeff\u0301 \U0001f600 \u00ad"

CASES: dict[str, dict[str, Any]] = {
    # --- cadences -----------------------------------------------------------------------------------
    **{
        f"interval-{i}": {"cadence": {"kind": "interval", "everyMinutes": v}}
        for i, v in enumerate([0, -1, 0.5, 1e20, "60", True, None, [60], {"a": 1}, 2**63, 366 * 24 * 60])
    },
    **{
        f"daily-{i}": {"cadence": {"kind": "daily", "atHour": h, "atMinute": m}}
        for i, (h, m) in enumerate([(24, 0), (-1, 0), (7.5, 0), (7, 60), ("7", 0), (None, None)])
    },
    **{
        f"weekly-{i}": {"cadence": {"kind": "weekly", "dayOfWeek": d, "atHour": 9}}
        for i, d in enumerate([7, -1, 1.5, "1", 6.0])
    },
    **{
        f"cron-{i}": {"cadence": {"kind": "cron", "expression": e}}
        for i, e in enumerate(
            [
                "",
                "* * * * * *",
                "@daily",
                "0 0 30 2 *",
                "0 0 L * *",
                "*/0 * * * *",
                "0 0 * * 0-7",
                "0 0 29 2 1",
                "0 0 * * MON#5",
                5,
                None,
                ["0", "0", "*", "*", "*"],
                "0\u200b 0 * * *",
            ]
        )
    },
    **{
        f"tz-{i}": {"cadence": {**DAILY, "timezone": tz}}
        for i, tz in enumerate(
            [
                "",
                "Mars/Olympus",
                5,
                "../../etc/passwd",
                "UTC\u200b",
                "\u202eUTC",
                "Etc/GMT+12",
                "Pacific/Kiritimati",
                "Europe",
                "posixrules",
                "x" * 10_000,
                ["UTC"],
            ]
        )
    },
    "cadence-array": {"cadence": [1, 2]},
    "cadence-string": {"cadence": "daily"},
    "cadence-bool": {"cadence": True},
    "cadence-kind-number": {"cadence": {"kind": 1}},
    "cadence-deep": {"cadence": {"kind": "interval", "everyMinutes": 60, "x": [[[[[[[[[[1]]]]]]]]]]}},
    # --- nextRunAt ----------------------------------------------------------------------------------
    **{
        f"next-{name}-{kind}": {"cadence": cad, "nextRunAt": at}
        for name, at in [
            ("year1", "0001-01-01T00:00:00.000Z"),
            ("year1b", "0001-01-02T00:00:00.000Z"),
            ("epoch", "1970-01-01T00:00:00.000Z"),
            ("offset", "2020-01-01T00:00:00+14:00"),
            ("noz", "2020-01-01T00:00:00"),
            ("date", "2020-01-01"),
        ]
        for kind, cad in [
            ("daily", DAILY),
            ("weekly", WEEKLY),
            ("cronf", CRON_FIXED),
            ("cronr", CRON_REAL),
            ("interval", INTERVAL),
        ]
    },
    "next-far-future": {"nextRunAt": "9999-12-31T23:59:59.999Z"},
    # --- inputs and iterations ----------------------------------------------------------------------
    "inputs-10k-notes": {
        "inputs": [{"module": "notes", "table": "notes", "id": f"n{i}"} for i in range(10_000)]
    },
    "inputs-self": {"inputs": [{"module": "ai", "table": "aiMissions", "id": "SELF"}] * 50},
    "inputs-goals-many": {
        "inputs": [{"module": "goals", "table": "companionGoals", "id": f"g{i}"} for i in range(300)]
    },
    "inputs-odd": {
        "inputs": [
            None,
            1,
            "x",
            [],
            {"module": 5},
            {"module": "goals", "table": [], "id": {}},
            {"module": "goals", "table": "companionGoals", "id": ODD_TEXT},
        ]
    },
    "iterations-odd": {
        "iterations": [
            None,
            1,
            "x",
            [],
            {"id": 5, "plan": "x"},
            {"id": "i", "plan": {"a": 1}},
            {"id": "j", "plan": [None, 1, {"id": 3, "status": []}]},
        ]
    },
    "iterations-many": {"iterations": [{"id": f"i{i}", "summary": "s"} for i in range(20_000)]},
    "text-odd": {"title": ODD_TEXT, "objective": ODD_TEXT * 1000, "conceptMarkdown": ODD_TEXT},
    "text-huge": {"objective": "y" * 199_000, "conceptMarkdown": "z" * 199_000},
    "grant-odd": {"grant": {"wrappedKey": 5, "recordIds": "all", "expiresAt": []}},
    "unknown-fields": {"__fieldMeta": {"nextRunAt": 5}, "extra": {"nested": [1, 2, {"a": None}]}},
}

AGENT_CASES: dict[str, dict[str, Any]] = {
    "agent-policy-tools-string": {"policy": {"tools": "all", "defaultForAi": "auto"}},
    "agent-policy-tools-list": {"policy": {"tools": [1, 2], "defaultForAi": 5}},
    "agent-policy-tool-number": {"policy": {"tools": {"create_note": 7, "list_things": None}, "modules": []}},
    "agent-policy-auto-all": {"policy": {"defaultForAi": "auto"}},
    "agent-max-concurrent-0": {"maxConcurrentMissions": 0},
    "agent-max-concurrent-huge": {"maxConcurrentMissions": 1e300},
    "agent-tokens-0": {"maxTokensPerDay": 0},
    "agent-tokens-neg": {"maxTokensPerDay": -5},
    "agent-tokens-half": {"maxTokensPerDay": 0.5},
    "agent-tokens-huge": {"maxTokensPerDay": 1e300},
    "agent-tokens-tiny": {"maxTokensPerDay": 10},
    "agent-paused": {"state": "paused"},
    "agent-text-odd": {"name": ODD_TEXT, "systemPrompt": ODD_TEXT * 100, "memory": "m" * 199_000},
}

OK_DECISIONS = {"ran", "failed", "paused-after-failures", "stale", "not-due", "duplicate", "backoff"}


@pytest.fixture
async def app(app_db_url: str) -> AsyncIterator[App]:
    async with FakeLlmServer(default=conversation_responder()) as llm:
        settings = make_settings(app_db_url, llm.url, retry_backoff=timedelta(seconds=0))
        async with App(settings) as running:
            yield running


async def _seed(db: Any) -> dict[str, str]:
    """Each case as a user of its own; returns user → case."""
    users: dict[str, str] = {}
    await put_row(db, "healthy", "aiMissions", "good", "insert", mission("good", nextRunAt=DUE))
    for name, fields in CASES.items():
        user = "u-" + name
        users[user] = name
        record = mission("m", nextRunAt=DUE)
        record.update(fields)
        if record.get("inputs") and isinstance(record["inputs"], list):
            record["inputs"] = [
                {**i, "id": "m"} if isinstance(i, dict) and i.get("id") == "SELF" else i
                for i in record["inputs"]
            ]
        await put_row(db, user, "aiMissions", "m", "insert", record)
    for name, fields in AGENT_CASES.items():
        user = "u-" + name
        users[user] = name
        await put_row(db, user, "agents", "a", "insert", agent_record("a", **fields))
        await put_row(db, user, "aiMissions", "m", "insert", mission("m", nextRunAt=DUE, agentId="a"))
    return users


async def _written(admin_db: Any) -> list[Any]:
    return await admin_db.fetch(
        "SELECT user_id, record_id, op, client_id, data::text AS data_text, field_meta, data FROM public.sync_changes"
        " WHERE client_id <> 'test-client' ORDER BY created_at"
    )


async def test_hostile_missions_next_to_a_healthy_one(db, admin_db, app) -> None:
    users = await _seed(db)
    ran: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    for _ in range(3):
        tick = await app.ticker.tick()
        if tick.errors:
            problems.append(f"tick errors: {tick.errors}")
        for r in tick.results:
            if r.decision == "ran":
                ran[(r.user_id, r.mission_id)] += 1
            if r.decision not in OK_DECISIONS and not r.decision.startswith("skipped-"):
                problems.append(f"{users.get(r.user_id, r.user_id)}: {r.decision} {r.detail[:200]}")
            elif r.decision != "ran" and not r.detail and r.decision not in ("stale",):
                problems.append(f"{users.get(r.user_id, r.user_id)}: {r.decision} without a reason")
    assert ran[("healthy", "good")] == 1, (ran, problems)
    twice = {users.get(k[0], k[0]): n for k, n in ran.items() if n > 1}
    assert not twice, twice
    for row in await _written(admin_db):
        case = users.get(row["user_id"], row["user_id"])
        if "\\u0000" in row["data_text"]:
            problems.append(f"{case}: NUL in written row")
        if len(row["data_text"].encode()) > MAX_ROW_BYTES:
            problems.append(f"{case}: written row of {len(row['data_text'].encode())} bytes")
        why = check_row("aiMissions", row["op"], json.loads(row["data_text"]), row["field_meta"])
        if why:
            problems.append(f"{case}: written row refused by our own check: {why}")
        its = row["data"].get("iterations") if isinstance(row["data"], dict) else None
        if not isinstance(its, list) or not its or not isinstance(its[-1], dict):
            problems.append(
                f"{case}: written row without iterations {row['client_id']} {row['data_text'][:300]}"
            )
            continue
        last = its[-1]
        if not (
            isinstance(last.get("id"), str)
            and isinstance(last.get("plan"), list)
            and last.get("source") == "server"
            and isinstance(last.get("summary"), str)
        ):
            problems.append(f"{case}: odd iteration {str(last)[:200]}")
    assert not problems, "\n".join(problems)


def _padded_iterations(target_bytes: int) -> list[Any]:
    """Iterations whose ``{"iterations": …}`` JSON text (as Postgres prints jsonb) is ``target_bytes`` long."""
    chunk = 150_000
    its: list[Any] = []
    while True:
        size = len(json.dumps({"iterations": its}).encode())
        left = target_bytes - size
        if left <= 0:
            return its
        pad = min(chunk, left - len(json.dumps({"id": "x", "summary": ""})) - 2)
        its.append({"id": f"i{len(its)}", "summary": "p" * max(pad, 0)})
        if pad <= 0:
            its.pop()
            return its


def _number_iterations(target_bytes: int) -> list[Any]:
    """As :func:`_padded_iterations`, but the bulk is numbers Postgres prints with 301 digits (``1e300``)."""
    count = (target_bytes - 45) // len(", " + "1" + "0" * 300)
    return [{"id": "i0", "n": [1e300] * count}]


@pytest.mark.parametrize("shape", [_padded_iterations, _number_iterations])
async def test_write_back_near_the_row_size_limit(db, admin_db, app, shape) -> None:
    """A device's iterations just under the row size limit: the iteration mana-ai appends must not produce a row
    mana-ai's own refresh skips (the run would be written, yet never seen: the mission stays due for ever)."""
    await put_row(db, "healthy", "aiMissions", "good", "insert", mission("good", nextRunAt=DUE))
    await put_row(db, "big", "aiMissions", "m", "insert", mission("m", nextRunAt=DUE))
    its = shape(MAX_ROW_BYTES - 100)
    await put_row(db, "big", "aiMissions", "m", "update", {"iterations": its})
    sizes = await admin_db.fetch(
        "SELECT octet_length(data::text) AS n FROM public.sync_changes WHERE user_id = 'big' AND op = 'update'"
    )
    assert MAX_ROW_BYTES - 400 < sizes[0]["n"] <= MAX_ROW_BYTES  # the device's row is accepted
    first = await app.ticker.tick()
    assert not first.errors, first.errors
    mine = {r.user_id: r for r in first.results}
    assert mine["healthy"].decision == "ran"
    assert mine["big"].decision in ("ran", "failed"), mine["big"]
    rows = await _written(admin_db)
    assert rows
    for row in rows:
        # What mana-ai writes, its own refresh reads: not longer than the limit, and valid.
        assert not too_long(row["data_text"]), (row["user_id"], len(row["data_text"]))
        why = check_row("aiMissions", row["op"], json.loads(row["data_text"]), row["field_meta"])
        assert why is None, (row["user_id"], why)
    # The next tick sees the run's new nextRunAt: the mission is not due any more.
    second = await app.ticker.tick()
    assert [r for r in second.results if r.user_id == "big"] == [], second.results


async def test_mission_due_in_year_one_is_skipped_with_a_reason(db, admin_db, app) -> None:
    """``nextRunAt`` "0001-01-01T00:00:00.000Z" is a valid JS timestamp: a daily mission due then is a missed
    run (skipped with a note, next run from now), not an OverflowError on every tick."""
    await put_row(db, "healthy", "aiMissions", "good", "insert", mission("good", nextRunAt=DUE))
    await put_row(
        db,
        "old",
        "aiMissions",
        "m",
        "insert",
        mission("m", cadence=DAILY, nextRunAt="0001-01-01T00:00:00.000Z"),
    )
    first = await app.ticker.tick()
    assert not first.errors, first.errors
    mine = {r.user_id: r for r in first.results}
    assert mine["healthy"].decision == "ran"
    assert mine["old"].decision == "skipped-missed" and mine["old"].detail, mine["old"]
    second = await app.ticker.tick()
    assert not second.errors, second.errors
    assert [r for r in second.results if r.user_id == "old"] == []


PRINTED_CASES: list[Any] = [
    {"iterations": [{"id": "i1", "plan": [], "summary": "kurz"}]},
    {"n": [1e300, -1e300, 1e-300, 1.5e-7, 123456789.125, 2.5e22, 0.0, 1, -7, 2**60]},
    {"ä": "ü € 😀", "nested": {"a": [{"b": None, "c": True}], "d": {}}},
    {"text": 'a\nb\t"c"\\ \u0001 / </script>'},
    {"big": [1e300] * 2_000},
]


@pytest.mark.parametrize("value", PRINTED_CASES, ids=range(len(PRINTED_CASES)))
async def test_the_printed_size_bound_is_exact_without_separators_in_strings(
    admin_db: Any, value: Any
) -> None:
    # fits_printed bounds what PostgreSQL prints for a jsonb value; without ':' or ',' inside strings the bound
    # is the printed size itself.
    row = await admin_db.fetchrow("SELECT octet_length(%s::jsonb::text) AS n", (json.dumps(value),))
    printed = row["n"]
    assert fits_printed(value, printed)
    assert not fits_printed(value, printed - 1)


async def test_the_printed_size_bound_counts_separators_in_strings_too(admin_db: Any) -> None:
    value = {"s": "a: b, c: d," * 1_000, "z": -0.0}
    row = await admin_db.fetchrow("SELECT octet_length(%s::jsonb::text) AS n", (json.dumps(value),))
    assert not fits_printed(value, row["n"] - 1)  # never below: an upper bound
    # One byte over for each ':' and ',' in the string, and for the sign of -0.0 (PostgreSQL prints 0.0).
    assert fits_printed(value, row["n"] + 4_001)
    assert not fits_printed(value, row["n"] + 4_000)
