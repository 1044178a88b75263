"""``mana_ai_agent_budget_ratio`` kept current while an agent does not run.

The gauge is set at each claim and after each run. An agent that stopped running (paused, archived, its
missions done or deleted) kept its last value for ever, so an agent seen at 85 % kept ``ManaAIAgentBudgetHigh``
firing long after its usage had left the 24 h window. Each process now re-reads the usage of the agents it has
shown (:meth:`BudgetGauges.update`, from the lease heartbeat) and lets go of an agent once its window is
empty, the gauge left at 0. It divides by the cap the agent has now (read with the usage): a cap raised or
removed since the process last ran the agent counts at once, and processes that showed the agent under
different caps do not overwrite each other's value with a stale one.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Gauge

AgentKey = tuple[str, str]
"""(user id, agent id)."""


class BudgetGauges:
    """The agents this process has shown on the gauge, with the daily cap each was shown against."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._caps: dict[AgentKey, int] = {}

    def show(self, user_id: str, agent_id: str, used: int, cap: int) -> None:
        """Set the agent's ratio (``cap`` > 0) and keep it current from now on."""
        self._caps[(user_id, agent_id)] = cap
        self._gauge.labels(agent_id).set(used / cap)

    def shown(self) -> list[AgentKey]:
        return list(self._caps)

    def update(self, usage: Mapping[AgentKey, tuple[int, int | None]]) -> None:
        """Set every shown agent from ``usage`` (its tokens of the last 24 h and its daily cap now; missing:
        none used, the cap unchanged). An agent whose cap was removed is let go, the gauge left at 0."""
        for key, cap in list(self._caps.items()):
            used, now_cap = usage.get(key, (0, cap))
            if now_cap is None or now_cap <= 0:
                self._gauge.labels(key[1]).set(0)
                del self._caps[key]
                continue
            self._caps[key] = now_cap
            self._gauge.labels(key[1]).set(used / now_cap)
            if used <= 0:
                del self._caps[key]
