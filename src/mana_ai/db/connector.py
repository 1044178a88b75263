"""The database port: one async connection pool, transactions, and per-user scoping.

Nothing above this layer imports psycopg's exceptions: :func:`wrap_exceptions` turns driver errors into
:class:`~mana_ai.errors.StorageError` here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, LiteralString

import orjson
import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps, set_json_loads

from mana_ai.errors import ConnectionLostError, StorageError

logger = logging.getLogger(__name__)

AsyncConn = psycopg.AsyncConnection[Any]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def configure_json() -> None:
    """Use orjson for every JSON/JSONB value psycopg reads or writes (it is several times faster)."""
    set_json_loads(orjson.loads)
    set_json_dumps(_dumps)


@contextmanager
def wrap_exceptions(on_lost: Callable[[], None] | None = None) -> Iterator[None]:
    """Translate driver errors into StorageError, without the connection string (it may hold a password).

    ``on_lost`` is called when the error says the connection was lost.
    """
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise StorageError(f"no database connection available: {exc}") from exc
    except psycopg.OperationalError as exc:
        kind = _operational_kind(exc)
        if kind == "lost":
            if on_lost is not None:
                on_lost()
            raise ConnectionLostError(f"database unreachable or connection lost: {_first_line(exc)}") from exc
        if kind == "rolled-back":  # nothing committed, so a repeat is safe, as after a lost connection
            raise ConnectionLostError(f"database error: {_first_line(exc)}") from exc
        raise StorageError(f"database error: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"database error: {_first_line(exc)}") from exc


_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
"""Server-side ends of a connection: admin or crash shutdown, cannot connect now, database dropped, idle."""


def _operational_kind(exc: psycopg.OperationalError) -> str:
    """``lost`` (no SQLSTATE: client-side; class 08; a shutdown), ``rolled-back`` (class 40: deadlock,
    serialization failure) or ``other`` (a statement or lock timeout, a program limit: the connection is fine)."""
    state = exc.sqlstate
    if state is None or state.startswith("08") or state in _LOST_SQLSTATES:
        return "lost"
    return "rolled-back" if state.startswith("40") else "other"


CONNECT_TIMEOUT_S = 10
"""How long establishing a connection may take unless the URL or ``PGCONNECT_TIMEOUT`` says otherwise (psycopg's
own default is 130 s: a database that accepts but never answers looked like a hung start)."""


def connect_timeout(url: str) -> dict[str, Any]:
    """``{"connect_timeout": CONNECT_TIMEOUT_S}`` for psycopg's connect kwargs, unless one is configured."""
    try:
        configured = "connect_timeout" in psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return {}  # a URL libpq cannot parse: the connect attempt reports it
    if configured or os.environ.get("PGCONNECT_TIMEOUT"):
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_S}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


CHECK_AFTER_IDLE_S = 1.0
"""A pooled connection idle at least this long is checked (one round trip) before it is handed out."""


class _IdleCheck:
    """The pool's ``check`` and ``reset`` hooks: check a connection only when it sat idle for a while.

    Checking on every checkout costs a round trip per checkout, more than many of our statements; a
    connection that was in use less than :data:`CHECK_AFTER_IDLE_S` ago was working then. When one turns
    out to be lost anyway, every connection is checked again at its next checkout (:meth:`forget`), so a
    server restart costs one failed statement, not one per pooled connection.
    """

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[AsyncConn, float] = weakref.WeakKeyDictionary()

    def forget(self) -> None:
        """A connection was lost (a server restart loses them all): check every one at its next checkout."""
        self._returned.clear()

    async def reset(self, conn: AsyncConn) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: AsyncConn) -> None:
        returned = self._returned.get(conn)
        if returned is not None and time.monotonic() - returned < CHECK_AFTER_IDLE_S:
            return
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


class Database:
    """An async connection pool with helpers for transactions and per-user (RLS) scoping."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        name: str = "mana-ai",
        timeout_s: float = 30.0,
    ) -> None:
        configure_json()
        self.url = url
        idle_check = self._idle_check = _IdleCheck()
        self._pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            kwargs={"row_factory": dict_row, "autocommit": True, **connect_timeout(url)},
            check=idle_check.check,
            reset=idle_check.reset,
            reconnect_timeout=300,
            timeout=timeout_s,
        )

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        return self._pool

    async def open(self, *, wait: bool = True, wait_s: float = 30.0) -> None:
        with wrap_exceptions():
            await self._pool.open(wait=wait, timeout=wait_s)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A pooled connection in autocommit mode."""
        with wrap_exceptions(self._idle_check.forget):
            async with self._pool.connection() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        """A pooled connection inside one transaction (committed on success, rolled back on error)."""
        with wrap_exceptions(self._idle_check.forget):
            async with self._pool.connection() as conn, conn.transaction():
                yield conn

    @asynccontextmanager
    async def with_user(self, user_id: str, *, pipeline: bool = False) -> AsyncIterator[AsyncConn]:
        """A transaction scoped to one user: ``app.current_user_id`` is set transaction-locally, so the
        row-level security policies of sync_changes and decrypt_audit apply to every statement in it.

        With ``pipeline=True`` statements are sent without waiting for each other's results (psycopg pipeline
        mode) until a result is fetched: a short transaction of several statements then costs one or two
        network round trips instead of one per statement.

        Raises:
            ValueError: for an empty user id (it would match rows whose user_id is empty).
        """
        if not user_id or not user_id.strip():
            raise ValueError("with_user: empty user id")
        with wrap_exceptions(self._idle_check.forget):
            async with self._pool.connection() as conn:
                if pipeline:
                    async with conn.pipeline(), conn.transaction():
                        await conn.execute("SELECT set_config('app.current_user_id', %s, true)", (user_id,))
                        yield conn
                else:
                    async with conn.transaction():
                        await conn.execute("SELECT set_config('app.current_user_id', %s, true)", (user_id,))
                        yield conn

    async def fetch(self, query: LiteralString, params: Any = None) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def fetchrow(self, query: LiteralString, params: Any = None) -> dict[str, Any] | None:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def execute(self, query: LiteralString, params: Any = None) -> int:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    async def ping(self, timeout_s: float | None = None) -> bool:
        """Whether the database answers ``SELECT 1``.

        With ``timeout_s`` the answer comes within that time (``/health``: a probe must learn that the
        database is down, not wait for the pool's 30 s). Half of it is spent waiting for a pooled connection;
        when none frees up (all busy, or none can be made), a connection of its own decides in the other
        half: a busy pool is no sign of a database that is down."""
        if timeout_s is None:
            try:
                await self.fetchrow("SELECT 1 AS ok")
            except StorageError:
                return False
            return True
        half = timeout_s / 2
        try:
            async with asyncio.timeout(half):
                with wrap_exceptions(self._idle_check.forget):
                    async with self._pool.connection(timeout=half) as conn:
                        await conn.execute("SELECT 1")
            return True
        except (StorageError, TimeoutError):
            pass
        try:
            async with asyncio.timeout(half):
                with wrap_exceptions():
                    own = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                    async with own:
                        await own.execute("SELECT 1")
        except (StorageError, TimeoutError, OSError):
            return False
        return True
