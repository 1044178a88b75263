"""Snapshot refresh (issue 2, issue 7): bootstrap, incremental (1,000 new rows) and nothing-new.

Runs as a child process (``python -m bench.refresh_bench <config json>``) on a fresh database:

1. load a history of ``missions × rounds`` ai/aiMissions rows server-side as the admin role (the trigger
   fills the feed), then ``VACUUM ANALYZE`` as autovacuum eventually would;
2. bootstrap: the refresh on an empty snapshot state (snapshots truncated, cursor at 0), as the plain
   service role; one warm-up, then ``bootstrap_reps`` timed runs;
3. incremental: insert ``incremental_rows`` updates of distinct missions, time the refresh that folds
   them; one warm-up, then ``reps`` timed runs;
4. nothing new: time a refresh right after one, ``reps`` times.

The feed is not pruned between steps: the incremental refresh must find its rows in a feed that still
holds the whole history (the harder case; the tick's maintenance would prune it).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import resource
import time
from typing import Any

import psycopg

from bench.infra import child_main
from bench.seed import insert_updates, load_history
from bench.stats import summarize


async def _timed_refresh(db: Any, profile: cProfile.Profile | None = None) -> tuple[float, float, Any]:
    from mana_ai.synclog.snapshots import refresh_snapshots

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    stats = await refresh_snapshots(db)
    if profile is not None:
        profile.disable()
    return time.perf_counter() - t0, time.process_time() - cpu0, stats


def _reset_snapshots(admin: psycopg.Connection[Any]) -> None:
    admin.execute("TRUNCATE mana_ai.mission_snapshots, mana_ai.agent_snapshots")
    admin.execute("UPDATE mana_ai.refresh_cursor SET horizon = '0'::xid8 WHERE name = 'snapshots'")
    admin.execute("VACUUM ANALYZE mana_ai.mission_snapshots")


def _profile_text(profile: cProfile.Profile, limit: int = 25) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def run(config: dict[str, Any]) -> dict[str, Any]:
    from mana_ai.db.connector import Database

    missions, users, rounds = config["missions"], config["users"], config["rounds"]
    reps, bootstrap_reps, new_rows = config["reps"], config["bootstrap_reps"], config["incremental_rows"]
    result: dict[str, Any] = {"params": {k: v for k, v in config.items() if not k.endswith("_url")}}

    with psycopg.connect(config["admin_url"], autocommit=True) as admin:
        t0 = time.perf_counter()
        history = load_history(admin, missions=missions, users=users, rounds=rounds)
        admin.execute("VACUUM ANALYZE")
        result["history_rows"] = history
        result["load_s"] = time.perf_counter() - t0

        db = Database(config["app_url"], min_size=1, max_size=2)
        await db.open()
        try:
            # --- bootstrap --------------------------------------------------------------------------------
            walls: list[float] = []
            cpus: list[float] = []
            profile = cProfile.Profile() if config.get("profile") else None
            for rep in range(bootstrap_reps + 1):
                _reset_snapshots(admin)
                wall, cpu, stats = await _timed_refresh(db, profile if rep == bootstrap_reps else None)
                if stats.missions.rows_applied != history or stats.missions.new_snapshots != missions:
                    raise AssertionError(
                        "bootstrap folded " + str(stats.as_dict()) + ", expected " + str(history)
                    )
                if rep > 0 or bootstrap_reps == 0:  # the first one is the warm-up (unless it is the only one)
                    walls.append(wall)
                    cpus.append(cpu)
            result["bootstrap_s"] = summarize(walls)
            result["bootstrap_cpu_s"] = summarize(cpus)
            if profile is not None:
                result["bootstrap_profile"] = _profile_text(profile)

            # --- incremental and nothing new --------------------------------------------------------------
            incr: list[float] = []
            incr_cpu: list[float] = []
            idle: list[float] = []
            for rep in range(reps + 1):
                base = "2026-06-01T00:00:" + str(rep % 60).zfill(2) + "Z"
                inserted = insert_updates(
                    admin, missions=missions, users=users, count=new_rows, batch=rep, base=base
                )
                wall, cpu, stats = await _timed_refresh(db)
                if stats.missions.rows_applied != inserted:
                    raise AssertionError(
                        "incremental folded " + str(stats.as_dict()) + ", expected " + str(inserted)
                    )
                idle_wall, _, idle_stats = await _timed_refresh(db)
                if idle_stats.rows_applied != 0:
                    raise AssertionError("a refresh with nothing new folded " + str(idle_stats.as_dict()))
                if rep > 0:
                    incr.append(wall)
                    incr_cpu.append(cpu)
                    idle.append(idle_wall)
            result["incremental_s"] = summarize(incr)
            result["incremental_cpu_s"] = summarize(incr_cpu)
            result["nothing_new_s"] = summarize(idle)
        finally:
            await db.close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


if __name__ == "__main__":
    child_main(run)
