"""Planning throughput (issue 4): due missions planned per second by one service process.

Runs as a child process, which is the service process: an :class:`~mana_ai.app.App` (as the plain
database role) whose ticker plans every due mission in-process. The fake LLM server is another process
(one tool call, then a final text: two requests per mission). Per repetition:

1. a fresh database from the template, seeded with ``users`` agents (``maxConcurrentMissions`` =
   ``missions_per_user``) and ``users × missions_per_user`` due missions;
2. the app opens and refreshes its snapshots once (steady state: missions exist before they are due);
3. timed: ``app.ticker.tick()`` from its start until it returns, when every write-back is committed.

Per-mission latency is read afterwards from ``mana_ai.mission_runs``: ``finished_at - started_at`` is the
time from the claim to the write-back transaction (the time a mission holds a concurrency slot), and
``finished_at`` minus the tick's start is when each mission was done.
"""

from __future__ import annotations

import contextvars
import logging
import resource
import sys
import time
from collections import defaultdict
from typing import Any

import psycopg

from bench.infra import child_main, create_database, drop_database, ensure_schema
from bench.seed import plans_per_mission, seed_planning
from bench.stats import percentiles, summarize


async def _one_tick(config: dict[str, Any], users: int, per_user: int) -> dict[str, Any]:
    from mana_ai.app import App
    from mana_ai.settings import Settings

    urls = create_database(config["cluster_admin_url"], "tp")
    try:
        await ensure_schema(urls.admin)
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            seed_planning(admin, users=users, missions_per_user=per_user, max_concurrent=per_user)
        overrides: dict[str, Any] = {}
        if config.get("db_pool_size"):
            overrides["db_pool_size"] = config["db_pool_size"]
        settings = Settings(
            database_url=urls.app,
            llm_url=config["llm_url"],
            max_concurrency=config["concurrency"],
            tick_enabled=False,
            **overrides,
        )
        async with App(settings) as app:
            tracer = _Tracer(app) if config.get("trace") else None
            await app.ticker.refresh(_Errors())
            app.db.pool.pop_stats()
            cpu0, wall0, t0 = time.process_time(), time.time(), time.perf_counter()
            stats = await app.ticker.tick()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            wall1 = time.time()
            pool = app.db.pool.pop_stats()
            pool_size = settings.db_pool_size
        with psycopg.connect(urls.admin, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
                " FROM mana_ai.mission_runs WHERE state = 'done'"
            ).fetchall()
            plans = plans_per_mission(admin, "%")
    finally:
        drop_database(config["cluster_admin_url"], urls.name)
    missions = users * per_user
    if plans != {1: missions}:
        raise RuntimeError(
            f"missions by plans written: {plans} (each of the {missions} exactly once expected)"
        )
    return {
        "missions": missions,
        "planned": stats.plans_written_back,
        "decisions": dict(stats.decisions),
        "errors": stats.errors[:5],
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "service_ms": [(f - s) * 1000.0 for s, f in rows],
        "done_after_ms": [(f - wall0) * 1000.0 for _, f in rows],
        # Before the first claim (refresh, due query, agents) and after the last write-back (maintenance).
        "first_claim_ms": (min(s for s, _ in rows) - wall0) * 1000.0 if rows else None,
        "after_last_ms": (wall1 - max(f for _, f in rows)) * 1000.0 if rows else None,
        "pool_size": pool_size,
        "phases_ms": tracer.summary() if tracer is not None else None,
        "pool_wait_ms_per_request": pool.get("requests_wait_ms", 0) / max(pool.get("requests_num", 0), 1),
        "pool_requests_queued": pool.get("requests_queued", 0),
        "pool_requests": pool.get("requests_num", 0),
    }


_MISSION: contextvars.ContextVar[str] = contextvars.ContextVar("bench_mission", default="?")


