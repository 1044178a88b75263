"""Per-user scoping that holds for a role without BYPASSRLS, and versioned idempotent migrations."""

from __future__ import annotations

import psycopg
import pytest

from mana_ai.db.migrate import latest_version, migrate
from mana_ai.errors import SchemaTooNewError, StorageError
from mana_ai.synclog.snapshots import refresh_snapshots
from tests.integration.helpers import mission, put_row


async def test_service_role_really_is_plain(db):
    row = await db.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert row == {"rolsuper": False, "rolbypassrls": False}


async def test_one_users_transaction_cannot_read_or_write_another_users_rows(db):
    await put_row(db, "alice", "notes", "n1", "insert", {"id": "n1", "content": "alice's"}, app_id="notes")
    await put_row(db, "bob", "notes", "n2", "insert", {"id": "n2", "content": "bob's"}, app_id="notes")
    async with db.with_user("alice") as conn:
        cur = await conn.execute("SELECT user_id, record_id FROM public.sync_changes")
        assert await cur.fetchall() == [{"user_id": "alice", "record_id": "n1"}]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, client_id)"
                " VALUES ('notes','notes','x','bob','insert','evil')"
            )
    # Outside with_user, no user is set and nothing is visible.
    assert await db.fetch("SELECT id FROM public.sync_changes") == []


async def test_with_user_refuses_an_empty_id(db):
    with pytest.raises(ValueError, match="empty"):
        async with db.with_user(" "):
            pass


async def test_cross_user_refresh_and_due_query_work_as_plain_role(db):
    await put_row(db, "alice", "aiMissions", "m1", "insert", mission("m1"))
    await put_row(db, "bob", "aiMissions", "m2", "insert", mission("m2"))
    stats = await refresh_snapshots(db)
    assert stats.missions.rows_applied == 2 and stats.users_processed == 2
    rows = await db.fetch("SELECT user_id FROM mana_ai.mission_snapshots ORDER BY user_id")
    assert [r["user_id"] for r in rows] == ["alice", "bob"]


async def test_decrypt_audit_is_forced_per_user(db):
    for user in ("alice", "bob"):
        async with db.with_user(user) as conn:
            await conn.execute(
                "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status)"
                " VALUES (%s, 'm', 'notes', 'n', 'ok')",
                (user,),
            )
    async with db.with_user("alice") as conn:
        cur = await conn.execute("SELECT user_id FROM mana_ai.decrypt_audit")
        assert [r["user_id"] for r in await cur.fetchall()] == ["alice"]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, table_name, record_id, status)"
                " VALUES ('bob', 'm', 'notes', 'n', 'ok')"
            )


async def test_migrate_twice_is_a_no_op(db_url):
    assert await migrate(db_url) == []
    assert await migrate(db_url) == []


async def test_schema_newer_than_code_is_refused(db_url, admin_db):
    await admin_db.execute(
        "INSERT INTO mana_ai.schema_migrations (version, name) VALUES (%s, 'from-the-future')",
        (latest_version() + 1,),
    )
    with pytest.raises(SchemaTooNewError, match="upgrade mana-ai"):
        await migrate(db_url)


async def test_plain_role_cannot_run_first_migration(pg_admin_url, app_db_url):
    # A fresh database migrated by the plain role fails with a clear message, not a half-made schema.
    import psycopg as pg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = "plain_role_migrate"
    with pg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    try:
        url = make_conninfo(app_db_url, dbname=name)
        with pytest.raises(StorageError, match="run `mana-ai migrate` once as the database owner"):
            await migrate(url)
    finally:
        with pg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_existing_sync_changes_is_left_alone(pg_admin_url):
    # In a mana deployment mana-sync owns sync_changes: migrate must not alter it, only add the trigger.
    import psycopg as pg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = "existing_sync"
    with pg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(pg_admin_url, dbname=name)
    try:
        with pg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE public.sync_changes (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), app_id TEXT NOT NULL,"
                " table_name TEXT NOT NULL, record_id TEXT NOT NULL, user_id TEXT NOT NULL, op TEXT NOT NULL,"
                " data JSONB, field_meta JSONB DEFAULT '{}', client_id TEXT NOT NULL,"
                " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), schema_version INT NOT NULL DEFAULT 1,"
                " actor JSONB, origin TEXT, space_id TEXT, mana_sync_marker TEXT)"
            )
            conn.execute(
                "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)"
                " VALUES ('ai', 'aiMissions', 'old', 'u1', 'insert', '{\"state\":\"active\"}', 'web')"
            )
        await migrate(url)
        with pg.connect(url, autocommit=True) as conn:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'sync_changes'"
                ).fetchall()
            ]
            assert "mana_sync_marker" in cols  # untouched
            # The history that predates the trigger was backfilled into the feed.
            assert conn.execute("SELECT count(*) FROM mana_ai.sync_feed").fetchone()[0] == 1
            policies = conn.execute(
                "SELECT count(*) FROM pg_policies WHERE tablename = 'sync_changes'"
            ).fetchone()
            assert policies[0] == 0  # we did not add policies to someone else's table
    finally:
        with pg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
