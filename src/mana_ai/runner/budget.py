"""Budgets per LLM round (issue 15): an agent's cap is overshot by at most one round, in total.

A run of an agent with ``maxTokensPerDay`` talks to the LLM through :class:`RoundBudget`. Before each
request (planner rounds and compaction alike) it reserves the request's worst case in Postgres
(``mana_ai.reserve_budget_round``, one round trip that also settles the run's earlier rounds to what they
cost). The round is admitted when it fits next to everything recorded and held by the agent's runs in
flight, or when no other round of the agent is in flight (the one round that may cross the cap); otherwise
:class:`~mana_ai.errors.BudgetExceeded` ends the planner loop with the stop reason ``budget``. The last
round is settled by the run's write-back (its ``token_usage`` row goes in and the run stops counting, in
one transaction); a dead process's reservations stop counting when its lease expires. The argument is in
docs/scheduling.md ("Budgets").

Agents without a cap never get a :class:`RoundBudget`: their rounds cost no extra round trip.
"""

from __future__ import annotations

import logging

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.errors import BudgetExceeded
from mana_ai.planner.llm_client import DEFAULT_MODEL, build_request_body
from mana_ai.planner.types import ChatMessage, CompletionResponse, LlmClient
from mana_ai.scheduler.budget import round_worst_case

logger = logging.getLogger(__name__)


class RoundBudget:
    """The :class:`LlmClient` of one claimed run of a capped agent (see the module docstring)."""

    def __init__(
        self,
        inner: LlmClient,
        db: Database,
        *,
        user_id: str,
        mission_id: str,
        agent_id: str,
        owner: str,
        cap: int,
        max_tokens: int | None,
        context_tokens: int,
    ) -> None:
        self.inner = inner
        self.db = db
        self.user_id = user_id
        self.mission_id = mission_id
        self.agent_id = agent_id
        self.owner = owner
        self.cap = cap
        self.max_tokens = max_tokens if max_tokens and max_tokens > 0 else None
        self.context_tokens = context_tokens
        self.spent = 0
        """What this run's rounds cost so far (the reported usage; a round reported without usage counts as
        its worst case)."""
        self.refused: str | None = None
        """Why the last round was refused (one line), None while none was."""

    async def complete(
        self, messages: list[ChatMessage], *, tools_json: bytes, model: str, temperature: float = 0.3
    ) -> CompletionResponse:
        body = build_request_body(
            messages,
            tools_json=tools_json,
            model=model or DEFAULT_MODEL,
            temperature=temperature,
            max_tokens=self.max_tokens,
        )
        worst = round_worst_case(len(body), self.max_tokens, self.context_tokens)
        row = await self.db.fetchrow(
            q("budget_round"),
            {
                "user_id": self.user_id,
                "mission_id": self.mission_id,
                "agent_id": self.agent_id,
                "owner": self.owner,
                "cap": self.cap,
                "spent": self.spent,
                "worst": worst,
            },
        )
        if row is None or not row["admitted"]:
            self.refused = str(row["detail"]) if row is not None else "no answer from the budget check"
            logger.info(
                "LLM round refused: the agent's daily budget",
                extra={
                    "action": "runner.round_refused",
                    "mission_id": self.mission_id,
                    "agent_id": self.agent_id,
                    "worst": worst,
                    "spent": self.spent,
                },
            )
            raise BudgetExceeded(self.refused)
        response = await self.inner.complete(
            messages, tools_json=tools_json, model=model, temperature=temperature
        )
        self.spent += response.usage.total_tokens if response.usage is not None else worst
        return response
