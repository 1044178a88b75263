"""Research before planning: deep research across ticks, then shallow research (SPEC §5 steps 4–5, §8).

One :class:`ResearchStep` plugs into the per-mission pipeline twice:

- :meth:`ResearchStep.pre_step` runs before the mission text is decrypted and before any resolver. It drives
  the mission's deep-research job (SPEC §8.2) and raises :class:`~mana_ai.runner.context.ResearchPending`
  while the job runs, so a waiting mission costs one poll per tick and nothing else (W14: the original
  resolved and decrypted every input on every pending tick). Its result is left in
  :attr:`InputContext.state <mana_ai.runner.context.InputContext.state>`.
- The step itself (:meth:`ResearchStep.__call__`) is an ordinary input step placed after the resolvers, so
  research comes after the linked inputs in the prompt as in the original. It contributes the deep answer
  when there is one, else shallow research (SPEC §8.1).

Deep-research state machine (one row of ``mana_ai.mission_research_jobs`` per waiting mission):

=====================================  ==========================================================
situation                              action
=====================================  ==========================================================
no row, deep enabled, trigger matches  submit → save row, ``submitted_total`` → pending
submit fails                           warn, ``research_failures_total{stage="submit"}`` → shallow
row, poll says queued/running          touch row → pending
row, poll fails transiently            ``research_failures_total{stage="poll"}``, touch → pending
row, poll fails otherwise              delete row, ``jobs_failed_total`` → shallow
row, failed/cancelled                  delete row, ``jobs_failed_total`` → shallow
row, still pending past the age limit  delete row, ``jobs_failed_total``, warn → shallow (W14)
row, completed                         delete row, ``jobs_completed_total`` → inject the answer
                                       (an empty answer → shallow)
=====================================  ==========================================================

"Pending" ends the run as ``Skipped("research-pending")``; the runner releases the claim without touching
``nextRunAt`` and counts ``research_jobs_pending_skips_total`` (so this module never does, also not on
submit). A mission that fell back from deep research gets shallow research even when the shallow trigger
alone would not match ("Tiefe Recherche …"): it asked for research.

Research reads only plaintext: a field that is still ciphertext (``enc:1:``) never triggers, and an
encrypted objective means no research at all. The decrypted text is not available before the text step,
and vault-protected text should not leave for a search backend anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mana_ai import tracing
from mana_ai.db.connector import Database
from mana_ai.errors import ConfigError, ResearchError
from mana_ai.logs import payloads_enabled
from mana_ai.metrics import Metrics
from mana_ai.planner.prompts import ResolvedInput
from mana_ai.research.base import HttpClientBase, ResearchClient, is_transient
from mana_ai.research.deep import (
    DEFAULT_MAX_JOB_AGE,
    DEFAULT_PROVIDER,
    JobStatus,
    ManaResearchClient,
    SubmittedJob,
    job_expired,
)
from mana_ai.research.jobs import PendingJob, ResearchJobStore
from mana_ai.research.news import ManaApiResearchClient
from mana_ai.research.render import deep_title, render_deep_markdown, shallow_title, web_research_input
from mana_ai.research.searxng import SearxngResearchClient
from mana_ai.research.triggers import wants_deep_research, wants_research
from mana_ai.runner.context import InputContext, ResearchPending
from mana_ai.settings import Settings
from mana_ai.timefmt import utcnow

logger = logging.getLogger(__name__)

SHALLOW_LANGUAGE = "de"
SHALLOW_LIMIT = 8
"""Articles asked for per mission (the original tick passed 8)."""

_STATE_KEY = "research.deep"
_CIPHERTEXT_PREFIX = "enc:1:"


class DeepResearchClient(Protocol):
    """The deep-research backend (:class:`~mana_ai.research.deep.ManaResearchClient`)."""

    async def submit(self, user_id: str, query: str, provider: str = DEFAULT_PROVIDER) -> SubmittedJob: ...

    async def poll(self, user_id: str, task_id: str) -> JobStatus: ...


@dataclass(frozen=True, slots=True)
class DeepOutcome:
    """What the pre-step hands to the input step of the same run."""

    research_input: ResolvedInput | None
    """The completed answer, rendered."""
    fallback: bool
    """Deep research was wanted but produced nothing: do shallow research instead."""


def _plain(text: str) -> str | None:
    return None if not text or text.startswith(_CIPHERTEXT_PREFIX) else text


class ResearchStep:
    """Deep and shallow research for the per-mission pipeline; see the module docstring.

    Args:
        metrics: Where research outcomes are counted.
        shallow: The shallow backend, or None when shallow research is off.
        deep: The deep-research backend, or None when deep research is off.
        jobs: Pending-job store; required with ``deep``.
        max_job_age: A job pending longer than this is abandoned.
        clock: Current UTC time (the age check); injectable for tests.
    """

    def __init__(
        self,
        *,
        metrics: Metrics,
        shallow: ResearchClient | None = None,
        deep: DeepResearchClient | None = None,
        jobs: ResearchJobStore | None = None,
        max_job_age: dt.timedelta = DEFAULT_MAX_JOB_AGE,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if deep is not None and jobs is None:
            raise ValueError("deep research needs a job store")
        self._metrics = metrics
        self._shallow = shallow
        self._deep = deep
        self._jobs = jobs
        self._max_job_age = max_job_age
        self._clock = clock
        self._http_clients: list[HttpClientBase] = []
        for client in (shallow, deep):
            if isinstance(client, HttpClientBase):
                self._http_clients.append(client)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, metrics: Metrics) -> ResearchStep:
        """Build the step with the backends the settings choose (not opened yet: call :meth:`open`).

        Raises:
            ConfigError: ``searxng`` backend without ``MANA_AI_SEARXNG_URL``.
        """
        shallow: ResearchClient | None = None
        if settings.research_backend == "mana-api":
            token = settings.research_token.get_secret_value() if settings.research_token else None
            shallow = ManaApiResearchClient(
                settings.api_url, auth_header=settings.research_auth_header, token=token
            )
        elif settings.research_backend == "searxng":
            if not settings.searxng_url:
                raise ConfigError("MANA_AI_RESEARCH_BACKEND=searxng needs MANA_AI_SEARXNG_URL")
            shallow = SearxngResearchClient(settings.searxng_url)
        deep: DeepResearchClient | None = None
        jobs: ResearchJobStore | None = None
        if settings.deep_research_enabled:
            deep = ManaResearchClient(
                settings.research_url, service_key=settings.service_key.get_secret_value()
            )
            jobs = ResearchJobStore(db)
        return cls(
            metrics=metrics, shallow=shallow, deep=deep, jobs=jobs, max_job_age=settings.deep_research_max_age
        )

    async def open(self) -> None:
        """Open the HTTP sessions of the backends this step created or was given."""
        for client in self._http_clients:
            await client.open()

    async def close(self) -> None:
        """Close the HTTP sessions (idempotent)."""
        for client in self._http_clients:
            await client.close()

    # --- pre-step: deep research -----------------------------------------------------------------------

    async def pre_step(self, ctx: InputContext) -> None:
        """Drive the mission's deep-research job before anything else of the run happens.

        Raises:
            ResearchPending: a job was just submitted or is still running.
        """
        if self._deep is None or self._jobs is None:
            return
        mission = ctx.mission
        job = await self._jobs.get(mission.user_id, mission.id)
        if job is not None:
            outcome = await self._advance(ctx, self._deep, self._jobs, job)
        else:
            objective = _plain(mission.objective)
            if objective is None or not wants_deep_research(objective, _plain(mission.concept)):
                return
            outcome = await self._submit(ctx, self._deep, self._jobs, objective)
        ctx.state[_STATE_KEY] = outcome

    async def _submit(
        self, ctx: InputContext, deep: DeepResearchClient, jobs: ResearchJobStore, objective: str
    ) -> DeepOutcome:
        mission = ctx.mission
        try:
            with tracing.span("research.deep.submit", _span_attributes(ctx)):
                submitted = await deep.submit(mission.user_id, objective)
        except ResearchError as exc:
            self._research_failed(ctx, exc)
            return DeepOutcome(None, fallback=True)
        await jobs.save(
            mission.user_id, mission.id, task_id=submitted.task_id, provider_id=submitted.provider_id
        )
        self._metrics.research_submitted.labels(submitted.provider_id).inc()
        logger.info(
            "deep research submitted",
            extra={
                "action": "research.deep.submitted",
                "mission_id": mission.id,
                "user_id": mission.user_id,
                "task_id": submitted.task_id,
                "provider": submitted.provider_id,
            },
        )
        raise ResearchPending(submitted.task_id)

    async def _advance(
        self, ctx: InputContext, deep: DeepResearchClient, jobs: ResearchJobStore, job: PendingJob
    ) -> DeepOutcome:
        expired = job_expired(job.submitted_at, self._clock(), self._max_job_age)
        try:
            with tracing.span("research.deep.poll", _span_attributes(ctx)):
                status = await deep.poll(job.user_id, job.task_id)
        except ResearchError as exc:
            self._research_failed(ctx, exc)
            if is_transient(exc) and not expired:
                await jobs.touch(job)
                raise ResearchPending(job.task_id) from exc
            return await self._give_up(jobs, job, "expired" if expired else "poll-" + exc.reason)
        if not status.terminal:
            if expired:
                return await self._give_up(jobs, job, "expired")
            await jobs.touch(job)
            raise ResearchPending(job.task_id)
        if status.status != "completed":
            return await self._give_up(jobs, job, status.status, error=status.error)

        await jobs.delete(job)
        self._metrics.research_completed.labels(job.provider_id).inc()
        answer = (status.answer or "").strip()
        logger.info(
            "deep research completed",
            extra={
                **_job_extra(job),
                "action": "research.deep.completed",
                "citations": len(status.citations),
            },
        )
        if not answer:
            return DeepOutcome(None, fallback=True)
        objective = _plain(ctx.mission.objective) or ""
        content = render_deep_markdown(objective, answer, status.citations)
        return DeepOutcome(web_research_input(deep_title(objective), content), fallback=False)

    async def _give_up(
        self, jobs: ResearchJobStore, job: PendingJob, why: str, *, error: str | None = None
    ) -> DeepOutcome:
        await jobs.delete(job)
        self._metrics.research_failed.labels(job.provider_id).inc()
        extra = {**_job_extra(job), "action": "research.deep.failed", "why": why}
        if why == "expired":
            extra["action"] = "research.deep.abandoned"
            extra["age_s"] = round((self._clock() - job.submitted_at).total_seconds())
        if error and payloads_enabled():
            # mana-research's free text about the job: a provider's message may quote the query (the objective).
            extra["error"] = error[:500]
        logger.warning("deep research gave no answer; falling back to shallow research", extra=extra)
        return DeepOutcome(None, fallback=True)

    # --- input step: the deep answer or shallow research ----------------------------------------------

    async def __call__(self, ctx: InputContext) -> Sequence[ResolvedInput]:
        """The research input of this run: the deep answer, shallow research, or nothing."""
        deep = ctx.state.pop(_STATE_KEY, None)
        if isinstance(deep, DeepOutcome) and deep.research_input is not None:
            return [deep.research_input]
        fallback = isinstance(deep, DeepOutcome) and deep.fallback
        mission = ctx.mission
        objective = _plain(mission.objective)
        if self._shallow is None or objective is None:
            return []
        if not fallback and not wants_research(objective, _plain(mission.concept)):
            return []
        try:
            with tracing.span("research.shallow", _span_attributes(ctx)):
                result = await self._shallow.research(
                    objective, language=SHALLOW_LANGUAGE, limit=SHALLOW_LIMIT
                )
        except ResearchError as exc:
            self._research_failed(ctx, exc)
            return []
        extra = {"mission_id": mission.id, "user_id": mission.user_id}
        if result is None:
            logger.info("research found nothing", extra={**extra, "action": "research.shallow.empty"})
            return []
        logger.info(
            "research done",
            extra={
                **extra,
                "action": "research.shallow.done",
                "feed_count": result.feed_count,
                "article_count": len(result.articles),
            },
        )
        return [web_research_input(shallow_title(objective), result.context_markdown)]

    def _research_failed(self, ctx: InputContext, exc: ResearchError) -> None:
        self._metrics.research_failures.labels(exc.stage, exc.reason).inc()
        # The error text names the stage and the cause only; no URL with credentials, never the token.
        logger.warning(
            "research failed",
            extra={
                "action": "research.failed",
                "mission_id": ctx.mission.id,
                "user_id": ctx.mission.user_id,
                "stage": exc.stage,
                "reason": exc.reason,
                "error": str(exc),
            },
        )


def _span_attributes(ctx: InputContext) -> dict[str, tracing.AttributeValue]:
    return {"mission.id": ctx.mission.id, "user.id": ctx.mission.user_id}


def _job_extra(job: PendingJob) -> dict[str, object]:
    return {
        "mission_id": job.mission_id,
        "user_id": job.user_id,
        "task_id": job.task_id,
        "provider": job.provider_id,
    }
