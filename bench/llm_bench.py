"""CPU cost of one LLM round in our code (issue 3 target: under 0.5 ms, HTTP client and JSON included).

Runs as a child process against the fake server (another process, so its CPU is not counted) at 0 ms
latency, with the 62-tool set of a mission without agent policy in every request. The cost is this
process's ``time.process_time()`` divided by the requests made, in three modes:

- ``client``: ``OpenAICompatClient.complete`` alone (request body, HTTP, response parsing);
- ``loop``: whole planner runs (:func:`run_planner_loop` with the plan recorder, reminders and compactor
  as the pipeline builds them): two rounds per run, the cost divided by rounds;
- ``codec``: :func:`build_request_body` + :func:`parse_completion` without any I/O (pure JSON work).

``client`` and ``loop`` run at concurrency 1 (one request in flight) and at the service's default
concurrency (64 in flight), where the event loop's per-wake-up cost is shared. ``"modes"`` in the config
picks some of the three (default: all); the deployment-shaped workload runs ``client`` alone against its
plain server to measure that server's ceiling (``Suite._llm_ceiling`` in :mod:`bench.run`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.infra import child_main
from bench.stats import summarize


def _prompts() -> tuple[str, str]:
    from mana_ai.planner.prompts import build_system_prompt, build_user_prompt

    system = build_system_prompt("Du planst die Woche deines Menschen.", None)
    user = build_user_prompt(
        title="Mission bench", concept="", objective="Plan my week", inputs=[], iterations=[]
    )
    return system, user


async def _spread(total: int, concurrency: int, job: Callable[[], Awaitable[int]]) -> int:
    """Run ``job`` until ``total`` units are done with ``concurrency`` workers; returns units done."""
    remaining = total
    done = 0

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0:
            remaining -= 1
            units = await job()  # not `done += await job()`: that reads `done` before the await
            done += units

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _measure(
    total: int, concurrency: int, job: Callable[[], Awaitable[int]]
) -> tuple[float, float, int]:
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    units = await _spread(total, concurrency, job)
    return time.process_time() - cpu0, time.perf_counter() - t0, units


async def run(config: dict[str, Any]) -> dict[str, Any]:
    from mana_ai.planner.compact import make_compactor
    from mana_ai.planner.llm_client import OpenAICompatClient
    from mana_ai.planner.loop import run_planner_loop
    from mana_ai.planner.recorder import PlanRecorder
    from mana_ai.planner.reminders import build_reminder_channel
    from mana_ai.tools.schema import toolset_for_policy

    requests, reps, model = config["requests"], config["reps"], "mana/reasoning"
    modes = config.get("modes", ("client", "loop", "codec"))
    toolset = toolset_for_policy(None)
    system, user = _prompts()
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    result: dict[str, Any] = {
        "params": {
            "requests": requests,
            "reps": reps,
            "concurrency": config["concurrency"],
            "tools": len(toolset),
            "tools_json_bytes": len(toolset.json),
        }
    }

    async with OpenAICompatClient(config["llm_url"], api_key="bench", max_retries=0, pool_size=128) as client:

        async def one_request() -> int:
            await client.complete(messages, tools_json=toolset.json, model=model)
            return 1

        async def one_run() -> int:
            recorder = PlanRecorder(toolset, "log-only", mission_id="bench")
            outcome = await run_planner_loop(
                client,
                system_prompt=system,
                user_prompt=user,
                tools_json=toolset.json,
                model=model,
                on_tool_call=recorder,
                reminder_channel=build_reminder_channel(
                    agent_name="Bench", max_tokens_per_day=None, pretick_usage_24h=0
                ),
                compactor=make_compactor(client, max_context_tokens=1_000_000),
            )
            if outcome.stop_reason != "assistant-stop" or len(recorder.steps) != 1:
                raise AssertionError("unexpected planner outcome " + outcome.stop_reason)
            return int(outcome.rounds)

        for mode, job in (("client", one_request), ("loop", one_run)):
            if mode not in modes:
                continue
            for concurrency in config["concurrency"]:
                # Runs are two rounds each: half as many runs make the same number of requests.
                total = requests if mode == "client" else requests // 2
                await _measure(max(total // 5, concurrency), concurrency, job)  # warm-up
                per_round: list[float] = []
                rate: list[float] = []
                for _ in range(reps):
                    cpu, wall, rounds = await _measure(total, concurrency, job)
                    per_round.append(cpu / rounds * 1000.0)
                    rate.append(rounds / wall)
                result[mode + "_c" + str(concurrency)] = {
                    "cpu_ms_per_round": summarize(per_round),
                    "rounds_per_s": summarize(rate),
                }
        result["client_stats"] = {"requests": client.stats.requests, "failures": client.stats.failures}
    if "codec" in modes:
        result["codec"] = _codec(messages, toolset.json, model, requests, reps)
    return result


def _codec(messages: list[Any], tools_json: bytes, model: str, requests: int, reps: int) -> dict[str, Any]:
    from mana_ai.planner.llm_client import build_request_body, parse_completion
    from mana_ai.testing.fake_llm import completion_body

    # Pure JSON work, no I/O: what the body building and response parsing cost on their own.
    response = completion_body(
        tool_calls=[("call_1", "start_timer", {})], finish_reason="tool_calls", usage=(120, 30)
    )
    codec: list[float] = []
    for rep in range(reps + 1):
        gc.collect()
        cpu0 = time.process_time()
        for _ in range(requests):
            build_request_body(messages, tools_json=tools_json, model=model, temperature=0.3)
            parse_completion(response)
        if rep > 0:
            codec.append((time.process_time() - cpu0) / requests * 1000.0)
    return {"cpu_ms_per_round": summarize(codec)}


if __name__ == "__main__":
    child_main(run)
