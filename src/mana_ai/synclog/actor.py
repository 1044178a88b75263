"""Actors stamped on sync rows (SPEC §6.6) and the origin derived from them."""

from __future__ import annotations

from typing import Any

from mana_ai.synclog.records import DEFAULT_AGENT_ID, DEFAULT_AGENT_NAME

SYSTEM_DISPLAY_NAMES = {
    "system:projection": "Projektion",
    "system:rule": "Regel",
    "system:migration": "Migration",
    "system:stream": "Event-Stream",
    "system:mission-runner": "Mission-Runner",
    "system:bootstrap": "Bootstrap",
}


def user_actor(user_id: str, display_name: str = "Du") -> dict[str, Any]:
    return {"kind": "user", "principalId": user_id, "displayName": display_name}


def ai_actor(
    *, agent_id: str | None, agent_name: str | None, mission_id: str, iteration_id: str, rationale: str
) -> dict[str, Any]:
    """The actor of a server write-back (SPEC §11): the owning agent, else the legacy default agent."""
    return {
        "kind": "ai",
        "principalId": agent_id or DEFAULT_AGENT_ID,
        "displayName": agent_name if agent_id and agent_name else DEFAULT_AGENT_NAME,
        "missionId": mission_id,
        "iterationId": iteration_id,
        "rationale": rationale,
    }


def system_actor(principal_id: str = "system:mission-runner") -> dict[str, Any]:
    return {
        "kind": "system",
        "principalId": principal_id,
        "displayName": SYSTEM_DISPLAY_NAMES.get(principal_id, principal_id),
    }


def origin_of(actor: dict[str, Any]) -> str:
    kind = actor.get("kind")
    if kind == "ai":
        return "agent"
    if kind == "system":
        return "migration" if actor.get("principalId") == "system:migration" else "system"
    return "user"
