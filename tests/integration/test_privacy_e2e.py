"""Mission key grants end to end (issue 5, "Done when"): client-side grant, tick, prompt, audit, revoke.

The web app's part is played by ``put_row`` (records encrypted with the user's master key) and by the grant
client (``create_grant`` / ``mana-ai grants create``), which holds the master key. The runner is the real App
on the plain database role, with only the RSA private key; the LLM is the fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from mana_ai.cli import privacy as privacy_cli
from mana_ai.crypto.aead import encrypt_value
from mana_ai.crypto.grants import (
    GrantNotConfigured,
    InvalidGrantRequest,
    ZeroKnowledgeGrantForbidden,
    generate_runner_keypair,
)
from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.privacy.audit import read_audit
from mana_ai.privacy.grant_client import GrantTargetMissing, create_grant, refresh_grant, revoke_grant
from mana_ai.privacy.refs import RecordRef
from mana_ai.privacy.reseal import ResealError
from mana_ai.runner.pipeline import ENCRYPTED_PLACEHOLDER
from mana_ai.synclog.actor import user_actor
from mana_ai.synclog.store import CLI_CLIENT_ID, replay_record, update_fields
from mana_ai.testing.fake_llm import FakeLlmServer, conversation_responder
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import running_app

MASTER = bytes(range(7, 39))
NOTE_TEXT = "Milch, Eier, Mehl"
OBJECTIVE = "Plane den Wocheneinkauf"


@pytest.fixture(scope="module")
def runner_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    private_pem, public_pem = generate_runner_keypair()
    _, other_public = generate_runner_keypair()
    folder = tmp_path_factory.mktemp("keys")
    (folder / "public.pem").write_text(public_pem)
    (folder / "master.key").write_text(MASTER.hex())
    yield {
        "private": private_pem,
        "public": public_pem,
        "other_public": other_public,
        "public_file": folder / "public.pem",
        "master_file": folder / "master.key",
    }


def responder() -> Any:
    return conversation_responder(tool_name="create_task", arguments={"title": "Einkaufen"})


async def push_note(db: Database, note_id: str, content: str, user: str = "u1") -> None:
    """As the web app writes a note: title and content encrypted with the master key."""
    await put_row(
        db,
        user,
        "notes",
        note_id,
        "insert",
        {
            "id": note_id,
            "title": encrypt_value("Einkaufszettel " + note_id, MASTER),
            "content": encrypt_value(content, MASTER),
            "pinned": False,
        },
        app_id="notes",
    )


async def push_mission(db: Database, mission_id: str, notes: list[str], *, title: str | None = None) -> None:
    """A mission whose objective (and title, unless given in plaintext) is encrypted, linking notes."""
    await put_row(
        db,
        "u1",
        "aiMissions",
        mission_id,
        "insert",
        mission(
            mission_id,
            title=title if title is not None else encrypt_value("Einkauf " + mission_id, MASTER),
            objective=encrypt_value(OBJECTIVE, MASTER),
            inputs=[{"module": "notes", "table": "notes", "id": n} for n in notes],
        ),
    )


async def grant(db: Database, mission_id: str, public_key_pem: str, **overrides: Any) -> Any:
    """``create_grant`` for u1 with the master key, the mission's inputs, no expiry, issued now."""
    values: dict[str, Any] = {
        "user_id": "u1",
        "mission_id": mission_id,
        "records": None,
        "master_key": MASTER,
        "public_key_pem": public_key_pem,
        "ttl": None,
        "now": utcnow(),
    }
    values.update(overrides)
    return await create_grant(db, **values)


def user_prompts(llm: FakeLlmServer) -> list[str]:
    found: list[str] = []
    for request in llm.requests:
        for message in request.json["messages"]:
            if message.get("role") == "user" and message["content"] not in found:
                found.append(message["content"])
    return found


def prompt_of(llm: FakeLlmServer, heading: str) -> str:
    matches = [p for p in user_prompts(llm) if p.startswith("# Mission: " + heading)]
    assert len(matches) == 1, [p.splitlines()[0] for p in user_prompts(llm)]
    return matches[0]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def audit_of(db: Database, mission_id: str) -> list[tuple[str, str, str, str | None, str | None]]:
    rows = await read_audit(db, user_id="u1", mission_id=mission_id)
    return sorted((r.table_name, r.record_id, r.status, r.reason, r.iteration_id) for r in rows)


