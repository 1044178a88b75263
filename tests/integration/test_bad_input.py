"""Bad input never costs data or availability (issue 7, item 3), against the real refresh and a real tick.

Hypothesis writes malformed ``ai/aiMissions`` and ``ai/agents`` rows (every field with a wrong JSON type,
huge strings, invalid timestamps, non-object data and field_meta, numbers Python cannot hold, unknown ops
straight into the feed, as a mana-sync deployment without the CHECK could) mixed with valid rows, then checks:

* the refresh never raises;
* every valid row is applied: each snapshot equals the pure LWW merge of the valid rows alone;
* each skipped row produces exactly one ``snapshots.row_skipped`` warning naming it (its feed ``seq``);
* a following tick plans the valid due missions, gives a mission with a garbage cadence a failed iteration,
  and no mission ends in an unexpected error.

Every example writes as a fresh user, so examples share one database and one App without seeing each other.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mana_ai.app import App
from mana_ai.synclog.lww import ChangeRow, RecordState, apply_row
from mana_ai.synclog.snapshots import refresh_snapshots
from mana_ai.synclog.validate import AGENT_FIELDS, MAX_STRING, MISSION_FIELDS
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso
from tests.integration.runner_helpers import make_settings

# --- field kinds (SPEC §6.1, §6.4) ------------------------------------------------------------------------
# Written out here rather than derived from validate.py, so the test is an independent statement of what a
# valid value is; test_kinds_cover_every_checked_field keeps both lists in step.
MISSION_KINDS: dict[str, str] = {
    "title": "str",
    "objective": "str",
    "conceptMarkdown": "str",
    "state": "mission-state",
    "nextRunAt": "ts",
    "inputs": "array",
    "iterations": "array",
    "cadence": "object",
    "agentId": "str",
    "grant": "object",
    "deletedAt": "ts",
    "createdAt": "ts",
    "updatedAt": "ts",
}
AGENT_KINDS: dict[str, str] = {
    "name": "str",
    "role": "str",
    "avatar": "str",
    "systemPrompt": "str",
    "memory": "str",
    "policy": "object",
    "state": "agent-state",
    "maxConcurrentMissions": "count",
    "maxTokensPerDay": "number",
    "scopeTagIds": "str-list",
    "deletedAt": "ts",
    "createdAt": "ts",
    "updatedAt": "ts",
}
KINDS = {"aiMissions": MISSION_KINDS, "agents": AGENT_KINDS}
STATES = {
    "mission-state": ["active", "paused", "done", "archived"],
    "agent-state": ["active", "paused", "archived"],
}
OPTIONAL = {"str", "ts", "array", "object", "count", "number", "str-list"}

MISSION_IDS = ["m0", "m1", "m2"]
AGENT_IDS = ["a0", "a1"]
IDS = {"aiMissions": MISSION_IDS, "agents": AGENT_IDS}
BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)
NOW_ISH = datetime.now(UTC)

HUGE = "x" * (MAX_STRING + 1)
"""One character over the limit."""
POISON_NUMBER = "1e400"
"""Valid JSON (and valid jsonb), but beyond double range: Python's JSON parsers cannot load it."""
DEEP = "[" * 1500 + "]" * 1500
"""Valid jsonb, nested deeper than orjson (and the stdlib) will parse."""
BAD_TIMESTAMPS = [
    "",
    "   ",
    "not a date",
    "tomorrow at noon",
    "2026-04-15T24:61:00Z",
    "2026-13-01T00:00:00.000Z",  # the exact JS form, but month 13
    "2026-02-30T10:00:00.000Z",  # the exact JS form, but February 30th
    "0001-01-01T00:00:00+01:00",  # a real ISO date whose UTC instant is before year 1
    "9999-12-31T23:59:59-01:00",  # ... and after year 9999
    "1e400",
    "٢٠٢٦-04-15T10:00:00.000Z",  # the JS form in Arabic-Indic digits: not a stamp, and no error either
]

