"""The runner's privacy steps: the mission's own text and its linked inputs, decrypted under its grant.

:func:`build_privacy_steps` returns the two callables the runner context takes:

* the **text step** (``RunnerContext.text_step``) runs after the pre-steps. If the mission has a grant it
  unwraps it once for this planning (failure → ``mana_ai_grant_skips_total{reason}`` and a warning without
  secrets; the mission is planned without encrypted inputs) and, when the mission's title, objective or
  concept are encrypted, decrypts them through the grant's re-sealed mission copy (audited like any record,
  table ``aiMissions``). The decrypted text goes to the prompt, and into ``ctx.state[MISSION_TEXT_KEY]`` for
  later input steps that may use it (research deliberately reads only plaintext mission fields today). The
  write-back keeps using the stored mission, so no plaintext is written to the sync log;
* the **resolver step** (an ``InputStep``) resolves ``mission.inputs`` through the resolver registry with
  the same unwrapped grant, then drops it.

The unwrapped grant is kept in ``ctx.state`` (the scratch space of this one planning run, shared by its
steps) and removed by the resolver step; the context itself is discarded when planning ends. So the key
never outlives the mission's planning and is never shared between missions or ticks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from mana_ai.crypto.aead import is_encrypted, js_json_stringify
from mana_ai.crypto.grants import load_private_key
from mana_ai.db.connector import Database
from mana_ai.metrics import Metrics
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.privacy.audit import AuditEntry, AuditLog, AuditStatus
from mana_ai.privacy.grant_context import GrantContext, GrantSkipped, open_grant
from mana_ai.privacy.grant_store import get_copy
from mana_ai.privacy.reseal import (
    AGENT_TABLE,
    MISSION_TABLE,
    MISSION_TEXT_FIELDS,
    STALE_REASON,
    Opened,
    OpenFailed,
    open_copy,
)
from mana_ai.resolvers.registry import ResolverContext, ResolverRegistry, default_registry, parse_refs
from mana_ai.runner.context import InputContext, InputStep, MissionText, TextStep
from mana_ai.runner.pipeline import ENCRYPTED_PLACEHOLDER
from mana_ai.settings import Settings
from mana_ai.synclog.lww import FIELD_META_KEY
from mana_ai.timefmt import utcnow

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

GRANT_STATE_KEY: Final = "mana_ai.privacy.grant"
"""``InputContext.state`` key of the unwrapped grant (present only between the text and resolver steps)."""
MISSION_TEXT_KEY: Final = "mana_ai.privacy.mission_text"
"""``InputContext.state`` key of the decrypted :class:`MissionText` (set only when something was decrypted)."""


class PrivacySteps:
    """Holds the runner's private key and the grants of the plannings in progress.

    Calling the object is the resolver input step; :meth:`text_step` is the text step.
    """

    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        private_key: rsa.RSAPrivateKey | None,
        registry: ResolverRegistry | None = None,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.audit = AuditLog(db)
        self.registry = registry or default_registry()
        self._private_key = private_key
        self._clock = clock

    # --- the grant of one planning ------------------------------------------------------------------

    async def _grant_for(self, ctx: InputContext) -> GrantContext | None:
        if GRANT_STATE_KEY in ctx.state:
            cached = ctx.state[GRANT_STATE_KEY]
            return cached if isinstance(cached, GrantContext) else None
        mission = ctx.mission
        opened = open_grant(mission.id, mission.grant, self._private_key, now=self._clock())
        grant: GrantContext | None = None
        if isinstance(opened, GrantSkipped):
            self.metrics.grant_skips.labels(opened.reason).inc()
            logger.warning(
                "mission grant not usable; planning without encrypted inputs",
                extra={
                    "action": "privacy.grant_skipped",
                    "mission_id": mission.id,
                    "user_id": mission.user_id,
                    "reason": opened.reason,
                },
            )
        else:
            grant = opened
        # Cached for this planning run only (also a skip, so it is counted once): the resolver step pops it.
        ctx.state[GRANT_STATE_KEY] = grant
        return grant

    # --- the mission's own text ---------------------------------------------------------------------

    async def text_step(self, ctx: InputContext) -> MissionText | None:
        """Decrypted title/objective/concept, or ``None`` to keep the pipeline's defaults. Never raises."""
        try:
            return await self._mission_text(ctx)
        except Exception:
            logger.warning(
                "mission text could not be decrypted",
                exc_info=True,
                extra={"action": "privacy.text_failed", "mission_id": ctx.mission.id},
            )
            return None

    async def _mission_text(self, ctx: InputContext) -> MissionText | None:
        mission, agent = ctx.mission, ctx.agent
        record = mission.record
        source = {name: record.get(name) for name in MISSION_TEXT_FIELDS if isinstance(record.get(name), str)}
        persona: dict[str, Any] = {}
        if agent is not None:
            persona = {"systemPrompt": agent.system_prompt, "memory": agent.memory}
            persona = {k: v for k, v in persona.items() if isinstance(v, str)}
        mission_encrypted = any(is_encrypted(value) for value in source.values())
        agent_encrypted = any(is_encrypted(value) for value in persona.values())
        if not mission_encrypted and not agent_encrypted:
            return None
        grant = await self._grant_for(ctx)
        if grant is None:
            return None
        meta = record.get(FIELD_META_KEY)
        values: dict[str, Any] = {}
        if mission_encrypted:
            opened = await self._open(ctx, grant, MISSION_TABLE, mission.id, source, meta)
            if opened is not None:
                values.update(opened.record)
        if agent_encrypted and agent is not None:
            opened = await self._open(ctx, grant, AGENT_TABLE, agent.id, persona, agent.field_meta)
            if opened is not None:
                values.update({"persona:" + k: v for k, v in opened.record.items()})
        if not values:
            return None  # nothing could be opened: the pipeline's placeholders stay
        text = MissionText(
            title=_visible(values.get("title"), mission.title),
            objective=_visible(values.get("objective"), mission.objective),
            concept=_visible(values.get("conceptMarkdown"), mission.concept),
            persona=_persona(values, "systemPrompt", persona),
            memory=_persona(values, "memory", persona),
        )
        ctx.state[MISSION_TEXT_KEY] = text
        return text

    async def _open(
        self,
        ctx: InputContext,
        grant: GrantContext,
        table: str,
        record_id: str,
        source: Mapping[str, Any],
        meta: Any,
    ) -> Opened | None:
        """Open the copy of the mission's text or the agent's persona (audited like any record)."""
        mission = ctx.mission
        async with self.db.with_user(mission.user_id) as conn:
            copy = await get_copy(conn, mission.user_id, mission.id, grant.grant_id, table, record_id)
        opened = open_copy(
            mission_id=mission.id,
            table=table,
            record_id=record_id,
            source=source,
            source_field_meta=meta if isinstance(meta, Mapping) else {},
            copy=copy,
            key=grant.aead,
        )
        if isinstance(opened, OpenFailed):
            logger.warning(
                "mission text could not be decrypted",
                extra={
                    "action": "privacy.decrypt_failed",
                    "mission_id": mission.id,
                    "table": table,
                    "reason": opened.reason,
                },
            )
            await self._audit(ctx, table, record_id, "failed", opened.reason)
            return None
        if opened.decrypted:
            self.metrics.decrypts.labels(table).inc(len(opened.decrypted))
        await self._audit(ctx, table, record_id, "ok", STALE_REASON if opened.stale else None)
        return opened

    async def _audit(
        self, ctx: InputContext, table: str, record_id: str, status: AuditStatus, reason: str | None
    ) -> None:
        mission = ctx.mission
        await self.audit.record(
            AuditEntry(mission.user_id, mission.id, ctx.iteration_id, table, record_id, status, reason)
        )

    # --- linked inputs ------------------------------------------------------------------------------

    async def __call__(self, ctx: InputContext) -> Sequence[ResolvedInput]:
        """Resolve the mission's inputs under its grant (if any), then drop the grant."""
        try:
            refs = parse_refs(ctx.mission.inputs)
            if not refs:
                return []
            mission = ctx.mission
            rctx = ResolverContext(
                db=self.db,
                metrics=self.metrics,
                audit=self.audit,
                user_id=mission.user_id,
                mission_id=mission.id,
                iteration_id=ctx.iteration_id,
                grant=await self._grant_for(ctx),
            )
            return await self.registry.resolve_all(refs, rctx)
        finally:
            ctx.state.pop(GRANT_STATE_KEY, None)


