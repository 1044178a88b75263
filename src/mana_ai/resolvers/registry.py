"""Input resolvers: turn a mission's linked inputs into prompt text (SPEC §7).

A resolver is any async callable ``(ref, ctx) → ResolvedInput | None``. A :class:`ResolverRegistry` maps a
mission input's ``module`` to one; :meth:`ResolverRegistry.resolve_all` runs them concurrently and returns
the non-empty results in the order of the refs. An unknown module is skipped, and a resolver that raises is
logged and skipped: one odd input never costs the mission its plan.

Registries are plain objects (no module-level mutable registry): :func:`default_registry` builds the one
the runner uses, and tests build their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.privacy.audit import AuditEntry, AuditLog, AuditStatus
from mana_ai.privacy.grant_context import GrantContext

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY: Final = 8
"""Resolvers of one mission running at once (each holds a pooled connection for a moment)."""


@dataclass(frozen=True, slots=True)
class InputRef:
    """A mission input reference ``{module, table, id}`` (SPEC §6.1)."""

    module: str
    table: str
    id: str

    @property
    def qualified(self) -> str:
        """``"<table>:<id>"``, the form grants list."""
        return self.table + ":" + self.id

    @classmethod
    def from_json(cls, obj: Any) -> InputRef | None:
        """Parse one entry of ``mission.inputs``; ``None`` for anything that is not three non-empty strings."""
        if not isinstance(obj, Mapping):
            return None
        module, table, record_id = obj.get("module"), obj.get("table"), obj.get("id")
        if not (isinstance(module, str) and isinstance(table, str) and isinstance(record_id, str)):
            return None
        if not (module and table and record_id):
            return None
        return cls(module, table, record_id)


@dataclass(frozen=True, slots=True)
class ResolverContext:
    """Everything a resolver may use for one mission's planning."""

    db: Database
    metrics: Metrics
    audit: AuditLog
    user_id: str
    mission_id: str
    iteration_id: str | None
    grant: GrantContext | None
    """The unwrapped grant, ``None`` when the mission has none (or it could not be used)."""

    async def record_audit(self, ref: InputRef, status: AuditStatus, reason: str | None = None) -> None:
        """Best-effort audit row for ``ref`` in this mission and iteration."""
        await self.audit.record(
            AuditEntry(self.user_id, self.mission_id, self.iteration_id, ref.table, ref.id, status, reason)
        )


class Resolver(Protocol):
    """Resolves one input reference, or returns ``None`` when there is nothing (allowed) to show."""

    async def __call__(self, ref: InputRef, ctx: ResolverContext) -> ResolvedInput | None: ...


class ResolverRegistry:
    """``module → resolver``."""

    def __init__(self, resolvers: Mapping[str, Resolver] | None = None) -> None:
        self._resolvers: dict[str, Resolver] = dict(resolvers or {})

    def register(self, module: str, resolver: Resolver) -> None:
        """Add or replace the resolver of ``module``."""
        self._resolvers[module] = resolver

    def unregister(self, module: str) -> None:
        """Remove the resolver of ``module`` (no error when there is none)."""
        self._resolvers.pop(module, None)

    def get(self, module: str) -> Resolver | None:
        return self._resolvers.get(module)

    def modules(self) -> list[str]:
        return sorted(self._resolvers)

    async def resolve_all(
        self, refs: Iterable[InputRef], ctx: ResolverContext, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> list[ResolvedInput]:
        """Resolve every ref concurrently; results keep the order of ``refs``.

        Unknown modules and ``None`` results are left out; a resolver that raises is logged and left out.
        """
        refs = list(refs)
        gate = asyncio.Semaphore(max(concurrency, 1))

        async def one(ref: InputRef) -> ResolvedInput | None:
            resolver = self._resolvers.get(ref.module)
            if resolver is None:
                logger.debug(
                    "no resolver for input module",
                    extra={"action": "resolvers.unknown_module", "input_module": ref.module[:64]},
                )
                return None
            async with gate:
                try:
                    return await resolver(ref, ctx)
                except Exception:
                    logger.warning(
                        "input resolver failed",
                        exc_info=True,
                        extra={
                            "action": "resolvers.failed",
                            "input_module": ref.module,
                            "table": ref.table,
                            "mission_id": ctx.mission_id,
                        },
                    )
                    return None

        results = await asyncio.gather(*(one(ref) for ref in refs))
        return [result for result in results if result is not None]


def parse_refs(inputs: Sequence[Any]) -> list[InputRef]:
    """The usable input references of a mission (malformed entries are dropped)."""
    return [ref for ref in (InputRef.from_json(item) for item in inputs) if ref is not None]


def default_registry() -> ResolverRegistry:
    """The built-in resolvers: plaintext ``goals`` and the encrypted modules of SPEC §7."""
    from mana_ai.resolvers.encrypted import builtin_encrypted_resolvers
    from mana_ai.resolvers.goals import GoalsResolver

    registry = ResolverRegistry(builtin_encrypted_resolvers())
    registry.register("goals", GoalsResolver())
    return registry
