"""Live progress of planning in the terminal: every LLM round and every finished mission as it happens.

:class:`ProgressLlm` wraps the runner's LLM client and reports each request (round number, tokens, tool
calls by name — never arguments or prompts); the commands ``tick`` and ``missions run`` print those reports
on stderr so a slow local model is visibly at work. The formatting functions are pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from mana_ai.planner.types import ChatMessage, CompletionResponse, LlmClient
from mana_ai.runner.process import MissionResult

FAILED_DECISIONS = frozenset({"failed", "paused-after-failures", "error"})


@dataclass(frozen=True)
class RoundEvent:
    number: int
    """Requests finished so far (this one included)."""
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tools_offered: int = 0
    tool_calls: tuple[str, ...] = ()
    finish_reason: str = ""
    error: str = ""


class ProgressLlm:
    """An ``LlmClient`` that calls ``report`` after every request."""

    def __init__(self, inner: LlmClient, report: Callable[[RoundEvent], None]) -> None:
        self.inner = inner
        self.report = report
        self.requests = 0
        self.tokens = 0

    async def complete(
        self, messages: list[ChatMessage], *, tools_json: bytes, model: str, temperature: float = 0.3
    ) -> CompletionResponse:
        start = time.perf_counter()
        offered = len(orjson.loads(tools_json)) if tools_json else 0
        try:
            response = await self.inner.complete(
                messages, tools_json=tools_json, model=model, temperature=temperature
            )
        except Exception as exc:
            self.requests += 1
            self.report(RoundEvent(self.requests, time.perf_counter() - start, error=str(exc)[:300]))
            raise
        self.requests += 1
        usage = response.usage
        if usage is not None:
            self.tokens += usage.total_tokens
        self.report(
            RoundEvent(
                self.requests,
                time.perf_counter() - start,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
                offered,
                tuple(c.name[:64] for c in response.tool_calls),
                response.finish_reason,
            )
        )
        return response


def describe_round(event: RoundEvent) -> str:
    """``LLM request 2: 3.1 s, 1,204 + 35 tokens, 12 tools offered, calls create_task`` (pure)."""
    head = f"LLM request {event.number}: {event.seconds:.1f} s"
    if event.error:
        return head + ", failed: " + event.error
    parts = [head, f"{event.prompt_tokens:,} prompt + {event.completion_tokens:,} completion tokens"]
    if event.tools_offered:
        parts.append(f"{event.tools_offered} tools offered")
    if event.tool_calls:
        parts.append("calls " + ", ".join(event.tool_calls))
    else:
        parts.append("no tool call (finish_reason " + (event.finish_reason or "?") + ")")
    return ", ".join(parts)


def describe_result(result: MissionResult, done: int, total: int | None = None) -> str:
    """One line per finished mission (pure)."""
    line = f"[{done}{'/' + str(total) if total else ''}] mission {result.mission_id[:8]}: {result.decision}"
    if result.decision == "ran":
        line += f", {result.steps} step(s)"
    if result.tokens:
        line += f", {result.tokens:,} tokens"
    if result.detail:
        line += " — " + result.detail[:200]
    return line


def every_mission_failed(results: list[MissionResult]) -> bool:
    """True when there were missions and none of them got a plan (the ``tick`` exit code; pure)."""
    return bool(results) and all(r.decision in FAILED_DECISIONS for r in results)
