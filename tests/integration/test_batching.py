"""Claims and write-backs asked for at the same time go out together, with the semantics of one at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mana_ai.runner import store as store_module
from mana_ai.runner.iteration import failed_iteration
from mana_ai.runner.store import LostClaim, RunnerStore
from mana_ai.runner.writeback import Written
from mana_ai.synclog.actor import ai_actor
from mana_ai.testing.fake_llm import FakeLlmServer
from mana_ai.timefmt import to_js_iso, utcnow
from tests.integration.helpers import mission, put_row
from tests.integration.runner_helpers import agent_record, running_app

NOW = "2026-06-01T00:00:00.000Z"


class Spy:
    """Wraps ``write_back_many`` to see the batches it was given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        inner = store_module.write_back_many

        async def spy(db: Any, owner: str, items: list[Any]) -> Any:
            self.sizes.append(len(items))
            return await inner(db, owner, items)

        monkeypatch.setattr(store_module, "write_back_many", spy)


async def due(app: Any) -> dict[str, Any]:
    await app.ticker.refresh(type("S", (), {"errors": []})())
    # The real clock: claims re-check the mission against the snapshots, which hold "due a moment ago".
    return {m.id: m for m in await app.ticker.store.due_missions(to_js_iso(utcnow()), 100)}


async def write(store: RunnerStore, m: Any, agent: Any) -> str:
    return (await written(store, m)).status


async def written(store: RunnerStore, m: Any, *, counted: bool = False) -> Written:
    iteration = failed_iteration("it-" + m.id, NOW, name="x", message="y")
    actor = ai_actor(
        agent_id="a-" + m.user_id, agent_name="A", mission_id=m.id, iteration_id=iteration["id"], rationale=""
    )
    return await store.write_back(
        m,
        due_at=m.next_run_at,
        iteration=iteration,
        next_run_at="2026-07-01T00:00:00.000Z",
        now_iso=NOW,
        actor=actor,
        outcome="done",
        tokens=10,
        agent_id="a-" + m.user_id,
        counted=counted,
    )


async def seed(db: Any, users: int, per_user: int, max_concurrent: int = 10) -> None:
    for u in range(users):
        user = f"u{u}"
        await put_row(
            db,
            user,
            "agents",
            "a-" + user,
            "insert",
            agent_record("a-" + user, maxConcurrentMissions=max_concurrent),
        )
        for j in range(per_user):
            await put_row(
                db, user, "aiMissions", f"m{u}-{j}", "insert", mission(f"m{u}-{j}", agentId="a-" + user)
            )


async def runner_rows(admin_db: Any) -> dict[str, int]:
    rows = await admin_db.fetch(
        "SELECT record_id, count(*) AS n FROM public.sync_changes WHERE client_id = 'mana-ai-runner'"
        " GROUP BY record_id"
    )
    return {r["record_id"]: r["n"] for r in rows}


async def test_write_backs_of_many_users_share_a_transaction(db, app_db_url, admin_db, monkeypatch):
    await seed(db, users=3, per_user=3)
    spy = Spy(monkeypatch)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        missions = await due(app)
        store = app.ticker.store
        agents = await store.agents_for_users(m.user_id for m in missions.values())
        claims = await asyncio.gather(
            *(
                store.claim(m, m.next_run_at, agents[(m.user_id, m.agent_id)], app.settings.claim_lease)
                for m in missions.values()
            )
        )
        assert {c.decision for c in claims} == {"claimed"}
        # One mission is paused by its user after the claim: its write-back is stale, the others are written.
        await put_row(
            db,
            "u1",
            "aiMissions",
            "m1-1",
            "update",
            {"state": "paused"},
            {"state": "2026-05-01T00:00:00.000Z"},
        )
        results = await asyncio.gather(*(write(store, m, None) for m in missions.values()))
    assert dict(zip(missions, results, strict=True))["m1-1"] == "stale"
    assert sorted(results).count("written") == 8
    assert max(spy.sizes) > 1  # they really went out together
    rows = await runner_rows(admin_db)
    assert set(rows) == set(missions) - {"m1-1"} and set(rows.values()) == {1}
    runs = await admin_db.fetch("SELECT mission_id, state, iteration_id FROM mana_ai.mission_runs")
    states = {r["mission_id"]: r["state"] for r in runs}
    assert states.pop("m1-1") == "released"
    assert set(states.values()) == {"done"}
    usage = await admin_db.fetchrow("SELECT count(*) AS n, sum(tokens_used) AS t FROM mana_ai.token_usage")
    assert (usage["n"], usage["t"]) == (9, 90)


