"""The deployment-shaped workload: ``mana-ai serve`` driven over HTTP, as a user drives it (issue 17).

Runs as a child process that drives three others: PostgreSQL listening on ``127.0.0.1`` (the service
connects over TCP as the superuser), the plain threaded fake LLM (:mod:`bench.plain_llm`) and one
``mana-ai serve`` per repetition (``TICK_ENABLED=false``: the tick is started with ``POST /internal/tick``
and the service key only, so no periodic tick runs into the measured one).

``planning``, per repetition: a fresh database; ``serve`` started on it; a warm-up tick of 100 missions of
other users and a tick that folds their write-backs; then 100 agents and 1,000 due missions (100 users × 10,
each agent allowing 10 at once) are inserted into ``sync_changes`` and the tick is timed from its request to
its response, which comes after the last write-back committed (the tick also folds the 1,100 new rows).
Around the timed tick: CPU seconds of the service's process tree and of PostgreSQL's (``/proc``), the data
segments the service sent to PostgreSQL (its round trips, ``ss``) and the transactions committed.

``refresh``: 200 users × 10 not-due missions × 100 rows of history = 200,000 rows, loaded once into a
database used as a template. Per repetition a copy of it and a fresh ``serve``; the first tick bootstraps
the snapshots, then ticks after 1,000 new rows and with nothing new (one warm-up pair, then ``reps`` pairs).
Every number is a tick's wall time over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.infra import REPO_ROOT, child_main, create_database, drop_database, ensure_schema
from bench.procstat import client_segments, postmaster_pid, process_tree, segments_between, tree_cpu_s
from bench.seed import insert_updates, load_history, plans_per_mission, seed_planning
from bench.stats import percentiles, summarize

SERVICE_KEY = "bench-service-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """One ``mana-ai serve`` process on a database, reached over HTTP."""

    def __init__(self, database_url: str, llm_url: str, log_path: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.base = "http://127.0.0.1:" + str(self.port)
        environ = {
            **os.environ,
            "SYNC_DATABASE_URL": database_url,
            "MANA_LLM_URL": llm_url,
            "PORT": str(self.port),
            "MANA_SERVICE_KEY": SERVICE_KEY,
            "TICK_ENABLED": "false",
            "MANA_AI_LOG_LEVEL": "INFO",
            **env,
        }
        self._log = log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mana_ai", "serve"],
            env=environ,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=self._log,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mana-ai serve exited with " + str(self.proc.returncode))
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("mana-ai serve did not become healthy")

    def tick(self, timeout_s: float = 600.0) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + "/internal/tick", method="POST", headers={"X-Service-Key": SERVICE_KEY}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextmanager
def _service(config: dict[str, Any], database_url: str) -> Iterator[Service]:
    service = Service(database_url, config["llm_url"], Path(config["log_path"]), config.get("env", {}))
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def _xacts(admin: psycopg.Connection[Any], name: str) -> int:
    row = admin.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
    ).fetchone()
    return int(row[0]) if row else 0


def _timed_tick(config: dict[str, Any], service: Service, admin: Any, db_name: str) -> dict[str, Any]:
    pg_root = postmaster_pid(config["pgdata"])
    service_pids = process_tree(service.proc.pid)
    admin.execute("SELECT pg_stat_force_next_flush()")
    seg0 = client_segments(service_pids, config["pg_port"])
    xact0 = _xacts(admin, db_name)
    cpu_service0, cpu_pg0 = tree_cpu_s(service.proc.pid), tree_cpu_s(pg_root)
    load = os.getloadavg()[0]
    spy = _profiler(config, service)
    wall0, t0 = time.time(), time.perf_counter()
    stats = service.tick()
    elapsed = time.perf_counter() - t0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    cpu_service, cpu_pg = tree_cpu_s(service.proc.pid) - cpu_service0, tree_cpu_s(pg_root) - cpu_pg0
    service_pids |= process_tree(service.proc.pid)
    segments = segments_between(seg0, client_segments(service_pids, config["pg_port"]))
    time.sleep(0.6)  # statistics of the backends reach pg_stat_database at most every 0.5 s
    xacts = _xacts(admin, db_name) - xact0
    return {
        "stats": stats,
        "elapsed_s": elapsed,
        "cpu_service_s": cpu_service,
        "cpu_postgres_s": cpu_pg,
        "segments_sent": segments.sent,
        "segments_received": segments.received,
        "transactions": xacts,
        "loadavg_1m": load,
        "wall0": wall0,
    }


def _profiler(config: dict[str, Any], service: Service) -> subprocess.Popen[bytes] | None:
    """``"profile": "<path>"`` (diagnosis only): sample the service with py-spy during the timed tick."""
    path = config.get("profile")
    if not path:
        return None
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(service.proc.pid),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return spy


# --- planning ---------------------------------------------------------------------------------------------


def _planning_rep(config: dict[str, Any]) -> dict[str, Any]:
    users, per_user = config["users"], config["missions_per_user"]
    urls = create_database(config["cluster_admin_url"], "sv")
    try:
        import asyncio

        asyncio.run(ensure_schema(urls.admin))
        with psycopg.connect(urls.admin, autocommit=True) as admin, _service(config, urls.admin) as service:
            warm_users = max(1, config["warmup_missions"] // per_user)
            seed_planning(
                admin, users=warm_users, missions_per_user=per_user, max_concurrent=per_user, user_prefix="w"
            )
            warm = service.tick()
            if warm["plansWrittenBack"] != warm_users * per_user:
                raise RuntimeError("warm-up tick: " + json.dumps(warm))
            service.tick()  # folds the warm-up's write-backs
            _wait_for_workers(admin, 2 * config.get("processes", 1))
            seed_planning(admin, users=users, missions_per_user=per_user, max_concurrent=per_user)
            run = _timed_tick(config, service, admin, urls.name)
            runs = admin.execute(
                "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
                " FROM mana_ai.mission_runs WHERE state = 'done' AND user_id LIKE 'u%'"
            ).fetchall()
            run["plans_per_mission"] = plans_per_mission(admin, "u%")
        run["done"] = len(runs)
        run["service_ms"] = [(f - s) * 1000.0 for s, f in runs]
        run["first_claim_ms"] = (min(s for s, _ in runs) - run["wall0"]) * 1000.0 if runs else None
    finally:
        drop_database(config["cluster_admin_url"], urls.name)
    stats = run["stats"]
    if (
        stats["plansWrittenBack"] != users * per_user
        or run["done"] != users * per_user
        or run["plans_per_mission"] != {1: users * per_user}
    ):
        raise RuntimeError(
            "the timed tick planned "
            + json.dumps(stats)
            + ", done "
            + str(run["done"])
            + ", missions by plans written "
            + str(run["plans_per_mission"])
        )
    return run


def _wait_for_workers(admin: psycopg.Connection[Any], count: int, timeout_s: float = 60.0) -> None:
    """Every planning process's queue workers (plan and tick) are listening: the timed tick can use them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = admin.execute("SELECT count(*) FROM mana_ai_queue.procrastinate_workers").fetchone()
        if row is not None and int(row[0]) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} queue workers registered after {timeout_s:.0f} s")


