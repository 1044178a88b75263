"""Fake LLMs for tests and benchmarks: a real OpenAI-compatible HTTP server and an in-process client.

:class:`FakeLlmServer` listens on ``127.0.0.1`` (random free port) and answers
``POST /v1/chat/completions``. Tests script it response by response (``reply_text``,
``reply_tool_calls``, ``reply_error`` ...) and call :meth:`FakeLlmServer.assert_complete` at the end,
which fails when a scripted response was not consumed or a request arrived with nothing scripted.
Benchmarks give it a *default responder* instead, used whenever the script is empty, and run it
standalone::

    python -m mana_ai.testing.fake_llm --port 0 --latency-ms 50 --faults 0.01

which prints ``FAKE_LLM_URL=http://127.0.0.1:<port>`` once it listens. Responses are pre-encoded
bytes, so the per-request cost is one JSON parse of the request plus aiohttp's own.

:class:`ScriptedLlmClient` implements the :class:`~mana_ai.planner.types.LlmClient` port in
process for tests that do not need HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

from mana_ai.planner.types import ChatMessage, CompletionResponse, FinishReason, ToolCall, Usage

UsageSpec = Usage | tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class FakeResponse:
    """One HTTP response of the fake server."""

    status: int = 200
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay_s: float = 0.0
    """Extra latency before answering (added to the server-wide ``latency_s``)."""
    hang: bool = False
    """Never answer (until the server stops): makes the client time out."""


Responder = Callable[[Any], FakeResponse]
"""Builds the response for a parsed request body when no scripted response is queued."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    raw: bytes
    json: Any
    """The parsed body, ``None`` if it was not JSON."""


