"""Seed data written as the admin role, server-side, so that loading does not dominate the run.

Rows go into ``public.sync_changes`` exactly as mana-sync stores them (field-level updates with
``field_meta`` timestamps, a user actor); the migration's trigger copies the ``ai`` rows into
``mana_ai.sync_feed``, as it does in production.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg

HISTORY_BASE = "2026-01-01T00:00:00Z"
"""created_at of the first history row; row n of the history is n milliseconds later."""

_TS = "to_char(t.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

# Mission m belongs to user (m % users); round k of the history is the insert (k = 0) or an update of one
# field (title, objective, conceptMarkdown, nextRunAt in turn) plus updatedAt.
_HISTORY_SQL = (
    """
INSERT INTO public.sync_changes
    (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at, actor, origin)
SELECT 'ai', 'aiMissions', r.record_id, r.user_id,
       CASE WHEN r.k = 0 THEN 'insert' ELSE 'update' END,
       CASE WHEN r.k = 0 THEN jsonb_build_object(
                'id', r.record_id, 'title', 'Mission ' || r.m, 'objective', 'Plan my week',
                'conceptMarkdown', '', 'state', 'active',
                'cadence', '{"kind": "interval", "everyMinutes": 60}'::jsonb,
                'inputs', '[]'::jsonb, 'iterations', '[]'::jsonb, 'nextRunAt', r.next_run,
                'agentId', 'a-' || r.user_id, 'createdAt', r.ts, 'updatedAt', r.ts)
            ELSE jsonb_build_object(r.field, CASE r.field
                    WHEN 'title' THEN to_jsonb('Mission ' || r.m || ' v' || r.k)
                    WHEN 'objective' THEN to_jsonb('Plan week ' || r.k || ' of mission ' || r.m)
                    WHEN 'conceptMarkdown' THEN to_jsonb(repeat('Some concept text. ', 8) || r.k)
                    ELSE to_jsonb(r.next_run) END,
                'updatedAt', r.ts) END,
       CASE WHEN r.k = 0 THEN '{}'::jsonb ELSE jsonb_build_object(r.field, r.ts, 'updatedAt', r.ts) END,
       'bench-web', r.at,
       jsonb_build_object('kind', 'user', 'principalId', r.user_id, 'displayName', 'Du'), 'user'
