"""Scale-out (issue 7): planning throughput of 1, 2 and 4 ``mana-ai worker`` processes on one database.

Runs as a child process that starts the workers itself (``python -m mana_ai worker``, as the plain
database role, ``MANA_AI_MAX_CONCURRENCY`` = 16, tick every second, logs at WARNING on the bench log).
The fake LLM server is another process (two requests per mission). Per run:

1. a fresh database from the template; the workers start on it and idle until every one of them is
   registered with the queue and a first (empty) tick has run: start-up is not part of the measurement;
2. ``users × missions_per_user`` due missions (one agent per user allowing ``missions_per_user`` at once)
   are written in one transaction, as the web app would; the next periodic tick refreshes the
   snapshots and defers them as ``mana_ai.plan_batch`` jobs, which the workers take as they have room;
3. when every mission's run is ``done``, throughput = missions / (last ``finished_at`` − first
   ``started_at``) from ``mana_ai.mission_runs``: from the first claim to the last write-back (``now()``
   of the write-back transaction, a few milliseconds before its commit). The seed-to-first-claim time
   (tick granularity, refresh, deferral) is reported separately and not counted.

Diagnosis, per run: missions per worker, each worker's first claim and last write-back, the mean number of
missions in flight (sum of claim→write-back times / window) against the ``16 × workers`` slots, the mean
claim→write-back time against the 2 × latency floor (``throughput = in flight / service time``), the jobs
each worker held (sampled), and the workers' CPU seconds during the run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import psycopg

from bench.infra import REPO_ROOT, child_main, create_database, drop_database, ensure_schema
from bench.seed import seed_planning
from bench.stats import percentiles, summarize

POLL_S = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _start_worker(db_url: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SYNC_DATABASE_URL": db_url,
        "MANA_LLM_URL": config["llm_url"],
        "MANA_AI_MAX_CONCURRENCY": str(config["concurrency"]),
        "TICK_INTERVAL_MS": str(config["tick_interval_ms"]),
        "MANA_AI_LOG_LEVEL": "WARNING",
    }
    # stdout must not reach ours (the BENCH_RESULT line); stderr goes to the bench log with the child's.
    return subprocess.Popen(
        [sys.executable, "-m", "mana_ai", "worker"], env=env, stdout=subprocess.DEVNULL, cwd=REPO_ROOT
    )


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _stop(workers: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in workers:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


async def _wait_idle_cluster(admin: psycopg.Connection[Any], workers: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker is registered and one tick has been deferred and finished."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dead = [p.pid for p in workers if p.poll() is not None]
        if dead:
            raise RuntimeError("worker(s) exited during start-up: " + ", ".join(map(str, dead)))
        row = admin.execute(
            "SELECT (SELECT count(*) FROM mana_ai_queue.procrastinate_workers),"
            " (SELECT count(*) FROM mana_ai_queue.procrastinate_periodic_defers),"
            " (SELECT count(*) FROM mana_ai_queue.procrastinate_jobs"
            "   WHERE task_name = 'mana_ai.tick' AND status IN ('todo', 'doing'))"
        ).fetchone()
        assert row is not None
        if row[0] >= len(workers) and row[1] > 0 and row[2] == 0:
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError("the workers did not become ready within 60 s")


async def _wait_done(
    admin: psycopg.Connection[Any], missions: int, limit_s: float, workers: list[subprocess.Popen[bytes]]
) -> list[dict[int, int]]:
    """Poll until every mission's run is done; returns the planning jobs each worker held, per sample."""
    held: list[dict[int, int]] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done = admin.execute("SELECT count(*) FROM mana_ai.mission_runs WHERE state = 'done'").fetchone()
        jobs = admin.execute(
            "SELECT coalesce(worker_id, 0), count(*) FROM mana_ai_queue.procrastinate_jobs"
            " WHERE task_name = 'mana_ai.plan_batch' AND status = 'doing' GROUP BY 1"
        ).fetchall()
        held.append({int(w): int(n) for w, n in jobs})
        if done is not None and done[0] >= missions:
            return held
        if any(p.poll() is not None for p in workers):
            raise RuntimeError("a worker exited during the run")
        await asyncio.sleep(POLL_S)
    states = admin.execute("SELECT state, count(*) FROM mana_ai.mission_runs GROUP BY 1").fetchall()
    raise RuntimeError(f"not all {missions} missions done after {limit_s:.0f} s: {dict(states)}")


async def _one_run(config: dict[str, Any], processes: int, users: int) -> dict[str, Any]:
    per_user = config["missions_per_user"]
    missions = users * per_user
    urls = create_database(config["cluster_admin_url"], "so" + str(processes))
    workers: list[subprocess.Popen[bytes]] = []
    exit_codes: list[int | None] = []
    try:
        await ensure_schema(urls.admin)
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            workers = [_start_worker(urls.app, config) for _ in range(processes)]
            await _wait_idle_cluster(admin, workers)
            cpu0 = [_cpu_s(p.pid) or 0.0 for p in workers]
            # One transaction: a tick never sees half of the workload.
            with psycopg.connect(urls.admin) as seeding:
                seed_planning(seeding, users=users, missions_per_user=per_user, max_concurrent=per_user)
            seeded_at = time.time()
            ideal_s = missions * 2 * config["latency_ms"] / 1000.0 / (config["concurrency"] * processes)
            held = await _wait_done(admin, missions, 60 + 6 * ideal_s, workers)
            cpu = sum((_cpu_s(p.pid) or 0.0) - c for p, c in zip(workers, cpu0, strict=True))
            rows = admin.execute(
                "SELECT owner, extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
                " FROM mana_ai.mission_runs WHERE state = 'done'"
            ).fetchall()
            written = admin.execute(
                "SELECT count(*), count(DISTINCT record_id) FROM public.sync_changes"
                " WHERE client_id = 'mana-ai-runner'"
            ).fetchone()
    finally:
        exit_codes = _stop(workers)
        drop_database(config["cluster_admin_url"], urls.name)
    return _analyse(rows, processes, config, seeded_at, held) | {
        "missions": missions,
        "write_backs": written[0] if written else None,
        "missions_written": written[1] if written else None,
        "worker_cpu_s": cpu,
        "exit_codes": exit_codes,
        "loadavg_1m": os.getloadavg()[0],
    }