# --- JSON values ------------------------------------------------------------------------------------------
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    # Bounded floats: beyond 2**53 jsonb prints a float as an integer, which compares unequal in Python
    # (JavaScript reads both as the same number).
    st.floats(-1e6, 1e6, allow_nan=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=6,
)
non_null = json_values.filter(lambda v: v is not None)
stamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(to_js_iso)

VALID_CADENCES = [
    {"kind": "manual"},
    {"kind": "interval", "everyMinutes": 30},
    {"kind": "daily", "atHour": 7, "atMinute": 30},
    {"kind": "weekly", "dayOfWeek": 1, "atHour": 9},
    {"kind": "cron", "expression": "0 8 * * 1-5"},
]
garbage_cadences = st.one_of(
    st.fixed_dictionaries(
        {"kind": text.filter(lambda k: k not in {"manual", "interval", "daily", "weekly", "cron"})}
    ),
    st.just({"kind": "interval", "everyMinutes": "soon"}),
    st.just({"kind": "interval", "everyMinutes": -5}),
    st.just({"kind": "daily", "atHour": 25, "atMinute": 0}),
    st.just({"kind": "weekly", "dayOfWeek": 9, "atHour": 9}),
    st.just({"kind": "cron", "expression": "every full moon"}),
    st.just({}),
    st.dictionaries(text, json_values, max_size=3),
)


def valid_value(kind: str) -> st.SearchStrategy[Any]:
    """A value the runner must accept for a field of this kind."""
    if kind in STATES:
        return st.sampled_from(STATES[kind])
    base: st.SearchStrategy[Any] = {
        "str": text,
        "ts": stamps,
        "array": st.lists(json_values, max_size=3),
        "object": st.dictionaries(text, json_values, max_size=3),
        "count": st.integers(0, 50) | st.sampled_from([2**31, 10**12]),
        "number": st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False) | st.sampled_from([10**19]),
        "str-list": st.lists(text, max_size=3),
    }[kind]
    return st.none() | base if kind in OPTIONAL else base


def wrong_value(kind: str) -> st.SearchStrategy[Any]:
    """A value of the wrong JSON type (or an invalid one of the right type) for a field of this kind."""
    not_string = non_null.filter(lambda v: not isinstance(v, str))
    options: dict[str, st.SearchStrategy[Any]] = {
        "str": not_string | st.just(HUGE),
        "ts": not_string | st.sampled_from(BAD_TIMESTAMPS),
        "array": non_null.filter(lambda v: not isinstance(v, list)),
        "object": non_null.filter(lambda v: not isinstance(v, dict)),
        "count": st.one_of(
            st.integers(max_value=-1), st.just(1.5), st.booleans(), text, st.lists(scalars, max_size=2)
        ),
        "number": st.one_of(
            st.booleans(), text, st.lists(scalars, max_size=2), st.dictionaries(text, scalars)
        ),
        "str-list": non_null.filter(lambda v: not isinstance(v, list))
        | st.lists(non_null.filter(lambda v: not isinstance(v, str)), min_size=1, max_size=2),
    }
    if kind in STATES:
        return st.one_of(st.none(), text.filter(lambda s: s not in STATES[kind]), not_string)
    return options[kind]


# --- rows ------------------------------------------------------------------------------------------------
class Row:
    """One generated row: where it goes, its JSON text, and (for valid rows) what the merge sees."""

    def __init__(
        self,
        table: str,
        record_id: str,
        op: str,
        data: Any,
        field_meta: Any,
        *,
        valid: bool,
        why: str,
        data_json: str | None = None,
    ) -> None:
        self.table, self.record_id, self.op = table, record_id, op
        self.data, self.field_meta = data, field_meta
        self.valid, self.why = valid, why
        self.data_json = data_json if data_json is not None else _dump(data)
        self.seq: int | None = None
        self.created_iso = ""

    def __repr__(self) -> str:  # hypothesis prints failing examples with this
        data = self.data_json if len(self.data_json) < 200 else self.data_json[:200] + "…"
        return f"Row({self.table}/{self.record_id} {self.op} {data} meta={self.field_meta!r} {self.why})"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@st.composite
