"""No granted plaintext at rest (issue 13): a provider error that echoes the prompt leaves no trace.

A mission with a grant is planned; the LLM answers 500 with a body quoting the prompt (the decrypted note and
objective), as some providers do. Afterwards no row of ``public.sync_changes``, no row of any ``mana_ai`` or
``mana_ai_queue`` table and no log record holds any of that text: the error is kept as kind, status and a fixed
sentence.
"""

from __future__ import annotations

import logging

import pytest

from mana_ai.crypto.aead import encrypt_value
from mana_ai.crypto.grants import generate_runner_keypair
from mana_ai.db.connector import Database
from mana_ai.privacy.grant_client import create_grant
from mana_ai.privacy.refs import RecordRef
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app

MASTER = bytes(range(40, 72))
NOTE = "Kontonummer DE02 1203 0000 0000 2020 51"
OBJECTIVE = "Plane die Überweisung an Tante Erna"
SECRETS = (NOTE, OBJECTIVE, "Tante Erna", "DE02 1203")


async def everything_stored(admin_db: Database) -> str:
    """Every row of sync_changes and of every table in mana_ai / mana_ai_queue, as JSON text."""
    tables = await admin_db.fetch(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
        " WHERE table_schema IN ('mana_ai', 'mana_ai_queue') AND table_type = 'BASE TABLE'"
    )
    names = ["public.sync_changes", *(t["name"] for t in tables)]
    dump = []
    for name in names:
        rows = await admin_db.fetch(f"SELECT row_to_json(t)::text AS j FROM {name} t")  # type: ignore[arg-type]
        dump += [r["j"] for r in rows]
    assert any("Kontonummer" not in d for d in dump) and len(names) > 10
    return "\n".join(dump)


async def test_provider_echo_leaves_no_granted_text(
    db: Database, admin_db: Database, app_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    private_pem, public_pem = generate_runner_keypair()
    await put_row(
        db, "u1", "notes", "n1", "insert",
        {"id": "n1", "title": "Bank", "content": encrypt_value(NOTE, MASTER)}, app_id="notes",
    )  # fmt: skip
    inputs = [{"module": "notes", "table": "notes", "id": "n1"}]
    await put_row(
        db,
        "u1",
        "aiMissions",
        "m1",
        "insert",
        mission("m1", objective=encrypt_value(OBJECTIVE, MASTER), inputs=inputs),
    )
    await create_grant(
        db, user_id="u1", mission_id="m1", records=[RecordRef("notes", "n1")], master_key=MASTER,
        public_key_pem=public_pem, ttl=None, now=utcnow(),
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm, private_key_pem=private_pem) as app:
        echoed = {"detail": "prompt was: " + NOTE + " / " + OBJECTIVE, "error": {"message": NOTE}}
        llm.reply_error(500, body=echoed)
        stats = await app.ticker.tick()
        assert stats.decisions["failed"] == 1, stats.to_json()
        # The prompt really carried the granted text (so the echo did too) ...
        sent = llm.requests[0].json["messages"][1]["content"]
        assert NOTE in sent and OBJECTIVE in sent
    # ... and the run failed with kind and status, and nothing of it was kept.
    run = await admin_db.fetchrow("SELECT last_error FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
    assert (
        run is not None
        and "500" in (run["last_error"] or "")
        and "body is not kept" in (run["last_error"] or "")
    )
    stored = await everything_stored(admin_db)
    logged = "\n".join(r.getMessage() + " " + repr(r.__dict__) for r in caplog.records)
    assert "body is not kept" in stored
    for secret in SECRETS:
        assert secret not in stored, secret
        assert secret not in logged, secret
