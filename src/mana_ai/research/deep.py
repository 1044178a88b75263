"""Client for mana-research's asynchronous deep-research jobs (SPEC §8.2).

A job is submitted on one tick and polled on later ticks; the cross-tick state machine (pending rows in
``mana_ai.mission_research_jobs``) lives with the runner. This module gives it:

- :class:`ManaResearchClient` with :meth:`~ManaResearchClient.submit` and :meth:`~ManaResearchClient.poll`,
  which raise :class:`~mana_ai.errors.ResearchError` (stage ``submit`` / ``poll``) instead of returning
  ``null``, so the caller can tell a transient failure (:func:`~mana_ai.research.base.is_transient`) from a
  job mana-research no longer knows (``http_4xx`` on poll).
- :func:`job_expired`, the age limit the original lacked (W14: a job stuck in ``queued``/``running`` kept
  its mission skipped forever).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import quote

from mana_ai.errors import ResearchError
from mana_ai.research.base import (
    DEFAULT_MAX_JSON_BYTES,
    Citation,
    HttpClientBase,
    decode_json_object,
    fetch,
    optional_str,
)

logger = logging.getLogger(__name__)

JOBS_PATH = "/api/v1/internal/research/async"
DEFAULT_PROVIDER = "gemini-deep-research-max"
APP_ID = "mana-ai"

DEFAULT_MAX_JOB_AGE: Final = dt.timedelta(hours=2)
"""A pending job older than this is given up (W14). Deep-research providers finish in minutes to tens of
minutes; two hours leaves room for queueing without blocking a mission for days."""

JobState = Literal["queued", "running", "completed", "failed", "cancelled"]
_JOB_STATES: Final[frozenset[str]] = frozenset({"queued", "running", "completed", "failed", "cancelled"})
_SUBMIT_STATES: Final[frozenset[str]] = frozenset({"queued", "running"})
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """mana-research accepted a job."""

    task_id: str
    status: JobState
    """``queued`` or ``running``."""
    provider_id: str
    cost_credits: float | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """The state of a job as polled."""

    status: JobState
    answer: str | None = None
    """The answer text when ``completed`` (may still be None or empty: the caller treats that as no input)."""
    citations: list[Citation] = field(default_factory=list)
    error: str | None = None
    """mana-research's error description for ``failed`` jobs."""
    provider_id: str | None = None

    @property
    def terminal(self) -> bool:
        """Whether the job is finished (completed, failed or cancelled)."""
        return self.status in TERMINAL_STATES


def job_expired(
    submitted_at: dt.datetime, now: dt.datetime, max_age: dt.timedelta = DEFAULT_MAX_JOB_AGE
) -> bool:
    """Whether a pending job has waited too long and should be abandoned (W14).

    Args:
        submitted_at: When the job was submitted (timezone-aware).
        now: The current time (timezone-aware).
        max_age: The age limit.
    """
    return now - submitted_at > max_age


class ManaResearchClient(HttpClientBase):
    """mana-research's internal async-research API.

    Args:
        base_url: mana-research base URL (``MANA_RESEARCH_URL``).
        service_key: Sent as ``X-Service-Key``; never logged.
        timeout_submit_s: Total timeout of a submit call.
        timeout_poll_s: Total timeout of a poll call.
        max_response_bytes: Size limit of one response body (answers with long reports are a few 100 kB).
    """

    def __init__(
        self,
        base_url: str,
        *,
        service_key: str,
        timeout_submit_s: float = 30,
        timeout_poll_s: float = 15,
        max_response_bytes: int = DEFAULT_MAX_JSON_BYTES,
    ) -> None:
        super().__init__()
        self._base_url = base_url.rstrip("/")
        self._service_key = service_key
        self._timeout_submit_s = timeout_submit_s
        self._timeout_poll_s = timeout_poll_s
        self._max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _headers(self, user_id: str) -> dict[str, str]:
        return {"X-Service-Key": self._service_key, "X-User-Id": user_id, "X-App-Id": APP_ID}

    async def submit(self, user_id: str, query: str, provider: str = DEFAULT_PROVIDER) -> SubmittedJob:
        """Start a deep-research job.

        Args:
            user_id: The mission owner (mana-research bills and scopes by user).
            query: The research question (the mission objective).
            provider: mana-research provider id.

        Returns:
            The accepted job.

        Raises:
            ResearchError: stage ``submit``.
        """
        stage = "submit"
        fetched = await fetch(
            self.session,
            "POST",
            self._base_url + JOBS_PATH,
            stage=stage,
            timeout_s=self._timeout_submit_s,
            json_body={"query": query, "provider": provider},
            headers=self._headers(user_id),
            max_bytes=self._max_response_bytes,
        )
        payload = decode_json_object(stage, fetched.body)
        task_id = optional_str(payload.get("taskId"))
        status = payload.get("status")
        if task_id is None or status not in _SUBMIT_STATES:
            raise ResearchError(f"{stage}: unexpected job {status!r}", stage=stage, reason="bad_response")
        cost = payload.get("costCredits")
        return SubmittedJob(
            task_id=task_id,
            status=cast(JobState, status),
            provider_id=optional_str(payload.get("providerId")) or provider,
            cost_credits=float(cost)
            if isinstance(cost, int | float) and not isinstance(cost, bool)
            else None,
        )

    async def poll(self, user_id: str, task_id: str) -> JobStatus:
        """Read the state of a job.

        Args:
            user_id: The mission owner.
            task_id: The id :meth:`submit` returned.

        Returns:
            The job state, with the answer and citations once completed.

        Raises:
            ResearchError: stage ``poll``; ``http_4xx`` means mana-research does not know the job (give up),
                transient reasons mean "try again later".
        """
        stage = "poll"
        fetched = await fetch(
            self.session,
            "GET",
            f"{self._base_url}{JOBS_PATH}/{quote(task_id, safe='')}",
            stage=stage,
            timeout_s=self._timeout_poll_s,
            headers=self._headers(user_id),
            max_bytes=self._max_response_bytes,
        )
        payload = decode_json_object(stage, fetched.body)
        status = payload.get("status")
        if status not in _JOB_STATES:
            raise ResearchError(f"{stage}: unknown job status {status!r}", stage=stage, reason="bad_response")
        answer, citations = _parse_answer(payload.get("result"))
        return JobStatus(
            status=cast(JobState, status),
            answer=answer,
            citations=citations,
            error=_error_text(payload.get("error")),
            provider_id=optional_str(payload.get("providerId")),
        )


def _parse_answer(result: Any) -> tuple[str | None, list[Citation]]:
    """``result.answer`` is an AgentAnswer ``{answer, citations: [{url, title, snippet?}], ...}``."""
    agent_answer = result.get("answer") if isinstance(result, dict) else None
    if not isinstance(agent_answer, dict):
        return None, []
    citations: list[Citation] = []
    raw_citations = agent_answer.get("citations")
    for raw in raw_citations if isinstance(raw_citations, list) else []:
        url = optional_str(raw.get("url")) if isinstance(raw, dict) else None
        if url is None:
            continue
        citations.append(
            Citation(
                url=url, title=optional_str(raw.get("title")) or url, snippet=optional_str(raw.get("snippet"))
            )
        )
    answer = agent_answer.get("answer")
    return (answer if isinstance(answer, str) else None), citations


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, str):
        return error or None
    if isinstance(error, dict):
        message = optional_str(error.get("message"))
        if message:
            return message
    return str(error)
