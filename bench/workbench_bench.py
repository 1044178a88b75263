"""Workbench inbox with 500 open proposals: how long one page takes (issue 8, "stays usable").

Standalone: ``python -m bench.workbench_bench [--proposals 500] [--rounds 5] [--history 20]``.

1. starts an embedded PostgreSQL in a temporary directory, migrates it and applies the least-privilege grants;
2. seeds the local user's sync log as the web app and the runner would: 2 agents and 50 missions, each with
   ``--history`` decided server iterations (5 steps each) and one open iteration with its share of the
   ``--proposals`` open steps, then folds it into the snapshots;
3. serves the real HTTP app (uvicorn on loopback, the service's plain role) and requests every inbox page
   ``--rounds`` times, as a browser would (``GET /workbench/inbox?page=N``: snapshot refresh, expiry check,
   paged SQL, Jinja2 render);
4. prints the median, p95 and maximum time of one page, and ``median render time: <ms> ms``.

Exit status 1 with ``--check`` when the median is 200 ms or more.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import socket
import statistics
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import uvicorn
from psycopg import sql
from psycopg.conninfo import make_conninfo

APP_ROLE = "mana_ai_app"
APP_PASSWORD = "workbench-bench"
USER = "local"
MISSIONS = 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iso(seconds_ago: float) -> str:
    from mana_ai.timefmt import to_js_iso, utcnow

    return to_js_iso(utcnow() - dt.timedelta(seconds=seconds_ago))


def _iteration(n_steps: int, *, open_: bool, age_s: float) -> dict[str, Any]:
    iteration_id = str(uuid.uuid4())
    status = "planned" if open_ else "approved"
    return {
        "id": iteration_id,
        "startedAt": _iso(age_s),
        "finishedAt": _iso(age_s),
        "plan": [
            {
                "id": iteration_id + "-" + str(i),
                "summary": "Aufgabe " + str(i) + " vorschlagen",
                "intent": {
                    "kind": "toolCall",
                    "toolName": "create_task",
                    "params": {"title": "Aufgabe " + str(i), "priority": "medium", "description": "x" * 80},
                },
                "status": status,
            }
            for i in range(n_steps)
        ],
        "summary": "Vorschläge",
        "overallStatus": "awaiting-review" if open_ else "approved",
        "source": "server",
    }


def seed(admin_url: str, proposals: int, history: int) -> None:
    per_mission, extra = divmod(proposals, MISSIONS)
    rows: list[tuple[Any, ...]] = []
    actor = orjson.dumps({"kind": "user", "principalId": USER, "displayName": "Du"}).decode()
    for a in range(2):
        agent = {"id": "agent-" + str(a), "name": "Agent " + str(a), "avatar": "♨", "state": "active",
                 "maxConcurrentMissions": 4, "policy": {"tools": {}, "defaultForAi": "propose"}}  # fmt: skip
        rows.append(("ai", "agents", agent["id"], orjson.dumps(agent).decode()))
    for m in range(MISSIONS):
        iterations = [_iteration(5, open_=False, age_s=86400 * 3 + k * 600) for k in range(history)]
        iterations.append(_iteration(per_mission + (1 if m < extra else 0), open_=True, age_s=3600 + m))
        mission = {
            "id": "mission-" + str(m),
            "title": "Mission " + str(m),
            "objective": "Plane etwas",
            "conceptMarkdown": "",
            "state": "active",
            "cadence": {"kind": "daily", "atHour": 7, "atMinute": 30},
            "inputs": [],
            "iterations": iterations,
            "agentId": "agent-" + str(m % 2),
            "nextRunAt": _iso(-86400),
        }
        rows.append(("ai", "aiMissions", mission["id"], orjson.dumps(mission).decode()))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta,"
                " client_id, actor, origin) VALUES (%s, %s, %s, %s, 'insert', %s::jsonb, '{}', 'bench', %s::jsonb,"
                " 'user')",
                [(app, table, rid, USER, data, actor) for app, table, rid, data in rows],
            )
        conn.execute("VACUUM ANALYZE")


def prepare(admin_url: str) -> str:
    """A migrated database with the plain role's grants; returns the plain role's URL."""
    from mana_ai.db.migrate import migrate

    name = "workbench_bench"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                )
            )
    db_admin = make_conninfo(admin_url, dbname=name)
    asyncio.run(migrate(db_admin))
    grants = (resources.files("mana_ai.db") / "sql" / "grants.sql").read_text()
    with psycopg.connect(db_admin, autocommit=True) as conn:
        conn.execute(grants)  # type: ignore[call-overload]
    return db_admin


async def measure(app_url: str, rounds: int) -> tuple[list[float], int]:
    from mana_ai.app import App
    from mana_ai.http.app import create_http_app
    from mana_ai.settings import Settings

    settings = Settings(database_url=app_url, llm_url="http://127.0.0.1:9", tick_enabled=False)  # type: ignore[call-arg]
    async with App(settings, run_migrations=False) as app:
        await app.ticker.refresh(type("S", (), {"errors": []})())  # type: ignore[arg-type]
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_http_app(app), host="127.0.0.1", port=port, log_config=None, access_log=False
            )
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no event to wait on)
            await asyncio.sleep(0.01)
        timings: list[float] = []
        pages = 0
        try:
            async with aiohttp.ClientSession("http://127.0.0.1:" + str(port)) as client:
                async with client.get("/workbench/inbox") as response:  # warm-up (templates, pool, plans)
                    body = await response.text()
                    assert response.status == 200, body[:300]
                pages = int(body.split("page 1 of ", 1)[1].split("<", 1)[0]) if "page 1 of " in body else 1
                for _ in range(rounds):
                    for page in range(1, pages + 1):
                        started = time.perf_counter()
                        async with client.get("/workbench/inbox?page=" + str(page)) as response:
                            await response.read()
                            assert response.status == 200
                        timings.append(time.perf_counter() - started)
        finally:
            server.should_exit = True
            await task
    return timings, pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workbench_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--proposals", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history", type=int, default=20, help="decided iterations per mission")
    parser.add_argument("--check", action="store_true", help="exit 1 if the median page takes 200 ms or more")
    args = parser.parse_args(argv)

    from mana_ai.db.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="mana-ai-wb-bench-") as tmp:
        embedded = start_embedded(Path(tmp))
        try:
            db_admin = prepare(embedded.admin_url)
            seed(db_admin, args.proposals, args.history)
            app_url = make_conninfo(db_admin, user=APP_ROLE, password=APP_PASSWORD)
            timings, pages = asyncio.run(measure(app_url, args.rounds))
        finally:
            embedded.stop()
    ms = sorted(t * 1000 for t in timings)
    median = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(
        "workbench inbox: "
        + str(args.proposals)
        + " open proposals, "
        + str(pages)
        + " pages, "
        + str(len(ms))
        + " requests; median "
        + format(median, ".1f")
        + " ms, p95 "
        + format(p95, ".1f")
        + " ms, max "
        + format(ms[-1], ".1f")
        + " ms"
    )
    print("median render time: " + format(median, ".1f") + " ms")
    return 1 if args.check and median >= 200 else 0


if __name__ == "__main__":
    sys.exit(main())