def completion_body(
    *,
    content: str | None = None,
    tool_calls: Sequence[tuple[str, str, Any]] = (),
    finish_reason: str | None = "stop",
    usage: UsageSpec = None,
    model: str = "fake-model",
) -> bytes:
    """A chat-completions success body.

    Args:
        content: assistant text.
        tool_calls: ``(id, name, arguments)``; a ``str`` argument is sent verbatim, anything else
            JSON-encoded.
        finish_reason: the choice's finish reason.
        usage: token usage; omitted when ``None``.
        model: echoed model id.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else orjson.dumps(args).decode(),
                },
            }
            for call_id, name, args in tool_calls
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        prompt, completion = (
            (usage.prompt_tokens, usage.completion_tokens) if isinstance(usage, Usage) else usage
        )
        body["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    return orjson.dumps(body)


class FakeLlmServer:
    """Scriptable OpenAI-compatible server on loopback; see the module docstring."""

    def __init__(
        self,
        *,
        default: Responder | None = None,
        latency_s: float = 0.0,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        max_rpm: float | None = None,
    ) -> None:
        """Create the server; nothing listens before :meth:`start`.

        Args:
            default: responder used when no scripted response is queued; without one such a
                request gets a 500 and makes :meth:`assert_complete` fail.
            latency_s: delay added to every response.
            record: keep every request in :attr:`requests` (turn off for long benchmarks).
            host: interface to bind.
            port: port to bind; 0 picks a free one.
            max_rpm: enforce a requests-per-minute limit as providers do: a bucket of one second's worth
                of requests, refilled evenly; a request beyond it gets a 429 with ``Retry-After``.
        """
        self.default = default
        self.latency_s = latency_s
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self.in_flight = 0
        """Requests being answered right now."""
        self.peak_in_flight = 0
        """The most requests answered at once so far."""
        self.unexpected: list[RecordedRequest] = []
        self._host = host
        self._port = port
        self._queue: deque[FakeResponse] = deque()
        self._pending_delay_s = 0.0
        self._call_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self.url = ""
        self.limiter = RateLimit(max_rpm) if max_rpm else None
        self.rate_limited = 0
        """Requests answered with 429 by the enforced limit."""
        self.accepted_at: list[float] = []
        """Monotonic arrival time of every request the enforced limit let through."""
        self.limited_at: list[float] = []
        """Monotonic arrival time of every request answered with 429."""

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        # No access log: it costs more than the fake's own work at benchmark rates.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._released.clear()
        host, port = runner.addresses[0][:2]
        self.url = "http://" + str(host) + ":" + str(port)
        return self

    async def stop(self) -> None:
        # Release hanging handlers first, or the shutdown would wait for them.
        self._released.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- script ----------------------------------------------------------------------------------

    def enqueue(self, response: FakeResponse) -> Self:
        if self._pending_delay_s:
            response = FakeResponse(
                response.status,
                response.body,
                response.headers,
                response.content_type,
                response.delay_s + self._pending_delay_s,
                response.hang,
            )
            self._pending_delay_s = 0.0
        self._queue.append(response)
        return self

    def delay(self, seconds: float) -> Self:
        """Delay the next scripted response: ``server.delay(0.2).reply_text("x")``."""
        self._pending_delay_s += seconds
        return self

    def reply_text(
        self,
        text: str | None,
        *,
        finish_reason: str | None = "stop",
        usage: UsageSpec = None,
        delay_s: float = 0.0,
    ) -> Self:
        body = completion_body(content=text, finish_reason=finish_reason, usage=usage)
        return self.enqueue(FakeResponse(body=body, delay_s=delay_s))

    def reply_tool_calls(
        self,
        calls: Iterable[tuple[str, Any]],
        *,
        content: str | None = None,
        finish_reason: str | None = "tool_calls",
        usage: UsageSpec = None,
        delay_s: float = 0.0,
    ) -> Self:
        """Answer with tool calls ``(name, arguments)``; ids are ``call_1``, ``call_2`` ... per server."""
        wire = [("call_" + str(next(self._call_ids)), name, args) for name, args in calls]
        body = completion_body(content=content, tool_calls=wire, finish_reason=finish_reason, usage=usage)
        return self.enqueue(FakeResponse(body=body, delay_s=delay_s))

    def reply_malformed_arguments(
        self, name: str, raw_arguments: str = '{"title": "unterminated', *, usage: UsageSpec = None
    ) -> Self:
        return self.reply_tool_calls([(name, raw_arguments)], usage=usage)

    def reply_empty_choices(self) -> Self:
        return self.reply_raw({"id": "chatcmpl-fake", "object": "chat.completion", "choices": []})

    def reply_error(
        self,
        status: int,
        *,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> Self:
        """Answer with an error status; the default body is mana-llm's ``{"detail": "..."}``."""
        if body is None:
            body = {"detail": "fake error " + str(status)}
        return self.reply_raw(body, status=status, headers=headers, delay_s=delay_s)

    def reply_raw(
        self,
        body: bytes | str | Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        delay_s: float = 0.0,
    ) -> Self:
        encoded = (
            body
            if isinstance(body, bytes)
            else body.encode()
            if isinstance(body, str)
            else orjson.dumps(body)
        )
        extra = dict(headers or {})
        for name in [n for n in extra if n.lower() == "content-type"]:
            # aiohttp refuses a Content-Type header next to content_type.
            content_type = extra.pop(name)
        return self.enqueue(FakeResponse(status, encoded, extra, content_type, delay_s))

    def hang(self) -> Self:
        return self.enqueue(FakeResponse(hang=True))

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        return len(self._queue)

    def assert_complete(self) -> None:
        """Fail if scripted responses are left or a request found nothing scripted and no default."""
        problems = []
        if self._queue:
            problems.append(str(len(self._queue)) + " scripted response(s) not consumed")
        if self.unexpected:
            problems.append(str(len(self.unexpected)) + " unexpected request(s) with nothing scripted")
        if problems:
            raise AssertionError("fake LLM: " + "; ".join(problems))

    # -- serving ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        self.request_count += 1
        if self.limiter is not None:
            retry_after = self.limiter.take(time.monotonic())
            if retry_after is not None:
                self.rate_limited += 1
                self.limited_at.append(time.monotonic())
                return web.Response(
                    body=b'{"error":{"message":"rate limit exceeded","type":"rate_limit"}}',
                    status=429,
                    headers={"Retry-After": str(retry_after)},
                    content_type="application/json",
                )
            self.accepted_at.append(time.monotonic())
        recorded: RecordedRequest | None = None
        if self.record:
            recorded = RecordedRequest(
                request.path, {k.lower(): v for k, v in request.headers.items()}, raw, payload
            )
            self.requests.append(recorded)
        if self._queue:
            spec = self._queue.popleft()
        elif self.default is not None:
            spec = self.default(payload)
        else:
            self.unexpected.append(
                recorded
                or RecordedRequest(
                    request.path, {k.lower(): v for k, v in request.headers.items()}, raw, payload
                )
            )
            spec = FakeResponse(status=500, body=b'{"detail":"fake LLM: no scripted response left"}')
        if spec.hang:
            await self._released.wait()
            return web.Response(status=503)
        delay = spec.delay_s + self.latency_s
        if delay > 0:
            await asyncio.sleep(delay)
        return web.Response(
            body=spec.body, status=spec.status, headers=spec.headers, content_type=spec.content_type
        )


