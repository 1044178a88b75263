"""The planning processes `mana-ai serve` runs beside itself (``MANA_AI_PLAN_PROCESSES``).

A Python process plans on one core at most, so a service on a 2-core machine was capped at one core however
idle the other one was. With ``MANA_AI_PLAN_PROCESSES`` above 1, ``serve`` starts that many minus one
``mana-ai worker`` processes on the same database; they take planning batches from the queue like any other
worker (exactly-once holds as for workers started by hand: the claim in Postgres decides). ``serve`` owns
them:

* they get the service's environment with its database URL (an embedded server is shared, not started
  again) and their share of ``MANA_AI_MAX_CONCURRENCY``, so the whole service plans at most that many
  missions at once, as with one process;
* one that ends without being asked is started again with backoff (:func:`~mana_ai.runner.supervise.supervise`);
* their metrics count in ``serve``'s ``/metrics`` (:func:`~mana_ai.metrics.shared_metrics`);
* on ``serve``'s stop they get SIGTERM (their own graceful drain), then SIGKILL after the grace period; on
  Linux they also get SIGTERM when ``serve`` dies without stopping them (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from mana_ai.runner.supervise import supervise

logger = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "mana_ai", "worker")


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def planning_processes(setting: int) -> int:
    """``MANA_AI_PLAN_PROCESSES`` resolved: 0 means one per usable core."""
    return setting if setting > 0 else usable_cpus()


def concurrency_share(total: int, processes: int) -> int:
    """Each process's part of the service-wide concurrency limit (rounded up: never below 1)."""
    return max(1, math.ceil(total / max(1, processes)))


def worker_environment(base: Mapping[str, str], *, database_url: str, max_concurrency: int) -> dict[str, str]:
    """The environment of a worker started by ``serve``: the service's own, on the same database (no metrics
    port of its own: its counts are in ``serve``'s ``/metrics``)."""
    return {
        **{name: value for name, value in base.items() if name != "MANA_AI_WORKER_METRICS_PORT"},
        "SYNC_DATABASE_URL": database_url,
        "MANA_AI_MAX_CONCURRENCY": str(max_concurrency),
        "MANA_AI_PLAN_PROCESSES": "1",
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
    """Ask Linux to send SIGTERM to this child when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class WorkerProcesses:
    """``count`` supervised ``mana-ai worker`` children; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        count: int,
        env: Mapping[str, str],
        *,
        grace_s: float,
        command: Sequence[str] = WORKER_COMMAND,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self._on_exit = on_exit
        self._env = dict(env)
        self._grace_s = grace_s
        self._command = list(command)
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return sorted(p.pid for p in self._procs.values() if p.returncode is None)

    def state(self) -> dict[str, object]:
        """For ``/health``: how many run, their pids and how often one had to be started again."""
        return {"wanted": self.count, "running": len(self.pids), "pids": self.pids, "restarts": self.restarts}

    async def run(self) -> None:
        """Start every child and keep it running until :meth:`stop`."""
        await asyncio.gather(*(self._supervised(slot) for slot in range(self.count)))

    async def _supervised(self, slot: int) -> None:
        async def start() -> None:
            await self._run_one(slot)

        await supervise(start, self._stopping, name=f"plan-process-{slot + 1}")

    async def _run_one(self, slot: int) -> None:
        if self._procs.get(slot) is not None:
            self.restarts += 1
        proc = await asyncio.create_subprocess_exec(
            *self._command, env=self._env, stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        self._procs[slot] = proc
        logger.info(
            "planning process started", extra={"action": "service.plan_process_started", "pid": proc.pid}
        )
        code = await proc.wait()
        if self._on_exit is not None:
            self._on_exit(proc.pid)
        if not self._stopping.is_set():
            raise ChildProcessError(f"planning process {proc.pid} exited with status {code}")

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL those still running after the grace period; wait for all."""
        self._stopping.set()
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        if not running:
            return
        _, late = await asyncio.wait(
            [asyncio.create_task(p.wait()) for p in running], timeout=self._grace_s + 5
        )
        if late:
            for proc in running:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