def valid_rows(draw: st.DrawFn, table: str) -> Row:
    kinds = KINDS[table]
    record_id = draw(st.sampled_from(IDS[table]))
    op = draw(st.sampled_from(["insert", "update", "update", "delete"]))
    if op == "delete":
        data = draw(st.none() | st.dictionaries(text, json_values, max_size=2))
        return Row(table, record_id, op, data, {}, valid=True, why="valid delete")
    names = draw(st.lists(st.sampled_from(sorted(kinds)), unique=True, max_size=5))
    data: dict[str, Any] = {name: draw(valid_value(kinds[name])) for name in names}
    if "agentId" in data and draw(st.booleans()):
        data["agentId"] = draw(st.sampled_from(AGENT_IDS))
    if table == "aiMissions" and "cadence" in data and data["cadence"] is not None:
        data["cadence"] = draw(st.sampled_from(VALID_CADENCES) | garbage_cadences)
    if draw(st.booleans()):
        data[draw(text.filter(lambda k: k not in kinds and k != "id"))] = draw(json_values)
    if op == "insert":
        data["id"] = record_id
        if table == "aiMissions" and draw(st.booleans()):
            # Often due, so the tick really plans missions whose log also holds malformed rows.
            data.update(state="active", nextRunAt=to_js_iso(NOW_ISH - timedelta(hours=1)), deletedAt=None)
        meta: dict[str, str] = {}
    else:
        meta = {name: draw(stamps) for name in data if draw(st.booleans())}
    return Row(table, record_id, op, data, meta, valid=True, why=f"valid {op}")


@st.composite
def malformed_rows(draw: st.DrawFn, table: str) -> Row:
    kinds = KINDS[table]
    record_id = draw(st.sampled_from(IDS[table]))
    op = draw(st.sampled_from(["insert", "update"]))
    how = draw(
        st.sampled_from(
            [
                "wrong-type",
                "wrong-type",
                "bad-stamp",
                "data-not-object",
                "meta-not-object",
                "unknown-op",
                "poison",
                "huge-unknown",
            ]
        )
    )
    if how == "unknown-op":
        bad_op = draw(
            st.sampled_from(["upsert", "DELETE", "", "patch", "Insert"])
            | text.filter(lambda s: s not in ("insert", "update", "delete"))
        )
        return Row(table, record_id, bad_op, {"title": "x"}, {}, valid=False, why="unknown op")
    if how == "data-not-object":
        data = draw(non_null.filter(lambda v: not isinstance(v, dict)))
        return Row(table, record_id, op, data, {}, valid=False, why="data not an object")
    if how == "meta-not-object":
        meta = draw(non_null.filter(lambda v: not isinstance(v, dict)))
        return Row(
            table, record_id, "update", {"memo": "x"}, meta, valid=False, why="field_meta not an object"
        )
    if how == "bad-stamp":
        name = draw(st.sampled_from(sorted(kinds)))
        # Not month 13 / February 30th here: field_meta stamps in the exact JS form are only checked by
        # pattern (the refresh's hot path); they are compared as strings and never parsed, so harmless.
        stamp = draw(
            st.sampled_from([s for s in BAD_TIMESTAMPS if "-13-" not in s and "-02-30" not in s])
            | non_null.filter(lambda v: not isinstance(v, str))
        )
        return Row(
            table, record_id, "update", {name: None}, {name: stamp}, valid=False, why="bad field_meta stamp"
        )
    if how == "poison":
        # Written as raw JSON text: the value only exists in the database.
        where = draw(st.sampled_from(["known", "unknown", "meta", "deep"]))
        if where == "meta":
            row = Row(table, record_id, "update", {"memo": "x"}, None, valid=False, why="poison field_meta")
            row.field_meta = RawJson('{"memo": ' + POISON_NUMBER + "}")
            return row
        body = {
            "known": '{"title": ' + POISON_NUMBER + "}",
            "unknown": '{"extra": -' + POISON_NUMBER + "}",
        }.get(where, '{"extra": ' + DEEP + "}")
        return Row(table, record_id, op, None, {}, valid=False, why=f"poison {where}", data_json=body)
    if how == "huge-unknown":
        return Row(table, record_id, op, {"extra": HUGE}, {}, valid=False, why="huge unknown string")
    name = draw(st.sampled_from(sorted(kinds)))
    data = {name: draw(wrong_value(kinds[name]))}
    if op == "insert":
        data["id"] = record_id
    return Row(table, record_id, op, data, {}, valid=False, why=f"wrong type for {name}")