class RateLimit:
    """A provider-style request limit: a bucket holding one second's worth of requests, refilled evenly."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.tokens = self.capacity
        self.updated: float | None = None

    def take(self, now: float) -> int | None:
        """None when the request may pass, else the whole seconds to put in ``Retry-After``."""
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(math.ceil((1.0 - self.tokens) / self.rate), 1)


def conversation_responder(
    *,
    tool_name: str = "list_things",
    arguments: Mapping[str, Any] | None = None,
    final_text: str = "Plan fertig.",
    usage: UsageSpec = (120, 30),
    tool_rounds: int = 1,
) -> Responder:
    """Default responder: one tool call for a fresh conversation, final text once a tool has answered.

    With ``tool_rounds`` > 1 it calls the tool again in every round until the history holds that many tool
    answers (a plan of several rounds).
    """
    first = FakeResponse(
        body=completion_body(
            tool_calls=[("call_1", tool_name, dict(arguments or {}))], finish_reason="tool_calls", usage=usage
        )
    )
    final = FakeResponse(body=completion_body(content=final_text, usage=usage))

    def respond(request: Any) -> FakeResponse:
        messages = request.get("messages") if isinstance(request, dict) else None
        if isinstance(messages, list) and tool_rounds > 1:
            answered = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
            return final if answered >= tool_rounds else first
        if isinstance(messages, list):
            # Skip transient reminders (system turns) appended after the history.
            for message in reversed(messages):
                role = message.get("role") if isinstance(message, dict) else None
                if role != "system":
                    return final if role == "tool" else first
        return first

    return respond


def with_faults(
    responder: Responder, *, probability: float, seed: int = 0, statuses: Sequence[int] = (500,)
) -> Responder:
    """Wrap a responder so that a seeded fraction of requests fail with one of ``statuses``."""
    rng = random.Random(seed)
    faults = [
        FakeResponse(
            status=status,
            body=b'{"detail":"injected fault"}',
            headers={"Retry-After": "0"} if status == 429 else {},
        )
        for status in statuses
    ]

    def respond(request: Any) -> FakeResponse:
        if probability > 0 and rng.random() < probability:
            return rng.choice(faults)
        return responder(request)

    return respond


# -- in-process fake ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    messages: list[ChatMessage]
    """A shallow copy of the messages as sent."""
    tools_json: bytes
    model: str
    temperature: float


def completion(
    content: str | None = None,
    calls: Iterable[tuple[str, Mapping[str, Any]] | ToolCall] = (),
    *,
    finish_reason: FinishReason | None = None,
    usage: UsageSpec = None,
) -> CompletionResponse:
    """Build a :class:`CompletionResponse`; calls given as ``(name, args)`` get ids ``c0``, ``c1`` ..."""
    tool_calls = tuple(
        call
        if isinstance(call, ToolCall)
        else ToolCall("c" + str(i), call[0], orjson.dumps(call[1]).decode(), dict(call[1]))
        for i, call in enumerate(calls)
    )
    reason: FinishReason = finish_reason or ("tool_calls" if tool_calls else "stop")
    usage_value = Usage(*usage) if isinstance(usage, tuple) else usage
    return CompletionResponse(content, tool_calls, reason, usage_value)


class ScriptedLlmClient:
    """In-process :class:`~mana_ai.planner.types.LlmClient` answering from a script.

    A step is a :class:`CompletionResponse`, an exception to raise, or a callable building either
    from the request. A request with the script exhausted raises ``AssertionError`` and makes
    :meth:`assert_complete` fail.
    """

    def __init__(
        self,
        steps: Iterable[
            CompletionResponse | Exception | Callable[[ScriptedRequest], CompletionResponse]
        ] = (),
    ) -> None:
        self._steps = deque(steps)
        self.requests: list[ScriptedRequest] = []
        self.unexpected = 0

    def add(
        self, step: CompletionResponse | Exception | Callable[[ScriptedRequest], CompletionResponse]
    ) -> Self:
        self._steps.append(step)
        return self

    async def complete(
        self, messages: list[ChatMessage], *, tools_json: bytes, model: str, temperature: float = 0.3
    ) -> CompletionResponse:
        request = ScriptedRequest(list(messages), tools_json, model, temperature)
        self.requests.append(request)
        if not self._steps:
            self.unexpected += 1
            raise AssertionError("scripted LLM: request " + str(len(self.requests)) + " has no scripted step")
        step = self._steps.popleft()
        if isinstance(step, Exception):
            raise step
        if isinstance(step, CompletionResponse):
            return step
        return step(request)

    def assert_complete(self) -> None:
        if self._steps or self.unexpected:
            raise AssertionError(
                "scripted LLM: "
                + str(len(self._steps))
                + " step(s) not consumed, "
                + str(self.unexpected)
                + " unexpected request(s)"
            )


# -- standalone ---------------------------------------------------------------------------------------


async def serve(
    *,
    host: str,
    port: int,
    latency_ms: float,
    faults: float,
    seed: int,
    tool_name: str,
    max_rpm: float | None = None,
) -> None:
    """Run the default conversation responder until SIGINT/SIGTERM."""
    responder = with_faults(conversation_responder(tool_name=tool_name), probability=faults, seed=seed)
    server = FakeLlmServer(
        default=responder,
        latency_s=latency_ms / 1000.0,
        record=False,
        host=host,
        port=port,
        max_rpm=max_rpm,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print("FAKE_LLM_URL=" + server.url, flush=True)
        await stop.wait()
        # For benchmarks: what the server saw (the enforced limit's 429s among them).
        stats: dict[str, float] = {"requests": server.request_count, "rate_limited": server.rate_limited}
        if server.accepted_at:
            stats["accepted_span_s"] = server.accepted_at[-1] - server.accepted_at[0]
            stats["accepted"] = len(server.accepted_at)
        print("FAKE_LLM_STATS=" + orjson.dumps(stats).decode(), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mana_ai.testing.fake_llm", description="Standalone fake OpenAI-compatible LLM server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every response")
    parser.add_argument("--faults", type=float, default=0.0, help="probability of an injected 500")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    parser.add_argument("--tool-name", default="list_things", help="tool called in the first turn")
    parser.add_argument("--max-rpm", type=float, default=None, help="enforce a requests/min limit (429s)")
    args = parser.parse_args(argv)
    asyncio.run(
        serve(
            host=args.host,
            port=args.port,
            latency_ms=args.latency_ms,
            faults=args.faults,
            seed=args.seed,
            tool_name=args.tool_name,
            max_rpm=args.max_rpm,
        )
    )


if __name__ == "__main__":
    main()
