"""``make bench`` / ``make bench-quick``: run the benchmarks, print a table, write results and plots.

Usage::

    python -m bench.run            # the full suite (about 10 minutes on 2 cores)
    python -m bench.run --quick    # fewer and smaller runs (under 2 minutes)
    python -m bench.run --only refresh,llm
    python -m bench.run --only scaleout
    python -m bench.run --only deploy     # `mana-ai serve` over HTTP, Postgres over TCP (bench/serve_bench.py)

The suite starts its own embedded PostgreSQL in a temporary directory, migrates a template database once
and clones a fresh database from it for every scenario. The fake LLM server runs as a separate process
(``python -m mana_ai.testing.fake_llm``), one per latency. Each benchmark runs in a child process of its
own (see :mod:`bench.refresh_bench`, :mod:`bench.llm_bench`, :mod:`bench.throughput_bench`,
:mod:`bench.scaleout_bench`, :mod:`bench.serve_bench`), so its CPU time and peak RSS are not mixed with the
others'. The deployment-shaped group (``deploy``) starts a second PostgreSQL listening on 127.0.0.1 and the
standard library's threaded fake LLM (:mod:`bench.plain_llm`), measures that server's ceiling with a bare
client, and drives ``mana-ai serve`` processes over HTTP. Results go to ``bench/results.json`` (quick mode: ``bench/results-quick.json``) and PNG plots next to it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from bench.infra import ChildFailed, Cluster, FakeLlmPool, TcpCluster, run_child
from bench.procstat import tree_cpu_s
from bench.report import (
    Metric,
    metric,
    plot_deploy,
    plot_llm_cost,
    plot_refresh,
    plot_scaleout,
    plot_throughput,
    print_table,
    write_json,
)
from bench.stats import summarize

BENCH_DIR = Path(__file__).resolve().parent


def _ratio(measured: dict[str, Any], bound: dict[str, Any] | None) -> float | None:
    """Median over median: how much of a bound a measurement reaches (None when either is missing)."""
    if not bound or not bound.get("median") or measured.get("median") is None:
        return None
    return float(measured["median"]) / float(bound["median"])


GROUPS = ("refresh", "llm", "throughput", "sweeps", "scaleout", "deploy", "scheduling")

MISSIONS = 2_000
USERS = 100

SCALEOUT_PROCESSES = (1, 2, 4)
SCALEOUT_LATENCY_MS = 100.0
SCALEOUT_TARGETS = {2: 1.8, 4: 3.2}
"""Issue 7: scale-out throughput against one worker process."""


@dataclass(frozen=True)
class ThroughputPoint:
    latency_ms: float
    concurrency: int
    reps: int
    db_pool_size: int | None = None
    """``None``: the service default (``MANA_AI_DB_POOL_SIZE``); set only for labelled what-if points."""


@dataclass(frozen=True)
class Plan:
    """What one run measures; see :func:`full_plan` and :func:`quick_plan`."""

    mode: str
    refresh: list[dict[str, Any]]
    llm: dict[str, Any]
    throughput: list[ThroughputPoint]
    sweeps: list[ThroughputPoint] = field(default_factory=list)
    warmup_missions: int = 200
    scaleout: dict[str, Any] = field(default_factory=dict)
    """Worker processes at 100 ms LLM latency and concurrency 16 each (see :mod:`bench.scaleout_bench`)."""
    deploy: dict[str, Any] = field(default_factory=dict)
    """The deployment-shaped workload (see :mod:`bench.serve_bench`): reps per latency, refresh reps."""


def full_plan() -> Plan:
    return Plan(
        mode="full",
        refresh=[
            # 1 insert + (rounds - 1) field updates for each of 2,000 missions: 20 k, 200 k and 2 M rows.
            {"rounds": 10, "reps": 5, "bootstrap_reps": 5},
            {"rounds": 100, "reps": 5, "bootstrap_reps": 5},
            # 2 M rows: one bootstrap only (it is the slow, memory-hungry case), no warm-up run.
            {"rounds": 1000, "reps": 5, "bootstrap_reps": 0},
        ],
        llm={"requests": 4000, "reps": 5, "concurrency": [1, 64]},
        throughput=[ThroughputPoint(0, 64, 5), ThroughputPoint(100, 64, 5)],
        sweeps=[
            ThroughputPoint(100, 8, 3),
            ThroughputPoint(100, 16, 3),
            ThroughputPoint(100, 32, 3),
            ThroughputPoint(50, 64, 3),
            ThroughputPoint(500, 64, 3),
            # What-if: the default pool (10 connections) against 64 concurrent missions.
            ThroughputPoint(100, 64, 3, db_pool_size=64),
        ],
        scaleout={"users": USERS, "reps": 3, "warmup_missions": 200},
        deploy={
            "latencies": [0, 100],
            "processes": [1, 2],
            "reps": 3,
            "refresh_reps": 3,
            "incremental_reps": 3,
        },
    )


def quick_plan() -> Plan:
    return Plan(
        mode="quick",
        refresh=[{"rounds": 100, "reps": 3, "bootstrap_reps": 2}],
        llm={"requests": 1000, "reps": 3, "concurrency": [1, 64]},
        throughput=[ThroughputPoint(0, 64, 3), ThroughputPoint(100, 64, 3)],
        warmup_missions=100,
        # The full 1,000 missions even here: with fewer, the fixed ramp-up and tail (~0.3 s) weigh on the
        # 4-process window (~3.6 s) and the ratio drops below the target for reasons of size alone.
        scaleout={"users": USERS, "reps": 1, "warmup_missions": 100},
        deploy={
            "latencies": [0, 100],
            "processes": [1, 2],
            "reps": 1,
            "refresh_reps": 1,
            "incremental_reps": 2,
        },
    )


# --- running ----------------------------------------------------------------------------------------------


@dataclass
class Suite:
    plan: Plan
    cluster: Cluster
    llm: FakeLlmPool
    log_path: Path
    console: Console
    trace: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def step(self, label: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        self.console.print("[bold]" + label + "[/bold] ...")
        try:
            result = action()
        except (ChildFailed, subprocess.TimeoutExpired) as exc:
            self.failures.append(label + ": " + str(exc))
            self.console.print("[red]  failed[/red] (log: " + str(self.log_path) + ")")
            return None
        self.console.print(f"  done in {time.perf_counter() - started:.1f} s")
        return result

    # --- snapshot refresh ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        points = []
        for spec in self.plan.refresh:
            rows = MISSIONS * spec["rounds"]
            result = self.step(
                f"refresh: history of {rows:,} rows", functools.partial(self._refresh_one, spec)
            )
            if result is None:
                continue
            points.append(result)
            params = {"history": result["history_rows"], "missions": MISSIONS, "users": USERS}
            is_target_size = result["history_rows"] == 200_000
            self.metrics += [
                metric(
                    "refresh: bootstrap",
                    result["bootstrap_s"],
                    "s",
                    params,
                    target=1.0 if is_target_size else None,
                    cpu_s=result["bootstrap_cpu_s"]["median"],
                ),
                metric(
                    "refresh: incremental (1,000 rows)",
                    result["incremental_s"],
                    "ms",
                    params,
                    target=100.0,
                    scale=1000.0,
                ),
                metric(
                    "refresh: nothing new", result["nothing_new_s"], "ms", params, target=20.0, scale=1000.0
                ),
            ]
        self.raw["refresh"] = points
        if len(points) > 1:
            first, last = points[0]["incremental_s"]["median"], points[-1]["incremental_s"]["median"]
            self.raw["refresh_incremental_growth"] = {
                "from_rows": points[0]["history_rows"],
                "to_rows": points[-1]["history_rows"],
                "ratio": last / first if first else None,
            }

    def _refresh_one(self, spec: dict[str, Any]) -> dict[str, Any]:
        db = self.cluster.fresh_database("refresh")
        try:
            config = {
                "admin_url": db.admin,
                "app_url": db.app,
                "missions": MISSIONS,
                "users": USERS,
                "incremental_rows": 1000,
                **spec,
            }
            return run_child("bench.refresh_bench", config, log_path=self.log_path)
        finally:
            self.cluster.drop_database(db.name)

    # --- LLM client cost ----------------------------------------------------------------------------------
    def llm_cost(self) -> None:
        config = {"llm_url": self.llm.url(0), **self.plan.llm}
        result = self.step(
            "LLM client CPU per round", lambda: run_child("bench.llm_bench", config, log_path=self.log_path)
        )
        if result is None:
            return
        self.raw["llm"] = result
        labels = {"client": "LLM round CPU: client only", "loop": "LLM round CPU: planner loop"}
        for key, value in result.items():
            if not isinstance(value, dict) or "cpu_ms_per_round" not in value:
                continue
            mode, _, conc = key.partition("_c")
            tools = result["params"]["tools"]
            if mode == "codec":
                name, params = "LLM round CPU: JSON codec only", {"tools": tools}
            else:
                name, params = labels[mode], {"tools": tools, "in_flight": int(conc)}
            self.metrics.append(metric(name, value["cpu_ms_per_round"], "ms", params, target=0.5))

    # --- planning throughput ------------------------------------------------------------------------------
    def throughput(self, points: list[ThroughputPoint], key: str, *, detailed: bool) -> None:
        results = []
        for point in points:
            label = f"throughput: latency {point.latency_ms:g} ms, concurrency {point.concurrency}"
            if point.db_pool_size:
                label += f", db pool {point.db_pool_size}"
            result = self.step(label, functools.partial(self._throughput_one, point))
            if result is None:
                continue
            results.append(result)
            self._throughput_metrics(point, result, detailed=detailed)
        self.raw[key] = results

    def _throughput_one(self, point: ThroughputPoint) -> dict[str, Any]:
        config = {
            "cluster_admin_url": self.cluster.admin_url,
            "llm_url": self.llm.url(point.latency_ms),
            "latency_ms": point.latency_ms,
            "concurrency": point.concurrency,
            "users": USERS,
            "missions_per_user": 10,
            "reps": point.reps,
            "warmup_missions": max(self.plan.warmup_missions, point.concurrency * 2),
            "db_pool_size": point.db_pool_size,
            "trace": self.trace,
        }
        return run_child("bench.throughput_bench", config, log_path=self.log_path)

    def _throughput_metrics(self, point: ThroughputPoint, result: dict[str, Any], *, detailed: bool) -> None:
        params: dict[str, Any] = {
            "missions": result["missions"],
            "latency_ms": point.latency_ms,
            "concurrency": point.concurrency,
        }
        if point.db_pool_size:
            params["db_pool"] = point.db_pool_size
        default_config = point.concurrency == 64 and point.db_pool_size is None
        target = {0: 600.0, 100: 280.0}.get(int(point.latency_ms)) if default_config else None
        self.metrics.append(
            metric(
                "planning throughput",
                result["throughput_per_s"],
                "/s",
                params,
                target=target,
                higher_is_better=True,
                ideal_per_s=result["ideal_per_s"],
                decisions=result["decisions"],
            )
        )
        if "ratio_to_ideal" in result:
            self.metrics.append(
                metric("ratio to ideal bound", result["ratio_to_ideal"], "", params, sub=True)
            )
        if not detailed:
            return
        latency = result["service_latency_ms"]
        for q in ("p50", "p99"):
            value = latency.get(q)
            self.metrics.append(
                Metric("claim→write-back " + q, params, "ms", value, None, None, 1 if value else 0, sub=True)
            )
        self.metrics.append(metric("CPU per 1,000 missions", result["cpu_s_per_1000"], "s", params, sub=True))
        rss = result["peak_rss_mb"]
        self.metrics.append(
            Metric(
                "peak RSS (service process)",
                params,
                "MB",
                rss,
                None,
                None,
                1,
                target=250.0 if default_config else None,
                sub=True,
            )
        )

    # --- the deployment-shaped workload: `mana-ai serve` over HTTP, Postgres over TCP, plain threaded LLM --
    def _llm_ceiling(self, llm: FakeLlmPool, latency_ms: float) -> dict[str, Any] | None:
        """Missions/s the plain LLM server allows at all on this machine: a bare client (the service's own
        LLM client, nothing else in its process) with 64 requests in flight, as many as the service's
        planning slots, each with the 62 tools; two requests make a mission. Beside it the CPU per request
        of the server's process and of that client."""
        server = llm.server(latency_ms)
        requests = 1280 if latency_ms else 4000  # ~2.5 s per repetition either way on 2 cores
        config = {
            "llm_url": server.url,
            "requests": requests,
            "reps": self.plan.deploy["reps"],
            "concurrency": [64],
            "modes": ["client"],
        }
        pid = server.pid
        cpu0 = tree_cpu_s(pid) if pid is not None else None
        result = self.step(
            f"deployment-shaped: the plain LLM server's ceiling, LLM {latency_ms:g} ms",
            functools.partial(run_child, "bench.llm_bench", config, log_path=self.log_path),
        )
        if result is None:
            return None
        rate = result["client_c64"]["rounds_per_s"]
        sent = result["client_stats"]["requests"]  # warm-up included, as is the server's CPU
        server_ms = (tree_cpu_s(pid) - cpu0) / sent * 1000.0 if pid is not None and cpu0 is not None else None
        return {
            "missions_per_s": summarize([value / 2.0 for value in rate["values"]]),
            "server_cpu_ms_per_request": server_ms,
            "client_cpu_ms_per_request": result["client_c64"]["cpu_ms_per_round"]["median"],
        }

    def deploy(self, cluster: Any, llm: FakeLlmPool) -> None:
        spec = self.plan.deploy
        common = {
            "cluster_admin_url": cluster.admin_url,
            "pgdata": str(cluster.pgdata),
            "pg_port": cluster.port,
            "log_path": str(self.log_path),
        }
        results = []
        ceilings = {latency: self._llm_ceiling(llm, float(latency)) for latency in spec["latencies"]}
        for latency, processes in itertools.product(spec["latencies"], spec["processes"]):
            server = llm.server(float(latency))
            config = {
                **common,
                "workload": "planning",
                "llm_url": server.url,
                "latency_ms": latency,
                "concurrency": 64,
                "users": USERS,
                "missions_per_user": 10,
                "warmup_missions": 100,
                "reps": spec["reps"],
                "processes": processes,
                "env": {"MANA_AI_PLAN_PROCESSES": str(processes)},
            }
            label = (
                f"deployment-shaped planning: serve over HTTP, {processes} process(es), LLM {latency:g} ms"
            )
            result = self.step(
                label, functools.partial(run_child, "bench.serve_bench", config, log_path=self.log_path)
            )
            if result is None:
                continue
            ceiling = ceilings[latency]
            result["ceiling"] = ceiling
            results.append(result)
            params = {
                "missions": result["missions"],
                "latency_ms": latency,
                "concurrency": 64,
                "shape": "serve",
                "processes": processes,
            }
            self.metrics.append(
                metric(
                    "serve: planning throughput",
                    result["throughput_per_s"],
                    "/s",
                    params,
                    target={0: 600.0, 100: 280.0}.get(int(latency)),
                    higher_is_better=True,
                    ideal_per_s=result["ideal_per_s"],
                    of_ceiling=_ratio(result["throughput_per_s"], ceiling and ceiling["missions_per_s"]),
                )
            )
            for key, name in (
                ("service_cpu_ms_per_mission", "service CPU per mission"),
                ("postgres_cpu_ms_per_mission", "Postgres CPU per mission"),
            ):
                self.metrics.append(metric(name, result[key], "ms", params, sub=True))
            self.metrics.append(
                metric("round trips per mission", result["round_trips_per_mission"], "", params, sub=True)
            )
            self.metrics.append(
                metric("transactions per mission", result["transactions_per_mission"], "", params, sub=True)
            )
        self.raw["deploy_planning"] = results
        for latency, ceiling in ceilings.items():
            if ceiling is not None:
                params = {"latency_ms": latency, "in_flight": 64, "shape": "serve ceiling"}
                self.metrics.append(
                    metric(
                        "serve: LLM server's ceiling (bare client)",
                        ceiling["missions_per_s"],
                        "/s",
                        params,
                        higher_is_better=True,
                    )
                )
                for key, name in (
                    ("server_cpu_ms_per_request", "LLM server CPU per request"),
                    ("client_cpu_ms_per_request", "bare client CPU per request"),
                ):
                    if ceiling[key] is not None:
                        self.metrics.append(metric(name, summarize([ceiling[key]]), "ms", params, sub=True))
        config = {
            **common,
            "workload": "refresh",
            "llm_url": llm.url(0.0),
            "missions": 2000,
            "users": 200,
            "rounds": 100,
            "incremental_rows": 1000,
            "reps": spec["refresh_reps"],
            "incremental_reps": spec["incremental_reps"],
        }
        result = self.step(
            "deployment-shaped refresh: 200,000 rows, tick over HTTP",
            functools.partial(run_child, "bench.serve_bench", config, log_path=self.log_path),
        )
        if result is None:
            return
        self.raw["deploy_refresh"] = result
        params = {"history": result["history_rows"], "shape": "serve tick"}
        self.metrics += [
            metric(
                "serve: tick with bootstrap refresh",
                result["bootstrap_s"],
                "s",
                params,
                target=1.0,
                service_cpu_s=result["bootstrap_service_cpu_s"]["median"],
                postgres_cpu_s=result["bootstrap_postgres_cpu_s"]["median"],
            ),
            metric(
                "serve: tick after 1,000 new rows",
                result["incremental_s"],
                "ms",
                params,
                target=100.0,
                scale=1000.0,
            ),
            metric(
                "serve: tick, nothing new", result["nothing_new_s"], "ms", params, target=20.0, scale=1000.0
            ),
        ]

    # --- scale-out over worker processes ------------------------------------------------------------------
    def scaleout(self) -> None:
        config = {
            "cluster_admin_url": self.cluster.admin_url,
            "llm_url": self.llm.url(SCALEOUT_LATENCY_MS),
            "latency_ms": SCALEOUT_LATENCY_MS,
            "concurrency": 16,
            "tick_interval_ms": 1000,
            "processes": list(SCALEOUT_PROCESSES),
            "missions_per_user": 10,
            **self.plan.scaleout,
        }
        label = (
            "scale-out: "
            + ", ".join(map(str, SCALEOUT_PROCESSES))
            + " worker processes, LLM 100 ms, c=16 each"
        )
        result = self.step(
            label, lambda: run_child("bench.scaleout_bench", config, log_path=self.log_path, timeout_s=600)
        )
        if result is None:
            return
        self.raw["scaleout"] = result
        for point in result["points"]:
            n = point["processes"]
            params = {
                "missions": point["missions"],
                "latency_ms": SCALEOUT_LATENCY_MS,
                "concurrency": 16,
                "processes": n,
            }
            self.metrics.append(
                metric(
                    "scale-out throughput",
                    point["throughput_per_s"],
                    "/s",
                    params,
                    higher_is_better=True,
                    ideal_per_s=point["ideal_per_s"],
                )
            )
            if n != SCALEOUT_PROCESSES[0]:
                self.metrics.append(
                    metric(
                        "ratio to 1 process",
                        point["ratio_to_1"],
                        "×",
                        params,
                        target=SCALEOUT_TARGETS.get(n),
                        higher_is_better=True,
                        sub=True,
                    )
                )
            self.metrics.append(metric("ratio to ideal bound", point["ratio_to_ideal"], "", params, sub=True))
            self.metrics.append(
                metric("slots in use (mean share)", point["slot_utilisation"], "", params, sub=True)
            )


