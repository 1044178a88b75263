"""Planner loop (SPEC §10; original cases §24.2 loop.test.ts, plus our improvements)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from mana_ai.errors import BudgetExceeded, ProviderError
from mana_ai.planner.loop import Finish, RunTools, classify_response, run_planner_loop, tool_message
from mana_ai.planner.types import (
    ChatMessage,
    Compactor,
    CompactResult,
    LoopState,
    PlannerLoopResult,
    Reminder,
    ToolCall,
    ToolResult,
    Usage,
)
from mana_ai.testing.fake_llm import ScriptedLlmClient, completion

TOOLS = b'[{"type":"function","function":{"name":"list_things","parameters":{}}}]'
ToolHandler = Callable[[ToolCall], Awaitable[ToolResult]]


async def ok_tool(call: ToolCall) -> ToolResult:
    return ToolResult(success=True, message="ok " + call.name)


async def run(
    llm: ScriptedLlmClient, on_tool_call: ToolHandler = ok_tool, **kwargs: object
) -> PlannerLoopResult:
    result = await run_planner_loop(
        llm,
        system_prompt="SYS",
        user_prompt="USER",
        tools_json=TOOLS,
        model="mana/reasoning",
        on_tool_call=on_tool_call,
        **kwargs,  # type: ignore[arg-type]
    )
    llm.assert_complete()
    return result


def endless(n: int, *, usage: tuple[int, int] | None = None) -> ScriptedLlmClient:
    return ScriptedLlmClient(completion(calls=[("t" + str(i), {"i": i})], usage=usage) for i in range(n))


class ConcurrencyProbe:
    """on_tool_call that records peak concurrency and completion order; call i yields ``yields[i]`` times."""

    def __init__(self, yields: dict[str, int] | None = None) -> None:
        self.active = 0
        self.peak = 0
        self.completed: list[str] = []
        self.yields = yields or {}

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        for _ in range(self.yields.get(call.name, 3)):
            await asyncio.sleep(0)  # yield so that concurrently started calls overlap
        self.active -= 1
        self.completed.append(call.name)
        return ToolResult(success=True, message="done " + call.name)


# -- original cases (loop.test.ts) ------------------------------------------------------------------


async def test_stops_immediately_when_the_model_answers_with_text() -> None:
    result = await run(ScriptedLlmClient([completion("done")]))
    assert (result.rounds, result.summary, result.stop_reason) == (1, "done", "assistant-stop")
    assert result.executed_calls == []


async def test_single_tool_call_then_stop() -> None:
    llm = ScriptedLlmClient([completion(calls=[("list_things", {})]), completion("fertig")])

    async def two_things(call: ToolCall) -> ToolResult:
        return ToolResult(success=True, message="found 2 things", data={"n": 2})

    result = await run(llm, two_things)
    assert result.rounds == 2
    assert result.summary == "fertig"
    second = llm.requests[1].messages
    assert len(second) == 4
    assert second[3]["role"] == "tool" and "2 things" in second[3]["content"]


async def test_three_calls_run_sequentially_in_order() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("b", {}), ("c", {})]), completion("ok")])
    probe = ConcurrencyProbe()
    result = await run(llm, probe)
    assert probe.completed == ["a", "b", "c"]
    assert probe.peak == 1
    assert [e.call.name for e in result.executed_calls] == ["a", "b", "c"]


async def test_failure_result_is_propagated_to_the_model() -> None:
    llm = ScriptedLlmClient([completion(calls=[("create_thing", {})]), completion("sorry")])

    async def locked(call: ToolCall) -> ToolResult:
        return ToolResult(success=False, message="db locked")

    result = await run(llm, locked)
    content = llm.requests[1].messages[-1]["content"]
    assert "db locked" in content and '"success":false' in content
    assert result.executed_calls[0].result.success is False


async def test_max_rounds_with_endless_tool_calls() -> None:
    result = await run(endless(3), max_rounds=3)
    assert (result.rounds, result.stop_reason, result.summary) == (3, "max-rounds", None)
    assert len(result.executed_calls) == 3
    assert [e.round for e in result.executed_calls] == [1, 2, 3]


async def test_parallel_safe_batch_runs_concurrently() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("b", {}), ("c", {})]), completion("ok")])
    probe = ConcurrencyProbe()
    await run(llm, probe, is_parallel_safe=lambda name: True)
    assert probe.peak == 3


async def test_parallel_completion_is_still_source_ordered() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("b", {}), ("c", {})]), completion("ok")])
    probe = ConcurrencyProbe(yields={"a": 5, "b": 3, "c": 1})
    result = await run(llm, probe, is_parallel_safe=lambda name: True)
    assert probe.completed == ["c", "b", "a"]
    assert [e.call.name for e in result.executed_calls] == ["a", "b", "c"]
    tool_messages = [m for m in result.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c0", "c1", "c2"]
    assert ["done " + n in m["content"] for m, n in zip(tool_messages, "abc", strict=True)] == [True] * 3


async def test_mixed_safe_and_unsafe_runs_sequentially() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("unsafe", {}), ("c", {})]), completion("ok")])
    probe = ConcurrencyProbe()
    await run(llm, probe, is_parallel_safe=lambda name: name != "unsafe")
    assert probe.peak == 1


async def test_fifteen_safe_calls_run_in_batches_of_ten() -> None:
    names = ["t" + str(i) for i in range(15)]
    llm = ScriptedLlmClient([completion(calls=[(n, {}) for n in names]), completion("ok")])
    probe = ConcurrencyProbe()
    result = await run(llm, probe, is_parallel_safe=lambda name: True)
    assert probe.peak == 10
    assert [e.call.name for e in result.executed_calls] == names


async def test_without_predicate_calls_run_sequentially() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("b", {}), ("c", {})]), completion("ok")])
    probe = ConcurrencyProbe()
    await run(llm, probe)
    assert probe.peak == 1


class RecordingCompactor:
    def __init__(self, turns: int = 5, usage: Usage | None = None) -> None:
        self.calls: list[list[ChatMessage]] = []
        self.turns = turns
        self.usage = usage

    async def __call__(self, messages: list[ChatMessage]) -> CompactResult:
        self.calls.append(list(messages))
        if self.turns == 0:
            return CompactResult(messages=[{"role": "system", "content": "unused"}], compacted_turns=0)
        folded: list[ChatMessage] = [
            messages[0],
            messages[1],
            {"role": "assistant", "content": "<compact-summary>FOLDED</compact-summary>"},
        ]
        return CompactResult(messages=folded, compacted_turns=self.turns, summary="FOLDED", usage=self.usage)


def compactor_for(fn: RecordingCompactor, max_context_tokens: int = 1000) -> Compactor:
    return Compactor(max_context_tokens=max_context_tokens, compact=fn)


async def test_compactor_not_called_at_fifty_percent() -> None:
    fn = RecordingCompactor()
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(400, 100)), completion("ok")])
    await run(llm, compactor=compactor_for(fn))
    assert fn.calls == []


async def test_compactor_fires_at_ninety_two_percent() -> None:
    fn = RecordingCompactor()
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(900, 20)), completion("ok")])
    result = await run(llm, compactor=compactor_for(fn))
    assert len(fn.calls) == 1
    second = llm.requests[1].messages
    assert len(second) == 3
    assert "FOLDED" in second[2]["content"]
    assert [c.summary for c in result.compactions] == ["FOLDED"]


async def test_compactor_fires_at_most_once() -> None:
    fn = RecordingCompactor()
    llm = endless(4, usage=(950, 50))
    llm.add(completion("ok"))
    await run(llm, compactor=compactor_for(fn), max_rounds=5)
    assert len(fn.calls) == 1


async def test_compactor_with_zero_context_never_fires() -> None:
    fn = RecordingCompactor()
    llm = endless(3, usage=(10_000, 10))
    await run(llm, compactor=compactor_for(fn, max_context_tokens=0), max_rounds=3)
    assert fn.calls == []


async def test_channel_sees_compactions_done() -> None:
    fn = RecordingCompactor()
    seen: list[int] = []

    def channel(state: LoopState) -> list[Reminder]:
        seen.append(state.compactions_done)
        return []

    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(950, 0)), completion("ok")])
    await run(llm, compactor=compactor_for(fn), reminder_channel=channel)
    assert seen == [0, 1]


async def test_compactor_returning_zero_turns_leaves_history() -> None:
    fn = RecordingCompactor(turns=0)
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(950, 0)), completion("ok")])
    result = await run(llm, compactor=compactor_for(fn))
    assert len(fn.calls) == 1
    assert len(llm.requests[1].messages) == 4
    assert result.compactions == []


async def test_reminders_are_appended_after_the_user_message_only_for_the_request() -> None:
    def channel(state: LoopState) -> list[Reminder]:
        return [
            Reminder("token-budget", "warn", "budget 80%"),
            Reminder("retry-loop", "warn", "stop retrying"),
        ]

    llm = ScriptedLlmClient([completion("ok")])
    result = await run(llm, reminder_channel=channel)
    sent = llm.requests[0].messages
    assert [m["role"] for m in sent] == ["system", "user", "system", "system"]
    assert sent[2] == {"role": "system", "content": "<reminder>budget 80%</reminder>"}
    assert sent[3]["content"] == "<reminder>stop retrying</reminder>"
    assert all("<reminder>" not in str(m["content"]) for m in result.messages)
    assert [r.text for r in result.reminders] == ["budget 80%", "stop retrying"]


async def test_channel_called_per_round_with_fresh_reminders_only() -> None:
    def channel(state: LoopState) -> list[Reminder]:
        return [Reminder("p", "info", "r" + str(state.round))]

    llm = ScriptedLlmClient([completion(calls=[("a", {})]), completion("ok")])
    result = await run(llm, reminder_channel=channel)
    reminders = [
        [m["content"] for m in r.messages if "<reminder>" in str(m["content"])] for r in llm.requests
    ]
    assert reminders == [["<reminder>r1</reminder>"], ["<reminder>r2</reminder>"]]
    assert [r.text for r in result.reminders] == ["r1", "r2"]


async def test_recent_calls_window() -> None:
    windows: dict[int, list[str]] = {}

    def channel(state: LoopState) -> list[Reminder]:
        windows[state.round] = [e.call.name for e in state.recent_calls]
        return []

    llm = ScriptedLlmClient(completion(calls=[("i" + str(i), {})]) for i in range(7))
    await run(llm, reminder_channel=channel, max_rounds=7)
    assert windows[1] == []
    assert windows[2] == ["i0"]
    assert windows[6] == ["i0", "i1", "i2", "i3", "i4"]
    assert windows[7] == ["i1", "i2", "i3", "i4", "i5"]


async def test_tool_call_count_and_last_call_snapshots() -> None:
    snapshots: list[tuple[int, int, str | None]] = []

    def channel(state: LoopState) -> list[Reminder]:
        last = state.last_call.call.name if state.last_call else None
        snapshots.append((state.round, state.tool_call_count, last))
        return []

    llm = ScriptedLlmClient(
        [completion(calls=[("list_things", {})]), completion(calls=[("create_thing", {})]), completion("ok")]
    )
    await run(llm, reminder_channel=channel)
    assert snapshots == [(1, 0, None), (2, 1, "list_things"), (3, 2, "create_thing")]


async def test_empty_reminders_leave_the_request_unchanged() -> None:
    calls: list[int] = []

    def channel(state: LoopState) -> list[Reminder]:
        calls.append(state.round)
        return []

    llm = ScriptedLlmClient([completion("ok")])
    result = await run(llm, reminder_channel=channel)
    assert calls == [1]
    assert len(llm.requests[0].messages) == 2
    assert result.reminders == []


# -- wire format -------------------------------------------------------------------------------------


async def test_history_shape_and_wire_format() -> None:
    prior: list[ChatMessage] = [{"role": "assistant", "content": "earlier"}]
    call = ToolCall("x1", "create_thing", '{"title":"T"}', {"title": "T"})
    llm = ScriptedLlmClient([completion(calls=[call]), completion("ok")])

    async def with_data(call: ToolCall) -> ToolResult:
        return ToolResult(success=True, message="created", data={"id": "n1"})

    result = await run(llm, with_data, prior_messages=prior, temperature=0.1)
    assert result.messages[:3] == [
        {"role": "system", "content": "SYS"},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "USER"},
    ]
    assert result.messages[3] == {
        "role": "assistant",
        "content": "",  # never null: llama-cpp-python's server answers null with a 500
        "tool_calls": [
            {
                "id": "x1",
                "type": "function",
                "function": {"name": "create_thing", "arguments": '{"title":"T"}'},
            }
        ],
    }
    assert result.messages[4] == {
        "role": "tool",
        "tool_call_id": "x1",
        "content": '{"success":true,"message":"created","data":{"id":"n1"}}',
    }
    assert result.messages[5] == {"role": "assistant", "content": "ok"}
    assert "tool_calls" not in result.messages[5]
    assert llm.requests[0].tools_json is TOOLS
    assert (llm.requests[0].model, llm.requests[0].temperature) == ("mana/reasoning", 0.1)


def test_tool_message_omits_data_when_none_and_keeps_key_order() -> None:
    assert tool_message("c", ToolResult(False, "nope"))["content"] == '{"success":false,"message":"nope"}'
    content = tool_message("c", ToolResult(True, "ok", data=[1, "ä"]))["content"]
    assert content == '{"success":true,"message":"ok","data":[1,"ä"]}'


def test_classify_response() -> None:
    assert classify_response(completion("x")) == Finish("x", "assistant-stop")
    assert classify_response(completion("x", finish_reason="length")) == Finish("x", "truncated")
    assert classify_response(completion("x", finish_reason="content_filter")) == Finish("x", "no-tool-calls")
    assert classify_response(completion(None, finish_reason="tool_calls")) == Finish(None, "no-tool-calls")
    step = classify_response(completion(calls=[("a", {})], finish_reason="stop"))
    assert isinstance(step, RunTools) and step.calls[0].name == "a"


async def test_usage_is_summed_and_missing_usage_counts_zero() -> None:
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(100, 10)), completion("ok")])
    result = await run(llm)
    assert result.usage == Usage(100, 10)
    assert result.usage.total_tokens == 110


# -- improvements ------------------------------------------------------------------------------------


async def test_budget_cut_off_after_the_round_that_reaches_the_allowance() -> None:
    llm = endless(2, usage=(300, 50))
    result = await run(llm, token_allowance=700)
    assert result.stop_reason == "budget-exhausted"
    assert result.rounds == 2
    assert len(result.executed_calls) == 2  # the calls of the last round are still executed
    assert result.usage == Usage(600, 100)


async def test_a_round_refused_for_the_budget_ends_the_loop_and_keeps_the_earlier_rounds() -> None:
    refused = BudgetExceeded("the next round may cost up to 9000 tokens")
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(300, 50)), refused])
    result = await run(llm)
    assert result.stop_reason == "budget"
    assert result.rounds == 1  # the refused round sent nothing
    assert [c.call.name for c in result.executed_calls] == ["a"]
    assert result.usage == Usage(300, 50) and result.error is None


async def test_a_compaction_refused_for_the_budget_ends_the_loop() -> None:
    async def refuse(messages: list[ChatMessage]) -> CompactResult:
        raise BudgetExceeded("taken")

    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(900, 50))])
    result = await run(llm, compactor=Compactor(max_context_tokens=1000, compact=refuse))
    assert (result.stop_reason, result.rounds, len(result.executed_calls)) == ("budget", 1, 1)
    llm.assert_complete()


async def test_budget_not_reached_runs_normally() -> None:
    llm = ScriptedLlmClient(
        [completion(calls=[("a", {})], usage=(300, 50)), completion("ok", usage=(300, 50))]
    )
    result = await run(llm, token_allowance=10_000)
    assert result.stop_reason == "assistant-stop"


async def test_llm_error_keeps_usage_of_earlier_rounds() -> None:
    boom = ProviderError("down", kind="server_error", status=500)
    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(100, 10)), boom])
    result = await run(llm)
    assert result.stop_reason == "llm-error"
    assert result.error is boom
    assert result.usage == Usage(100, 10)
    assert result.rounds == 2
    assert len(result.executed_calls) == 1
    assert result.summary is None


async def test_any_exception_from_the_client_ends_with_llm_error() -> None:
    result = await run(ScriptedLlmClient([RuntimeError("bug")]))
    assert result.stop_reason == "llm-error"
    assert isinstance(result.error, RuntimeError)
    assert result.usage == Usage()


async def test_compaction_usage_counts_and_survives_a_later_error() -> None:
    fn = RecordingCompactor(usage=Usage(40, 5))
    llm = ScriptedLlmClient(
        [completion(calls=[("a", {})], usage=(950, 0)), ProviderError("x", kind="timeout")]
    )
    result = await run(llm, compactor=compactor_for(fn))
    assert result.stop_reason == "llm-error"
    assert result.usage == Usage(990, 5)
    assert len(result.compactions) == 1


async def test_compactor_failure_ends_with_llm_error() -> None:
    async def failing(messages: list[ChatMessage]) -> CompactResult:
        raise ProviderError("compact failed", kind="rate_limit")

    llm = ScriptedLlmClient([completion(calls=[("a", {})], usage=(950, 0))])
    result = await run(llm, compactor=Compactor(max_context_tokens=1000, compact=failing))
    assert result.stop_reason == "llm-error"
    assert isinstance(result.error, ProviderError) and result.error.kind == "rate_limit"
    assert result.usage == Usage(950, 0)


async def test_length_without_tool_calls_is_truncated() -> None:
    result = await run(ScriptedLlmClient([completion("half a pl", finish_reason="length")]))
    assert result.stop_reason == "truncated"
    assert result.summary == "half a pl"


async def test_invalid_arguments_are_reported_back_without_running_the_tool() -> None:
    bad = ToolCall("b1", "create_thing", '{"title": "unterminated', None)
    llm = ScriptedLlmClient([completion(calls=[bad]), completion("ok")])
    probe = ConcurrencyProbe()
    result = await run(llm, probe)
    assert probe.completed == []
    executed = result.executed_calls[0]
    assert executed.result.success is False
    assert "expected a JSON object" in executed.result.message
    assert orjson.loads(llm.requests[1].messages[-1]["content"])["success"] is False


async def test_exception_in_on_tool_call_becomes_a_failure_result() -> None:
    async def raising(call: ToolCall) -> ToolResult:
        raise KeyError("missing")

    llm = ScriptedLlmClient([completion(calls=[("a", {}), ("b", {})]), completion("ok")])
    result = await run(llm, raising, is_parallel_safe=lambda name: True)
    assert [e.result.success for e in result.executed_calls] == [False, False]
    assert "KeyError" in result.executed_calls[0].result.message
    assert result.stop_reason == "assistant-stop"


async def test_max_rounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        await run(ScriptedLlmClient(), max_rounds=0)