async def test_a_lost_claim_in_a_batch_fails_only_its_mission(db, app_db_url, admin_db, monkeypatch):
    await seed(db, users=2, per_user=2)
    spy = Spy(monkeypatch)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        missions = await due(app)
        store = app.ticker.store
        agents = await store.agents_for_users(m.user_id for m in missions.values())
        await asyncio.gather(
            *(
                store.claim(m, m.next_run_at, agents[(m.user_id, m.agent_id)], app.settings.claim_lease)
                for m in missions.values()
            )
        )
        # Another process took over one run (our lease expired): that write-back must not land.
        await admin_db.execute(
            "UPDATE mana_ai.mission_runs SET owner = 'someone-else' WHERE mission_id = 'm1-1'"
        )
        # Agents with a cap: each write-back answers its agent's usage, on the one-at-a-time path too.
        results = await asyncio.gather(
            *(written(store, m, counted=True) for m in missions.values()), return_exceptions=True
        )
    outcome = dict(zip(missions, results, strict=True))
    assert isinstance(outcome.pop("m1-1"), LostClaim)
    assert {w.status for w in outcome.values()} == {"written"}
    # m1-0 shared the failed batch and was written alone afterwards; m1-1's tokens rolled back with it.
    assert outcome["m1-0"].tokens_used_24h == 10
    # u0's two write-backs went out in two transactions at once: they take turns, the second counts both.
    assert sorted([outcome["m0-0"].tokens_used_24h, outcome["m0-1"].tokens_used_24h]) == [10, 20]
    assert max(spy.sizes) > 1
    rows = await runner_rows(admin_db)
    assert set(rows) == set(missions) - {"m1-1"} and set(rows.values()) == {1}
    usage = await admin_db.fetchrow("SELECT count(*) AS n FROM mana_ai.token_usage")
    assert usage["n"] == 3  # the lost mission's tokens rolled back with its write


async def test_claims_in_one_batch_respect_the_agents_limit(db, app_db_url, admin_db):
    await seed(db, users=1, per_user=5, max_concurrent=2)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        missions = await due(app)
        store = app.ticker.store
        agents = await store.agents_for_users(["u0"])
        claims = await asyncio.gather(
            *(
                store.claim(m, m.next_run_at, agents[("u0", "a-u0")], app.settings.claim_lease)
                for m in missions.values()
            )
        )
        again = await store.claim(
            missions["m0-0"], missions["m0-0"].next_run_at, agents[("u0", "a-u0")], app.settings.claim_lease
        )
    decisions = sorted(c.decision for c in claims)
    assert decisions == [
        "claimed",
        "claimed",
        "skipped-concurrency",
        "skipped-concurrency",
        "skipped-concurrency",
    ]
    assert again.decision in ("in-flight", "skipped-concurrency")
    # Closing the app gave its claims back ('released'); two were ever claimed.
    running = await admin_db.fetchrow(
        "SELECT count(*) AS n FROM mana_ai.mission_runs WHERE state IN ('running', 'released')"
    )
    assert running["n"] == 2


async def test_a_stale_write_back_repeated_after_it_committed_records_its_tokens_once(
    db, app_db_url, admin_db
):
    # A write-back whose COMMIT went through but whose connection broke before the answer is tried once more.
    # For a stale mission the repeat recorded the run's tokens a second time: a release needs the claim too.
    await seed(db, users=1, per_user=1)
    async with FakeLlmServer() as llm, running_app(app_db_url, llm) as app:
        m = (await due(app))["m0-0"]
        store = app.ticker.store
        agents = await store.agents_for_users(["u0"])
        assert (
            await store.claim(m, m.next_run_at, agents[("u0", "a-u0")], app.settings.claim_lease)
        ).decision == "claimed"
        await put_row(
            db, "u0", "aiMissions", "m0-0", "update", {"state": "paused"}, {"state": to_js_iso(utcnow())}
        )
        first = await written(store, m, counted=True)
        with pytest.raises(LostClaim):
            await written(store, m, counted=True)
    assert first.status == "stale"
    usage = await admin_db.fetchrow("SELECT count(*) AS n FROM mana_ai.token_usage")
    assert usage["n"] == 1
