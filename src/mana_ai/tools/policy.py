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


def _lookup(table: Any, key: str) -> PolicyDecision | None:
    if not isinstance(table, Mapping):
        return None
    return _decision(table.get(key))


def resolve_decision(tool: ToolSchema, policy: Mapping[str, Any] | None) -> PolicyDecision:
    """Resolve what an agent's policy says about one tool.

    Resolution order: ``policy["tools"][tool.name]`` → ``policy["defaultsByModule"][tool.module]``
    → ``policy["defaultForAi"]`` → the tool's catalog ``default_policy``. Malformed levels are
    skipped.

    Args:
        tool: the catalog entry.
        policy: the agent's ``AiPolicy`` JSON, or ``None`` when there is no agent or no policy.

    Returns:
        ``"auto"``, ``"propose"`` or ``"deny"``.
    """
    if not isinstance(policy, Mapping):
        return tool.default_policy
    return (
        _lookup(policy.get("tools"), tool.name)
        or _lookup(policy.get("defaultsByModule"), tool.module)
        or _decision(policy.get("defaultForAi"))
        or tool.default_policy
    )


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
