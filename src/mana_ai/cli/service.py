"""Service commands: serve, worker, migrate, tick, db url."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click
from rich.table import Table

from mana_ai import __version__
from mana_ai.app import App
from mana_ai.cli.common import async_command, console, err_console, open_app, settings_from_env
from mana_ai.logs import configure_logging
from mana_ai.metrics import process_ended, shared_metrics
from mana_ai.runner.worker_processes import (
    WorkerProcesses,
    concurrency_share,
    planning_processes,
    worker_environment,
)

logger = logging.getLogger(__name__)

_PLAIN: dict[str, Any] = {"markup": False, "highlight": False, "soft_wrap": True}


@click.command()
@async_command
async def serve() -> None:
    """Run the HTTP API, the periodic tick and a planning worker in one process.

    With SYNC_DATABASE_URL unset, an embedded PostgreSQL is started (and stopped on exit).

    Example usage:

        \b
        mana-ai serve
        PORT=8080 SYNC_DATABASE_URL=postgresql://… mana-ai serve
    """
    import uvicorn

    from mana_ai.http.app import create_http_app
    from mana_ai.http.hardening import refuse_weak_service_key, server_config
    from mana_ai.web.security import refuse_master_key

    settings = settings_from_env()
    configure_logging(settings)
    refuse_master_key(settings)  # before anything starts: the service never holds a master key
    refuse_weak_service_key(settings)  # nor a default key on a network address
    check_port_free(settings.host, settings.port)
    processes = planning_processes(settings.plan_processes)
    if processes > 1:
        # The concurrency limit is the service's: its planning processes share it.
        settings = settings.model_copy(
            update={"max_concurrency": concurrency_share(settings.max_concurrency, processes)}
        )
    # So is /metrics: the children's instruments count there too.
    with shared_metrics() if processes > 1 else contextlib.nullcontext():
        async with _stoppable_start(), App(settings) as app:
            print_banner(app, http=True)
            server = uvicorn.Server(server_config(create_http_app(app), settings))
            await _run_with_worker(app, server)
            logger.info("stopped", extra={"action": "service.stopped"})


@click.command()
@click.option("--concurrency", type=int, default=None, help="Planning jobs at once (default: derived).")
@async_command
async def worker(concurrency: int | None) -> None:
    """Run a planning worker (and the cluster's periodic tick) without the HTTP API.

    Start as many as you like, on any machine that reaches the database.

    Example usage:

        \b
        SYNC_DATABASE_URL=postgresql://… mana-ai worker
    """
    from mana_ai.http.worker_metrics import metrics_endpoint

    settings = settings_from_env()
    configure_logging(settings)
    metrics_port = settings.worker_metrics_port
    if metrics_port is not None:
        check_port_free(settings.host, metrics_port, setting="MANA_AI_WORKER_METRICS_PORT")
    async with (
        _stoppable_start(),
        App(settings) as app,
        metrics_endpoint(app.metrics, settings.host, metrics_port),
    ):
        print_banner(app, http=False)
        await _run_with_worker(app, None, concurrency=concurrency)


@asynccontextmanager
async def _stoppable_start() -> AsyncIterator[None]:
    """Until :func:`_run_with_worker` installs its own handlers, SIGTERM cancels the start-up: what was opened
    already (the embedded server, pools) is closed again and the process exits 0, instead of dying by the
    signal's default action with its embedded PostgreSQL left running."""
    asked = False
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        nonlocal asked
        asked = True
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, cancel)
    try:
        yield
    except asyncio.CancelledError:
        if not asked:
            raise
        logger.info("stopped while starting", extra={"action": "service.stopped"})


