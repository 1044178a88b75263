"""Types shared by the planner loop, its LLM client, reminders and the compactor (SPEC §6.9, §10).

Chat messages are plain dicts in the OpenAI wire format (``role``, ``content``, ``tool_calls``,
``tool_call_id``): the loop builds them once and the client serialises them as they are, with no
conversion step on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ChatMessage = dict[str, Any]
"""``{"role": "system"|"user"|"assistant"|"tool", "content": str|None, "tool_calls"?: [...],
"tool_call_id"?: str}``"""

FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]
Severity = Literal["info", "warn", "escalate"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as the model sent it.

    ``arguments`` is the parsed JSON object, or ``None`` when ``raw_arguments`` was not a JSON object
    (the loop reports that back to the model instead of recording ``{}`` as the original did).
    """

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ToolResult:
    success: bool
    message: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class CompletionResponse:
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ExecutedCall:
    round: int
    call: ToolCall
    result: ToolResult


@dataclass(frozen=True, slots=True)
class LoopState:
    """What a reminder producer sees at the start of a round (SPEC §6.9)."""

    round: int
    """1-based number of the round about to run."""
    tool_call_count: int
    """Tool calls executed in earlier rounds."""
    usage: Usage
    """Usage accumulated before this round."""
    last_call: ExecutedCall | None
    recent_calls: tuple[ExecutedCall, ...]
    """The last five executed calls, oldest first."""
    compactions_done: int


@dataclass(frozen=True, slots=True)
class Reminder:
    producer: str
    severity: Severity
    text: str


ReminderChannel = Callable[[LoopState], list[Reminder]]


@dataclass(frozen=True, slots=True)
class CompactResult:
    messages: list[ChatMessage]
    compacted_turns: int
    summary: str = ""
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Compactor:
    """One-shot context compaction (SPEC §13)."""

    max_context_tokens: int
    compact: Callable[[list[ChatMessage]], Awaitable[CompactResult]]
    threshold: float = 0.92


class LlmClient(Protocol):
    """Any OpenAI-compatible chat-completions endpoint."""

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        tools_json: bytes,
        model: str,
        temperature: float = 0.3,
    ) -> CompletionResponse:
        """Run one chat completion.

        Args:
            messages: the conversation in OpenAI wire format.
            tools_json: the ``tools`` array already serialised as JSON (``b"[]"`` for none); it is
                spliced into the request body as it is, so a tool set is encoded once, not per request.
            model: model id.
            temperature: sampling temperature.

        Raises:
            ProviderError: the provider failed (after the client's own retries).
        """
        ...


@dataclass(frozen=True, slots=True)
class StopInfo:
    reason: str
    detail: str = ""


@dataclass
class PlannerLoopResult:
    rounds: int
    executed_calls: list[ExecutedCall]
    summary: str | None
    stop_reason: str
    messages: list[ChatMessage]
    usage: Usage
    reminders: list[Reminder] = field(default_factory=list)
    """Every reminder emitted during the run (for the ``reminders_emitted_total`` metric)."""
    compactions: list[CompactResult] = field(default_factory=list)
    """Every compaction that folded at least one turn."""
    error: Exception | None = None
    """The exception that ended the run when ``stop_reason == "llm-error"``; the usage before it is kept."""
