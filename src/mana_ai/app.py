"""The composition root: one object that owns every long-lived resource of a process.

The CLI and the HTTP lifespan both go through :class:`App`; nothing else creates pools, clients or loops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.db.embedded import EmbeddedPostgres, start_embedded
from mana_ai.db.migrate import check_current, migrate
from mana_ai.metrics import Metrics
from mana_ai.planner.llm_client import OpenAICompatClient
from mana_ai.privacy.steps import build_privacy_steps
from mana_ai.research.step import ResearchStep
from mana_ai.runner.context import RunnerContext, TimedLlm
from mana_ai.runner.limits import AdaptiveLimit, ClusterPacer, PacedLlm
from mana_ai.runner.scheduling import heartbeat_loop
from mana_ai.runner.store import RunnerStore
from mana_ai.runner.tick import Dispatcher, Ticker
from mana_ai.settings import Settings

logger = logging.getLogger(__name__)


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class App:
    """Everything one mana-ai process needs. Use ``async with App(settings) as app``."""

    def __init__(
        self, settings: Settings, *, run_migrations: bool = True, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.run_migrations = run_migrations
        self.metrics = metrics or Metrics()
        self.owner = process_name()
        self.embedded: EmbeddedPostgres | None = None
        self.database_url: str = ""
        self._db: Database | None = None
        self._llm: OpenAICompatClient | None = None
        self._research: ResearchStep | None = None
        self._ticker: Ticker | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.extra: dict[str, Any] = {}

    # --- lifecycle --------------------------------------------------------------------------------------
    async def open(self) -> App:
        try:
            return await self._open()
        except BaseException:
            # Whatever was opened before the failure (embedded server, pool, clients) is closed again.
            await self.close()
            raise

    async def _open(self) -> App:
        settings = self.settings
        if settings.database_url is not None:
            self.database_url = settings.database_url.get_secret_value()
        else:
            self.embedded = await asyncio.to_thread(start_embedded, settings.data_dir)
            self.database_url = self.embedded.url()
        if self.run_migrations:
            applied = await migrate(self.database_url)
            if applied:
                logger.info("database migrated", extra={"action": "db.migrated", "applied": applied})
        else:
            await check_current(self.database_url)
        self._db = Database(
            self.database_url, min_size=1, max_size=settings.db_pool_size, timeout_s=settings.db_timeout_s
        )
        await self._db.open()
        self._llm = OpenAICompatClient(
            settings.llm_url,
            api_key=settings.llm_credential,
            auth_header=settings.llm_auth_header,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            pool_size=max(settings.max_concurrency * 2, 16),
            max_tokens=settings.llm_max_tokens or None,
        )
        await self._llm.open()
        self._research = ResearchStep.from_settings(settings, self._db, self.metrics)
        await self._research.open()
        text_step, resolver_step = build_privacy_steps(settings, self._db, self.metrics)
        # Provider limits: cluster-wide pacing when MANA_LLM_MAX_RPM/TPM are set, adaptive concurrency always.
        pacer = (
            ClusterPacer(self._db, rpm=settings.llm_max_rpm, tpm=settings.llm_max_tpm, metrics=self.metrics)
            if settings.llm_max_rpm or settings.llm_max_tpm
            else None
        )
        paced = PacedLlm(
            self._llm, pacer, AdaptiveLimit(settings.max_concurrency, self.metrics), self.metrics
        )
        self._llm.on_rate_limit = paced.rate_limited
        ctx = RunnerContext(
            settings=settings,
            db=self._db,
            llm=TimedLlm(paced, self.metrics),
            metrics=self.metrics,
            owner=self.owner,
            input_steps=[resolver_step],
            text_step=text_step,
        )
        # Deep research first (W14: a pending job skips decrypts and resolvers); research input last.
        ctx.pre_steps.append(self._research.pre_step)
        ctx.input_steps.append(self._research)
        store = RunnerStore(self._db, self.owner)
        self._ticker = Ticker(ctx, store, Dispatcher(ctx, store))
        # Claims have a short lease; this keeps the leases of the missions this process plans alive.
        self._heartbeat = asyncio.create_task(heartbeat_loop(self._ticker), name="lease-heartbeat")
        return self

    async def close(self) -> None:
        if self._ticker is not None:
            await self._ticker.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._ticker is not None and self._db is not None:
            try:  # whatever this process still holds goes back now, not when its lease runs out
                await self._ticker.store.release_owned()
            except Exception:
                logger.warning("could not release claims", extra={"action": "runner.release_failed"})
        if self._research is not None:
            await self._research.close()
        if self._llm is not None:
            await self._llm.close()
        if self._db is not None:
            await self._db.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- accessors --------------------------------------------------------------------------------------
    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("App is not open")
        return self._db

    @property
    def ticker(self) -> Ticker:
        if self._ticker is None:
            raise RuntimeError("App is not open")
        return self._ticker

    @property
    def llm(self) -> OpenAICompatClient:
        if self._llm is None:
            raise RuntimeError("App is not open")
        return self._llm
