"""The pure parts of planning on several processes: sizes, shares and the batch reports a tick waits for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mana_ai.runner.process import MissionResult
from mana_ai.runner.queue import BATCH_SIZE, tick_batch_size
from mana_ai.runner.tick import REPORT_ERRORS, BatchReport, TickStats
from mana_ai.runner.worker_processes import (
    concurrency_share,
    planning_processes,
    usable_cpus,
    worker_environment,
)


def test_zero_processes_means_one_per_usable_core():
    assert planning_processes(0) == usable_cpus() >= 1
    assert planning_processes(3) == 3


@given(st.integers(1, 4096), st.integers(1, 64))
def test_the_shares_cover_the_limit_and_never_reach_zero(total, processes):
    share = concurrency_share(total, processes)
    assert share >= 1
    assert share * processes >= total
    assert (share - 1) * processes < total or share == 1  # not more than rounding up gives


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_a_tick_makes_about_two_batches_per_process(missions, processes):
    size = tick_batch_size(missions, processes)
    batches = -(-missions // size)
    assert size >= BATCH_SIZE
    assert batches <= 2 * processes  # few jobs: each costs queue statements and wakes every idle worker slot


def test_workers_get_the_service_database_and_their_share():
    base = {"PATH": "/bin", "MANA_AI_PLAN_PROCESSES": "4", "MANA_AI_WORKER_METRICS_PORT": "9467"}
    env = worker_environment(base, database_url="postgresql://x/y", max_concurrency=16)
    assert env == {
        "PATH": "/bin",
        "SYNC_DATABASE_URL": "postgresql://x/y",
        "MANA_AI_MAX_CONCURRENCY": "16",
        "MANA_AI_PLAN_PROCESSES": "1",  # a worker never starts workers of its own
        # and listens on no metrics port (its counts are serve's; two children would want the same port)
    }


def test_a_batch_report_survives_the_notification_and_is_bounded():
    results = [MissionResult(f"m{i}", "u", "error", detail="x" * 1000) for i in range(50)]
    results += [MissionResult("ok", "u", "ran"), MissionResult("f", "u", "failed")]
    report = BatchReport.of("t1", results)
    payload = report.to_payload()
    assert len(payload.encode()) < 8000  # the limit of a NOTIFY payload
    again = BatchReport.from_payload(payload)
    assert again == report
    assert again.decisions == {"error": 50, "ran": 1, "failed": 1}
    assert len(again.errors) == REPORT_ERRORS and again.errors[0].startswith("mission=m0: xxx")


def test_other_messages_on_the_channel_are_not_reports():
    for payload in ("", "hello", "[]", '{"tick": "t"}', '{"tick": "t", "decisions": [1], "errors": []}'):
        assert BatchReport.from_payload(payload) is None


def test_reports_add_up_as_the_missions_would():
    stats = TickStats(scanned_at="2026-01-01T00:00:00.000Z")
    stats.add_report(BatchReport("t", {"ran": 3, "failed": 1}, []))
    stats.add_report(
        BatchReport("t", {"ran": 2, "paused-after-failures": 1, "error": 1}, ["mission=m: boom"])
    )
    assert stats.plans_written_back == stats.plans_produced == 5
    assert stats.parse_failures == 2
    assert stats.errors == ["mission=m: boom"]
    assert dict(stats.decisions) == {"ran": 5, "failed": 1, "paused-after-failures": 1, "error": 1}