def _visible(value: Any, stored: str) -> str:
    """The decrypted value as text; the placeholder while it is still (or only) ciphertext."""
    if value is None:
        return ENCRYPTED_PLACEHOLDER if is_encrypted(stored) else stored
    text = value if isinstance(value, str) else js_json_stringify(value)
    return ENCRYPTED_PLACEHOLDER if is_encrypted(text) else text


def _persona(values: Mapping[str, Any], name: str, source: Mapping[str, Any]) -> str | None:
    """The agent's decrypted persona field; ``None`` keeps the stored value (the prompt omits ciphertext)."""
    value = values.get("persona:" + name)
    if value is None:
        return None
    text = value if isinstance(value, str) else js_json_stringify(value)
    return None if is_encrypted(text) or name not in source else text


def build_privacy_steps(
    settings: Settings, db: Database, metrics: Metrics, *, registry: ResolverRegistry | None = None
) -> tuple[TextStep, InputStep]:
    """The runner's ``text_step`` and resolver input step.

    Args:
        settings: reads the runner's private key (``MANA_AI_PRIVATE_KEY_PEM`` / ``_FILE``).
        db: the database (the service's plain role is enough: every read and write is user-scoped).
        metrics: where decrypts, scope violations and grant skips are counted.
        registry: resolvers to use (default: :func:`~mana_ai.resolvers.registry.default_registry`).

    Raises:
        ConfigError: ``MANA_AI_PRIVATE_KEY_FILE`` is set but cannot be read.
    """
    text = settings.private_key_text()
    private_key = load_private_key(text)
    if text and private_key is None:
        logger.warning(
            "MANA_AI_PRIVATE_KEY_PEM is not a PKCS#8 RSA private key; mission grants are disabled",
            extra={"action": "privacy.key_invalid"},
        )
    steps = PrivacySteps(db, metrics, private_key, registry)
    return steps.text_step, steps