def _analyse(
    rows: list[tuple[str, float, float]],
    processes: int,
    config: dict[str, Any],
    seeded_at: float,
    held: list[dict[int, int]],
) -> dict[str, Any]:
    first = min(s for _, s, _ in rows)
    last = max(f for _, _, f in rows)
    window = last - first
    service = [f - s for _, s, f in rows]
    by_owner: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for owner, s, f in rows:
        by_owner[owner].append((s, f))
    per_worker = sorted(
        (
            {
                "missions": len(spans),
                "first_claim_s": min(s for s, _ in spans) - first,
                "last_done_s": max(f for _, f in spans) - first,
            }
            for spans in by_owner.values()
        ),
        key=lambda w: -w["missions"],
    )
    slots = config["concurrency"] * processes
    in_flight = sum(service) / window if window > 0 else 0.0
    mean_service = sum(service) / len(service)
    floor_s = 2 * config["latency_ms"] / 1000.0
    # Planning jobs each worker held at once (sampled every POLL_S while any were held), against its job
    # concurrency (4 at MANA_AI_MAX_CONCURRENCY=16); per_worker's mission counts show any hoarding.
    busy = [h for h in held if h]
    return {
        "throughput_per_s": len(rows) / window if window > 0 else None,
        "window_s": window,
        "seed_to_first_claim_s": first - seeded_at,
        "workers_used": len(by_owner),
        "per_worker": per_worker,
        "mean_in_flight": in_flight,
        "slot_utilisation": in_flight / slots,
        "mean_service_ms": mean_service * 1000.0,
        "service_inflation": mean_service / floor_s if floor_s > 0 else None,
        "service_ms": percentiles([s * 1000.0 for s in service]),
        # The last worker to finish against the first one to run out of work: the tail of the run.
        "tail_s": last - min(w["last_done_s"] + first for w in per_worker),
        "max_jobs_held": max((max(h.values()) for h in busy), default=0),
        "mean_jobs_held_per_worker": (
            sum(sum(h.values()) / max(len(h), 1) for h in busy) / len(busy) if busy else 0.0
        ),
    }


async def run(config: dict[str, Any]) -> dict[str, Any]:
    per_user = config["missions_per_user"]
    users = config["users"]
    counts: list[int] = config["processes"]
    warmup = await _one_run(config, max(counts), max(1, config["warmup_missions"] // per_user))
    if warmup["missions_written"] != warmup["missions"]:
        raise RuntimeError(
            "warm-up wrote " + str(warmup["missions_written"]) + " of " + str(warmup["missions"])
        )
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    # Interleaved (1, 2, 4, 1, 2, 4, ...): a drift in the machine's load touches every count alike.
    for rep in range(config["reps"]):
        for n in counts:
            result = await _one_run(config, n, users)
            runs[n].append(result)
            print(f"rep {rep} processes {n}: {result['throughput_per_s']:.1f}/s", file=sys.stderr, flush=True)

    missions = users * per_user
    latency_s = config["latency_ms"] / 1000.0
    base = [r["throughput_per_s"] for r in runs[counts[0]]]
    points = []
    for n in counts:
        throughput = [r["throughput_per_s"] for r in runs[n]]
        ideal_s = missions * 2 * latency_s / (config["concurrency"] * n)
        point: dict[str, Any] = {
            "processes": n,
            "missions": missions,
            "throughput_per_s": summarize(throughput),
            # Rep by rep against the 1-process run of the same round, then the median of those.
            "ratio_to_1": summarize([t / b for t, b in zip(throughput, base, strict=True)]),
            "ideal_s": ideal_s,
            "ideal_per_s": missions / ideal_s,
            "ratio_to_ideal": summarize([t * ideal_s / missions for t in throughput]),
            "window_s": summarize([r["window_s"] for r in runs[n]]),
            "slot_utilisation": summarize([r["slot_utilisation"] for r in runs[n]]),
            "service_inflation": summarize([r["service_inflation"] for r in runs[n]]),
            "tail_s": summarize([r["tail_s"] for r in runs[n]]),
            "seed_to_first_claim_s": summarize([r["seed_to_first_claim_s"] for r in runs[n]]),
            "cpu_s_per_1000": summarize([r["worker_cpu_s"] / r["missions"] * 1000.0 for r in runs[n]]),
            "runs": runs[n],
        }
        points.append(point)
    return {
        "params": {k: v for k, v in config.items() if not k.endswith("_url")},
        "missions": missions,
        "warmup": {k: warmup[k] for k in ("missions", "throughput_per_s", "window_s")},
        "points": points,
    }


if __name__ == "__main__":
    child_main(run)