def _planning(config: dict[str, Any]) -> dict[str, Any]:
    missions = config["users"] * config["missions_per_user"]
    runs = []
    for _ in range(config["reps"]):
        runs.append(_planning_rep(config))
        print("rep done", file=sys.stderr, flush=True)
    latency_s = config["latency_ms"] / 1000.0
    ideal_s = missions * 2 * latency_s / config["concurrency"]
    per_mission = 1000.0 / missions
    return {
        "params": {k: v for k, v in config.items() if not k.endswith("_url") and k != "log_path"},
        "missions": missions,
        "throughput_per_s": summarize([missions / r["elapsed_s"] for r in runs]),
        "tick_s": summarize([r["elapsed_s"] for r in runs]),
        "service_cpu_ms_per_mission": summarize([r["cpu_service_s"] * per_mission for r in runs]),
        "postgres_cpu_ms_per_mission": summarize([r["cpu_postgres_s"] * per_mission for r in runs]),
        "round_trips_per_mission": summarize([r["segments_sent"] / missions for r in runs]),
        "segments_received_per_mission": summarize([r["segments_received"] / missions for r in runs]),
        "transactions_per_mission": summarize([r["transactions"] / missions for r in runs]),
        "loadavg_1m": [r["loadavg_1m"] for r in runs],
        "claim_to_write_back_ms": percentiles([ms for r in runs for ms in r["service_ms"]]),
        "first_claim_ms": summarize([r["first_claim_ms"] for r in runs if r["first_claim_ms"] is not None]),
        "decisions": runs[-1]["stats"]["decisions"],
        "ideal_per_s": missions / ideal_s if ideal_s > 0 else None,
    }


