"""The fake LLM server and scripted client (they are test infrastructure others rely on)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mana_ai.errors import ProviderError
from mana_ai.planner.llm_client import OpenAICompatClient
from mana_ai.planner.loop import run_planner_loop
from mana_ai.planner.types import ChatMessage, ToolCall, ToolResult, Usage
from mana_ai.testing.fake_llm import (
    FakeLlmServer,
    ScriptedLlmClient,
    completion,
    conversation_responder,
    with_faults,
)

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "U"}]


async def test_assert_complete_fails_on_unconsumed_responses() -> None:
    async with FakeLlmServer() as server:
        server.reply_text("one").reply_text("two")
        async with OpenAICompatClient(server.url, max_retries=0) as llm:
            await llm.complete(MESSAGES, tools_json=b"[]", model="m")
        assert server.pending == 1
        with pytest.raises(AssertionError, match="1 scripted response"):
            server.assert_complete()


async def test_request_with_nothing_scripted_fails_the_test() -> None:
    async with FakeLlmServer() as server:
        async with OpenAICompatClient(server.url, max_retries=0) as llm:
            with pytest.raises(ProviderError) as info:
                await llm.complete(MESSAGES, tools_json=b"[]", model="m")
        assert info.value.status == 500
        assert "body is not kept" in str(
            info.value
        )  # the fake says "no scripted response"; bodies are never kept
        with pytest.raises(AssertionError, match="unexpected"):
            server.assert_complete()


async def test_delay_applies_to_the_next_response_only() -> None:
    async with FakeLlmServer() as server:
        server.delay(0.1).reply_text("slow").reply_text("fast")
        async with OpenAICompatClient(server.url, max_retries=0) as llm:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await llm.complete(MESSAGES, tools_json=b"[]", model="m")
            first = loop.time() - started
            started = loop.time()
            await llm.complete(MESSAGES, tools_json=b"[]", model="m")
            second = loop.time() - started
        server.assert_complete()
    assert first >= 0.1
    assert second < 0.1


async def test_conversation_responder_drives_a_full_planner_loop() -> None:
    async with FakeLlmServer(
        default=conversation_responder(tool_name="list_things", usage=(100, 20))
    ) as server:
        seen: list[ToolCall] = []

        async def on_tool_call(call: ToolCall) -> ToolResult:
            seen.append(call)
            return ToolResult(True, "2 things")

        async with OpenAICompatClient(server.url, max_retries=0) as llm:
            result = await run_planner_loop(
                llm,
                system_prompt="S",
                user_prompt="U",
                tools_json=b"[]",
                model="mana/reasoning",
                on_tool_call=on_tool_call,
                reminder_channel=lambda state: [],
            )
        server.assert_complete()
    assert result.stop_reason == "assistant-stop"
    assert result.summary == "Plan fertig."
    assert [c.name for c in seen] == ["list_things"]
    assert result.usage == Usage(200, 40)
    assert server.request_count == 2


def test_conversation_responder_ignores_trailing_reminders() -> None:
    respond = conversation_responder(final_text="END")
    after_tool = {
        "messages": [
            {"role": "user", "content": "U"},
            {"role": "tool", "tool_call_id": "1", "content": "{}"},
            {"role": "system", "content": "<reminder>x</reminder>"},
        ]
    }
    assert b"END" in respond(after_tool).body
    assert b"tool_calls" in respond({"messages": [{"role": "user", "content": "U"}]}).body
    assert b"tool_calls" in respond(None).body


def test_with_faults_is_seeded_and_bounded() -> None:
    base = conversation_responder()
    faulty_a = with_faults(base, probability=0.3, seed=7)
    faulty_b = with_faults(base, probability=0.3, seed=7)
    run_a = [faulty_a(None).status for _ in range(200)]
    run_b = [faulty_b(None).status for _ in range(200)]
    assert run_a == run_b
    assert 30 < run_a.count(500) < 90
    always = with_faults(base, probability=1.0, statuses=(429,))
    response = always(None)
    assert response.status == 429 and response.headers["Retry-After"] == "0"
    assert with_faults(base, probability=0.0)(None).status == 200


async def test_record_off_counts_but_keeps_nothing() -> None:
    async with FakeLlmServer(default=conversation_responder(), record=False) as server:
        async with OpenAICompatClient(server.url, max_retries=0) as llm:
            await asyncio.gather(*(llm.complete(MESSAGES, tools_json=b"[]", model="m") for _ in range(5)))
    assert server.request_count == 5
    assert server.requests == []


async def test_standalone_cli_serves_the_default_responder() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mana_ai.testing.fake_llm",
        "--port",
        "0",
        "--latency-ms",
        "1",
        "--tool-name",
        "create_thing",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode().strip()
        assert line.startswith("FAKE_LLM_URL=http://127.0.0.1:")
        async with OpenAICompatClient(line.split("=", 1)[1], max_retries=0) as llm:
            response = await llm.complete(MESSAGES, tools_json=b"[]", model="m")
        assert [c.name for c in response.tool_calls] == ["create_thing"]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0


async def test_scripted_client_records_and_checks_its_script() -> None:
    llm = ScriptedLlmClient([completion("a"), lambda request: completion(str(len(request.messages)))])
    messages: list[ChatMessage] = [{"role": "user", "content": "U"}]
    assert (await llm.complete(messages, tools_json=b"[]", model="m")).content == "a"
    messages.append({"role": "assistant", "content": "later"})
    assert (await llm.complete(messages, tools_json=b"[]", model="m")).content == "2"
    assert len(llm.requests[0].messages) == 1  # a copy, not the caller's growing list
    with pytest.raises(AssertionError, match="no scripted step"):
        await llm.complete(messages, tools_json=b"[]", model="m")
    with pytest.raises(AssertionError, match="1 unexpected"):
        llm.assert_complete()


def test_scripted_client_reports_unconsumed_steps() -> None:
    llm = ScriptedLlmClient([completion("never")])
    with pytest.raises(AssertionError, match="1 step"):
        llm.assert_complete()


def test_completion_helper() -> None:
    response = completion(calls=[("a", {"x": 1})], usage=(3, 4))
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls[0] == ToolCall("c0", "a", '{"x":1}', {"x": 1})
    assert response.usage == Usage(3, 4)
    assert completion("t").finish_reason == "stop"
