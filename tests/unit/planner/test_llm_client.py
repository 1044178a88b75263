"""OpenAI-compatible client against the real fake server on loopback (SPEC §18)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from mana_ai.errors import ProviderError
from mana_ai.planner.llm_client import (
    OpenAICompatClient,
    backoff_delay,
    build_request_body,
    describe_error_body,
    parse_completion,
    parse_retry_after,
    provider_label,
)
from mana_ai.planner.types import ChatMessage, Usage
from mana_ai.testing.fake_llm import FakeLlmServer

TOOLS = b'[{"type":"function","function":{"name":"list_things","description":"L","parameters":{"type":"object"}}}]'
MESSAGES: list[ChatMessage] = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
KEY = "sk-very-secret-key"


@pytest.fixture
async def server() -> AsyncIterator[FakeLlmServer]:
    async with FakeLlmServer() as srv:
        yield srv
        srv.assert_complete()


def make_client(server: FakeLlmServer, **kwargs: object) -> OpenAICompatClient:
    options: dict[str, object] = {
        "api_key": KEY,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.01,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return OpenAICompatClient(server.url + "/", **options)  # type: ignore[arg-type]


async def test_happy_path_with_tool_calls_and_usage(server: FakeLlmServer) -> None:
    server.reply_tool_calls(
        [("list_things", {"limit": 3}), ("create_thing", {"title": "Ä"})], usage=(120, 30)
    )
    async with make_client(server) as client:
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="mana/reasoning")
    assert response.finish_reason == "tool_calls"
    assert response.content is None
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_1", "list_things", {"limit": 3}),
        ("call_2", "create_thing", {"title": "Ä"}),
    ]
    assert response.tool_calls[0].raw_arguments == '{"limit":3}'
    assert response.usage == Usage(120, 30)
    assert (client.stats.calls, client.stats.requests, client.stats.retries) == (1, 1, 0)


async def test_request_body_shape_and_bearer_auth(server: FakeLlmServer) -> None:
    server.reply_text("fine")
    async with make_client(server) as client:
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="mana/reasoning")
    assert (response.content, response.finish_reason, response.usage) == ("fine", "stop", None)
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer " + KEY
    assert "x-api-key" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "model": "mana/reasoning",
        "messages": MESSAGES,
        "tools": orjson.loads(TOOLS),
        "tool_choice": "auto",
        "temperature": 0.3,
        "stream": False,
    }
    assert TOOLS in request.raw  # spliced verbatim, not re-encoded
    assert list(request.json) == ["model", "messages", "tools", "tool_choice", "temperature", "stream"]


async def test_x_api_key_header_and_no_tools(server: FakeLlmServer) -> None:
    server.reply_text("x")
    async with make_client(server, auth_header="x-api-key") as client:
        await client.complete(MESSAGES, tools_json=b"[]", model="m", temperature=0.0)
    request = server.requests[0]
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers
    assert "tools" not in request.json and "tool_choice" not in request.json
    assert request.json["temperature"] == 0.0


async def test_no_api_key_sends_no_auth_header(server: FakeLlmServer) -> None:
    server.reply_text("x")
    async with make_client(server, api_key=None) as client:
        await client.complete(MESSAGES, tools_json=b"[]", model="")
    assert "authorization" not in server.requests[0].headers
    assert server.requests[0].json["model"] == "mana/reasoning"  # default model for an empty id


async def test_malformed_arguments_give_none(server: FakeLlmServer) -> None:
    server.reply_malformed_arguments("create_thing", '{"title": "unterminated')
    async with make_client(server) as client:
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    call = response.tool_calls[0]
    assert call.arguments is None
    assert call.raw_arguments == '{"title": "unterminated'


async def test_empty_choices_is_bad_response(server: FakeLlmServer) -> None:
    server.reply_empty_choices()
    async with make_client(server) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="mana/reasoning")
    assert info.value.kind == "bad_response"
    assert "no choices" in str(info.value)
    assert client.stats.requests == 1  # not retried


async def test_429_with_retry_after_then_success(server: FakeLlmServer) -> None:
    server.reply_error(429, headers={"Retry-After": "0.05"}).reply_text("after wait")
    async with make_client(server) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="m")
        elapsed = loop.time() - started
    assert response.content == "after wait"
    assert elapsed >= 0.05
    assert (client.stats.requests, client.stats.retries) == (2, 1)


async def test_retry_after_of_one_second_is_honoured(server: FakeLlmServer) -> None:
    server.reply_error(429, headers={"Retry-After": "1"}).reply_text("ok")
    async with make_client(server) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="m")
        elapsed = loop.time() - started
    assert response.content == "ok"
    assert 1.0 <= elapsed < 3.0


async def test_retry_after_is_capped(server: FakeLlmServer) -> None:
    server.reply_error(429, headers={"Retry-After": "3600"}).reply_text("ok")
    async with make_client(server, retry_after_cap_s=0.01) as client:
        response = await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert response.content == "ok"


async def test_three_500s_exhaust_two_retries(server: FakeLlmServer) -> None:
    for _ in range(3):
        server.reply_error(500, body={"detail": "upstream exploded"})
    async with make_client(server, max_retries=2) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="mana/reasoning")
    assert (info.value.kind, info.value.status) == ("server_error", 500)
    # The message names the LLM and its model, not "mana" (the model id's prefix); the body is not kept.
    assert (
        str(info.value)
        == "LLM server (model mana/reasoning) 500: the provider returned an error; its body is not kept"
    )
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (3, 2, 1)


async def test_bad_request_is_not_retried(server: FakeLlmServer) -> None:
    server.reply_error(400, body="plain text complaint", headers={"Content-Type": "text/plain"})
    async with make_client(server) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert (info.value.kind, info.value.status) == ("bad_request", 400)
    assert "plain text complaint" not in str(info.value)  # bodies are never kept (they may echo the prompt)
    assert client.stats.requests == 1


async def test_auth_error_never_leaks_the_key(server: FakeLlmServer) -> None:
    server.reply_error(401, body={"detail": "bad key " + KEY})
    async with make_client(server) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert info.value.kind == "auth"
    assert KEY not in str(info.value) and "bad key" not in str(info.value)
    assert KEY not in repr(client)


async def test_structured_mana_llm_error_body(server: FakeLlmServer) -> None:
    server.reply_error(422, body={"detail": {"kind": "blocked", "message": "content policy"}})
    async with make_client(server, provider="mana-llm") as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert info.value.kind == "blocked"
    assert info.value.status == 422
    assert str(info.value) == "mana-llm 422 (blocked): the provider returned an error; its body is not kept"


async def test_permanent_body_kind_on_5xx_is_not_retried(server: FakeLlmServer) -> None:
    server.reply_error(502, body={"detail": {"kind": "auth", "message": "upstream key rejected"}})
    async with make_client(server) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert info.value.kind == "auth"
    assert client.stats.requests == 1


async def test_timeout(server: FakeLlmServer) -> None:
    server.hang()
    async with make_client(server, timeout_s=0.2, max_retries=0) as client:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    assert info.value.kind == "timeout"


async def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpenAICompatClient(
        "http://127.0.0.1:" + str(port), api_key=KEY, max_retries=1, backoff_base_s=0.001, backoff_max_s=0.001
    )
    try:
        with pytest.raises(ProviderError) as info:
            await client.complete(MESSAGES, tools_json=TOOLS, model="m")
    finally:
        await client.close()
    assert info.value.kind == "unreachable"
    assert "127.0.0.1:" + str(port) in str(info.value)
    assert KEY not in str(info.value)
    assert client.stats.requests == 2


async def test_concurrent_requests_share_one_session(server: FakeLlmServer) -> None:
    for i in range(20):
        server.reply_text("r" + str(i), usage=(1, 1))
    async with make_client(server) as client:
        results = await asyncio.gather(
            *(client.complete(MESSAGES, tools_json=TOOLS, model="m") for _ in range(20))
        )
    assert sorted(r.content or "" for r in results) == sorted("r" + str(i) for i in range(20))


# -- pure helpers ------------------------------------------------------------------------------------


def test_build_request_body_is_valid_json() -> None:
    body = build_request_body(MESSAGES, tools_json=TOOLS, model="m", temperature=0.3)
    assert body.startswith(b'{"model":"m","messages":[')
    assert orjson.loads(body)["tools"][0]["function"]["name"] == "list_things"


def test_parse_completion_mapping() -> None:
    body = orjson.dumps(
        {
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [
                            {"id": "a", "function": {"name": "x", "arguments": "[1]"}},
                            {"function": {"name": "y", "arguments": ""}},
                            {"id": "c", "function": {"name": "z", "arguments": {"k": 1}}},
                        ],
                    },
                    "finish_reason": "weird",
                }
            ],
            "usage": {"prompt_tokens": 7},
        }
    )
    response = parse_completion(body)
    assert response.finish_reason == "stop"
    assert response.usage == Usage(7, 0)
    assert [(c.id, c.arguments) for c in response.tool_calls] == [
        ("a", None),
        ("call_1", {}),
        ("c", {"k": 1}),
    ]
    assert response.tool_calls[2].raw_arguments == '{"k":1}'


@pytest.mark.parametrize("finish", ["tool_calls", "length", "content_filter"])
def test_parse_completion_keeps_known_finish_reasons(finish: str) -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]})
    assert parse_completion(body).finish_reason == finish


def test_parse_completion_rejects_non_json() -> None:
    with pytest.raises(ProviderError) as info:
        parse_completion(b"<html>gateway</html>", provider="p")
    assert info.value.kind == "bad_response" and "gateway" not in str(info.value)


def test_describe_error_body_keeps_no_body_text() -> None:
    # A provider may echo the prompt (granted plaintext) in its error body: none of it may reach the message.
    secret = b"Milch, Eier, Mehl"
    fixed = "the provider returned an error; its body is not kept"
    assert describe_error_body(500, b'{"detail":"' + secret + b'"}', provider="p") == (
        "p 500: " + fixed,
        None,
    )
    assert describe_error_body(429, b'{"error":{"message":"' + secret + b'"}}', provider="p") == (
        "p 429: " + fixed,
        None,
    )
    assert describe_error_body(503, b"echo: " + secret, provider="p") == ("p 503: " + fixed, None)
    assert describe_error_body(
        400, b'{"detail":{"kind":"context_length","message":"' + secret + b'"}}', provider="p"
    ) == ("p 400 (context_length): " + fixed, "context_length")
    # A "kind" that is free text is not a kind: it is dropped like the rest of the body.
    assert describe_error_body(400, b'{"detail":{"kind":"' + secret + b'"}}', provider="p")[1] is None
    # The OpenAI form names a prompt too long for the model by its code.
    openai = (
        b'{"error":{"message":"'
        + secret
        + b'","type":"invalid_request_error","code":"context_length_exceeded"}}'
    )
    assert describe_error_body(400, openai, provider="p") == (
        "p 400 (context_length_exceeded): " + fixed,
        "context_length_exceeded",
    )
    assert describe_error_body(400, b'{"error":{"code":"' + secret + b'"}}', provider="p")[1] is None
    assert describe_error_body(400, b'{"error":{"code":400}}', provider="p")[1] is None


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", now=now) == 2.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("nan", now=now) is None


def test_backoff_delay_bounds() -> None:
    rng = random.Random(3)
    delays = [
        backoff_delay(5, base_s=0.5, max_s=8, retry_after_s=None, retry_after_cap_s=30, rng=rng)
        for _ in range(50)
    ]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 4
    assert backoff_delay(0, base_s=0.5, max_s=8, retry_after_s=12, retry_after_cap_s=30, rng=rng) == 12
    assert backoff_delay(0, base_s=0.5, max_s=8, retry_after_s=120, retry_after_cap_s=30, rng=rng) == 30


def test_provider_label() -> None:
    assert provider_label("openrouter/anthropic/claude") == "openrouter"
    assert provider_label("gpt-4o") == "gpt-4o"


def test_parse_completion_drops_nul_characters_postgres_cannot_store() -> None:
    # In the text, in a key and value of arguments sent as an object, and inside arguments sent as JSON text.
    body = orjson.dumps(
        {
            "choices": [
                {
                    "message": {
                        "content": "Plan\u0000 fertig",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "function": {"name": "create_task", "arguments": '{"title": "a\\u0000b"}'},
                            },
                            {
                                "id": "c2",
                                "function": {
                                    "name": "create_task",
                                    "arguments": {"ti\u0000tle": ["x\u0000"]},
                                },
                            },
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    assert b"\\u0000" in body  # the escape as a provider sends it
    parsed = parse_completion(body)
    assert parsed.content == "Plan fertig"
    assert [c.arguments for c in parsed.tool_calls] == [{"title": "ab"}, {"title": ["x"]}]


def test_tool_call_ids_are_unique_within_an_answer() -> None:
    # Each tool result names its call; a repeated or missing id would leave results matching no single call.
    calls = [
        {"id": "same", "function": {"name": "x", "arguments": "{}"}},
        {"id": "same", "function": {"name": "y", "arguments": "{}"}},
        {"function": {"name": "z", "arguments": "{}"}},
        {"id": "call_2", "function": {"name": "w", "arguments": "{}"}},
        {"id": "same_1", "function": {"name": "v", "arguments": "{}"}},
    ]
    body = orjson.dumps({"choices": [{"message": {"tool_calls": calls}, "finish_reason": "tool_calls"}]})
    ids = [c.id for c in parse_completion(body).tool_calls]
    assert ids == ["same", "same_1", "call_2", "call_2_1", "same_1_1"]
