"""What real OpenAI-compatible servers insist on: string content with tool calls, max_tokens, named errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mana_ai.errors import ProviderError
from mana_ai.planner.llm_client import OpenAICompatClient, build_request_body
from mana_ai.planner.loop import run_planner_loop
from mana_ai.planner.types import ToolCall, ToolResult
from mana_ai.runner.pipeline import plan_stop_reason, plan_summary
from mana_ai.testing.fake_llm import FakeLlmServer, FakeResponse, completion_body

TOOLS = b'[{"type":"function","function":{"name":"create_task","description":"T","parameters":{"type":"object"}}}]'


def strict_like_llama_cpp_python(request: Any) -> FakeResponse:
    """Answers 500 for an assistant turn whose content is null or missing, as llama-cpp-python's server does
    (its chat template reads ``message.content`` with StrictUndefined); else one tool call, then text."""
    messages = request["messages"]
    for message in messages:
        if message["role"] == "assistant" and not isinstance(message.get("content"), str):
            return FakeResponse(
                status=500, body=b'{"detail":"TypeError: object of type NoneType has no len()"}'
            )
    if messages[-1]["role"] == "tool":
        return FakeResponse(body=completion_body(content="done", usage=(50, 5)))
    return FakeResponse(
        body=completion_body(tool_calls=[("c1", "create_task", {"title": "T"})], finish_reason="tool_calls")
    )


async def recorded(call: ToolCall) -> ToolResult:
    return ToolResult(success=True, message="recorded")


async def test_second_round_works_against_a_server_that_rejects_null_content() -> None:
    async with (
        FakeLlmServer(default=strict_like_llama_cpp_python) as server,
        OpenAICompatClient(server.url, max_retries=0) as client,
    ):
        result = await run_planner_loop(
            client,
            system_prompt="S",
            user_prompt="U",
            tools_json=TOOLS,
            model="local",
            on_tool_call=recorded,
        )
        assert result.error is None, result.error
        assert (result.rounds, result.stop_reason) == (2, "assistant-stop")
        sent = server.requests[1].json["messages"][2]
        assert sent["role"] == "assistant" and sent["content"] == "" and sent["tool_calls"]


async def test_max_tokens_is_sent_with_every_request() -> None:
    async with FakeLlmServer() as server, OpenAICompatClient(server.url, max_tokens=256) as client:
        server.reply_text("a").reply_text("b")
        for _ in range(2):
            await client.complete([{"role": "user", "content": "U"}], tools_json=TOOLS, model="m")
        assert [r.json["max_tokens"] for r in server.requests] == [256, 256]


def test_max_tokens_is_omitted_when_unset() -> None:
    body = orjson.loads(build_request_body([], tools_json=b"[]", model="m", temperature=0.0))
    assert "max_tokens" not in body
    body = orjson.loads(build_request_body([], tools_json=b"[]", model="m", temperature=0.0, max_tokens=64))
    assert body["max_tokens"] == 64


async def test_an_unreachable_llm_is_named_as_the_llm() -> None:
    async with OpenAICompatClient("http://127.0.0.1:1", max_retries=0) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(
                [{"role": "user", "content": "U"}], tools_json=TOOLS, model="mana/reasoning"
            )
    message = str(info.value)
    assert message.startswith("LLM server (model mana/reasoning) unreachable at http://127.0.0.1:1")
    assert not message.startswith("mana ")


@pytest.mark.parametrize(
    ("loop_reason", "has_steps", "expected"),
    [
        ("assistant-stop", True, "finished"),
        ("assistant-stop", False, "no-tool-calls"),
        ("no-tool-calls", False, "no-tool-calls"),
        ("max-rounds", True, "max-rounds"),
        ("budget-exhausted", True, "budget-exhausted"),
        ("budget", True, "budget"),
        ("budget", False, "budget"),
        ("llm-error", True, "llm-error"),
    ],
)
def test_stop_reason_of_a_run(loop_reason: str, has_steps: bool, expected: str) -> None:
    assert plan_stop_reason(loop_reason, has_steps=has_steps) == expected


def test_summary_says_why_planning_ended() -> None:
    assert plan_summary("Plan.", "finished", rounds=2, error=None) == "Plan."
    assert "without calling a tool" in plan_summary(None, "no-tool-calls", rounds=1, error=None)
    kept = plan_summary("", "llm-error", rounds=3, error=ProviderError("LLM server 500: boom", kind="x"))
    assert kept.startswith("Planning stopped in round 3: LLM server 500: boom")
    assert "steps from the earlier rounds are kept" in kept
