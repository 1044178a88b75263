"""Scale-out on procrastinate: the periodic tick and planning jobs, on the same Postgres.

* ``mana_ai.tick`` is a periodic task: procrastinate defers it once per interval for the whole cluster,
  whatever the number of workers. It refreshes the snapshots (serialised by an advisory lock), finds the
  due missions and defers them as ``mana_ai.plan_batch`` jobs of a few missions each.
* ``mana_ai.plan_batch`` runs on any worker. Each mission is claimed in Postgres before it is planned
  (``mana_ai.claim_mission_run``), so a mission is planned once per due run however many workers hold a
  job for it; a worker killed mid-plan leaves a claim whose lease expires, and a later tick re-defers it.
* While planning jobs are still queued, a tick defers nothing new: the backlog is worked off first, and a
  slow cluster is never flooded with duplicate jobs. A mission a job holds is marked in
  ``mana_ai.mission_dispatch`` and never handed to a second job (issue 16).
* Between ticks, every worker runs the due dispatcher (:mod:`mana_ai.runner.scheduling`), so a mission
  starts within about a second of its ``nextRunAt``. The tick runs on its own worker (queue ``tick``,
  one slot), so it never waits behind planning jobs.

The process's :class:`~mana_ai.app.App` reaches the tasks through the worker's ``additional_context``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import procrastinate
import psycopg
from procrastinate import JobContext, PsycopgConnector
from procrastinate.jobs import Status

from mana_ai.db.migrate import QUEUE_SCHEMA
from mana_ai.db.queries import q
from mana_ai.runner.tick import BatchReport, WorkerRun
from mana_ai.settings import tick_step_s
from mana_ai.timefmt import to_js_iso, utcnow

logger = logging.getLogger(__name__)

BATCH_SIZE = 8


def interval_cron(interval_s: float) -> str:
    """A procrastinate cron (6 fields = with seconds) ticking every :func:`tick_step_s` seconds."""
    step = tick_step_s(interval_s)
    if step < 60:
        return f"* * * * * */{step}"
    if step < 3600:
        return "* * * * *" if step == 60 else f"*/{step // 60} * * * *"
    return "0 * * * *" if step == 3600 else f"0 */{step // 3600} * * *"


def build_queue(database_url: str, *, tick_interval_s: float, tick_enabled: bool) -> procrastinate.App:
    connector = PsycopgConnector(
        conninfo=database_url,
        kwargs={"options": f"-c search_path={QUEUE_SCHEMA},public"},
        min_size=1,
        max_size=4,
        json_dumps=lambda value: orjson.dumps(value).decode(),
        json_loads=orjson.loads,
    )
    queue = procrastinate.App(connector=connector)

    @queue.task(name="mana_ai.plan_batch", queue="plan", pass_context=True)
    async def plan_batch(
        context: JobContext, missions: list[list[str]], tick: str | None = None
    ) -> dict[str, int]:
        runtime = _runtime(context)
        store = runtime.ticker.store
        keys = [(user_id, mission_id) for user_id, mission_id in missions]
        # This worker holds the batch's missions now: its heartbeat keeps them from being dispatched again.
        store.holding.update(keys)
        await store.dispatch_take(keys, runtime.settings.claim_lease)
        try:
            found = await store.missions_by_key(keys)
            # Due *now*: a batch can run after its missions were planned by another job (two ticks deferred
            # them, or a job outlived a database restart); their nextRunAt then lies ahead and planning again
            # would be a second plan for one due run.
            now_iso = to_js_iso(utcnow())
            due = [
                m
                for m in found
                if m.state == "active" and m.next_run_at is not None and m.next_run_at <= now_iso
            ]
            agents = await store.agents_for_users(m.user_id for m in due)
            results = await runtime.ticker.dispatcher.run_all(due, agents)
        finally:
            store.holding.difference_update(keys)
            await store.dispatch_done(keys)
        report = BatchReport.of(tick or "", results)
        if tick is not None:
            # POST /internal/tick waits for the reports of the batches it deferred (see worker_tick).
            await store.notify_tick_batch(report.to_payload())
        return report.decisions

    async def tick(context: JobContext, timestamp: int) -> dict[str, Any]:
        runtime = _runtime(context)
        result: dict[str, Any] = await runtime.ticker.dispatch_tick(
            batch_deferrer(queue), backlog=lambda: _backlog(queue), batch_size=BATCH_SIZE
        )
        return result

    tick_task = queue.task(
        name="mana_ai.tick", queue="tick", pass_context=True, queueing_lock="mana_ai.tick"
    )(tick)
    if tick_enabled:
        queue.periodic(cron=interval_cron(tick_interval_s), periodic_id="tick")(tick_task)
    return queue


def batch_deferrer(
    queue: procrastinate.App,
) -> Callable[[list[list[tuple[str, str]]]], Awaitable[None]]:
    """Defers one ``mana_ai.plan_batch`` job per list of (user id, mission id), all in one statement (the
    jobs keep their order: the first batches of a fair dispatch are picked up first)."""
    task = queue.tasks["mana_ai.plan_batch"]

    async def defer(batches: list[list[tuple[str, str]]]) -> None:
        jobs: list[dict[str, Any]] = [{"missions": [list(k) for k in batch]} for batch in batches]
        await task.batch_defer_async(*jobs)

    return defer


def tick_batch_size(missions: int, processes: int) -> int:
    """Batches for a tick over HTTP: two per planning process (a process that finishes early takes the other's
    second one), never smaller than the cluster tick's (:data:`BATCH_SIZE`). The queue costs a few statements
    per job, and every idle worker slot of every process races for each new job: many small jobs made the
    queue itself a third of the database work of a tick."""
    return max(BATCH_SIZE, -(-missions // (2 * max(1, processes))))


def worker_tick(queue: procrastinate.App, database_url: str, *, processes: int, wait_s: float) -> WorkerRun:
    """POST /internal/tick on several planning processes: defer the keys as batches tagged with a fresh tick
    id, then wait for every batch's report (``NOTIFY`` from :func:`plan_batch`, listened for before the
    batches exist). A batch that sends nothing for ``wait_s`` (its worker was killed; its missions' claims
    expire and a later tick plans them) ends the wait with an error line instead of hanging the request."""
    task = queue.tasks["mana_ai.plan_batch"]

    async def run(keys: list[tuple[str, str]]) -> list[BatchReport]:
        tick_id = uuid.uuid4().hex
        size = tick_batch_size(len(keys), processes)
        batches = [keys[start : start + size] for start in range(0, len(keys), size)]
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
            await listener.execute(q("listen_tick_batches"))
            jobs: list[dict[str, Any]] = [
                {"missions": [list(k) for k in b], "tick": tick_id} for b in batches
            ]
            await task.batch_defer_async(*jobs)
            reports = await _reports(listener, tick_id, len(batches), wait_s)
        missing = len(batches) - len(reports)
        if missing:
            reports.append(
                BatchReport(
                    tick_id,
                    errors=[
                        f"{missing} planning batches sent no report within {wait_s:.0f} s; a later tick plans them"
                    ],
                )
            )
        return reports

    return run


async def _reports(listener: Any, tick_id: str, expected: int, wait_s: float) -> list[BatchReport]:
    reports: list[BatchReport] = []
    deadline = time.monotonic() + wait_s
    while len(reports) < expected and (remaining := deadline - time.monotonic()) > 0:
        async for note in listener.notifies(timeout=remaining):
            report = BatchReport.from_payload(note.payload)
            if report is None or report.tick != tick_id:
                continue
            reports.append(report)
            deadline = time.monotonic() + wait_s  # the wait is for progress, not for the whole tick
            if len(reports) == expected:
                break
    return reports


def backlog_counter(queue: procrastinate.App) -> Callable[[], Awaitable[int]]:
    """The due dispatcher's backlog check: one count (stalled jobs are closed by the periodic tick)."""
    return lambda: _backlog(queue, close_stalled=False)


