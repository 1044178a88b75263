"""Typed views of snapshot records: ServerMission and ServerAgent (SPEC §4.5, §6.2, §6.4).

Records come from user devices; every accessor tolerates missing or wrong-typed fields and falls back to
the original's defaults, so one odd record never breaks a tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mana_ai.synclog.lww import FIELD_META_KEY

DEFAULT_AGENT_ID = "legacy:ai-default"
DEFAULT_AGENT_NAME = "Mana"
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
"""Agent limits are passed to Postgres as int4 / int8: a larger one (valid JSON, and as good as unlimited)
is clamped, or the claim of every mission of that agent would fail."""


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _field_meta(record: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = record.get(FIELD_META_KEY)
    return meta if isinstance(meta, Mapping) else {}


@dataclass(frozen=True, slots=True)
class ServerMission:
    id: str
    user_id: str
    title: str
    objective: str
    concept: str
    state: str
    next_run_at: str | None
    inputs: tuple[Mapping[str, Any], ...]
    cadence: Mapping[str, Any] | None
    iterations: tuple[Any, ...]
    grant: Mapping[str, Any] | None
    agent_id: str | None
    record: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_record(cls, user_id: str, record: Mapping[str, Any]) -> ServerMission:
        inputs = record.get("inputs")
        iterations = record.get("iterations")
        cadence = record.get("cadence")
        grant = record.get("grant")
        return cls(
            id=str(record.get("id", "")),
            user_id=user_id,
            title=_str(record.get("title")),
            objective=_str(record.get("objective")),
            concept=_str(record.get("conceptMarkdown")),
            state=_str(record.get("state"), "active"),
            next_run_at=_opt_str(record.get("nextRunAt")),
            inputs=tuple(i for i in inputs if isinstance(i, Mapping)) if isinstance(inputs, list) else (),
            cadence=cadence if isinstance(cadence, Mapping) else None,
            iterations=tuple(iterations) if isinstance(iterations, list) else (),
            grant=grant if isinstance(grant, Mapping) else None,
            agent_id=_opt_str(record.get("agentId")) or None,
            record=record,
        )


@dataclass(frozen=True, slots=True)
class ServerAgent:
    id: str
    user_id: str
    name: str
    role: str
    avatar: str | None
    system_prompt: str | None
    memory: str | None
    policy: Mapping[str, Any] | None
    state: str
    max_concurrent_missions: int
    max_tokens_per_day: int | None
    deleted: bool = False
    field_meta: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    """The snapshot's per-field stamps (``__fieldMeta``): tell a stale sealed copy of the persona."""

    @classmethod
    def from_record(cls, user_id: str, record: Mapping[str, Any], *, deleted: bool = False) -> ServerAgent:
        policy = record.get("policy")
        max_concurrent = record.get("maxConcurrentMissions", 1)
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int | float)
            or max_concurrent < 0
        ):
            max_concurrent = 1
        max_tokens = record.get("maxTokensPerDay")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | float):
            max_tokens = None
        else:
            max_tokens = min(max(max_tokens, -INT8_MAX), INT8_MAX)
        return cls(
            id=str(record.get("id", "")),
            user_id=user_id,
            name=_str(record.get("name"), "Unnamed") or "Unnamed",
            role=_str(record.get("role")),
            avatar=_opt_str(record.get("avatar")),
            system_prompt=_opt_str(record.get("systemPrompt")),
            memory=_opt_str(record.get("memory")),
            policy=policy if isinstance(policy, Mapping) else None,
            state=_str(record.get("state"), "active"),
            max_concurrent_missions=int(min(max_concurrent, INT4_MAX)),
            max_tokens_per_day=int(max_tokens) if max_tokens is not None else None,
            deleted=deleted or bool(record.get("deletedAt")),
            field_meta=_field_meta(record),
        )
