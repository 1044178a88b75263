"""Faults survived: a flaky LLM, a mission that keeps failing, dropped connections, a restarted Postgres."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from typing import Any

import pytest

from mana_ai.testing.fake_llm import FakeLlmServer, FakeResponse, completion_body, conversation_responder
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, running_app


def chaos(probability: float, seed: int) -> Any:
    """30 % of requests fail in one of the ways real providers fail."""
    rng = random.Random(seed)
    base = conversation_responder(tool_name="create_task", arguments={"title": "x"})
    faults = [
        FakeResponse(status=500, body=b'{"detail":"boom"}'),
        FakeResponse(status=502, body=b"bad gateway", content_type="text/plain"),
        FakeResponse(status=503, body=b'{"detail":{"kind":"not_ready","message":"warming up"}}'),
        FakeResponse(status=429, body=b'{"detail":"slow down"}', headers={"Retry-After": "0"}),
        FakeResponse(
            body=completion_body(tool_calls=[("c1", "create_task", "{not json")], finish_reason="tool_calls")
        ),
        FakeResponse(body=b'{"choices": []}'),
        FakeResponse(body=completion_body(content="cut of", finish_reason="length")),
        FakeResponse(hang=True),
    ]

    def respond(request: Any) -> FakeResponse:
        if rng.random() < probability:
            return rng.choice(faults)
        return base(request)

    return respond


async def runner_rows(admin_db) -> list[dict[str, Any]]:
    return await admin_db.fetch(
        "SELECT record_id, data FROM public.sync_changes WHERE client_id = 'mana-ai-runner' ORDER BY created_at"
    )


async def test_flaky_llm_every_mission_ends_planned_or_failed_with_reason(db, app_db_url, admin_db):
    count = 40
    for i in range(count):
        await put_row(db, f"u{i % 4}", "aiMissions", f"m{i}", "insert", mission(f"m{i}"))
    async with (
        FakeLlmServer(default=chaos(0.3, seed=7)) as llm,
        running_app(app_db_url, llm, llm_timeout_s=0.3, llm_max_retries=2, retry_backoff=0) as app,
    ):
        app.llm.backoff_base_s = 0.01  # keep the test fast; the retry logic is the real one
        app.llm.backoff_max_s = 0.05
        planned: set[str] = set()
        for _ in range(8):
            stats = await app.ticker.tick()
            assert not stats.errors, stats.errors  # no tick crashes, no unexpected mission errors
            planned.update(r.mission_id for r in stats.results if r.decision == "ran")
            if stats.due_mission_count == 0:
                break
        assert stats.due_mission_count == 0
        requests = llm.request_count
    assert len(planned) >= count - 2  # a mission only stays unplanned after 5 failures in a row
    rows = await runner_rows(admin_db)
    for row in rows:
        last = row["data"]["iterations"][-1]
        if last["overallStatus"] == "failed":
            assert last["errorDetails"]["message"]  # a readable reason
    # Retries are bounded: at most (1 + retries) requests per LLM round, two rounds per attempt, 8 ticks.
    assert requests <= count * 2 * 3 * 8


async def test_mission_failing_five_times_pauses_itself(db, app_db_url, admin_db):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    always_down = lambda _req: FakeResponse(status=500, body=b'{"detail":"down"}')  # noqa: E731
    async with (
        FakeLlmServer(default=always_down) as llm,
        running_app(app_db_url, llm, retry_backoff=0) as app,
    ):
        decisions = [(await app.ticker.tick()).decisions for _ in range(6)]
    assert [d.get("failed", 0) for d in decisions[:4]] == [1, 1, 1, 1]
    assert decisions[4] == {"paused-after-failures": 1}
    assert decisions[5] == {}  # paused: not due any more
    rows = await runner_rows(admin_db)
    assert len(rows) == 5
    final = rows[-1]["data"]
    assert final["state"] == "paused"
    assert "paused after 5 failed attempts" in final["iterations"][-1]["errorDetails"]["message"]
    assert len(final["iterations"]) == 5


async def test_a_mission_over_its_time_limit_fails_with_that_reason_and_ends_its_run(
    db, app_db_url, admin_db
):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with (
        FakeLlmServer(default=conversation_responder(), latency_s=3.0) as llm,
        running_app(app_db_url, llm, mission_timeout=timedelta(seconds=0.5)) as app,
    ):
        started = time.monotonic()
        stats = await app.ticker.tick()
        elapsed = time.monotonic() - started
    assert stats.decisions == {"failed": 1}, stats.results
    assert elapsed < 2.5  # the mission's limit ended it, not the LLM's answer
    rows = await runner_rows(admin_db)
    assert len(rows) == 1
    last = rows[0]["data"]["iterations"][-1]
    assert last["overallStatus"] == "failed"
    assert "planning took longer than 0.5 s (MANA_AI_MISSION_TIMEOUT)" in last["errorDetails"]["message"]
    runs = await admin_db.fetch("SELECT state FROM mana_ai.mission_runs WHERE mission_id = 'm1'")
    assert [r["state"] for r in runs] == ["failed"]  # finished, not left running until its lease ends


async def test_connection_dropped_mid_tick_next_tick_completes(db, app_db_url, admin_db):
    for i in range(6):
        await put_row(db, "u1", "aiMissions", f"m{i}", "insert", mission(f"m{i}"))
    async with (
        FakeLlmServer(default=conversation_responder(), latency_s=0.3) as llm,
        running_app(app_db_url, llm, retry_backoff=0) as app,
    ):
        tick = asyncio.create_task(app.ticker.tick())
        await asyncio.sleep(0.15)  # missions are claimed, LLM requests in flight
        killed = await admin_db.fetchrow(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE usename = 'mana_ai_app'"
        )
        assert killed["n"] >= 1
        first = await tick
        assert first.due_mission_count == 6
        for _ in range(3):
            stats = await app.ticker.tick()
            if stats.due_mission_count == 0:
                break
        assert stats.due_mission_count == 0
    counts: dict[str, int] = {}
    for row in await runner_rows(admin_db):
        counts[row["record_id"]] = counts.get(row["record_id"], 0) + 1
    assert set(counts) == {f"m{i}" for i in range(6)}
    assert set(counts.values()) == {1}  # nothing planned twice


async def test_postgres_restart_service_reconnects(tmp_path):
    from mana_ai.db.embedded import start_embedded

    embedded = start_embedded(tmp_path)
    try:
        url = embedded.url()
        async with (
            FakeLlmServer(default=conversation_responder()) as llm,
            running_app(url, llm, db_timeout_s=1) as app,
        ):
            first = await app.ticker.tick()
            assert not first.errors
            await asyncio.to_thread(embedded.stop)
            down = await app.ticker.tick()
            assert down.errors  # counted, not crashed
            embedded = await asyncio.to_thread(start_embedded, tmp_path)
            for _ in range(50):
                stats = await app.ticker.tick()
                if not stats.errors:
                    break
                await asyncio.sleep(0.2)
            assert not stats.errors
            assert await app.db.ping()
    finally:
        embedded.stop()


async def _refuse_runner_rows_holding(admin_db, marker: str) -> None:
    # The database itself refuses our write: a check as a trigger, for rows whose text holds ``marker``.
    await admin_db.execute(
        "CREATE FUNCTION public.refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.client_id = 'mana-ai-runner' AND NEW.data::text LIKE '%" + marker + "%' THEN"
        " RAISE EXCEPTION 'refused by check'; END IF; RETURN NEW; END $$"
    )
    await admin_db.execute(
        "CREATE TRIGGER refuse_marked BEFORE INSERT ON public.sync_changes"
        " FOR EACH ROW EXECUTE FUNCTION public.refuse_marked()"
    )


async def test_a_plan_the_database_refuses_is_a_counted_failure_with_its_tokens_not_a_retry_loop(
    db, app_db_url, admin_db
):
    # Once a write-back failed this way, the run was neither counted nor its tokens recorded, and it was
    # planned again as soon as its lease ran out: for ever, outside the agent's budget.
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=100_000))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    await _refuse_runner_rows_holding(admin_db, "UNSTORABLE-PLAN")
    answer = lambda _req: FakeResponse(body=completion_body(content="UNSTORABLE-PLAN", usage=(500, 100)))  # noqa: E731
    async with FakeLlmServer(default=answer) as llm, running_app(app_db_url, llm, retry_backoff=300) as app:
        stats = await app.ticker.tick()
        await admin_db.execute("UPDATE mana_ai.mission_runs SET lease_until = now()")  # a lease run out
        again = await app.ticker.tick()
    assert stats.decisions == {"failed": 1} and again.decisions == {"backoff": 1}, (stats, again)
    run = await admin_db.fetchrow(
        "SELECT state, consecutive_failures, not_before > now() AS backing_off FROM mana_ai.mission_runs"
    )
    assert dict(run) == {"state": "failed", "consecutive_failures": 1, "backing_off": True}
    used = await admin_db.fetchrow("SELECT coalesce(sum(tokens_used), 0) AS n FROM mana_ai.token_usage")
    assert used["n"] == 600
    last = (await runner_rows(admin_db))[-1]["data"]["iterations"][-1]  # the user sees why
    assert last["overallStatus"] == "failed" and last["errorDetails"]["phase"] == "finalizing"
    assert "could not be stored" in last["errorDetails"]["message"]


async def test_when_not_even_the_failure_can_be_written_the_run_is_still_counted(db, app_db_url, admin_db):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=100_000))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    await _refuse_runner_rows_holding(admin_db, "iterations")  # every write-back of ours
    answer = lambda _req: FakeResponse(body=completion_body(content="Plan", usage=(500, 100)))  # noqa: E731
    async with FakeLlmServer(default=answer) as llm, running_app(app_db_url, llm, retry_backoff=300) as app:
        stats = await app.ticker.tick()
    assert stats.decisions == {"failed": 1}, stats.results
    assert await runner_rows(admin_db) == []
    run = await admin_db.fetchrow(
        "SELECT state, consecutive_failures, not_before > now() AS backing_off FROM mana_ai.mission_runs"
    )
    assert dict(run) == {"state": "failed", "consecutive_failures": 1, "backing_off": True}
    used = await admin_db.fetchrow("SELECT coalesce(sum(tokens_used), 0) AS n FROM mana_ai.token_usage")
    assert used["n"] == 600


async def test_a_model_answer_with_nul_characters_is_planned_and_stored_without_them(
    db, app_db_url, admin_db
):
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    answer = lambda _req: FakeResponse(body=completion_body(content="Plan\u0000 fertig", usage=(5, 5)))  # noqa: E731
    async with FakeLlmServer(default=answer) as llm, running_app(app_db_url, llm) as app:
        stats = await app.ticker.tick()
    assert stats.decisions == {"ran": 1}, stats.results
    assert (await runner_rows(admin_db))[-1]["data"]["iterations"][-1]["summary"].startswith("Plan fertig\n")


async def test_runs_of_a_provider_without_usage_are_recorded_at_their_worst_case_so_the_cap_binds(
    db, app_db_url, admin_db
):
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=20_000))
    for i in range(6):
        await put_row(db, "u1", "aiMissions", f"m{i}", "insert", mission(f"m{i}", agentId="a1"))
    responder = conversation_responder(tool_name="create_task", arguments={"title": "x"}, usage=None)
    async with (
        FakeLlmServer(default=responder) as llm,
        running_app(app_db_url, llm, llm_max_tokens=256, llm_context_tokens=4096) as app,
    ):
        decisions = [(await app.ticker.tick()).decisions for _ in range(3)]
    used = await admin_db.fetchrow("SELECT coalesce(sum(tokens_used), 0) AS n FROM mana_ai.token_usage")
    ran = sum(d.get("ran", 0) for d in decisions)
    assert used["n"] > 0, decisions
    assert 0 < ran < 6  # the cap stopped the agent before every mission had run


async def test_a_surprise_after_the_claim_counts_the_attempt_and_backs_off(
    db, app_db_url, admin_db, monkeypatch
):
    # Any exception after the claim once left the run claimed until its lease ended, uncounted: planned
    # again, model calls included, once per lease for ever.
    from mana_ai.runner import process

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in building the iteration")

    monkeypatch.setattr(process, "plan_to_iteration", broken)
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1"))
    async with (
        FakeLlmServer(default=conversation_responder()) as llm,
        running_app(app_db_url, llm, retry_backoff=300) as app,
    ):
        stats = await app.ticker.tick()
        await admin_db.execute("UPDATE mana_ai.mission_runs SET lease_until = now()")
        again = await app.ticker.tick()
    assert stats.decisions == {"error": 1} and again.decisions == {"backoff": 1}, (stats, again)
    run = await admin_db.fetchrow(
        "SELECT state, consecutive_failures, last_error, not_before > now() AS backing_off FROM mana_ai.mission_runs"
    )
    assert dict(run) == {
        "state": "failed",
        "consecutive_failures": 1,
        "last_error": "unexpected error: RuntimeError",
        "backing_off": True,
    }


async def test_a_statement_timeout_is_a_database_error_not_a_lost_connection(app_db_url):
    # Every OperationalError counted as a lost connection: a misleading message, the pool re-checked, the
    # action repeated, and the restore's batch cut short.
    from psycopg.conninfo import make_conninfo

    from mana_ai.db.connector import Database
    from mana_ai.errors import ConnectionLostError, StorageError

    async with Database(make_conninfo(app_db_url, options="-c statement_timeout=100"), min_size=1) as slow:
        with pytest.raises(StorageError) as info:
            await slow.fetch("SELECT pg_sleep(2)")
        assert not isinstance(info.value, ConnectionLostError), str(info.value)
        assert "statement timeout" in str(info.value)
        assert await slow.ping()


async def test_rounds_without_usage_are_recorded_also_when_a_later_round_is_refused(db, app_db_url, admin_db):
    # The run counted as refused before its first round (a skip, nothing recorded) whenever the provider
    # reported no usage: the model was called again on every tick, outside the cap.
    await put_row(db, "u1", "agents", "a1", "insert", agent_record("a1", maxTokensPerDay=6000))
    await put_row(db, "u1", "aiMissions", "m1", "insert", mission("m1", agentId="a1"))
    responder = conversation_responder(tool_name="no_such_tool", usage=None)  # no usage, a rejected call
    async with (
        FakeLlmServer(default=responder) as llm,
        running_app(app_db_url, llm, llm_max_tokens=256, llm_context_tokens=4096) as app,
    ):
        decisions = [dict((await app.ticker.tick()).decisions) for _ in range(3)]
        calls = len(llm.requests)
    used = await admin_db.fetchrow("SELECT coalesce(sum(tokens_used), 0) AS n FROM mana_ai.token_usage")
    assert used["n"] > 0 and calls == 1, (decisions, calls)


async def test_a_connection_the_server_ended_for_idling_is_a_lost_connection(app_db_url):
    # 57P05 (and 57P04) end the connection server-side: a lost connection, retried once, never a refused plan.
    import asyncio

    from psycopg.conninfo import make_conninfo

    from mana_ai.db.connector import Database
    from mana_ai.errors import ConnectionLostError

    url = make_conninfo(app_db_url, options="-c idle_session_timeout=300")
    async with Database(url, min_size=1, max_size=1) as idle:
        with pytest.raises(ConnectionLostError):
            async with idle.connection() as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(1.0)
                await conn.execute("SELECT 1")


async def test_error_kinds_a_server_makes_up_stay_out_of_metric_labels(db, app_db_url):
    # Each failure keeps the kind the server named (in its message); the metrics count unknown kinds as "other".
    made_up = [f"kind_{n}" for n in range(12)]
    for n in range(len(made_up)):
        await put_row(db, "u1", "aiMissions", f"k{n}", "insert", mission(f"k{n}"))
    bodies = iter(
        [b'{"error":{"code":"context_length_exceeded"}}']
        + [b'{"detail":{"kind":"' + kind.encode() + b'"}}' for kind in made_up[1:]]
    )

    def respond(_request: Any) -> FakeResponse:
        return FakeResponse(status=400, body=next(bodies))

    async with FakeLlmServer(default=respond) as llm, running_app(app_db_url, llm, llm_max_retries=0) as app:
        stats = await app.ticker.tick()
        assert stats.decisions == {"failed": len(made_up)}, stats.to_json()
        details = sorted(r.detail for r in stats.results)
        assert any("(context_length_exceeded)" in d for d in details)
        assert any("(kind_5)" in d for d in details)
        samples = [
            (s.name, s.labels)
            for metric in app.metrics.registry.collect()
            if metric.name in ("mana_ai_provider_errors", "mana_ai_missions_failed")
            for s in metric.samples
            if s.name.endswith("_total")
        ]
    kinds = {labels.get("kind") or labels["reason"] for _, labels in samples}
    assert kinds == {"context_length_exceeded", "other", "provider-context_length_exceeded", "provider-other"}
