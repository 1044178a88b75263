"""Every Prometheus instrument in one place (SPEC §22 names, plus the ones our fixes need).

Instruments live on a :class:`Metrics` object bound to a registry, so tests get a fresh registry each and
the service one per process.

Like the original (``services/mana-ai/src/metrics.ts``: ``register.setDefaultLabels({service: 'mana-ai'})``
and ``collectDefaultMetrics({prefix: 'mana_ai_'})``), every exported sample carries ``service="mana-ai"``
(added when rendering, so in-process lookups keep their own label sets) and the process metrics are
exported with the ``mana_ai_`` prefix: CPU (total, user, system), memory, file descriptors, start time, and
the Python garbage collector's collections in place of Node's.

A process that plans beside others on one machine (``mana-ai serve`` with ``MANA_AI_PLAN_PROCESSES`` above
1, and the ``mana-ai worker`` children it starts) shares its instruments through a directory of per-process
files (prometheus_client's multiprocess mode, :func:`shared_metrics`): ``serve``'s ``/metrics`` then counts
the work of all of them, and a child's counts stay counted after it is restarted. The process metrics (CPU,
memory, …) remain those of the process answering the scrape.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

SERVICE_LABEL: Final = ("service", "mana-ai")
SHARED_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
SHARED_DIR_PREFIX: Final = "mana-ai-metrics-"
"""Followed by the service's pid: a directory left by a killed service is removed by the next one."""


def shared_dir() -> Path | None:
    """The directory this process's instruments write to when they are shared with other processes."""
    path = os.environ.get(SHARED_DIR_ENV)
    return Path(path) if path and getattr(values.ValueClass, "_multiprocess", False) else None