def scheduling_suite(suite: Suite, *, quick: bool) -> None:
    """Issue 15: due delay (and the idle cost of the due dispatcher), noisy neighbour, provider limit."""
    config = {
        "cluster_admin_url": suite.cluster.admin_url,
        "llm_url": suite.llm.url(100.0),
        "llm_url_200": suite.llm.url(200.0),
        "idle_s": 5 if quick else 20,
        "due_missions": 100 if quick else 300,
        "noisy_missions": 2000,
        "max_rpm": 600,
        "limit_missions": 60 if quick else 150,
    }
    result = suite.step(
        "scheduling: due delay, noisy neighbour, provider limit",
        lambda: run_child("bench.scheduling_bench", config, log_path=suite.log_path, timeout_s=1200),
    )
    if result is None:
        return
    suite.raw["scheduling"] = result
    due, noisy, limit = result["due"], result["noisy"], result["limit"]
    params: dict[str, Any] = {"missions": due["missions"], "latency_ms": 100}
    for q in ("p50", "p99"):
        suite.metrics.append(
            Metric(
                "due delay " + q,
                params,
                "s",
                due["delay_s"][q],
                None,
                None,
                1,
                target=2.0 if q == "p99" else None,
            )
        )
    suite.metrics.append(
        Metric(
            "idle: worker CPU per second",
            {"dispatcher": "1 s"},
            "ms",
            due["idle_worker_cpu_ms_per_s"],
            None,
            None,
            1,
            sub=True,
        )
    )
    noisy_params = {"noisy": noisy["noisy_missions"], "small_users": 50, "latency_ms": 200}
    for q in ("p50", "p99"):
        suite.metrics.append(
            Metric(
                "noisy neighbour: small users' delay " + q,
                noisy_params,
                "s",
                noisy["small_delay_s"][q],
                None,
                None,
                1,
                target=2.0 if q == "p99" else None,
            )
        )
    limit_params = {"max_rpm": limit["max_rpm"], "processes": 3, "requests": limit["requests"]}
    suite.metrics.append(
        Metric(
            "provider limit: share of 429s",
            limit_params,
            "",
            limit["rate_limited_share"],
            None,
            None,
            1,
            target=0.01,
        )
    )
    suite.metrics.append(
        Metric(
            "provider limit: share of the limit reached",
            limit_params,
            "",
            limit["share_of_limit"],
            None,
            None,
            1,
            target=0.9,
            higher_is_better=True,
        )
    )


