"""Resolvers against real PostgreSQL as the plain role: sealed copies, allowlist, audit, metrics, W17 shapes."""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mana_ai.crypto.aead import encrypt_value
from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.privacy.audit import AuditEntry, AuditLog, read_audit
from mana_ai.privacy.grant_context import GrantContext
from mana_ai.privacy.grant_store import put_copies, put_grant
from mana_ai.privacy.refs import SOURCE_APPS
from mana_ai.privacy.reseal import reseal_record
from mana_ai.resolvers.registry import InputRef, ResolverContext, default_registry
from tests.integration.helpers import put_row

MASTER = bytes(range(1, 33))
ALLOW = [
    "notes:n1",
    "tasks:t1",
    "events:e1",
    "journalEntries:j1",
    "kontextDoc:k1",
    "userContext:singleton",
    "notes:gone",
]
MDK = os.urandom(32)
"""The grant data key (v2: random per grant)."""
GRANT = GrantContext(
    mission_id="m1", version="v2", grant_id="g1", allowlist=frozenset(ALLOW), expires_at="", aead=AESGCM(MDK)
)
FUTURE = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)


async def store_copy(db: Database, copy: Any) -> None:
    """Store a copy for grant g1 of m1 (the grant row is created on first use)."""
    async with db.with_user("u1") as conn:
        cur = await conn.execute("SELECT 1 FROM mana_ai.mission_grants WHERE mission_id = 'm1'")
        if await cur.fetchone() is None:
            await put_grant(
                conn, "u1", "m1", grant_id="g1", grant={}, key_box=None, expires_at=FUTURE, copies=[]
            )
        await put_copies(conn, "u1", "m1", grant_id="g1", copies=[copy], removed=())


async def put_source(db: Database, app: str, table: str, record: dict[str, Any], fields: list[str]) -> None:
    """A record as the web app pushes it: the named fields encrypted with the master key."""
    data = {k: encrypt_value(v, MASTER) if k in fields else v for k, v in record.items()}
    await put_row(db, "u1", table, record["id"], "insert", data, app_id=app)
    copy = reseal_record(
        mission_id="m1",
        table=table,
        record_id=record["id"],
        source=data,
        source_field_meta={},
        master_key=MASTER,
        data_key=MDK,
    )
    await store_copy(db, copy)


def context(db: Database, metrics: Metrics, grant: GrantContext | None = GRANT) -> ResolverContext:
    return ResolverContext(
        db=db,
        metrics=metrics,
        audit=AuditLog(db),
        user_id="u1",
        mission_id="m1",
        iteration_id="it-1",
        grant=grant,
    )


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def audit_rows(db: Database) -> list[tuple[str, str, str, str | None, str | None]]:
    rows = await read_audit(db, user_id="u1", mission_id="m1")
    return sorted((r.table_name, r.record_id, r.status, r.reason, r.iteration_id) for r in rows)


async def test_every_encrypted_family_decrypts_through_its_copy(db: Database) -> None:
    await put_source(
        db, "notes", "notes", {"id": "n1", "title": "Einkauf", "content": "Milch"}, ["title", "content"]
    )
    await put_source(
        db,
        "todo",
        "tasks",
        {
            "id": "t1",
            "title": "Steuer",
            "description": "Belege",
            "isCompleted": False,
            "dueDate": "2026-05-01",
        },
        ["title", "description"],
    )
    await put_source(
        db,
        "calendar",
        "events",
        {"id": "e1", "title": "Zahnarzt", "location": "Praxis", "timeBlockId": "b1"},
        ["title", "location"],
    )
    # The app keeps an event's time on its timeBlocks row (eventsStore.createEvent → createBlock).
    block = {
        "id": "b1",
        "startDate": "2026-05-02T09:00:00.000Z",
        "sourceModule": "calendar",
        "sourceId": "e1",
    }
    await put_row(db, "u1", "timeBlocks", "b1", "insert", block, app_id="timeblocks")
    await put_source(
        db,
        "journal",
        "journalEntries",
        {"id": "j1", "title": "Tag", "content": "Schön"},
        ["title", "content"],
    )
    await put_source(db, "kontext", "kontextDoc", {"id": "k1", "content": "Ich wohne in Köln"}, ["content"])
    await put_source(
        db,
        "profile",
        "userContext",
        {"id": "singleton", "about": "Koch", "interests": ["Rad"]},
        ["about", "interests"],
    )
    metrics = Metrics(process=False)
    refs = [
        InputRef("notes", "notes", "n1"),
        InputRef("todo", "tasks", "t1"),
        InputRef("calendar", "events", "e1"),
        InputRef("journal", "journalEntries", "j1"),
        InputRef("kontext", "kontextDoc", "k1"),
        InputRef("profile", "userContext", "singleton"),
    ]
    results = await default_registry().resolve_all(refs, context(db, metrics))
    got = [(r.module, r.title, r.content) for r in results]
    assert got == [
        ("notes", "Einkauf", "Milch"),
        ("todo", "Steuer", "[offen] Steuer — Belege (faellig: 2026-05-01)"),
        ("calendar", "Zahnarzt", "Zahnarzt @ 2026-05-02T09:00:00.000Z in Praxis"),
        ("journal", "Tag", "Schön"),
        ("kontext", "Mana-Kontext", "Ich wohne in Köln"),
        ("profile", "Nutzerprofil", 'Koch\n["Rad"]'),
    ]
    assert value(metrics, "mana_ai_decrypts_total", table="notes") == 2
    assert value(metrics, "mana_ai_decrypts_total", table="userContext") == 2
    rows = await audit_rows(db)
    assert len(rows) == 6 and all(r[2] == "ok" and r[3] is None and r[4] == "it-1" for r in rows)


