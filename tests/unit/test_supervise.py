"""A worker that stops is restarted with backoff; a stop nobody asked for is loud (issue 14, item 2)."""

from __future__ import annotations

import asyncio
import configparser
from pathlib import Path

from mana_ai.runner.supervise import Backoff, supervise

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "mana-ai.service"


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() -> None:
    b = Backoff(initial_s=0.5, maximum_s=4.0, healthy_after_s=60.0)
    assert [b.next_delay(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.next_delay(61.0) == 0.5


async def test_supervise_restarts_a_failing_or_returning_worker_until_stopped() -> None:
    stop = asyncio.Event()
    runs: list[str] = []
    states: list[str] = []

    async def worker() -> None:
        runs.append("run")
        if len(runs) == 1:
            raise ConnectionError("listener lost the database")
        if len(runs) == 3:
            stop.set()
        # a normal return (procrastinate stops itself when a side task fails)

    await asyncio.wait_for(
        supervise(worker, stop, name="w", on_state=states.append, backoff=Backoff(initial_s=0.001)), 5
    )
    assert runs == ["run"] * 3
    assert states == ["running", "restarting", "running", "restarting", "running"]


async def test_supervise_propagates_cancellation() -> None:
    started = asyncio.Event()

    async def worker() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(worker, asyncio.Event(), name="w"))
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert task.cancelled()


def test_systemd_unit_restarts_in_every_case_and_raises_the_file_limit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert int(service["LimitNOFILE"]) >= 65536