def run_cli(args: list[str], env: dict[str, str]) -> Result:
    group = click.Group("mana-ai")
    privacy_cli.register(group)
    # open_app quietens the "mana_ai" logger for CLI output; do not let that leak into later tests.
    package_logger = logging.getLogger("mana_ai")
    level = package_logger.level
    try:
        return CliRunner().invoke(group, args, env=env)
    finally:
        package_logger.setLevel(level)


async def make_due_again(db: Database, mission_id: str) -> None:
    """Move nextRunAt back into the past with a write newer than the runner's write-back."""
    later = to_js_iso(utcnow() + dt.timedelta(seconds=2))
    # A due time of its own: a run already done for the same due time is not repeated (claims).
    due = to_js_iso(utcnow() - dt.timedelta(minutes=5))
    async with db.with_user("u1") as conn:
        await update_fields(
            conn,
            user_id="u1",
            app_id="ai",
            table="aiMissions",
            record_id=mission_id,
            fields={"nextRunAt": due},
            at=later,
            client_id="test-client",
            actor=user_actor("u1"),
        )


async def test_grant_tick_audit_revoke(db: Database, app_db_url: str, runner_keys: dict[str, Any]) -> None:
    await push_note(db, "n1", NOTE_TEXT)
    await push_note(db, "n2", "Geschenk für Oma")
    await push_mission(db, "m1", ["n1"])
    await push_mission(db, "m2", ["n2"])

    # The client issues the grant for m1 directly, and for m2 through the CLI (master key from a file,
    # the runner's public key from a file, the database from SYNC_DATABASE_URL).
    issued = await grant(
        db, "m1", runner_keys["public"], records=[RecordRef("notes", "n1")], ttl=dt.timedelta(days=7)
    )
    assert (
        issued.records == 1 and issued.sealed_fields == 2 + 2
    )  # note title+content, mission title+objective
    assert issued.grant.derivation.record_ids == ("notes:n1",)
    env = {"SYNC_DATABASE_URL": app_db_url, "MANA_AI_USER": "u1"}
    result = await asyncio.to_thread(
        run_cli,
        [
            "grants",
            "create",
            "--mission",
            "m2",
            "--record",
            "notes:n2",
            "--ttl",
            "2d",
            "--master-key-file",
            str(runner_keys["master_file"]),
            "--public-key-file",
            str(runner_keys["public_file"]),
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert "Granted 1 record(s) to mission m2" in result.output

    async with (
        FakeLlmServer(default=responder()) as llm,
        running_app(app_db_url, llm, private_key_pem=runner_keys["private"]) as app,
    ):
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 2, stats.to_json()
        iterations = {r.mission_id: r.iteration_id for r in stats.results}

        for mission_id, note_id, text in (("m1", "n1", NOTE_TEXT), ("m2", "n2", "Geschenk für Oma")):
            prompt = prompt_of(llm, "Einkauf " + mission_id)  # the decrypted title
            assert text in prompt and OBJECTIVE in prompt
            assert "Einkaufszettel " + note_id in prompt  # the note's decrypted title heads its input
            assert "enc:1:" not in prompt and ENCRYPTED_PLACEHOLDER not in prompt
            assert await audit_of(db, mission_id) == [
                ("aiMissions", mission_id, "ok", None, iterations[mission_id]),
                ("notes", note_id, "ok", None, iterations[mission_id]),
            ]
        assert counter(app.metrics, "mana_ai_decrypts_total", table="notes") == 4
        assert counter(app.metrics, "mana_ai_decrypts_total", table="aiMissions") == 4

        # Revoke m1 (directly) and m2 (through the CLI); both are due again; nothing is decrypted any more.
        revoked = await revoke_grant(db, user_id="u1", mission_id="m1", now=utcnow())
        assert revoked.had_grant and revoked.removed_copies == 2
        result = await asyncio.to_thread(run_cli, ["grants", "revoke", "--mission", "m2"], env)
        assert result.exit_code == 0, result.output
        async with db.with_user("u1") as conn:
            state = await replay_record(conn, user_id="u1", app_id="ai", table="aiMissions", record_id="m1")
            assert state is not None and state.record["grant"] is None
            copies = await conn.execute("SELECT count(*) AS n FROM mana_ai.mission_grant_copies")
            assert (await copies.fetchone() or {})["n"] == 0
            grants = await conn.execute("SELECT count(*) AS n FROM mana_ai.mission_grants")
            assert (await grants.fetchone() or {})["n"] == 0
            # Nothing of a grant but mission.grant is in the sync log (the web app pulls every table of "ai").
            tables = await conn.execute(
                "SELECT DISTINCT table_name FROM public.sync_changes WHERE app_id = 'ai'"
            )
            assert {r["table_name"] for r in await tables.fetchall()} == {"aiMissions"}
        await make_due_again(db, "m1")
        await make_due_again(db, "m2")
        before = len(llm.requests)
        again = await app.ticker.tick()
        assert again.decisions["ran"] == 2, again.to_json()
        # Not de-duplicated: after the revoke both prompts may be identical (same placeholders, and the two
        # earlier iterations may share their millisecond).
        new_prompts = [
            m["content"]
            for r in llm.requests[before:]
            if len(r.json["messages"]) == 2
            for m in r.json["messages"]
            if m.get("role") == "user"
        ]
        assert len(new_prompts) == 2
        for prompt in new_prompts:
            assert NOTE_TEXT not in prompt and OBJECTIVE not in prompt and ENCRYPTED_PLACEHOLDER in prompt
        assert len(await audit_of(db, "m1")) == 2 and len(await audit_of(db, "m2")) == 2  # no new rows
        assert counter(app.metrics, "mana_ai_decrypts_total", table="notes") == 4
        # A revoked grant is simply absent: it is not a skip.
        assert counter(app.metrics, "mana_ai_grant_skips_total", reason="malformed") == 0


async def test_tampered_copy_and_record_outside_the_allowlist(
    db: Database, admin_db: Database, app_db_url: str, runner_keys: dict[str, Any]
) -> None:
    await push_note(db, "n1", NOTE_TEXT)
    await push_note(db, "n2", "nicht freigegeben")
    await push_mission(db, "m3", ["n1", "n2"], title="Mission drei")
    issued = await grant(db, "m3", runner_keys["public"], records=[RecordRef("notes", "n1")])
    # Flip one character of the sealed note copy (a corrupted or manipulated copy).
    where = "WHERE mission_id = 'm3' AND table_name = 'notes' AND record_id = 'n1' AND grant_id = %s"
    row = await admin_db.fetchrow(
        "SELECT sealed FROM mana_ai.mission_grant_copies " + where, (issued.grant_id,)
    )
    assert row is not None
    blob = row["sealed"]
    tampered = blob[:-8] + ("A" if blob[-8] != "A" else "B") + blob[-7:]
    await admin_db.execute(
        "UPDATE mana_ai.mission_grant_copies SET sealed = %s " + where, (tampered, issued.grant_id)
    )

    async with (
        FakeLlmServer(default=responder()) as llm,
        running_app(app_db_url, llm, private_key_pem=runner_keys["private"]) as app,
    ):
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 1, stats.to_json()  # no crash: planned without the broken input
        iteration = stats.results[0].iteration_id
        prompt = prompt_of(llm, "Mission drei")
        assert OBJECTIVE in prompt  # the mission's own copy is intact
        assert NOTE_TEXT not in prompt and "nicht freigegeben" not in prompt and "enc:1:" not in prompt
        assert await audit_of(db, "m3") == [
            ("aiMissions", "m3", "ok", None, iteration),
            ("notes", "n1", "failed", "ciphertext-tampered-or-wrong-key", iteration),
            ("notes", "n2", "scope-violation", "record-not-in-grant-allowlist", iteration),
        ]
        assert counter(app.metrics, "mana_ai_grant_scope_violations_total", table="notes") == 1
        assert counter(app.metrics, "mana_ai_decrypts_total", table="notes") == 0


async def test_unusable_grants_are_skipped_with_their_reason(
    db: Database, app_db_url: str, runner_keys: dict[str, Any]
) -> None:
    await push_note(db, "n1", NOTE_TEXT)
    for mission_id in ("expired", "other-key", "garbled", "no-key"):
        await push_mission(db, mission_id, ["n1"], title="Mission " + mission_id)
    notes = [RecordRef("notes", "n1")]
    long_ago = utcnow() - dt.timedelta(days=40)
    await grant(db, "expired", runner_keys["public"], records=notes, ttl=dt.timedelta(hours=1), now=long_ago)
    await grant(db, "other-key", runner_keys["other_public"], records=notes)
    await grant(db, "garbled", runner_keys["public"], records=notes)
    async with db.with_user("u1") as conn:  # then the grant is overwritten with garbage
        await update_fields(
            conn,
            user_id="u1",
            app_id="ai",
            table="aiMissions",
            record_id="garbled",
            fields={
                "grant": {
                    "wrappedKey": "%%% not base64 %%%",
                    "derivation": "?",
                    "expiresAt": "2099-01-01T00:00:00.000Z",
                }
            },
            at=to_js_iso(utcnow() + dt.timedelta(seconds=1)),
            client_id="test-client",
            actor=user_actor("u1"),
        )
    await grant(db, "no-key", runner_keys["public"], records=notes)

    async with (
        FakeLlmServer(default=responder()) as llm,
        running_app(app_db_url, llm, private_key_pem=runner_keys["private"]) as app,
    ):
        # "no-key" is planned by the second runner below; keep it out of this tick.
        await make_not_due(db, "no-key")
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 3, stats.to_json()
        for reason in ("expired", "wrap-rejected", "malformed"):
            assert counter(app.metrics, "mana_ai_grant_skips_total", reason=reason) == 1, reason
        for mission_id in ("expired", "other-key", "garbled"):
            prompt = prompt_of(llm, "Mission " + mission_id)
            assert NOTE_TEXT not in prompt and OBJECTIVE not in prompt and ENCRYPTED_PLACEHOLDER in prompt
            assert await audit_of(db, mission_id) == []
        assert counter(app.metrics, "mana_ai_decrypts_total", table="notes") == 0

    await make_due_again(db, "no-key")
    async with FakeLlmServer(default=responder()) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 1, stats.to_json()
        assert counter(app.metrics, "mana_ai_grant_skips_total", reason="not-configured") == 1
        assert NOTE_TEXT not in prompt_of(llm, "Mission no-key")
        assert await audit_of(db, "no-key") == []


async def make_not_due(db: Database, mission_id: str) -> None:
    later = to_js_iso(utcnow() + dt.timedelta(seconds=1))
    async with db.with_user("u1") as conn:
        await update_fields(
            conn,
            user_id="u1",
            app_id="ai",
            table="aiMissions",
            record_id=mission_id,
            fields={"nextRunAt": "2099-01-01T00:00:00.000Z"},
            at=later,
            client_id="test-client",
            actor=user_actor("u1"),
        )


async def test_refresh_reseals_changed_sources_and_regrant_replaces_copies(
    db: Database, app_db_url: str, runner_keys: dict[str, Any], tmp_path: Path
) -> None:
    await push_note(db, "n1", "alt")
    await push_mission(db, "m4", ["n1"], title="Mission vier")
    first = await grant(db, "m4", runner_keys["public"])
    assert first.records == 1  # taken from the mission's inputs
    await put_row(
        db,
        "u1",
        "notes",
        "n1",
        "update",
        {"content": encrypt_value("neu", MASTER)},
        {"content": to_js_iso(utcnow() + dt.timedelta(seconds=1))},
        app_id="notes",
    )
    env = {"SYNC_DATABASE_URL": app_db_url, "MANA_AI_USER": "u1"}
    result = await asyncio.to_thread(
        run_cli,
        ["grants", "refresh", "--mission", "m4", "--master-key-file", str(runner_keys["master_file"])],
        env,
    )
    assert result.exit_code == 0, result.output
    assert "Re-sealed 1, unchanged 1, removed 0." in result.output

    async with (
        FakeLlmServer(default=responder()) as llm,
        running_app(app_db_url, llm, private_key_pem=runner_keys["private"]) as app,
    ):
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 1, stats.to_json()
        assert "neu" in prompt_of(llm, "Mission vier")
        assert [r[2:4] for r in await audit_of(db, "m4")] == [("ok", None), ("ok", None)]

    # A second grant replaces the first one's copies (they are deleted, the new ones have new ids).
    second = await grant(db, "m4", runner_keys["public"])
    assert second.grant_id != first.grant_id and second.removed_copies == 2

    # The audit command shows the rows.
    result = await asyncio.to_thread(run_cli, ["audit", "--mission", "m4", "--limit", "5"], env)
    assert result.exit_code == 0, result.output
    assert "notes:n1" in result.output and "ok" in result.output


async def test_grant_client_refusals_write_nothing(
    db: Database, admin_db: Database, runner_keys: dict[str, Any]
) -> None:
    await push_note(db, "n1", NOTE_TEXT)
    await push_mission(db, "m5", [], title="Mission fünf")
    public = runner_keys["public"]

    async def attempt(**overrides: Any) -> None:
        values: dict[str, Any] = {"mission_id": "m5", "records": [RecordRef("notes", "n1")], **overrides}
        await grant(db, values.pop("mission_id"), values.pop("public_key_pem", public), **values)

    with pytest.raises(GrantTargetMissing, match="mission 'nope'"):
        await attempt(mission_id="nope")
    with pytest.raises(GrantTargetMissing, match="notes:n9"):
        await attempt(records=[RecordRef("notes", "n1"), RecordRef("notes", "n9")])
    await put_row(db, "u2", "aiMissions", "m5", "insert", mission("m5"))
    with pytest.raises(GrantTargetMissing, match="notes:n1"):
        await attempt(user_id="u2")  # another user's note is invisible (row-level security)
    with pytest.raises(ResealError, match="master key"):
        await attempt(master_key=bytes(32))
    with pytest.raises(ZeroKnowledgeGrantForbidden):
        await attempt(master_key=None)
    with pytest.raises(GrantNotConfigured):
        await attempt(public_key_pem="")
    with pytest.raises(InvalidGrantRequest, match="no records"):
        await attempt(records=None)  # the mission links no inputs
    with pytest.raises(GrantTargetMissing, match="no valid grant"):
        await refresh_grant(db, user_id="u1", mission_id="m5", master_key=MASTER, now=utcnow())
    with pytest.raises(GrantTargetMissing):
        await revoke_grant(db, user_id="u1", mission_id="nope", now=utcnow())
    row = await admin_db.fetchrow(
        "SELECT count(*) AS n FROM public.sync_changes WHERE client_id = %s", (CLI_CLIENT_ID,)
    )
    assert row is not None and row["n"] == 0


async def test_persona_changed_after_the_grant_is_audited_as_a_stale_copy(
    db: Database, app_db_url: str, runner_keys: dict[str, Any]
) -> None:
    """The agent's persona is sealed with the grant; an edit after it must be audited as a stale copy."""
    agent = {"id": "ag-p", "name": "Planer", "state": "active", "systemPrompt": encrypt_value("alt", MASTER)}
    await put_row(db, "u1", "agents", "ag-p", "insert", agent)
    await push_note(db, "n-p", NOTE_TEXT)
    inputs = [{"module": "notes", "table": "notes", "id": "n-p"}]
    objective = encrypt_value(OBJECTIVE, MASTER)
    record = mission("m-p", title="Mission P", objective=objective, agentId="ag-p", inputs=inputs)
    await put_row(db, "u1", "aiMissions", "m-p", "insert", record)
    await grant(db, "m-p", runner_keys["public"])
    newer = to_js_iso(utcnow() + dt.timedelta(seconds=1))
    encrypted_edit = {"systemPrompt": encrypt_value("neu", MASTER)}
    await put_row(db, "u1", "agents", "ag-p", "update", encrypted_edit, {"systemPrompt": newer})

    async with (
        FakeLlmServer(default=responder()) as llm,
        running_app(app_db_url, llm, private_key_pem=runner_keys["private"]) as app,
    ):
        stats = await app.ticker.tick()
        assert stats.decisions["ran"] == 1, stats.to_json()
        assert OBJECTIVE in prompt_of(llm, "Mission P")
    audit = {(row[0], row[1]): row[2:4] for row in await audit_of(db, "m-p")}
    assert audit[("agents", "ag-p")] == ("ok", "resealed-copy-stale")
    assert audit[("aiMissions", "m-p")] == ("ok", None)