def check_port_free(host: str, port: int, *, setting: str = "PORT") -> None:
    """One line and exit 1 when a port to listen on is taken (instead of a traceback after start-up)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} in use on {host}: is mana-ai already running? (set {setting} for another port)"
                ) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def print_banner(app: App, *, http: bool) -> None:
    """What this process uses, on stderr (never a credential)."""
    from mana_ai.banner import banner_lines
    from mana_ai.envfile import loaded_env_file

    settings = app.settings
    lines = banner_lines(
        settings,
        database_url=None if app.embedded is not None else app.database_url,
        data_dir=app.embedded.data_dir if app.embedded is not None else settings.data_dir,
        env_file=loaded_env_file(),
        http=http,
    )
    click.echo("mana-ai " + __version__, err=True)
    for line in lines:
        click.echo("  " + line, err=True)


async def _run_with_worker(app: App, server: Any, *, concurrency: int | None = None) -> None:
    """Run the procrastinate worker (and the HTTP server, when given) until SIGTERM/SIGINT, then drain."""
    from mana_ai.runner.queue import BATCH_SIZE, backlog_counter, batch_deferrer, build_queue
    from mana_ai.runner.scheduling import due_loop
    from mana_ai.runner.supervise import UnexpectedStop, supervise

    settings = app.settings
    queue = build_queue(
        app.database_url, tick_interval_s=settings.tick_interval_s, tick_enabled=settings.tick_enabled
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    jobs = concurrency or max(2, (settings.max_concurrency + BATCH_SIZE - 1) // BATCH_SIZE * 2)
    async with queue.open_async():
        app.extra["worker_state"] = {"state": "running", "concurrency": jobs, "name": app.owner}

        def worker_state(state: str) -> None:
            app.extra["worker_state"] = {"state": state, "concurrency": jobs, "name": app.owner}

        # The worker stops whenever the database restarts (its listener fails): run it again with
        # backoff instead of letting the process end (see mana_ai.runner.supervise).
        worker_task = asyncio.create_task(
            supervise(
                lambda: queue.run_worker_async(
                    queues=["plan"],
                    concurrency=jobs,
                    name=app.owner,
                    install_signal_handlers=False,
                    additional_context={"runtime": app},
                    shutdown_graceful_timeout=settings.shutdown_grace_s,
                    delete_jobs="successful",
                ),
                stop,
                name="procrastinate-worker",
                on_state=worker_state,
            ),
            name="procrastinate-worker",
        )
        # The tick has a worker slot of its own: it never waits behind planning jobs (issue 16).
        tick_worker = asyncio.create_task(
            supervise(
                lambda: queue.run_worker_async(
                    queues=["tick"],
                    concurrency=1,
                    name=app.owner + ":tick",
                    install_signal_handlers=False,
                    additional_context={"runtime": app},
                    shutdown_graceful_timeout=5,
                    delete_jobs="always",
                ),
                stop,
                name="procrastinate-tick-worker",
            ),
            name="procrastinate-tick-worker",
        )
        # /health's tick.running: the periodic tick is installed (the original's isTickRunning()).
        app.extra["tick_scheduled"] = settings.tick_enabled
        background: list[asyncio.Task[Any]] = []
        if settings.tick_enabled and settings.due_poll_ms > 0:
            background.append(
                asyncio.create_task(
                    due_loop(
                        app.ticker,
                        batch_deferrer(queue),
                        backlog=backlog_counter(queue),
                        batch_size=BATCH_SIZE,
                    ),
                    name="due-dispatcher",
                )
            )
        tasks: list[asyncio.Task[Any]] = [worker_task, tick_worker]
        helpers = _start_plan_processes(app, queue) if server is not None else None
        if helpers is not None:
            tasks.append(asyncio.create_task(helpers.run(), name="plan-processes"))
        http_task = asyncio.create_task(server.serve(), name="http") if server is not None else None
        if http_task is not None:
            tasks.append(http_task)
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        # uvicorn captures SIGTERM/SIGINT itself while it serves (and re-raises them once it has ended), so
        # a signal can end the HTTP task before the stop event is set: its should_exit says it was asked.
        asked = stop.is_set() or (server is not None and bool(server.should_exit))
        logger.info("stopping", extra={"action": "service.stopping", "grace_s": settings.shutdown_grace_s})
        app.extra["worker_state"] = {"state": "draining", "name": app.owner}
        app.extra["tick_scheduled"] = False
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # Stop taking work; in-flight plans get the grace period; unfinished ones give their claims back.
        # The planning processes drain the same way at the same time (SIGTERM).
        await asyncio.gather(
            app.ticker.dispatcher.drain(settings.shutdown_grace_s),
            *([helpers.stop()] if helpers is not None else []),
        )
        if server is not None:
            server.should_exit = True
            assert http_task is not None
            await asyncio.wait([http_task], timeout=10)
        for task in [*tasks, stopper]:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not asked:
            # Exit non-zero so the service manager restarts the process (exit 0 means "stopped on purpose").
            ended = ", ".join(sorted(t.get_name() for t in done))
            raise UnexpectedStop(f"{ended} stopped although no stop was requested")


def _start_plan_processes(app: App, queue: Any) -> WorkerProcesses | None:
    """``MANA_AI_PLAN_PROCESSES`` above 1: the worker processes beside ``serve`` (not started yet), and
    POST /internal/tick handing its missions to all of them."""
    import os

    from mana_ai.runner.queue import worker_tick

    settings = app.settings
    processes = planning_processes(settings.plan_processes)
    if processes <= 1:
        return None
    env = worker_environment(
        os.environ, database_url=app.database_url, max_concurrency=settings.max_concurrency
    )
    helpers = WorkerProcesses(processes - 1, env, grace_s=settings.shutdown_grace_s, on_exit=process_ended)
    app.extra["plan_processes"] = helpers
    wait_s = settings.mission_timeout.total_seconds() + settings.claim_lease.total_seconds()
    app.extra["tick_workers"] = worker_tick(queue, app.database_url, processes=processes, wait_s=wait_s)
    return helpers


@click.command()
@async_command
async def migrate() -> None:
    """Create or upgrade the database schema (idempotent).

    Run it once as the database owner or an admin role; the service itself may then run as a plain role.

    Example usage:

        \b
        mana-ai migrate
    """
    from mana_ai.db.embedded import start_embedded
    from mana_ai.db.migrate import migrate as apply

    settings = settings_from_env()
    embedded = None
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    else:
        embedded = await asyncio.to_thread(start_embedded, settings.data_dir)
        url = embedded.url()
    try:
        applied = await apply(url)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    console.print("applied: " + ", ".join(applied) if applied else "schema is up to date")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the TickStats JSON instead of a table.")
@async_command
async def tick(as_json: bool) -> None:
    """Run one tick now in this process and show what happened to each due mission.

    Every LLM request and every finished mission is reported on stderr while the tick runs. The exit code
    is 1 when every due mission failed (or the tick itself failed), else 0.

    Example usage:

    \b
        mana-ai tick
        mana-ai tick --json
    """
    from mana_ai.cli.progress import ProgressLlm, describe_result, describe_round, every_mission_failed

    async with open_app() as app:
        ctx = app.ticker.ctx
        ctx.llm = ProgressLlm(
            ctx.llm, lambda event: err_console.print("  " + describe_round(event), **_PLAIN)
        )
        done: list[Any] = []

        def finished(result: Any) -> None:
            done.append(result)
            err_console.print(describe_result(result, len(done)), **_PLAIN)

        app.ticker.dispatcher.on_result = finished
        stats = await app.ticker.tick()
    failed = bool(stats.errors and not stats.results) or every_mission_failed(stats.results)
    if as_json:
        import json

        click.echo(json.dumps(stats.to_json(), indent=2))
        if failed:
            raise SystemExit(1)
        return
    table = Table(title=f"tick at {stats.scanned_at}: {stats.due_mission_count} due")
    for column in ("mission", "user", "decision", "steps", "tokens", "detail"):
        table.add_column(column)
    for r in stats.results:
        table.add_row(r.mission_id, r.user_id, r.decision, str(r.steps), str(r.tokens), r.detail[:80])
    console.print(table)
    for error in stats.errors:
        err_console.print(f"[red]error:[/red] {error}")
    if failed:
        err_console.print(
            "every due mission failed: see the detail column, `mana-ai missions show ID` and `mana-ai llm check`",
            **_PLAIN,
        )
        raise SystemExit(1)


@click.group()
def db() -> None:
    """Database helpers."""


@db.command("url")
def db_url() -> None:
    """Print the database URL (starts the embedded server if needed and leaves it running).

    Example usage:

        \b
        psql "$(mana-ai db url)"
    """
    from mana_ai.db.embedded import start_embedded
    from mana_ai.errors import ManaAiError

    try:
        settings = settings_from_env()
    except ManaAiError as exc:
        raise click.ClickException(str(exc)) from None
    if settings.database_url is not None:
        click.echo(settings.database_url.get_secret_value())
        return
    try:
        embedded = start_embedded(settings.data_dir, keep_running=True)
    except ManaAiError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(embedded.url())


def register(cli: click.Group) -> None:
    for command in (serve, worker, migrate, tick, db):
        cli.add_command(command)