def machine_info(cluster: Cluster) -> dict[str, Any]:
    with psycopg.connect(cluster.admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "postgres": row[0] if row else None,
        "loadavg_start": list(os.getloadavg()),
        "python_loop_s_start": python_loop_s(),
        "git": git_state(),
    }


def cpu_model() -> str | None:
    """The CPU's name as the kernel reports it (Linux), e.g. "AMD EPYC"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def python_loop_s() -> float:
    """Seconds of one pure-Python loop, ``sum(i * i for i in range(10**7))``: how fast this machine runs
    this interpreter right now. Results of different machines (or of one shared machine on different
    days) compare only after this factor; the README quotes it for every machine it reports."""
    started = time.perf_counter()
    sum(i * i for i in range(10**7))
    return round(time.perf_counter() - started, 3)


def git_state() -> dict[str, Any]:
    """The commit measured, and how many files differed from it (read-only git commands)."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=BENCH_DIR.parent, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or None, "modified_files": len(status.splitlines())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller runs (under 2 minutes)")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help="comma-separated groups: " + ", ".join(GROUPS)
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default bench/results[-quick].json)"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="time the phases of every mission in the throughput runs (diagnosis)",
    )
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error("unknown group(s): " + ", ".join(unknown))
    plan = quick_plan() if args.quick else full_plan()
    out = args.out or BENCH_DIR / ("results-quick.json" if args.quick else "results.json")
    out.parent.mkdir(parents=True, exist_ok=True)  # now, not after the run: a bad --out must not lose it
    plot_prefix = "quick-" if args.quick else ""
    # Under make, stdout is not a terminal and rich would assume 80 columns: too narrow for the table.
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="mana-ai-bench-"))
    log_path = workdir / "bench.log"
    console.print(f"mana-ai benchmarks ({plan.mode}); scratch dir {workdir}")
    cluster = Cluster(workdir)
    pool = FakeLlmPool()
    suite = Suite(plan, cluster, pool, log_path, console, trace=args.trace)
    try:
        cluster.create_template()
        machine = machine_info(cluster)
        console.print(
            f"machine: {machine['cores']} cores, {machine['cpu_model'] or 'unknown CPU'}; the pure-Python loop"
            f" takes {machine['python_loop_s_start']:.2f} s; load average {machine['loadavg_start'][0]:.2f}"
        )
        if "refresh" in groups:
            suite.refresh()
        if "llm" in groups:
            suite.llm_cost()
        if "throughput" in groups:
            suite.throughput(plan.throughput, "throughput", detailed=True)
        if "sweeps" in groups and plan.sweeps:
            suite.throughput(plan.sweeps, "sweeps", detailed=False)
        if "scaleout" in groups and plan.scaleout:
            suite.scaleout()
        if "deploy" in groups and plan.deploy:
            tcp_cluster = TcpCluster(workdir)
            plain_llm = FakeLlmPool(module="bench.plain_llm")
            try:
                tcp_cluster.create_template()
                suite.deploy(tcp_cluster, plain_llm)
            finally:
                plain_llm.stop()
                tcp_cluster.stop()
        if "scheduling" in groups:
            scheduling_suite(suite, quick=plan.mode == "quick")
    finally:
        pool.stop()
        cluster.stop()
        # The cluster holds gigabytes after the 2 M-row history; the log is kept when something failed.
        shutil.rmtree(workdir / "pgdata", ignore_errors=True)
        shutil.rmtree(workdir / "pgdata-tcp", ignore_errors=True)
    machine["loadavg_end"] = list(os.getloadavg())
    machine["python_loop_s_end"] = python_loop_s()

    print_table(console, suite.metrics, suite.failures)
    if machine["loadavg_start"][0] > 1.0:
        # Work that ran before the suite started (the 1-minute average) is likely still running beside it.
        console.print(
            f"[yellow]note:[/yellow] the machine was busy (load average {machine['loadavg_start'][0]:.2f} at the start,"
            f" {machine['loadavg_end'][0]:.2f} at the end): expect noisy numbers, and run again on a quiet machine"
        )
    console.print(
        f"the pure-Python loop took {machine['python_loop_s_start']:.2f} s at the start and"
        f" {machine['python_loop_s_end']:.2f} s at the end"
    )
    payload = {
        "suite": "mana-ai bench",
        "mode": plan.mode,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "benchmarks": [m.to_json() for m in suite.metrics],
        "failures": suite.failures,
        "raw": suite.raw,
    }
    write_json(out, payload)
    plots = write_plots(suite.raw, out.parent, plot_prefix)
    console.print(f"wrote {out}" + "".join("\nwrote " + str(p) for p in plots))
    console.print(f"total {time.time() - started:.0f} s")
    if suite.failures:
        console.print("child logs kept in " + str(log_path))
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def write_plots(raw: dict[str, Any], folder: Path, prefix: str) -> list[Path]:
    written: list[Path] = []
    if raw.get("refresh"):
        path = folder / (prefix + "refresh.png")
        plot_refresh(path, raw["refresh"])
        written.append(path)
    if raw.get("llm"):
        path = folder / (prefix + "llm_cpu.png")
        plot_llm_cost(path, raw["llm"])
        written.append(path)
    points = [
        p for p in raw.get("throughput", []) + raw.get("sweeps", []) if not p["params"].get("db_pool_size")
    ]
    by_latency = [p for p in points if p["params"]["concurrency"] == 64]
    if len(by_latency) > 1:
        path = folder / (prefix + "throughput_vs_latency.png")
        plot_throughput(
            path,
            by_latency,
            x_key="latency_ms",
            x_label="LLM latency per request (ms)",
            title="Planning throughput vs LLM latency (1,000 missions, concurrency 64)",
            ideal=lambda p: p["ideal_per_s"],
        )
        written.append(path)
    by_concurrency = [p for p in points if p["params"]["latency_ms"] == 100]
    if len(by_concurrency) > 1:
        path = folder / (prefix + "throughput_vs_concurrency.png")
        plot_throughput(
            path,
            by_concurrency,
            x_key="concurrency",
            x_label="concurrency (missions in flight)",
            title="Planning throughput vs concurrency (1,000 missions, LLM 100 ms)",
            ideal=lambda p: p["ideal_per_s"],
        )
        written.append(path)
    if raw.get("deploy_planning"):
        path = folder / (prefix + "deploy.png")
        plot_deploy(path, raw["deploy_planning"], raw.get("deploy_refresh"))
        written.append(path)
    if raw.get("scaleout"):
        path = folder / (prefix + "scaleout.png")
        plot_scaleout(path, raw["scaleout"])
        written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())
