"""The planner loop: ask the model, run the tool calls it asks for, repeat (SPEC §10).

Each round classifies the model's reply first (:func:`classify_response`: a :class:`Final` answer or
:class:`RunTools`) and only then acts on it, so the stop rules live in one small pure function.

Differences from the original, all visible in :class:`PlannerLoopResult`:

- a failing LLM call ends the loop with ``stop_reason="llm-error"`` and ``error`` set instead of
  raising, so the usage of the rounds before it (and of a compaction) is not lost (W13);
- compaction usage is added to the result usage (W13);
- ``token_allowance`` cuts the loop off after the round that reaches it (``budget-exhausted``);
- a round the client refuses for the agent's budget (:class:`~mana_ai.errors.BudgetExceeded`, raised before
  anything is sent) ends the loop with ``budget``, keeping the earlier rounds;
- a reply cut off by the token limit (``finish_reason == "length"``) without tool calls ends with
  ``truncated`` rather than passing for a finished plan;
- a tool call whose arguments are not a JSON object is answered with a failure result instead of
  being executed with ``{}``;
- every emitted reminder and every effective compaction is returned for the caller's metrics.

The message history is a plain list of wire-format dicts that only ever grows by appending; each
request gets a shallow copy (plus the transient reminders), never a deep copy, and the tool set is
passed through as the bytes the caller serialised once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from mana_ai import tracing
from mana_ai.errors import BudgetExceeded
from mana_ai.planner.types import (
    ChatMessage,
    Compactor,
    CompactResult,
    CompletionResponse,
    ExecutedCall,
    LlmClient,
    LoopState,
    PlannerLoopResult,
    Reminder,
    ReminderChannel,
    ToolCall,
    ToolResult,
    Usage,
)

logger = logging.getLogger(__name__)

StopReason = Literal[
    "assistant-stop", "no-tool-calls", "max-rounds", "budget-exhausted", "budget", "llm-error", "truncated"
]

PARALLEL_BATCH_SIZE: Final = 10
"""At most this many parallel-safe tool calls run at the same time."""
RECENT_CALLS_WINDOW: Final = 5
DEFAULT_MAX_ROUNDS: Final = 5


@dataclass(frozen=True, slots=True)
class Finish:
    """The model is done (or cannot go on): stop with this summary."""

    summary: str | None
    stop_reason: StopReason


@dataclass(frozen=True, slots=True)
class RunTools:
    """The model asked for tool calls: execute them and run another round."""

    calls: tuple[ToolCall, ...]


NextStep = Finish | RunTools


def classify_response(response: CompletionResponse) -> NextStep:
    """Decide what a model reply means for the loop (pure).

    Args:
        response: the parsed completion.

    Returns:
        :class:`RunTools` when the reply carries tool calls (whatever its finish reason), else a
        :class:`Finish` whose stop reason is ``assistant-stop`` for a regular stop, ``truncated``
        when the reply hit the token limit, and ``no-tool-calls`` otherwise (``tool_calls`` without
        calls, ``content_filter``).
    """
    if response.tool_calls:
        return RunTools(response.tool_calls)
    if response.finish_reason == "stop":
        return Finish(response.content, "assistant-stop")
    if response.finish_reason == "length":
        return Finish(response.content, "truncated")
    return Finish(response.content, "no-tool-calls")


def assistant_message(response: CompletionResponse) -> ChatMessage:
    """The assistant turn in OpenAI wire format; ``tool_calls`` only when there are any.

    ``content`` is always a string: a turn with only tool calls carries ``""``, never ``null``, which
    some servers (llama-cpp-python's) answer with a 500 on the next round.
    """
    message: ChatMessage = {"role": "assistant", "content": response.content or ""}
    if response.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
            for c in response.tool_calls
        ]
    return message


def tool_message(call_id: str, result: ToolResult) -> ChatMessage:
    """The tool turn: compact JSON with keys in the order success, message, data (data only if set)."""
    payload: dict[str, Any] = {"success": result.success, "message": result.message}
    if result.data is not None:
        payload["data"] = result.data
    content = orjson.dumps(payload, default=_json_fallback).decode()
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def reminder_message(reminder: Reminder) -> ChatMessage:
    return {"role": "system", "content": "<reminder>" + reminder.text + "</reminder>"}


def should_compact(usage: Usage, compactor: Compactor) -> bool:
    """SPEC §10 2a: cumulative usage (not the current context size) against the threshold."""
    cap = compactor.max_context_tokens
    total = usage.total_tokens
    return cap > 0 and total > 0 and total / cap >= compactor.threshold


async def run_planner_loop(
    llm: LlmClient,
    *,
    system_prompt: str,
    user_prompt: str,
    tools_json: bytes,
    model: str,
    on_tool_call: Callable[[ToolCall], Awaitable[ToolResult]],
    temperature: float = 0.3,
    prior_messages: Sequence[ChatMessage] = (),
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    reminder_channel: ReminderChannel | None = None,
    is_parallel_safe: Callable[[str], bool] | None = None,
    compactor: Compactor | None = None,
    token_allowance: int | None = None,
) -> PlannerLoopResult:
    """Run the planner conversation until the model stops or a limit is hit (SPEC §10).

    Args:
        llm: the chat-completions client.
        system_prompt: first message of the history.
        user_prompt: last message before the first request (after ``prior_messages``).
        tools_json: the ``tools`` array, serialised once by the caller; passed through unchanged.
        model: model id.
        on_tool_call: executes one tool call. It should report failures as ``success=False``; an
            exception is turned into such a result (and logged) rather than ending the run.
        temperature: sampling temperature.
        prior_messages: history placed between the system and the user prompt.
        max_rounds: hard limit on LLM requests; must be at least 1.
        reminder_channel: called once per round; its reminders are sent with that request only.
        is_parallel_safe: tool-name predicate; a round whose calls are all parallel-safe (and more
            than one) runs them concurrently in batches of :data:`PARALLEL_BATCH_SIZE`.
        compactor: folds the history once when cumulative usage crosses its threshold.
        token_allowance: stop after the round whose accumulated usage reaches this many tokens.

    Returns:
        The result; ``stop_reason`` is one of :data:`StopReason`. ``rounds`` counts LLM requests
        made, including a failed one.

    Raises:
        ValueError: ``max_rounds`` is smaller than 1.
    """
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")
    messages: list[ChatMessage] = [
        {"role": "system", "content": system_prompt},
        *prior_messages,
        {"role": "user", "content": user_prompt},
    ]
    usage = Usage()
    executed: list[ExecutedCall] = []
    reminders: list[Reminder] = []
    compactions: list[CompactResult] = []
    summary: str | None = None
    stop_reason: StopReason = "max-rounds"
    error: Exception | None = None
    rounds = 0

    while rounds < max_rounds:
        rounds += 1

        if compactor is not None and not compactions and should_compact(usage, compactor):
            try:
                compacted = await compactor.compact(messages)
            except BudgetExceeded:
                rounds -= 1  # refused before anything was sent
                stop_reason = "budget"
                break
            except Exception as exc:
                # The compactor talks to the same provider; treat its failure like the model's.
                error, stop_reason = exc, "llm-error"
                _log_llm_error(exc, rounds, model, stage="compact")
                break
            if compacted.usage is not None:
                usage += compacted.usage
            if compacted.compacted_turns > 0:
                messages = list(compacted.messages)
                compactions.append(compacted)

        request = messages.copy()
        if reminder_channel is not None:
            state = LoopState(
                round=rounds,
                tool_call_count=len(executed),
                usage=usage,
                last_call=executed[-1] if executed else None,
                recent_calls=tuple(executed[-RECENT_CALLS_WINDOW:]),
                compactions_done=len(compactions),
            )
            emitted = reminder_channel(state)
            if emitted:
                reminders.extend(emitted)
                request.extend(reminder_message(r) for r in emitted)

        with tracing.span("llm.chat", tracing.llm_request_attributes(model, rounds)) as llm_span:
            try:
                response = await llm.complete(
                    request, tools_json=tools_json, model=model, temperature=temperature
                )
            except BudgetExceeded:
                rounds -= 1
                stop_reason = "budget"
                break
            except Exception as exc:
                tracing.mark_error(llm_span, exc)
                error, stop_reason = exc, "llm-error"
                _log_llm_error(exc, rounds, model, stage="complete")
                break
            tracing.record_llm_response(llm_span, response)

        if response.usage is not None:
            usage += response.usage
        messages.append(assistant_message(response))

        step = classify_response(response)
        if isinstance(step, Finish):
            summary, stop_reason = step.summary, step.stop_reason
            break

        results = await _execute(step.calls, on_tool_call, is_parallel_safe)
        for call, result in zip(step.calls, results, strict=True):
            executed.append(ExecutedCall(rounds, call, result))
            messages.append(tool_message(call.id, result))

        # max-rounds first: when the round limit ends the run anyway, the allowance cut nothing off.
        if rounds >= max_rounds:
            stop_reason = "max-rounds"
            break
        if token_allowance is not None and usage.total_tokens >= token_allowance:
            stop_reason = "budget-exhausted"
            break

    return PlannerLoopResult(
        rounds=rounds,
        executed_calls=executed,
        summary=summary,
        stop_reason=stop_reason,
        messages=messages,
        usage=usage,
        reminders=reminders,
        compactions=compactions,
        error=error,
    )


async def _execute(
    calls: tuple[ToolCall, ...],
    on_tool_call: Callable[[ToolCall], Awaitable[ToolResult]],
    is_parallel_safe: Callable[[str], bool] | None,
) -> list[ToolResult]:
    """Run one round's calls; results come back in the model's order whatever the completion order."""
    parallel = (
        is_parallel_safe is not None and len(calls) > 1 and all(is_parallel_safe(c.name) for c in calls)
    )
    if not parallel:
        return [await _invoke(call, on_tool_call) for call in calls]
    results: list[ToolResult] = []
    for start in range(0, len(calls), PARALLEL_BATCH_SIZE):
        batch = calls[start : start + PARALLEL_BATCH_SIZE]
        results.extend(await asyncio.gather(*(_invoke(call, on_tool_call) for call in batch)))
    return results


async def _invoke(call: ToolCall, on_tool_call: Callable[[ToolCall], Awaitable[ToolResult]]) -> ToolResult:
    if call.arguments is None:
        # The original executed such calls with {}; telling the model lets it correct itself.
        return ToolResult(
            success=False,
            message="Invalid arguments for "
            + call.name
            + ": expected a JSON object, got "
            + _snippet(call.raw_arguments),
        )
    try:
        return await on_tool_call(call)
    except Exception as exc:
        logger.warning(
            "tool call raised instead of returning a failure result",
            exc_info=True,
            extra={"action": "planner.tool_call_raised", "tool": call.name},
        )
        return ToolResult(success=False, message="Tool " + call.name + " failed: " + _describe(exc))


def _log_llm_error(exc: Exception, round_: int, model: str, *, stage: str) -> None:
    logger.warning(
        "planner loop stopped: LLM call failed",
        extra={
            "action": "planner.llm_error",
            "stage": stage,
            "round": round_,
            "model": model,
            "kind": getattr(exc, "kind", type(exc).__name__),
        },
    )


def _describe(exc: Exception) -> str:
    text = str(exc)
    return type(exc).__name__ + (": " + text if text else "")


def _snippet(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _json_fallback(value: object) -> str:
    # Tool data should be JSON already; anything else is shown as text rather than failing the run.
    return str(value)
