"""Versioned, idempotent migrations.

Migrations are the files ``sql/migrations/NNNN_name.sql`` in order, plus procrastinate's own schema (its
tables live in the schema ``mana_ai_queue`` so that nothing of ours lands in ``public`` besides
``sync_changes``, which mana-sync owns in a mana deployment). Applied versions are recorded in
``mana_ai.schema_migrations``; running twice is a no-op, and a database whose schema is newer than this code
is refused with a clear message instead of being touched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, LiteralString, cast

import psycopg
from procrastinate.schema import SchemaManager

from mana_ai.db.connector import connect_timeout, wrap_exceptions
from mana_ai.errors import SchemaTooNewError, StorageError

logger = logging.getLogger(__name__)

QUEUE_SCHEMA = "mana_ai_queue"
_LOCK_KEY = 0x6D616E61_6169  # "manaai": serialises concurrent migrators
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _procrastinate_sql() -> str:
    return (
        f"CREATE SCHEMA IF NOT EXISTS {QUEUE_SCHEMA};\n"
        f"SET LOCAL search_path = {QUEUE_SCHEMA}, public;\n" + SchemaManager.get_schema()
    )


def migrations() -> list[Migration]:
    found: list[Migration] = []
    folder = resources.files("mana_ai.db") / "sql" / "migrations"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.append(Migration(100, "procrastinate_schema", _procrastinate_sql()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("duplicate migration version")
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return migrations()[-1].version


async def applied_versions(conn: psycopg.AsyncConnection[Any]) -> set[int]:
    cur = await conn.execute("SELECT to_regclass('mana_ai.schema_migrations') IS NOT NULL AS present")
    row = await cur.fetchone()
    present = row["present"] if isinstance(row, dict) else (row[0] if row else False)
    if not present:
        return set()
    cur = await conn.execute("SELECT version FROM mana_ai.schema_migrations")
    return {int(r["version"] if isinstance(r, dict) else r[0]) for r in await cur.fetchall()}


async def schema_status(url: str) -> tuple[set[int], int]:
    """(applied versions, latest version this code knows)."""
    with wrap_exceptions():
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, **connect_timeout(url)
        ) as conn:
            return await applied_versions(conn), latest_version()


async def migrate(url: str) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date).

    Raises:
        SchemaTooNewError: the database has versions this code does not know.
        StorageError: the database failed, e.g. the role lacks the privileges a migration needs.
    """
    known = migrations()
    known_versions = {m.version for m in known}
    done: list[str] = []
    with wrap_exceptions():
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, **connect_timeout(url)
        ) as conn:
            applied = await applied_versions(conn)
            _refuse_newer(applied, known_versions)
            if known_versions <= applied:
                return done
            await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                applied = await applied_versions(conn)  # another migrator may have finished meanwhile
                _refuse_newer(applied, known_versions)
                if not applied:
                    try:
                        await conn.execute(
                            "CREATE SCHEMA IF NOT EXISTS mana_ai;"
                            " CREATE TABLE IF NOT EXISTS mana_ai.schema_migrations ("
                            " version INT PRIMARY KEY, name TEXT NOT NULL,"
                            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                        )
                    except psycopg.errors.InsufficientPrivilege as exc:
                        raise StorageError(
                            "creating the mana_ai schema needs more privileges than this database role has "
                            f"({exc.diag.message_primary}); run `mana-ai migrate` once as the database owner "
                            "or an admin role"
                        ) from exc
                for migration in known:
                    if migration.version in applied:
                        continue
                    try:
                        async with conn.transaction():
                            await conn.execute(cast(LiteralString, migration.sql))  # type: ignore[redundant-cast]
                            await conn.execute(
                                "INSERT INTO mana_ai.schema_migrations (version, name) VALUES (%s, %s)",
                                (migration.version, migration.name),
                            )
                    except psycopg.errors.InsufficientPrivilege as exc:
                        raise StorageError(
                            f"migration {migration.version:04d}_{migration.name} needs more privileges than this "
                            f"database role has ({exc.diag.message_primary}); run `mana-ai migrate` once as the "
                            "database owner or an admin role"
                        ) from exc
                    logger.info(
                        "applied migration",
                        extra={
                            "action": "db.migrate",
                            "version": migration.version,
                            "migration": migration.name,
                        },
                    )
                    done.append(f"{migration.version:04d}_{migration.name}")
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done


def _refuse_newer(applied: set[int], known: set[int]) -> None:
    unknown = sorted(applied - known)
    if unknown:
        raise SchemaTooNewError(
            f"the database schema has migration(s) {unknown} that this mana-ai version does not know; "
            "upgrade mana-ai instead of running an older version against this database"
        )


async def check_current(url: str) -> None:
    """Raise unless the schema is exactly what this code expects (used by health and non-migrating starts)."""
    applied, _ = await schema_status(url)
    known = {m.version for m in migrations()}
    _refuse_newer(applied, known)
    missing = sorted(known - applied)
    if missing:
        raise StorageError(f"database schema is missing migration(s) {missing}: run `mana-ai migrate`")
