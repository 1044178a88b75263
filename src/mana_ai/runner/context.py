"""What the per-mission pipeline needs, passed explicitly (no module globals)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mana_ai.db.connector import Database
from mana_ai.logs import payloads_enabled
from mana_ai.metrics import Metrics
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.planner.types import ChatMessage, CompletionResponse, LlmClient
from mana_ai.runner.budget_gauge import BudgetGauges
from mana_ai.settings import Settings
from mana_ai.synclog.records import ServerAgent, ServerMission

logger = logging.getLogger(__name__)


@dataclass
class InputContext:
    """Everything an input step (resolvers, research) sees about the mission being planned."""

    mission: ServerMission
    agent: ServerAgent | None
    iteration_id: str
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space the steps of one planning run share (the research pre-step hands its result on here)."""


class InputStep(Protocol):
    """A step that contributes linked inputs before planning (resolvers, research).

    It returns the inputs to add, or raises :class:`ResearchPending` to end this run without a plan.
    It must not raise anything else for expected failures: it logs and counts them itself.
    """

    async def __call__(self, ctx: InputContext) -> Sequence[ResolvedInput]: ...


class ResearchPending(Exception):
    """A deep-research job is still running; the mission is released and tried again next tick."""


@dataclass
class MissionText:
    """The mission's own text as the planner may see it (decrypted under a grant, or placeholders)."""

    title: str
    objective: str
    concept: str
    persona: str | None = None
    """The agent's ``systemPrompt`` decrypted under the grant (``None``: use the stored value)."""
    memory: str | None = None
    """The agent's ``memory`` decrypted under the grant (``None``: use the stored value)."""


TextStep = Callable[[InputContext], Awaitable[MissionText | None]]

PreStep = Callable[[InputContext], Awaitable[None]]
"""Runs before the text step and the input steps; raises :class:`ResearchPending` to skip them all (W14)."""


class TimedLlm:
    """An LlmClient wrapper that observes every request in ``planner_request_duration_seconds`` (W18)."""

    def __init__(self, inner: LlmClient, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def complete(
        self, messages: list[ChatMessage], *, tools_json: bytes, model: str, temperature: float = 0.3
    ) -> CompletionResponse:
        start = time.perf_counter()
        try:
            response = await self.inner.complete(
                messages, tools_json=tools_json, model=model, temperature=temperature
            )
        finally:
            self.metrics.planner_request_duration.observe(time.perf_counter() - start)
        if payloads_enabled():  # MANA_AI_LOG_PAYLOADS=true only: prompts may hold decrypted user content
            logger.debug(
                "LLM exchange",
                extra={
                    "action": "llm.exchange",
                    "model": model,
                    "messages": messages,
                    "content": response.content,
                    "tool_calls": [(c.name, c.raw_arguments) for c in response.tool_calls],
                },
            )
        return response


@dataclass
class RunnerContext:
    settings: Settings
    db: Database
    llm: LlmClient
    metrics: Metrics
    owner: str
    """Unique name of this process, stored on the runs it claims."""
    pre_steps: list[PreStep] = field(default_factory=list)
    input_steps: list[InputStep] = field(default_factory=list)
    text_step: TextStep | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    budget_gauges: BudgetGauges = field(init=False)
    """The agents this process shows on ``mana_ai_agent_budget_ratio``, kept current by the heartbeat."""

    def __post_init__(self) -> None:
        self.budget_gauges = BudgetGauges(self.metrics.agent_budget_ratio)
