"""Soak: a long run under random LLM faults and worker restarts; memory must stay flat, nothing lost or doubled.

``make soak`` (= ``python -m bench.soak``) runs 10 minutes; ``--minutes 2`` is a quick proof. Not part of
``make test``. The run:

* starts an embedded PostgreSQL in a temporary directory and a fake LLM server process that fails a random
  10 % of requests (``python -m mana_ai.testing.fake_llm --faults 0.1``);
* seeds 200 users, each with an agent, and 5,000 missions on interval cadences of 1-3 minutes whose first
  runs are spread over the first minute;
* runs two ``mana-ai worker`` processes (tick every 5 s) as the plain database role. Worker 0 runs the whole
  soak: its RSS, sampled every 10 s, is the memory-flatness measure. Worker 1 is restarted once a minute,
  SIGTERM and SIGKILL in turn (a killed worker's claims are taken over when their lease expires);
* restarts PostgreSQL itself (``pg_ctl restart -m immediate``, every connection cut) every three minutes,
  starting at 1:45: the workers must ride it out (a worker that exits by itself is a failed check);
* stops both workers and checks, from the sync log and ``mana_ai.mission_runs``:

  - **memory flat**: worker 0's median RSS in the last quarter is within 15 % of the second quarter's;
  - **no duplicate plan**: for each mission, the ``nextRunAt`` each successful write-back started from (the
    value in effect before it) is unique;
  - **no lost iteration**: every write-back appended exactly one iteration to the one before it;
  - **no lost mission**: every active mission whose ``nextRunAt`` was due more than one tick interval plus
    one claim lease before the end was planned since, or is in a retry backoff after a failed iteration
    with a reason that has not yet run out by that margin;
  - **clean SIGTERM**: every worker stopped with SIGTERM exited with status 0, and none exited by itself
    (through the database restarts).

It prints the totals (plans written, failed iterations by reason, restarts, RSS per quarter) and a
``SOAK_RESULT=<json>`` line, and exits with status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.infra import REPO_ROOT, Cluster

TICK_INTERVAL_MS = 5000
MISSION_TIMEOUT_S = 20
LEASE_S = MISSION_TIMEOUT_S + min(30, MISSION_TIMEOUT_S)
"""``Settings.claim_lease`` for MISSION_TIMEOUT_S: how long a killed worker's claims block their missions."""
SHUTDOWN_GRACE_S = 10
SAMPLE_EVERY_S = 10.0
MEMORY_TOLERANCE = 0.15


def _js_iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# --- processes -------------------------------------------------------------------------------------------


def start_fake_llm(faults: float, latency_ms: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "mana_ai.testing.fake_llm",
        "--port",
        "0",
        "--faults",
        str(faults),
        "--latency-ms",
        str(latency_ms),
        "--seed",
        str(seed),
        "--tool-name",
        "start_timer",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("FAKE_LLM_URL="):
        proc.kill()
        raise RuntimeError("the fake LLM server did not start")
    return proc, line.strip().split("=", 1)[1]


@dataclass
class Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_worker(slot: int, db_url: str, llm_url: str, log_dir: Path) -> Worker:
    env = {
        **os.environ,
        "SYNC_DATABASE_URL": db_url,
        "MANA_LLM_URL": llm_url,
        "TICK_INTERVAL_MS": str(TICK_INTERVAL_MS),
        "MANA_AI_MISSION_TIMEOUT": f"{MISSION_TIMEOUT_S}s",
        "MANA_AI_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
        "MANA_AI_LOG_LEVEL": "WARNING",
    }
    log = (log_dir / f"worker-{slot}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mana_ai", "worker"], env=env, stdout=log, stderr=log, cwd=REPO_ROOT
    )
    log.close()  # the child holds its own descriptor
    return Worker(slot, proc, time.monotonic())


def rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc (Linux); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    return rss or None  # 0 while the process is exiting
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# --- seeding ---------------------------------------------------------------------------------------------