FROM (
    SELECT k, m, t.at, """
    + _TS
    + """ AS ts,
           to_char((t.at + %(next_run_shift)s::interval) AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS next_run,
           'm' || lpad(m::text, 7, '0') AS record_id,
           'u' || lpad((m %% %(users)s)::text, 5, '0') AS user_id,
           (ARRAY['nextRunAt', 'title', 'objective', 'conceptMarkdown'])[k %% 4 + 1] AS field
    FROM generate_series(%(k0)s::int, %(k1)s::int) AS k,
         generate_series(0, %(missions)s::int - 1) AS m,
         LATERAL (SELECT %(base)s::timestamptz + (k::bigint * %(missions)s + m) * interval '1 millisecond' AS at) t
) r
ORDER BY r.k, r.m
"""
)

# `count` updates of distinct missions (stride coprime with the mission count), all after the history.
_UPDATES_SQL = (
    """
INSERT INTO public.sync_changes
    (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at, actor, origin)
SELECT 'ai', 'aiMissions', 'm' || lpad(r.m::text, 7, '0'), 'u' || lpad((r.m %% %(users)s)::text, 5, '0'),
       'update', jsonb_build_object('title', 'Retitled ' || r.i, 'updatedAt', r.ts),
       jsonb_build_object('title', r.ts, 'updatedAt', r.ts), 'bench-web', r.at,
       jsonb_build_object('kind', 'user', 'principalId', 'u' || lpad((r.m %% %(users)s)::text, 5, '0'),
                          'displayName', 'Du'), 'user'
FROM (
    SELECT i, ((i::bigint * %(stride)s + %(offset)s) %% %(missions)s)::int AS m, t.at, """
    + _TS
    + """ AS ts
    FROM generate_series(0, %(count)s::int - 1) AS i,
         LATERAL (SELECT %(base)s::timestamptz + i * interval '1 millisecond' AS at) t
) r
ORDER BY r.i
"""
)


def load_history(
    conn: psycopg.Connection[Any],
    *,
    missions: int,
    users: int,
    rounds: int,
    chunk_rows: int = 200_000,
    next_run_shift: str = "0 seconds",
) -> int:
    """Insert ``missions × rounds`` rows (one insert and ``rounds - 1`` updates per mission); returns the count.

    Each statement inserts at most about ``chunk_rows`` rows, so no single transaction grows unbounded.
    ``nextRunAt`` is the row's time plus ``next_run_shift`` (an interval: ``"100 years"`` = never due here).
    """
    per_chunk = max(1, chunk_rows // missions)
    total = 0
    for k0 in range(0, rounds, per_chunk):
        k1 = min(rounds, k0 + per_chunk) - 1
        cur = conn.execute(
            _HISTORY_SQL,
            {
                "k0": k0,
                "k1": k1,
                "missions": missions,
                "users": users,
                "base": HISTORY_BASE,
                "next_run_shift": next_run_shift,
            },
        )
        total += cur.rowcount
    return total


def insert_updates(
    conn: psycopg.Connection[Any], *, missions: int, users: int, count: int, batch: int, base: str
) -> int:
    """Insert ``count`` field-level updates of distinct missions (batch number ``batch`` picks which)."""
    stride = _coprime_stride(missions)
    cur = conn.execute(
        _UPDATES_SQL,
        {
            "count": count,
            "missions": missions,
            "users": users,
            "stride": stride,
            "offset": batch * 7919,
            "base": base,
        },
    )
    return cur.rowcount


def _coprime_stride(n: int) -> int:
    from math import gcd

    stride = max(1, n - 1)
    while gcd(stride, n) != 1:
        stride -= 1
    return stride


# --- the planning workload -------------------------------------------------------------------------------


def agent_record(agent_id: str, max_concurrent: int) -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": "Agent " + agent_id,
        "role": "helper",
        "state": "active",
        "maxConcurrentMissions": max_concurrent,
        "policy": {"tools": {}, "defaultForAi": "propose"},
    }


def mission_record(mission_id: str, agent_id: str, next_run_at: str) -> dict[str, Any]:
    return {
        "id": mission_id,
        "title": "Mission " + mission_id,
        "objective": "Plan my week",
        "conceptMarkdown": "",
        "state": "active",
        "cadence": {"kind": "interval", "everyMinutes": 60},
        "inputs": [],
        "iterations": [],
        "nextRunAt": next_run_at,
        "agentId": agent_id,
    }


def seed_planning(
    conn: psycopg.Connection[Any],
    *,
    users: int,
    missions_per_user: int,
    max_concurrent: int,
    user_prefix: str = "u",
) -> int:
    """One agent per user and ``missions_per_user`` due missions each (insert rows, as the web app writes)."""
    rows: list[tuple[str, str, str, str]] = []
    # Due within the last few minutes (well inside the missed-run grace of the hourly cadence).
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for u in range(users):
        user_id = user_prefix + str(u).zfill(5)
        agent_id = "a-" + user_id
        rows.append((user_id, "agents", agent_id, json.dumps(agent_record(agent_id, max_concurrent))))
        for j in range(missions_per_user):
            mission_id = "m-" + user_id + "-" + str(j).zfill(3)
            # Distinct past due times: oldest-first ordering has something to order.
            stamp = base + dt.timedelta(seconds=j % 60, milliseconds=u % 1000)
            due = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + str(stamp.microsecond // 1000).zfill(3) + "Z"
            rows.append(
                (user_id, "aiMissions", mission_id, json.dumps(mission_record(mission_id, agent_id, due)))
            )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.sync_changes"
            " (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, actor, origin)"
            " VALUES ('ai', %s, %s, %s, 'insert', %s::jsonb, '{}'::jsonb, 'bench-web',"
            " jsonb_build_object('kind', 'user', 'principalId', %s::text, 'displayName', 'Du'), 'user')",
            [(table, record_id, user_id, data, user_id) for user_id, table, record_id, data in rows],
        )
    return len(rows)


def plans_per_mission(conn: psycopg.Connection[Any], users_like: str) -> dict[int, int]:
    """How many missions of the matching users got how many plans written back (exactly once: ``{1: n}``)."""
    rows = conn.execute(
        "SELECT n, count(*) FROM (SELECT count(*) AS n FROM public.sync_changes"
        " WHERE client_id = 'mana-ai-runner' AND table_name = 'aiMissions' AND user_id LIKE %s"
        " GROUP BY record_id) per_mission GROUP BY n",
        (users_like,),
    ).fetchall()
    return {int(n): int(count) for n, count in rows}
