"""Scheduling (issue 15): due delay, the noisy neighbour, the provider limit. A benchmark child process.

Each workload gets a fresh database and real ``mana-ai worker`` processes (plain role, default settings
unless named); delays are read from ``mana_ai.mission_runs`` (claim time − ``nextRunAt``).

* **due**: one worker, periodic tick at its default (60 s), LLM ``latency_ms``. Idle first: the worker's CPU
  and the database's statements per second while nothing is due (the cost of the 1 s due dispatcher). Then
  ``due_missions`` missions of 50 users fall due spread over 20 s: p50/p99 of their claim delay.
* **noisy**: one worker, LLM 200 ms, default concurrency; one user with 2,000 due missions and 50 users with
  one each, all due at the same instant: p50/p99 of the 50 small users' delays (and when the big user ends).
* **limit**: three workers with ``MANA_LLM_MAX_RPM=600`` against a fake LLM that enforces 600 requests/min
  (429 + Retry-After beyond a one-second bucket), LLM 50 ms: share of 429s and requests per second achieved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench.infra import REPO_ROOT, child_main, create_database, drop_database, ensure_schema
from bench.stats import percentiles

POLL_S = 0.2


def _worker(db_url: str, llm_url: str, **env_extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SYNC_DATABASE_URL": db_url,
        "MANA_LLM_URL": llm_url,
        "MANA_AI_LOG_LEVEL": "WARNING",
        "MANA_AI_SHUTDOWN_GRACE_S": "1",
        **env_extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mana_ai", "worker"], env=env, stdout=subprocess.DEVNULL, cwd=REPO_ROOT
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + str(at.microsecond // 1000).zfill(3) + "Z"


def _seed(admin: psycopg.Connection[Any], rows: list[tuple[str, str, str]]) -> None:
    """(user, mission id, nextRunAt) as insert rows of the web app, in one statement."""
    records = [
        {
            "user_id": user,
            "mission_id": mid,
            "data": json.dumps(
                {
                    "id": mid,
                    "title": "Mission " + mid,
                    "objective": "Plan my week",
                    "conceptMarkdown": "",
                    "state": "active",
                    "cadence": {"kind": "interval", "everyMinutes": 60},
                    "inputs": [],
                    "iterations": [],
                    "nextRunAt": due,
                }
            ),
        }
        for user, mid, due in rows
    ]
    admin.execute(
        "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,"
        " client_id, actor, origin)"
        " SELECT 'ai', 'aiMissions', r.mission_id, r.user_id, 'insert', r.data::jsonb, '{}'::jsonb, 'bench-web',"
        " jsonb_build_object('kind', 'user', 'principalId', r.user_id), 'user'"
        " FROM jsonb_to_recordset(%s::jsonb) AS r(user_id text, mission_id text, data text)",
        (json.dumps(records),),
    )


async def _wait(admin: psycopg.Connection[Any], sql: str, expected: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        row = admin.execute(sql).fetchone()  # type: ignore[arg-type]
        if row is not None and row[0] >= expected:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"not reached in {limit_s:.0f} s: {sql}")


async def _ready(admin: psycopg.Connection[Any]) -> None:
    """A probe mission planned: the workers are up and dispatching."""
    _seed(admin, [("probe", "probe", _iso(dt.datetime.now(dt.UTC)))])
    await _wait(admin, "SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done'", 1, 60)


def _delays(admin: psycopg.Connection[Any], where: str) -> list[float]:
    rows = admin.execute(
        "SELECT extract(epoch FROM started_at - due_at::timestamptz)::float8 FROM mana_ai.mission_runs"  # type: ignore[arg-type]
        " WHERE " + where
    ).fetchall()
    return [r[0] for r in rows]


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _statements(admin: psycopg.Connection[Any], dbname: str) -> int:
    row = admin.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
    ).fetchone()
    return int(row[0]) if row else 0


async def due_workload(config: dict[str, Any]) -> dict[str, Any]:
    urls = create_database(config["cluster_admin_url"], "due")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_schema(urls.admin)
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            procs = [_worker(urls.app, config["llm_url"])]
            await _ready(admin)
            idle_s = config["idle_s"]
            cpu0, tx0 = _cpu_s(procs[0].pid), _statements(admin, urls.name)
            await asyncio.sleep(idle_s)
            cpu1, tx1 = _cpu_s(procs[0].pid), _statements(admin, urls.name)
            start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
            n = config["due_missions"]
            rows = [
                (f"u{i % 50:02d}", f"d{i:04d}", _iso(start + dt.timedelta(seconds=20 * i / n)))
                for i in range(n)
            ]
            _seed(admin, rows)
            await _wait(
                admin,
                "SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done' AND mission_id LIKE 'd%'",
                n,
                120,
            )
            delays = _delays(admin, "mission_id LIKE 'd%'")
    finally:
        _stop(procs)
        drop_database(config["cluster_admin_url"], urls.name)
    return {
        "missions": len(delays),
        "delay_s": percentiles(delays),
        "idle_worker_cpu_ms_per_s": (cpu1 - cpu0) / idle_s * 1000.0,
        # pg_stat_database counts the probe's and our own polling too: an upper bound.
        "idle_transactions_per_s": (tx1 - tx0) / idle_s,
    }


async def noisy_workload(config: dict[str, Any]) -> dict[str, Any]:
    urls = create_database(config["cluster_admin_url"], "noisy")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_schema(urls.admin)
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            procs = [_worker(urls.app, config["llm_url_200"])]
            await _ready(admin)
            due = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3))
            rows = [("noisy", f"n{i:04d}", due) for i in range(config["noisy_missions"])]
            rows += [(f"s{u:02d}", f"s{u:02d}-m", due) for u in range(50)]
            _seed(admin, rows)
            await _wait(
                admin,
                "SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done' AND mission_id LIKE 's%'",
                50,
                120,
            )
            small = _delays(admin, "mission_id LIKE 's%'")
            await _wait(
                admin, "SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done'", len(rows) + 1, 300
            )
            noisy = _delays(admin, "mission_id LIKE 'n%'")
    finally:
        _stop(procs)
        drop_database(config["cluster_admin_url"], urls.name)
    return {
        "small_users": 50,
        "noisy_missions": len(noisy),
        "small_delay_s": percentiles(small),
        "noisy_delay_s": percentiles(noisy),
    }


def _limited_fake(rpm: int) -> tuple[subprocess.Popen[str], str]:
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mana_ai.testing.fake_llm",
            "--port",
            "0",
            "--latency-ms",
            "50",
            "--max-rpm",
            str(rpm),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert fake.stdout is not None
    line = fake.stdout.readline()
    if not line.startswith("FAKE_LLM_URL="):
        fake.kill()
        raise RuntimeError("the rate-limited fake LLM did not start")
    return fake, line.strip().split("=", 1)[1]


async def limit_workload(config: dict[str, Any]) -> dict[str, Any]:
    rpm = config["max_rpm"]
    fake, llm_url = _limited_fake(rpm)
    urls = create_database(config["cluster_admin_url"], "limit")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_schema(urls.admin)
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            procs = [_worker(urls.app, llm_url, MANA_LLM_MAX_RPM=str(rpm)) for _ in range(3)]
            await _ready(admin)
            n = config["limit_missions"]
            _seed(admin, [(f"u{i % 20:02d}", f"r{i:04d}", _iso(dt.datetime.now(dt.UTC))) for i in range(n)])
            await _wait(admin, "SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done'", n + 1, 600)
    finally:
        _stop(procs)
        drop_database(config["cluster_admin_url"], urls.name)
        fake.send_signal(signal.SIGTERM)
        out, _ = fake.communicate(timeout=30)
    stats_line = next((x for x in out.splitlines() if x.startswith("FAKE_LLM_STATS=")), "FAKE_LLM_STATS={}")
    stats = json.loads(stats_line.split("=", 1)[1])
    accepted, limited = stats.get("accepted", 0), stats.get("rate_limited", 0)
    span = stats.get("accepted_span_s") or 0.0
    per_s = (accepted - 1) / span if span > 0 else None
    return {
        "max_rpm": rpm,
        "requests": accepted + limited,
        "rate_limited": limited,
        "rate_limited_share": limited / (accepted + limited) if accepted + limited else None,
        "requests_per_s": per_s,
        "share_of_limit": per_s / (rpm / 60.0) if per_s else None,
    }


async def run(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "due": await due_workload(config),
        "noisy": await noisy_workload(config),
        "limit": await limit_workload(config),
        "loadavg_1m": os.getloadavg()[0],
    }


if __name__ == "__main__":
    child_main(run)