async def test_scope_violation_missing_copy_tampered_deleted_and_no_grant(
    db: Database, admin_db: Database
) -> None:
    await put_source(db, "notes", "notes", {"id": "n1", "title": "A", "content": "secret"}, ["content"])
    # Outside the allowlist: a perfectly readable copy exists, and still nothing is read.
    await put_source(db, "notes", "notes", {"id": "n2", "title": "B", "content": "other"}, ["content"])
    metrics = Metrics(process=False)
    registry = default_registry()
    assert await registry.resolve_all([InputRef("notes", "notes", "n2")], context(db, metrics)) == []
    assert value(metrics, "mana_ai_grant_scope_violations_total", table="notes") == 1
    assert value(metrics, "mana_ai_decrypts_total", table="notes") == 0
    assert await audit_rows(db) == [
        ("notes", "n2", "scope-violation", "record-not-in-grant-allowlist", "it-1")
    ]

    # No grant at all: nothing happens, not even an audit row.
    assert await registry.resolve_all([InputRef("notes", "notes", "n1")], context(db, metrics, None)) == []
    assert len(await audit_rows(db)) == 1

    # Tamper with the sealed copy (the server could): a failed row, no crash, no text.
    row = await admin_db.fetchrow(
        "SELECT sealed FROM mana_ai.mission_grant_copies WHERE mission_id = 'm1' AND record_id = 'n1'"
    )
    assert row is not None
    blob = row["sealed"]
    tampered = blob[:-8] + ("A" if blob[-8] != "A" else "B") + blob[-7:]
    await admin_db.execute(
        "UPDATE mana_ai.mission_grant_copies SET sealed = %s WHERE mission_id = 'm1' AND record_id = 'n1'",
        (tampered,),
    )
    assert await registry.resolve_all([InputRef("notes", "notes", "n1")], context(db, metrics)) == []
    # A source without a copy.
    await put_row(
        db, "u1", "notes", "n3", "insert", {"id": "n3", "content": encrypt_value("x", MASTER)}, app_id="notes"
    )
    grant = GrantContext("m1", "v2", "g1", frozenset([*ALLOW, "notes:n3"]), "", AESGCM(MDK))
    assert await registry.resolve_all([InputRef("notes", "notes", "n3")], context(db, metrics, grant)) == []
    # A deleted (or never written) source: nothing, no audit.
    assert await registry.resolve_all([InputRef("notes", "notes", "gone")], context(db, metrics)) == []
    rows = await audit_rows(db)
    assert ("notes", "n1", "failed", "ciphertext-tampered-or-wrong-key", "it-1") in rows
    assert ("notes", "n3", "failed", "resealed-copy-missing", "it-1") in rows
    assert len(rows) == 3
    assert value(metrics, "mana_ai_decrypts_total", table="notes") == 0


async def test_stale_copy_is_used_and_flagged(db: Database) -> None:
    await put_source(db, "notes", "notes", {"id": "n1", "title": "A", "content": "alt"}, ["content"])
    await put_row(
        db,
        "u1",
        "notes",
        "n1",
        "update",
        {"content": encrypt_value("neu", MASTER)},
        {"content": "2030-01-01T00:00:00.000Z"},
        app_id="notes",
    )
    metrics = Metrics(process=False)
    results = await default_registry().resolve_all([InputRef("notes", "notes", "n1")], context(db, metrics))
    assert [r.content for r in results] == ["alt"]
    assert await audit_rows(db) == [("notes", "n1", "ok", "resealed-copy-stale", "it-1")]