class RawJson(str):
    """JSON text written as is (for values Python cannot produce)."""


def any_row(table: str) -> st.SearchStrategy[Row]:
    return st.one_of(valid_rows(table), malformed_rows(table))


rows_strategy = st.lists(st.one_of(any_row("aiMissions"), any_row("agents")), min_size=1, max_size=14)


# --- writing rows ----------------------------------------------------------------------------------------
async def write_rows(db: Any, admin_db: Any, user: str, rows: list[Row]) -> None:
    """Each row gets an explicit, increasing created_at, so feed order and the oracle's order agree."""
    for index, row in enumerate(rows):
        created = BASE_TIME + timedelta(milliseconds=index)
        row.created_iso = to_js_iso(created)
        meta_json = row.field_meta if isinstance(row.field_meta, RawJson) else _dump(row.field_meta)
        if row.op in ("insert", "update", "delete"):
            async with db.with_user(user) as conn:
                cur = await conn.execute(
                    "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data,"
                    " field_meta, client_id, created_at) VALUES ('ai', %s, %s, %s, %s, %s::jsonb, %s::jsonb,"
                    " 'fuzz', %s) RETURNING id",
                    (row.table, row.record_id, user, row.op, row.data_json, meta_json, created),
                )
                change = await cur.fetchone()
            found = await admin_db.fetchrow(
                "SELECT seq FROM mana_ai.sync_feed WHERE change_id = %s", (change["id"],)
            )
        else:
            # The CHECK on sync_changes forbids unknown ops; the feed has none, and mana-sync may differ.
            found = await admin_db.fetchrow(
                "INSERT INTO mana_ai.sync_feed (user_id, table_name, record_id, op, data, field_meta, created_at)"
                " VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s) RETURNING seq",
                (user, row.table, row.record_id, row.op, row.data_json, meta_json, created),
            )
        assert found is not None
        row.seq = found["seq"]


def oracle(rows: list[Row]) -> dict[tuple[str, str], RecordState]:
    """The pure LWW merge of the valid rows alone."""
    states: dict[tuple[str, str], RecordState] = {}
    for row in rows:
        if row.valid:
            key = (row.table, row.record_id)
            change = ChangeRow(row.record_id, row.op, row.data, row.field_meta, row.created_iso)  # type: ignore[arg-type]
            states[key] = apply_row(states.get(key), change)
    return states


async def snapshots_of(admin_db: Any, user: str) -> dict[tuple[str, str], tuple[dict[str, Any], bool]]:
    found: dict[tuple[str, str], tuple[dict[str, Any], bool]] = {}
    for table, sql in (
        (
            "aiMissions",
            "SELECT mission_id AS id, record, deleted FROM mana_ai.mission_snapshots WHERE user_id = %s",
        ),
        ("agents", "SELECT agent_id AS id, record, deleted FROM mana_ai.agent_snapshots WHERE user_id = %s"),
    ):
        for r in await admin_db.fetch(sql, (user,)):
            found[(table, r["id"])] = (r["record"], r["deleted"])
    return found


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def skipped(self, user: str) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if getattr(r, "action", "") == "snapshots.row_skipped" and getattr(r, "user_id", "") == user
        ]