class _Tracer:
    """Optional phase timing (``"trace": true``): wraps the dispatcher slot, claim, LLM calls, write-back.

    The wrappers are instance attributes on the app's own objects, so the service code runs unchanged;
    their own cost (a few microseconds per call) is included in the measured run.
    """

    def __init__(self, app: Any) -> None:
        self.spans: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        dispatcher, store, llm = app.ticker.dispatcher, app.ticker.store, app.ticker.ctx.llm
        self._wrap(dispatcher, "_guarded", "mission", name_from_first_arg=True)
        self._wrap(store, "claim", "claim")
        self._wrap(store, "write_back", "write_back")
        self._wrap(llm, "complete", "llm")

    def _wrap(self, owner: Any, attr: str, phase: str, *, name_from_first_arg: bool = False) -> None:
        inner = getattr(owner, attr)
        spans = self.spans

        async def timed(*args: Any, **kwargs: Any) -> Any:
            if name_from_first_arg:
                _MISSION.set(args[0].user_id + "/" + args[0].id)
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                spans[_MISSION.get()][phase] += time.perf_counter() - started

        setattr(owner, attr, timed)

    def summary(self) -> dict[str, float]:
        """Mean milliseconds per mission for each phase, and the slot time not in any of them."""
        missions = [p for name, p in self.spans.items() if name != "?"]
        if not missions:
            return {}
        phases = ("mission", "claim", "llm", "write_back")
        mean = {ph + "_ms": sum(m[ph] for m in missions) / len(missions) * 1000.0 for ph in phases}
        mean["other_ms"] = mean["mission_ms"] - mean["claim_ms"] - mean["llm_ms"] - mean["write_back_ms"]
        return mean


class _Errors:
    """The minimal stats object ``Ticker.refresh`` writes errors to."""

    def __init__(self) -> None:
        self.errors: list[str] = []


async def run(config: dict[str, Any]) -> dict[str, Any]:
    from mana_ai.logs import configure_logging
    from mana_ai.settings import Settings

    # Log as `mana-ai serve` does (INFO, text, stderr): the log lines are part of the service's cost.
    configure_logging(Settings(log_level="INFO"))
    users, per_user = config["users"], config["missions_per_user"]
    warmup = await _one_tick(config, max(1, config["warmup_missions"] // per_user), per_user)
    if warmup["planned"] != warmup["missions"]:
        raise RuntimeError("warm-up planned " + str(warmup["planned"]) + " of " + str(warmup["missions"]))
    runs = []
    for _ in range(config["reps"]):
        runs.append(await _one_tick(config, users, per_user))
        print("rep done", file=sys.stderr, flush=True)

    missions = users * per_user
    latency_s = config["latency_ms"] / 1000.0
    throughput = [r["planned"] / r["elapsed_s"] for r in runs]
    service = [ms for r in runs for ms in r["service_ms"]]
    done_after = [ms for r in runs for ms in r["done_after_ms"]]
    ideal_s = missions * 2 * latency_s / config["concurrency"]
    result: dict[str, Any] = {
        "params": {k: v for k, v in config.items() if not k.endswith("_url")},
        "missions": missions,
        "planned": [r["planned"] for r in runs],
        "decisions": runs[-1]["decisions"],
        "errors": [e for r in runs for e in r["errors"]][:5],
        "throughput_per_s": summarize(throughput),
        "tick_s": summarize([r["elapsed_s"] for r in runs]),
        "cpu_s_per_1000": summarize([r["cpu_s"] / r["missions"] * 1000.0 for r in runs]),
        "service_latency_ms": percentiles(service),
        "done_after_ms": percentiles(done_after),
        "first_claim_ms": summarize([r["first_claim_ms"] for r in runs if r["first_claim_ms"] is not None]),
        "after_last_ms": summarize([r["after_last_ms"] for r in runs if r["after_last_ms"] is not None]),
        "db_pool_size": runs[-1]["pool_size"],
        "pool_wait_ms_per_request": summarize([r["pool_wait_ms_per_request"] for r in runs]),
        "pool_requests_per_mission": runs[-1]["pool_requests"] / missions,
        "pool_requests_queued_share": runs[-1]["pool_requests_queued"] / max(runs[-1]["pool_requests"], 1),
        "phases_ms": runs[-1]["phases_ms"],
        "ideal_s": ideal_s,
        "ideal_per_s": missions / ideal_s if ideal_s > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if ideal_s > 0:
        result["ratio_to_ideal"] = summarize([t * ideal_s / missions for t in throughput])
    logging.shutdown()
    return result


if __name__ == "__main__":
    child_main(run)
