"""Per-agent tool policy (SPEC §16.1, §6.7 ``AiPolicy``).

An agent's policy arrives as user-synced JSON (``{"tools": {name: decision},
"defaultsByModule": {module: decision}, "defaultForAi": decision}``), so nothing here trusts its
shape: a value that is not a mapping, or a decision that is not one of ``auto``/``propose``/
``deny``, counts as absent and resolution falls through to the next level. Nothing raises.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mana_ai.tools.types import PolicyDecision, ToolSchema

__all__ = ["DECISIONS", "filter_tools", "promoted_tools", "resolve_decision"]

DECISIONS: frozenset[str] = frozenset({"auto", "propose", "deny"})


def _decision(value: Any) -> PolicyDecision | None:
    # Unknown strings (typos, future decisions, wrong case) count as absent rather than as "keep":
    # the original kept any truthy value, which let a garbled "deny" silently allow the tool.
    if isinstance(value, str) and value in DECISIONS:
        return value  # type: ignore[return-value]
    return None


def resolve_decision(tool: ToolSchema, policy: Mapping[str, Any] | None) -> PolicyDecision:
    """Resolve what an agent's policy says about one tool.

    Resolution order: ``policy["tools"][tool.name]`` → ``policy["defaultsByModule"][tool.module]``
    → ``policy["defaultForAi"]`` → the tool's catalog ``default_policy``. Malformed levels are
    skipped, but a present, unrecognised entry caps the result at ``propose`` (never ``auto``).

    Args:
        tool: the catalog entry.
        policy: the agent's ``AiPolicy`` JSON, or ``None`` when there is no agent or no policy.

    Returns:
        ``"auto"``, ``"propose"`` or ``"deny"``.
    """
    if not isinstance(policy, Mapping):
        return tool.default_policy
    garbled = False
    for level, key in (("tools", tool.name), ("defaultsByModule", tool.module)):
        table = policy.get(level)
        value = table.get(key) if isinstance(table, Mapping) else None
        decision = _decision(value)
        if decision is not None:
            return decision
        garbled = garbled or value is not None
    decision = _decision(policy.get("defaultForAi"))
    garbled = garbled or (decision is None and policy.get("defaultForAi") is not None)
    decision = decision or tool.default_policy
    # An entry the user did write but that is no decision ("DENY", "deny ") was not meant as "auto": falling
    # through may not make the tool run unreviewed.
    return "propose" if garbled and decision == "auto" else decision


def filter_tools(tools: Iterable[ToolSchema], policy: Mapping[str, Any] | None) -> tuple[ToolSchema, ...]:
    """Drop the tools an agent's policy denies, keeping catalog order.

    ``auto`` and ``propose`` both keep a tool: the server only records plans, the web app decides
    how to apply each step.

    Args:
        tools: candidate tools (usually ``PROPOSABLE``).
        policy: the agent's policy JSON; ``None`` keeps every tool.

    Returns:
        The kept tools.
    """
    if policy is None:
        return tuple(tools)
    return tuple(t for t in tools if resolve_decision(t, policy) != "deny")


def promoted_tools(catalog: Iterable[ToolSchema], policy: Mapping[str, Any] | None) -> tuple[ToolSchema, ...]:
    """``auto`` tools that the agent's policy names one by one as ``propose``.

    The server offers only proposable tools, because it cannot run a tool and a stubbed read would let the
    model believe it saw data. A user who wants an ``auto`` write tool (``log_drink``, ``log_meal`` …) to be
    planned for review can name it in the agent's policy; only an explicit per-tool entry counts, so a module
    default or ``defaultForAi`` never exposes the read tools.
    """
    if not isinstance(policy, Mapping):
        return ()
    named = policy.get("tools")
    if not isinstance(named, Mapping):
        return ()
    return tuple(
        t for t in catalog if t.default_policy == "auto" and _decision(named.get(t.name)) == "propose"
    )