@contextmanager
def captured_warnings() -> Iterator[Captured]:
    handler = Captured()
    log = logging.getLogger("mana_ai.synclog.snapshots")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


# --- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture
async def app(app_db_url: str) -> AsyncIterator[App]:
    async with FakeLlmServer(default=conversation_responder()) as llm:
        # A long retry backoff: a mission that fails in one example is not planned again in the next. The
        # due times lie hours back: a wide missed-run grace keeps these tests about rows, not about timing.
        settings = make_settings(app_db_url, llm.url, retry_backoff=3600, missed_run_grace=timedelta(days=7))
        async with App(settings) as running:
            yield running


# --- tests -----------------------------------------------------------------------------------------------
def test_kinds_cover_every_checked_field() -> None:
    assert set(MISSION_KINDS) == set(MISSION_FIELDS)
    assert set(AGENT_KINDS) == set(AGENT_FIELDS)


def _is_due(state: RecordState, now_iso: str) -> bool:
    record = state.record
    next_run = record.get("nextRunAt")
    return (
        state.is_live()
        and record.get("state") == "active"
        and isinstance(next_run, str)
        and next_run <= now_iso
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(rows=rows_strategy, bad_cadence=garbage_cadences)
async def test_malformed_rows_are_skipped_and_cost_nothing(db, admin_db, app, rows, bad_cadence):
    user = "fuzz-" + uuid.uuid4().hex[:12]
    past = to_js_iso(NOW_ISH - timedelta(days=1))
    anchors = [
        Row(
            "aiMissions",
            "anchor-ok",
            "insert",
            {
                "id": "anchor-ok",
                "state": "active",
                "nextRunAt": past,
                "cadence": {"kind": "interval", "everyMinutes": 60},
                "objective": "Plan my week",
            },
            {},
            valid=True,
            why="anchor",
        ),
        Row(
            "aiMissions",
            "anchor-bad-cadence",
            "insert",
            {
                "id": "anchor-bad-cadence",
                "state": "active",
                "nextRunAt": past,
                "cadence": bad_cadence,
                "objective": "Plan my week",
            },
            {},
            valid=True,
            why="anchor",
        ),
    ]
    rows = [*anchors, *rows]
    note(repr(rows))  # (the fixtures make hypothesis print the arguments blank)
    await write_rows(db, admin_db, user, rows)

    with captured_warnings() as warnings:
        stats = await refresh_snapshots(db)  # never raises

    # Every valid row is applied: the snapshots are exactly the merge of the valid rows.
    expected = oracle(rows)
    got = await snapshots_of(admin_db, user)
    assert set(got) == set(expected)
    for key, state in expected.items():
        assert got[key] == (state.to_snapshot(), state.deleted), key
    malformed = [r for r in rows if not r.valid]
    # (rows_applied also counts the write-backs of the previous example's tick; skipped rows are all ours)
    assert stats.missions.rows_skipped + stats.agents.rows_skipped == len(malformed)

    # Exactly one warning per skipped row, naming it.
    skipped = warnings.skipped(user)
    assert Counter(r.seq for r in skipped) == Counter(r.seq for r in malformed)
    by_seq = {r.seq: r for r in malformed}
    for record in skipped:
        row = by_seq[record.seq]
        assert (record.table, record.record_id) == (row.table, row.record_id)
        assert record.reason

    # A real tick still plans what is due, and the garbage cadence costs only its own mission.
    tick = await app.ticker.tick()
    assert not tick.errors, tick.errors
    mine = {r.mission_id: r for r in tick.results if r.user_id == user}
    due = {
        rid for (table, rid), s in expected.items() if table == "aiMissions" and _is_due(s, tick.scanned_at)
    }
    assert set(mine) == due
    assert mine["anchor-ok"].decision == "ran"
    assert mine["anchor-bad-cadence"].decision == "failed"
    assert mine["anchor-bad-cadence"].detail
    assert not [r for r in mine.values() if r.decision == "error"], mine
    written = await admin_db.fetchrow(
        "SELECT data FROM public.sync_changes WHERE user_id = %s AND record_id = 'anchor-bad-cadence'"
        " AND client_id = 'mana-ai-runner'",
        (user,),
    )
    last = written["data"]["iterations"][-1]
    assert last["overallStatus"] == "failed" and last["errorDetails"]["name"] == "InvalidCadence"
    assert "cadence" in last["errorDetails"]["message"]


async def test_poison_rows_in_a_due_missions_log_cost_only_that_row(db, admin_db, app):
    """The cases the random test may not combine: every kind of poison row in the log of a due mission
    (the write-back replays that log), and an agent whose limits are valid but beyond Postgres' integers."""
    user = "poison-" + uuid.uuid4().hex[:8]
    past = to_js_iso(NOW_ISH - timedelta(hours=1))
    due = {"state": "active", "nextRunAt": past, "cadence": {"kind": "interval", "everyMinutes": 60}}
    rows = [
        Row(
            "agents",
            "big",
            "insert",
            {
                "id": "big",
                "name": "Big",
                "state": "active",
                "maxConcurrentMissions": 2**31,
                "maxTokensPerDay": 10**19,
            },
            {},
            valid=True,
            why="huge limits",
        ),
        Row("aiMissions", "m-ok", "insert", {"id": "m-ok", **due}, {}, valid=True, why="due"),
        Row(
            "aiMissions",
            "m-agent",
            "insert",
            {"id": "m-agent", "agentId": "big", **due},
            {},
            valid=True,
            why="due, agent with huge limits",
        ),
    ]
    for record_id in ("m-ok", "m-agent"):
        rows += [
            Row(
                "aiMissions",
                record_id,
                "update",
                None,
                {},
                valid=False,
                why="poison number",
                data_json='{"extra": ' + POISON_NUMBER + "}",
            ),
            Row(
                "aiMissions",
                record_id,
                "update",
                None,
                {},
                valid=False,
                why="too deep",
                data_json='{"extra": ' + DEEP + "}",
            ),
            Row(
                "aiMissions",
                record_id,
                "update",
                {"memo": "x"},
                RawJson('{"memo": ' + POISON_NUMBER + "}"),
                valid=False,
                why="poison field_meta",
            ),
            *(
                Row(
                    "aiMissions",
                    record_id,
                    "update",
                    {"nextRunAt": bad},
                    {},
                    valid=False,
                    why="bad nextRunAt",
                )
                for bad in BAD_TIMESTAMPS
            ),
            Row(
                "aiMissions",
                record_id,
                "update",
                {"title": "t"},
                {"title": "0001-01-01T00:00:00+01:00"},
                valid=False,
                why="stamp before year 1",
            ),
            Row("aiMissions", record_id, "upsert", {"title": "t"}, {}, valid=False, why="unknown op"),
            Row("aiMissions", record_id, "update", {"title": HUGE}, {}, valid=False, why="huge title"),
        ]
    await write_rows(db, admin_db, user, rows)
    with captured_warnings() as warnings:
        stats = await refresh_snapshots(db)
    malformed = [r for r in rows if not r.valid]
    assert stats.missions.rows_skipped == len(malformed)
    assert Counter(r.seq for r in warnings.skipped(user)) == Counter(r.seq for r in malformed)
    got = await snapshots_of(admin_db, user)
    for key, state in oracle(rows).items():
        assert got[key] == (state.to_snapshot(), state.deleted), key

    tick = await app.ticker.tick()
    assert not tick.errors, tick.errors
    mine = {r.mission_id: r.decision for r in tick.results if r.user_id == user}
    assert mine == {"m-ok": "ran", "m-agent": "ran"}