async def test_goals_are_plaintext_with_the_web_app_shape(db: Database) -> None:
    goal = {
        "id": "g1",
        "title": "Wasser trinken",
        "currentValue": 5,
        "status": "active",
        "target": {"value": 8, "period": "day", "comparison": "gte"},
    }
    await put_row(db, "u1", "companionGoals", "g1", "insert", goal, app_id="companion")
    metrics = Metrics(process=False)
    refs = [InputRef("goals", "companionGoals", "g1"), InputRef("goals", "companionGoals", "missing")]
    results = await default_registry().resolve_all(refs, context(db, metrics, None))
    assert [(r.title, r.content) for r in results] == [("Wasser trinken", "Fortschritt: 5 / 8 (day)")]
    assert await audit_rows(db) == []


async def test_audit_is_per_user_and_best_effort(db: Database) -> None:
    log = AuditLog(db)
    assert await log.record(AuditEntry("u1", "m1", "it", "notes", "n1", "ok"))
    assert await log.record(AuditEntry("u2", "m1", "it", "notes", "n9", "failed", "decrypt-failed"))
    assert [r.record_id for r in await read_audit(db, user_id="u1")] == ["n1"]
    assert [r.to_json()["reason"] for r in await read_audit(db, user_id="u2", mission_id="m1")] == [
        "decrypt-failed"
    ]
    assert await read_audit(db, user_id="u2", mission_id="other") == []
    # A write that cannot succeed (empty user id is refused) is reported, never raised.
    assert not await log.record(AuditEntry("", "m1", "it", "notes", "n1", "ok"))


async def test_privacy_steps_unwrap_once_and_drop_the_key(db: Database) -> None:
    import datetime as dt

    from mana_ai.crypto.grants import generate_runner_keypair, issue_grant, load_private_key
    from mana_ai.privacy.steps import GRANT_STATE_KEY, MISSION_TEXT_KEY, PrivacySteps
    from mana_ai.runner.context import InputContext
    from mana_ai.synclog.records import ServerMission

    private_pem, public_pem = generate_runner_keypair()
    now = dt.datetime(2026, 4, 15, 12, 0, tzinfo=dt.UTC)
    grant = issue_grant(
        master_key=MASTER,
        mission_id="m1",
        tables=["notes"],
        record_ids=["notes:n1"],
        public_key_pem=public_pem,
        ttl=dt.timedelta(hours=1),
        now=now,
    )
    record = {
        "id": "m1",
        "title": encrypt_value("T", MASTER),
        "objective": "plain",
        "grant": grant.to_json(),
        "inputs": [{"module": "notes", "table": "notes", "id": "n1"}],
    }
    mission = ServerMission.from_record("u1", record)
    metrics = Metrics(process=False)

    late = PrivacySteps(db, metrics, load_private_key(private_pem), clock=lambda: now + dt.timedelta(hours=2))
    ctx = InputContext(mission, None, "it-1")
    assert await late.text_step(ctx) is None
    assert await late(ctx) == []
    assert value(metrics, "mana_ai_grant_skips_total", reason="expired") == 1  # once for both steps
    assert GRANT_STATE_KEY not in ctx.state and MISSION_TEXT_KEY not in ctx.state

    # In time, but the client never re-sealed anything: the copies are missing, the key is still dropped.
    steps = PrivacySteps(db, metrics, load_private_key(private_pem), clock=lambda: now)
    ctx = InputContext(mission, None, "it-2")
    await put_row(
        db, "u1", "notes", "n1", "insert", {"id": "n1", "content": encrypt_value("x", MASTER)}, app_id="notes"
    )
    assert await steps.text_step(ctx) is None
    assert isinstance(ctx.state.get(GRANT_STATE_KEY), GrantContext)
    assert await steps(ctx) == []
    assert GRANT_STATE_KEY not in ctx.state
    rows = await read_audit(db, user_id="u1", mission_id="m1")
    assert sorted((r.table_name, r.status, r.reason) for r in rows) == [
        ("aiMissions", "failed", "resealed-copy-missing"),
        ("notes", "failed", "resealed-copy-missing"),
    ]


async def test_scope_violation_table_label_is_bounded_whatever_tables_inputs_name(db: Database) -> None:
    metrics = Metrics(process=False)
    made_up = [f"t{i}-{'x' * 200}" for i in range(50)]  # the web app syncs whatever a client pushes
    refs = [InputRef("notes", table, "n1") for table in made_up]
    assert await default_registry().resolve_all(refs, context(db, metrics)) == []

    text = metrics.render().decode()
    tables = set(re.findall(r'mana_ai_grant_scope_violations_total\{[^}]*table="([^"]*)"', text))
    assert sum(1 for _ in tables) > 0  # the violations are counted …
    assert tables <= {*SOURCE_APPS, "other"}, (
        f"{len(tables)} series, e.g. {sorted(tables)[:2]}"
    )  # … under known tables
    total = sum(
        metrics.registry.get_sample_value("mana_ai_grant_scope_violations_total", {"table": t}) or 0.0
        for t in tables
    )
    assert total == 50