def seed(admin_url: str, *, users: int, missions: int, start: datetime) -> None:
    """Agents and missions as the web app writes them (insert rows); first runs spread over one minute."""
    rows: list[tuple[str, str, str, str]] = []
    for u in range(users):
        user_id = f"soak-u{u:04d}"
        agent_id = f"agent-{u:04d}"
        agent: dict[str, Any] = {
            "id": agent_id,
            "name": f"Agent {u}",
            "role": "helper",
            "state": "active",
            "maxConcurrentMissions": 50,
            "policy": {"tools": {}, "defaultForAi": "propose"},
        }
        rows.append((user_id, "agents", agent_id, json.dumps(agent)))
    for m in range(missions):
        u = m % users
        first_run = start + timedelta(seconds=60 * m / missions)
        mission_id = f"soak-m{m:05d}"
        record: dict[str, Any] = {
            "id": mission_id,
            "title": f"Mission {m}",
            "objective": "Keep my week planned",
            "conceptMarkdown": "",
            "state": "active",
            "cadence": {"kind": "interval", "everyMinutes": 1 + m % 3},
            "inputs": [],
            "iterations": [],
            "nextRunAt": _js_iso(first_run),
            "agentId": f"agent-{u:04d}",
        }
        rows.append((f"soak-u{u:04d}", "aiMissions", mission_id, json.dumps(record)))
    with psycopg.connect(admin_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.sync_changes"
            " (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, actor, origin)"
            " VALUES ('ai', %s, %s, %s, 'insert', %s::jsonb, '{}'::jsonb, 'soak-web',"
            " jsonb_build_object('kind', 'user', 'principalId', %s::text, 'displayName', 'Du'), 'user')",
            [(table, record_id, user_id, data, user_id) for user_id, table, record_id, data in rows],
        )


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class RunLog:
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(seconds since start, worker slot, pid, RSS bytes)"""
    sigterms: int = 0
    sigkills: int = 0
    db_restarts: int = 0
    unclean_exits: list[str] = field(default_factory=list)


def stop_worker(worker: Worker, how: signal.Signals, log: RunLog) -> None:
    worker.proc.send_signal(how)
    try:
        code = worker.proc.wait(timeout=SHUTDOWN_GRACE_S + 30)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()
        log.unclean_exits.append(f"worker {worker.slot} (pid {worker.pid}) ignored {how.name}; killed")
        return
    if how == signal.SIGTERM:
        log.sigterms += 1
        if code != 0:
            log.unclean_exits.append(f"worker {worker.slot} (pid {worker.pid}) exited {code} after SIGTERM")
    else:
        log.sigkills += 1


def run(
    minutes: float, db_url: str, llm_url: str, log_dir: Path, cluster: Cluster | None = None
) -> tuple[RunLog, datetime]:
    """Run the workers for ``minutes``; returns the samples and the wall-clock end (before shutdown).

    With ``cluster``, PostgreSQL is restarted (immediate mode) every three minutes from 1:45 on.
    """
    log = RunLog()
    db_restarts_due = [
        60 * (1.75 + 3 * k) for k in range(int(minutes / 3) + 1) if 60 * (1.75 + 3 * k) < minutes * 60
    ]
    if cluster is None:
        db_restarts_due = []
    workers = [start_worker(slot, db_url, llm_url, log_dir) for slot in (0, 1)]
    begin = time.monotonic()
    duration = minutes * 60
    restarts_due = [60 * (k + 0.5) for k in range(int(minutes + 0.5))]
    next_sample = begin
    try:
        while True:
            now = time.monotonic()
            elapsed = now - begin
            if elapsed >= duration:
                break
            for worker in workers:
                if worker.proc.poll() is not None:
                    log.unclean_exits.append(
                        f"worker {worker.slot} died by itself ({worker.proc.returncode})"
                    )
                    workers[worker.slot] = start_worker(worker.slot, db_url, llm_url, log_dir)
            if now >= next_sample:
                for worker in workers:
                    rss = rss_bytes(worker.pid)
                    if rss is not None:
                        log.samples.append((elapsed, worker.slot, worker.pid, rss))
                next_sample = max(next_sample + SAMPLE_EVERY_S, now)  # no burst after a slow restart
            if db_restarts_due and elapsed >= db_restarts_due[0]:
                db_restarts_due.pop(0)
                print(f"  {elapsed:6.0f} s  restarting PostgreSQL (pg_ctl restart -m immediate)", flush=True)
                assert cluster is not None
                cluster.embedded.restart("immediate")
                log.db_restarts += 1
            if restarts_due and elapsed >= restarts_due[0]:
                restarts_due.pop(0)
                how = signal.SIGTERM if (log.sigterms + log.sigkills) % 2 == 0 else signal.SIGKILL
                print(f"  {elapsed:6.0f} s  restarting worker 1 with {how.name}", flush=True)
                stop_worker(workers[1], how, log)
                workers[1] = start_worker(1, db_url, llm_url, log_dir)
            time.sleep(min(1.0, max(0.05, next_sample - time.monotonic())))
        end = datetime.now(UTC)
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                stop_worker(worker, signal.SIGTERM, log)
    return log, end


# --- checks ----------------------------------------------------------------------------------------------

_RUNNER_ROWS = """
SELECT c.user_id, c.record_id, c.client_id,
       c.data ? 'nextRunAt' AS sets_next, c.data->>'nextRunAt' AS next_run_at, c.data->>'state' AS state,
       jsonb_array_length(c.data->'iterations') AS iterations,
       c.data->'iterations'->-1->>'overallStatus' AS status,
       c.data->'iterations'->-1->'errorDetails'->>'name' AS error_name,
       c.data->'iterations'->-1->'errorDetails'->>'message' AS error_message