@contextlib.contextmanager
def shared_metrics() -> Iterator[Path]:
    """Share the instruments created from here on with the child processes started in this block.

    The children inherit the directory through the environment (prometheus_client reads it when imported);
    this process switches its own value class, as its instruments are not created yet. The directory is
    new, so no counts of an earlier run are added in (inside ``PROMETHEUS_MULTIPROC_DIR`` when that is set,
    else in the temporary directory), and removed at the end, or by the next service if this one is killed."""
    parent = os.environ.get(SHARED_DIR_ENV)
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    base = Path(parent or tempfile.gettempdir())
    _remove_orphans(base)
    path = Path(tempfile.mkdtemp(prefix=f"{SHARED_DIR_PREFIX}{os.getpid()}-", dir=base))
    previous = values.ValueClass
    os.environ[SHARED_DIR_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        yield path
    finally:
        values.ValueClass = previous
        if parent:
            os.environ[SHARED_DIR_ENV] = parent
        else:
            os.environ.pop(SHARED_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _remove_orphans(base: Path) -> None:
    """Remove the directories of earlier services that were killed before they could (their pid is gone, or
    is ours: this process has not made its own yet, and in a container serve is pid 1 every time)."""
    for stale in base.glob(SHARED_DIR_PREFIX + "*-*"):
        pid = stale.name.removeprefix(SHARED_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not psutil.pid_exists(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)


def process_ended(pid: int) -> None:
    """Forget the live gauges of a child that ended (its counters stay counted)."""
    path = shared_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


class _RuntimeCollector(Collector):
    """``mana_ai_process_cpu_{user,system}_seconds_total`` and the GC's collections per generation."""

    def collect(self) -> Iterator[Metric]:
        times = os.times()
        user = CounterMetricFamily(
            "mana_ai_process_cpu_user_seconds_total", "User CPU time spent in seconds."
        )
        user.add_metric([], times.user)
        system = CounterMetricFamily(
            "mana_ai_process_cpu_system_seconds_total", "System CPU time spent in seconds."
        )
        system.add_metric([], times.system)
        collections = CounterMetricFamily(
            "mana_ai_python_gc_collections_total",
            "Garbage collections per generation.",
            labels=["generation"],
        )
        for generation, stat in enumerate(gc.get_stats()):
            collections.add_metric([str(generation)], stat.get("collections", 0))
        yield from (user, system, collections)


class _WithServiceLabel:
    """The registry's metrics with ``service="mana-ai"`` on every sample (the original's default label)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        name, value = SERVICE_LABEL
        for metric in self._registry.collect():
            metric.samples = [
                Sample(s.name, {**s.labels, name: value}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield metric


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _add_process_metrics(registry: CollectorRegistry) -> None:
    """CPU, memory, file descriptors, start time and GC collections of this process, prefixed ``mana_ai_``."""
    ProcessCollector(namespace="mana_ai", registry=registry)
    registry.register(_RuntimeCollector())


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        if process:
            _add_process_metrics(self.registry)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.http_requests = counter(
            "mana_ai_http_requests_total", "HTTP requests", ("method", "path", "status")
        )
        self.http_duration = histogram(
            "mana_ai_http_request_duration_seconds",
            "HTTP request duration",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ("method", "path", "status"),
        )
        self.ticks = counter("mana_ai_ticks_total", "Ticks run (overlap-skipped ticks not counted)")
        self.tick_duration = histogram(
            "mana_ai_tick_duration_seconds", "Tick duration", (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)
        )
        self.plans_produced = counter("mana_ai_plans_produced_total", "Plans produced by the planner")
        self.plans_written_back = counter("mana_ai_plans_written_back_total", "Iterations written back")
        self.parse_failures = counter("mana_ai_parse_failures_total", "Planner runs that failed (any reason)")
        self.mission_errors = counter(
            "mana_ai_mission_errors_total", "Unexpected errors while handling a mission"
        )
        self.missions_failed = counter(
            "mana_ai_missions_failed_total",
            "Missions that ended as a failed iteration, by reason",
            ("reason",),
        )
        self.research_submitted = counter(
            "mana_ai_research_jobs_submitted_total", "Deep research jobs", ("provider",)
        )
        self.research_completed = counter(
            "mana_ai_research_jobs_completed_total", "Deep research done", ("provider",)
        )
        self.research_failed = counter(
            "mana_ai_research_jobs_failed_total", "Deep research failed", ("provider",)
        )
        self.research_pending_skips = counter(
            "mana_ai_research_jobs_pending_skips_total", "Missions skipped while deep research is pending"
        )
        self.research_failures = counter(
            "mana_ai_research_failures_total", "Research calls that failed", ("stage", "reason")
        )
        self.planner_request_duration = histogram(
            "mana_ai_planner_request_duration_seconds",
            "Duration of one LLM request",
            (0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.snapshots_new = counter("mana_ai_snapshots_new_total", "New mission snapshots")
        self.snapshots_updated = counter("mana_ai_snapshots_updated_total", "Updated mission snapshots")
        self.snapshot_rows_applied = counter("mana_ai_snapshot_rows_applied_total", "Mission rows applied")
        self.iterations_restored = counter(
            "mana_ai_iterations_restored_total",
            "Server iterations (kind=iteration) and workbench decisions (kind=decision) a device edit had dropped,"
            " restored after a refresh",
            ("kind",),
        )
        self.snapshot_rows_skipped = counter(
            "mana_ai_snapshot_rows_skipped_total", "Malformed sync rows skipped by the refresh", ("table",)
        )
        self.decrypts = counter("mana_ai_decrypts_total", "Fields decrypted server-side", ("table",))
        self.grant_scope_violations = counter(
            "mana_ai_grant_scope_violations_total", "Inputs outside a grant's allowlist", ("table",)
        )
        self.grant_skips = counter("mana_ai_grant_skips_total", "Grants that could not be used", ("reason",))
        self.agent_decisions = counter("mana_ai_agent_decisions_total", "Agent gate decisions", ("decision",))
        self.tokens_used = counter("mana_ai_tokens_used_total", "Tokens used by planner runs", ("agent_id",))
        self.tool_calls = counter(
            "mana_ai_tool_calls_total", "Tool calls by outcome", ("tool", "policy", "outcome")
        )
        self.planner_rounds = histogram("mana_ai_planner_rounds", "Planner rounds per run", (1, 2, 3, 4, 5))
        self.provider_errors = counter(
            "mana_ai_provider_errors_total", "LLM provider errors", ("provider", "kind")
        )
        self.reminders = counter(
            "mana_ai_reminders_emitted_total",
            "Reminders injected into planner rounds",
            ("producer", "severity"),
        )
        self.compactions = counter("mana_ai_compactions_triggered_total", "Context compactions")
        self.compacted_turns = histogram(
            "mana_ai_compacted_turns", "Turns folded per compaction", (1, 2, 4, 8, 16, 32, 64, 128)
        )

        # --- scheduling (issue 15) ---
        self.due_delay = histogram(
            "mana_ai_due_delay_seconds",
            "Delay from a mission's nextRunAt to its first claim",
            (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 3600),
        )
        self.agent_budget_ratio = Gauge(
            "mana_ai_agent_budget_ratio",
            "Recorded tokens of the last 24 h / daily cap of an agent, kept current by the processes that run it"
            " (alert at 0.8)",
            ("agent_id",),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.budget_warnings = counter(
            "mana_ai_agent_budget_warnings_total",
            "Runs whose tokens took an agent past 80 % of its daily cap",
        )
        self.missed_runs_skipped = counter(
            "mana_ai_missed_runs_skipped_total", "Runs skipped to the next occurrence after the grace window"
        )
        self.llm_pacing_wait = histogram(
            "mana_ai_llm_pacing_wait_seconds",
            "Time an LLM request waited for the cluster-wide rate limit",
            (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.llm_rate_limited = counter(
            "mana_ai_llm_rate_limited_total", "429 answers from the LLM provider (each lowers concurrency)"
        )
        self.llm_concurrency = Gauge(
            "mana_ai_llm_concurrency_limit",
            "Adaptive limit of concurrent LLM requests (summed over the service's planning processes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.exported = self._exported(process)

    def _exported(self, process: bool) -> CollectorRegistry:
        """What ``/metrics`` shows: this registry, or every sharing process's instruments summed up."""
        path = shared_dir()
        if path is None:
            return self.registry
        exported = CollectorRegistry(auto_describe=True)
        multiprocess.MultiProcessCollector(exported, str(path))  # type: ignore[no-untyped-call]
        if process:
            _add_process_metrics(exported)
        return exported

    def render(self) -> bytes:
        return generate_latest(_WithServiceLabel(self.exported))