async def _backlog(queue: procrastinate.App, *, close_stalled: bool = True) -> int:
    """Planning jobs not yet picked up. Jobs being worked on do not count: their missions are claimed, and a
    job of a killed worker stays ``doing`` forever, so counting those would stop the cluster for good."""
    if close_stalled:
        await _fail_stalled_jobs(queue)
    rows = await queue.connector.execute_query_all_async(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 'mana_ai.plan_batch' AND status = 'todo'"
    )
    return int(rows[0]["n"]) if rows else 0


async def _fail_stalled_jobs(queue: procrastinate.App) -> None:
    """Close the jobs of workers that stopped sending heartbeats (killed); their missions' claims expire on
    their own and the next tick defers them again."""
    try:
        stalled = await queue.job_manager.get_stalled_jobs(task_name="mana_ai.plan_batch")
        for job in stalled:
            await queue.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
            logger.warning(
                "closed a stalled planning job", extra={"action": "queue.stalled_job", "job_id": job.id}
            )
    except Exception:
        logger.warning(
            "could not close stalled jobs", extra={"action": "queue.stalled_failed"}, exc_info=True
        )


def _runtime(context: JobContext) -> Any:
    runtime = (context.additional_context or {}).get("runtime")
    if runtime is None:
        raise RuntimeError("the worker was started without the mana-ai runtime in additional_context")
    return runtime