FROM public.sync_changes c
WHERE c.app_id = 'ai' AND c.table_name = 'aiMissions'
ORDER BY c.user_id, c.record_id, c.created_at, c.id
"""


@dataclass
class Verdict:
    plans: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    duplicates: list[str] = field(default_factory=list)
    iteration_gaps: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    in_backoff: int = 0
    runs_checked: int = 0
    """Due runs older than the margin that the lost-mission check covered (planned since, or still due)."""
    paused: int = 0
    plans_per_mission: Counter[int] = field(default_factory=Counter)


def check_log(admin_url: str, end: datetime) -> Verdict:
    verdict = Verdict()
    cutoff = end - timedelta(milliseconds=TICK_INTERVAL_MS) - timedelta(seconds=LEASE_S)
    cutoff_iso = _js_iso(cutoff)
    with psycopg.connect(admin_url, row_factory=dict_row) as conn:
        rows = conn.execute(_RUNNER_ROWS).fetchall()
        runs = {
            (r["user_id"], r["mission_id"]): r
            for r in conn.execute(
                "SELECT user_id, mission_id, state, last_error, not_before FROM mana_ai.mission_runs"
            ).fetchall()
        }
    missions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        missions.setdefault((row["user_id"], row["record_id"]), []).append(row)
    for key, history in missions.items():
        name = key[1]
        due: str | None = None
        state = "active"
        iterations = 0
        started_from: Counter[str | None] = Counter()
        planned = 0
        for row in history:
            if row["client_id"] == "mana-ai-runner":
                if row["iterations"] != iterations + 1:
                    verdict.iteration_gaps.append(f"{name}: {iterations} -> {row['iterations']} iterations")
                if row["status"] == "failed":
                    verdict.failures[row["error_name"] or "?"] += 1
                    if not row["error_message"]:
                        verdict.failures["(no reason)"] += 1
                else:
                    started_from[due] += 1
                    planned += 1
                    if due is not None and due <= cutoff_iso:
                        verdict.runs_checked += 1
            if row["iterations"] is not None:
                iterations = row["iterations"]
            if row["sets_next"]:
                due = row["next_run_at"]
            if row["state"] is not None:
                state = row["state"]
        verdict.plans += planned
        verdict.plans_per_mission[planned] += 1
        verdict.duplicates += [
            f"{name} planned {n}x from nextRunAt {d}" for d, n in started_from.items() if n > 1
        ]
        if state != "active":
            verdict.paused += 1
            continue
        if due is None or due > cutoff_iso:
            continue
        verdict.runs_checked += 1
        run = runs.get(key)
        if (
            run is not None
            and run["state"] == "failed"
            and run["last_error"]
            and run["not_before"] is not None
            and run["not_before"] > cutoff
        ):
            verdict.in_backoff += 1
        else:
            verdict.lost.append(f"{name}: due {due}, last run {run['state'] if run else 'none'}")
    return verdict


def quarter_medians(
    samples: list[tuple[float, int, int, int]], slot: int, duration: float
) -> list[float | None]:
    quarters: list[list[int]] = [[], [], [], []]
    for elapsed, sample_slot, _pid, rss in samples:
        if sample_slot == slot:
            quarters[min(int(4 * elapsed / duration), 3)].append(rss)
    return [statistics.median(q) / 2**20 if q else None for q in quarters]


def rss_slope(samples: list[tuple[float, int, int, int]], slot: int, duration: float) -> float | None:
    """Least-squares trend of one worker's RSS in MB per minute after the first quarter (start-up). Reported,
    not checked: a high-water mark that still rises slowly shows up here first."""
    points = [
        (elapsed / 60, rss / 2**20)
        for elapsed, sample_slot, _pid, rss in samples
        if sample_slot == slot and elapsed >= duration / 4
    ]
    if len(points) < 3:
        return None
    return float(statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the workers run (default 10)")
    parser.add_argument("--missions", type=int, default=5000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--faults", type=float, default=0.1, help="share of LLM requests that fail")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="fake LLM latency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-db-restarts", dest="db_restarts", action="store_false", help="do not restart PostgreSQL"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mana-ai-soak-"))
    print(
        f"soak: {args.minutes:g} min, {args.missions:,} missions / {args.users} users, 2 workers, "
        f"tick {TICK_INTERVAL_MS / 1000:g} s, LLM faults {args.faults:.0%}; work dir {work}",
        flush=True,
    )
    cluster = Cluster(work / "pg")
    llm_proc: subprocess.Popen[str] | None = None
    ok = False
    try:
        cluster.create_template()
        db = cluster.fresh_database("soak")
        llm_proc, llm_url = start_fake_llm(args.faults, args.latency_ms, args.seed)
        seed(db.admin, users=args.users, missions=args.missions, start=datetime.now(UTC))
        started = time.monotonic()
        log, end = run(args.minutes, db.app, llm_url, work, cluster if args.db_restarts else None)
        wall = time.monotonic() - started
        verdict = check_log(db.admin, end)
        ok = report(args, log, verdict, wall)
    finally:
        if llm_proc is not None:
            llm_proc.terminate()
            llm_proc.wait(timeout=10)
        cluster.stop()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and database kept in {work}")
    return 0 if ok else 1


def report(args: argparse.Namespace, log: RunLog, verdict: Verdict, wall: float) -> bool:
    duration = args.minutes * 60
    long_lived = quarter_medians(log.samples, 0, duration)
    restarted = quarter_medians(log.samples, 1, duration)
    q2, q4 = long_lived[1], long_lived[3]
    growth = (q4 / q2 - 1) if q2 and q4 else None
    checks = {
        "memory flat": growth is not None and growth <= MEMORY_TOLERANCE,
        "no duplicate plan": not verdict.duplicates,
        "no lost iteration": not verdict.iteration_gaps,
        "no lost mission": not verdict.lost,
        "clean SIGTERM exits, none by itself": not log.unclean_exits,
    }
    all_rss = [rss for _t, _slot, _pid, rss in log.samples]
    slope = rss_slope(log.samples, 0, duration)
    print()
    print(f"plans written:        {verdict.plans:,} in {wall / 60:.1f} min ({verdict.plans / wall:.1f}/s)")
    print(f"plans per mission:    {dict(sorted(verdict.plans_per_mission.items()))}")
    print(f"failed iterations:    {sum(verdict.failures.values()):,} {dict(verdict.failures.most_common())}")
    print(f"paused after failures:{verdict.paused:>6}")
    print(f"overdue in backoff:   {verdict.in_backoff}")
    print(f"due runs checked:     {verdict.runs_checked:,} (due before end - tick - lease)")
    print(
        f"restarts:             {log.sigterms} SIGTERM, {log.sigkills} SIGKILL (worker 1; final stops included),"
        f" {log.db_restarts} PostgreSQL"
    )
    print(
        "RSS worker 0 (MB):    quarter medians "
        + " / ".join(_mb(v) for v in long_lived)
        + ("" if growth is None else f"  (last vs second quarter {growth:+.1%})")
        + ("" if slope is None else f", trend {slope:+.2f} MB/min")
    )
    print("RSS worker 1 (MB):    quarter medians " + " / ".join(_mb(v) for v in restarted))
    if all_rss:
        print(
            f"RSS all samples (MB): min {min(all_rss) / 2**20:.1f}, max {max(all_rss) / 2**20:.1f}, n={len(all_rss)}"
        )
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    for problem in [*log.unclean_exits, *verdict.duplicates, *verdict.iteration_gaps, *verdict.lost][:20]:
        print("      " + problem)
    summary = {
        "minutes": args.minutes,
        "missions": args.missions,
        "users": args.users,
        "faults": args.faults,
        "plans": verdict.plans,
        "failures": dict(verdict.failures),
        "paused": verdict.paused,
        "in_backoff": verdict.in_backoff,
        "runs_checked": verdict.runs_checked,
        "sigterm": log.sigterms,
        "sigkill": log.sigkills,
        "db_restarts": log.db_restarts,
        "rss_mb_worker0_quarters": long_lived,
        "rss_mb_worker1_quarters": restarted,
        "rss_growth": growth,
        "rss_mb_per_min_worker0": slope,
        "duplicates": len(verdict.duplicates),
        "iteration_gaps": len(verdict.iteration_gaps),
        "lost": len(verdict.lost),
        "unclean_exits": len(log.unclean_exits),
        "checks": checks,
    }
    print("SOAK_RESULT=" + json.dumps(summary), flush=True)
    return all(checks.values())


if __name__ == "__main__":
    sys.exit(main())
