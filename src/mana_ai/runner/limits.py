"""Provider limits, cluster-wide (issue 15): pace LLM requests under MANA_LLM_MAX_RPM / MANA_LLM_MAX_TPM.

* **Pacing across processes.** Each limit is a generic cell-rate algorithm whose one piece of state (the
  theoretical arrival time) lives in ``mana_ai.llm_pacing``: a request moves it forward by its cost in one
  ``UPDATE … RETURNING`` and waits until it is at most one burst ahead of now. Requests are spread evenly
  at 95 % of the limit, one slot apart with no burst of our own: providers allow about one second's worth of
  burst, and all of it is left to absorb requests that reach the provider bunched up by network or
  event-loop jitter. Tokens may burst half a second's worth. Token costs are estimated from the request
  size and settled with the usage the provider reports.
* **Adaptive concurrency.** A 429 halves this process's concurrent-request limit and pushes the shared
  arrival time past the provider's ``Retry-After`` (every process waits); each run of successes as long as
  the limit raises it by one again (additive increase, multiplicative decrease).

Without either limit set nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from mana_ai.db.connector import Database
from mana_ai.db.queries import q
from mana_ai.errors import ProviderError
from mana_ai.metrics import Metrics
from mana_ai.planner.types import ChatMessage, CompletionResponse, LlmClient

logger = logging.getLogger(__name__)

PACE_FACTOR: Final = 0.95
"""Share of a provider limit we aim for."""
TOKEN_BURST_S: Final = 0.5
"""Our own token burst: half of the second's worth a provider allows."""
BYTES_PER_TOKEN: Final = 4


class AdaptiveLimit:
    """How many LLM requests this process sends at once: halved on a 429, probed upwards after successes."""

    def __init__(self, ceiling: int, metrics: Metrics | None = None) -> None:
        self.ceiling = max(ceiling, 1)
        self.limit = self.ceiling
        self.in_use = 0
        self._successes = 0
        self._changed = asyncio.Condition()
        self._metrics = metrics
        self._publish()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    def rate_limited(self) -> None:
        """A 429: multiplicative decrease."""
        self.limit = max(self.limit // 2, 1)
        self._successes = 0
        self._publish()

    def succeeded(self) -> None:
        """Additive increase: one more slot after ``limit`` successes in a row."""
        if self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._publish()
            # New slot: wake one waiter (outside a coroutine, so schedule it).
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.llm_concurrency.set(self.limit)


class ClusterPacer:
    """Takes slots of the cluster-wide request and token limits from Postgres (see the module docstring)."""

    def __init__(self, db: Database, *, rpm: int | None, tpm: int | None, metrics: Metrics) -> None:
        self.db = db
        self.metrics = metrics
        self.request_cost_s = 60.0 / (rpm * PACE_FACTOR) if rpm else None
        self.token_cost_s = 60.0 / (tpm * PACE_FACTOR) if tpm else None

    async def take(self, estimated_tokens: int) -> None:
        waited = 0.0
        if self.request_cost_s is not None:
            # No burst of our own: the provider's is left for requests that arrive bunched up.
            waited = max(waited, await self._pace("requests", self.request_cost_s, 0.0))
        if self.token_cost_s is not None:
            cost = estimated_tokens * self.token_cost_s
            waited = max(waited, await self._pace("tokens", cost, TOKEN_BURST_S))
        self.metrics.llm_pacing_wait.observe(waited)

    async def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.token_cost_s is None or actual_tokens == estimated_tokens:
            return
        await self.db.execute(
            q("llm_pace_adjust"),
            {
                "name": "tokens",
                "cost_s": (actual_tokens - estimated_tokens) * self.token_cost_s,
                "floor_s": -1e6,
            },
        )

    async def back_off(self, retry_after_s: float) -> None:
        """Nobody in the cluster sends before the provider's Retry-After has passed."""
        for name in ("requests", "tokens"):
            await self.db.execute(
                q("llm_pace_adjust"), {"name": name, "cost_s": 0.0, "floor_s": retry_after_s}
            )

    async def _pace(self, name: str, cost_s: float, burst_s: float) -> float:
        row = await self.db.fetchrow(q("llm_pace"), {"name": name, "cost_s": cost_s, "burst_s": burst_s})
        wait = float(row["wait_s"]) if row else 0.0
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


def estimate_tokens(messages: list[ChatMessage], tools_json: bytes) -> int:
    """A rough prompt size (4 bytes a token) plus room for the answer: enough to pace by, settled later."""
    size = len(tools_json) + sum(len(str(m.get("content") or "")) + 16 for m in messages)
    return size // BYTES_PER_TOKEN + 256


class PacedLlm:
    """An :class:`LlmClient` that keeps to the provider's limits (see the module docstring).

    With a pacer, the HTTP client raises a 429 at once and this class retries it: the retry takes a paced
    slot like any request, after the shared arrival time was moved past ``Retry-After``.
    """

    def __init__(
        self,
        inner: LlmClient,
        pacer: ClusterPacer | None,
        limit: AdaptiveLimit,
        metrics: Metrics,
        *,
        rate_limit_retries: int = 3,
    ) -> None:
        self.inner = inner
        self.pacer = pacer
        self.limit = limit
        self.metrics = metrics
        self.rate_limit_retries = rate_limit_retries
        self._retry_after_s: float | None = None

    def rate_limited(self, retry_after_s: float | None) -> None:
        """Called by the HTTP client for every 429 answer."""
        self.limit.rate_limited()
        self.metrics.llm_rate_limited.inc()
        self._retry_after_s = retry_after_s

    async def complete(
        self, messages: list[ChatMessage], *, tools_json: bytes, model: str, temperature: float = 0.3
    ) -> CompletionResponse:
        estimate = estimate_tokens(messages, tools_json)
        retries = 0
        while True:
            async with self.limit:
                if self.pacer is not None:
                    await self.pacer.take(estimate)
                try:
                    response = await self.inner.complete(
                        messages, tools_json=tools_json, model=model, temperature=temperature
                    )
                except ProviderError as exc:
                    if self.pacer is None or exc.status != 429 or retries >= self.rate_limit_retries:
                        raise
                    retries += 1
                    await self._share_retry_after()
                    continue
            self.limit.succeeded()
            if self.pacer is not None and response.usage is not None:
                try:
                    await self.pacer.settle(estimate, response.usage.total_tokens)
                except Exception:
                    logger.warning("could not settle a token estimate", extra={"action": "llm.settle_failed"})
            return response

    async def _share_retry_after(self) -> None:
        assert self.pacer is not None
        try:
            await self.pacer.back_off(self._retry_after_s or 1.0)
        except Exception:
            logger.warning("could not share a Retry-After", extra={"action": "llm.backoff_failed"})