# --- refresh ----------------------------------------------------------------------------------------------


def _refresh_template(config: dict[str, Any]) -> tuple[str, int]:
    urls = create_database(config["cluster_admin_url"], "refresh_src")
    import asyncio

    asyncio.run(ensure_schema(urls.admin))
    with psycopg.connect(urls.admin, autocommit=True) as admin:
        rows = load_history(
            admin,
            missions=config["missions"],
            users=config["users"],
            rounds=config["rounds"],
            next_run_shift="100 years",
        )
        admin.execute("VACUUM ANALYZE")
    return urls.name, rows


def _clone(cluster_admin_url: str, template: str, name: str) -> str:
    with psycopg.connect(cluster_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return make_conninfo(cluster_admin_url, dbname=name)


def _refresh(config: dict[str, Any]) -> dict[str, Any]:
    cluster = config["cluster_admin_url"]
    template, history = _refresh_template(config)
    bootstrap: list[dict[str, Any]] = []
    incremental: list[float] = []
    idle: list[float] = []
    try:
        for rep in range(config["reps"]):
            name = "refresh_run_" + str(rep)
            url = _clone(cluster, template, name)
            try:
                with psycopg.connect(url, autocommit=True) as admin, _service(config, url) as service:
                    run = _timed_tick(config, service, admin, name)
                    snapshots = admin.execute("SELECT count(*) FROM mana_ai.mission_snapshots").fetchone()
                    if (
                        run["stats"]["dueMissionCount"] != 0
                        or not snapshots
                        or snapshots[0] != config["missions"]
                    ):
                        raise RuntimeError("bootstrap tick: " + json.dumps(run["stats"]) + f", {snapshots}")
                    bootstrap.append(run)
                    for k in range(config["incremental_reps"] + 1):
                        base = "2026-06-01T00:00:" + str((rep * 10 + k) % 60).zfill(2) + "Z"
                        insert_updates(
                            admin,
                            missions=config["missions"],
                            users=config["users"],
                            count=config["incremental_rows"],
                            batch=rep * 10 + k,
                            base=base,
                        )
                        t0 = time.perf_counter()
                        service.tick()
                        t1 = time.perf_counter()
                        service.tick()
                        t2 = time.perf_counter()
                        if k > 0:
                            incremental.append(t1 - t0)
                            idle.append(t2 - t1)
            finally:
                drop_database(cluster, name)
            print("refresh rep done", file=sys.stderr, flush=True)
    finally:
        drop_database(cluster, template)
    return {
        "params": {k: v for k, v in config.items() if not k.endswith("_url") and k != "log_path"},
        "history_rows": history,
        "bootstrap_s": summarize([b["elapsed_s"] for b in bootstrap]),
        "bootstrap_service_cpu_s": summarize([b["cpu_service_s"] for b in bootstrap]),
        "bootstrap_postgres_cpu_s": summarize([b["cpu_postgres_s"] for b in bootstrap]),
        "incremental_s": summarize(incremental),
        "nothing_new_s": summarize(idle),
        "loadavg_1m": [b["loadavg_1m"] for b in bootstrap],
    }


async def run(config: dict[str, Any]) -> dict[str, Any]:
    # Synchronous drivers (this process only waits on the others), in a thread of their own so that
    # ensure_schema can run its own event loop.
    import asyncio

    body = _planning if config["workload"] == "planning" else _refresh
    return await asyncio.to_thread(body, config)


if __name__ == "__main__":
    child_main(run)
