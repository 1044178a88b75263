"""Pending deep-research jobs in ``mana_ai.mission_research_jobs`` (SPEC §4.4, §8.2).

A row exists exactly while a mission waits for its job: it is written on submit and deleted when the job
completes, fails, is cancelled or is abandoned for its age (W14). The primary key ``(user_id, mission_id)``
allows one job per mission. Updates and deletes name the task id too, so a step that acts on a job it read
earlier never removes a newer job of the same mission.

The table has no row-level security (it lives in the service's own schema), so plain pooled connections
are used.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mana_ai.db.connector import Database
from mana_ai.db.queries import q


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A deep-research job a mission is waiting for."""

    user_id: str
    mission_id: str
    task_id: str
    """mana-research's id of the job."""
    provider_id: str
    """The provider that runs it (the ``provider`` label of the research job metrics)."""
    submitted_at: dt.datetime
    """When the job was submitted (database clock, timezone-aware)."""
    last_polled_at: dt.datetime | None
    """When a poll last found it still running, or None before the first poll."""

    @classmethod
    def from_row(cls, user_id: str, mission_id: str, row: Mapping[str, Any]) -> PendingJob:
        """Build from a ``research_job_get`` / ``research_job_save`` row."""
        return cls(
            user_id=user_id,
            mission_id=mission_id,
            task_id=str(row["task_id"]),
            provider_id=str(row["provider_id"]),
            submitted_at=row["submitted_at"],
            last_polled_at=row["last_polled_at"],
        )

    def _key(self) -> dict[str, str]:
        return {"user_id": self.user_id, "mission_id": self.mission_id, "task_id": self.task_id}


class ResearchJobStore:
    """Reads and writes pending deep-research jobs.

    Args:
        db: The service's database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: str, mission_id: str) -> PendingJob | None:
        """The mission's pending job, or None when it waits for none."""
        row = await self._db.fetchrow(q("research_job_get"), {"user_id": user_id, "mission_id": mission_id})
        return None if row is None else PendingJob.from_row(user_id, mission_id, row)

    async def save(self, user_id: str, mission_id: str, *, task_id: str, provider_id: str) -> PendingJob:
        """Record a job just submitted for the mission, replacing any older row of that mission.

        Returns:
            The stored job (``submitted_at`` is the database's now).
        """
        row = await self._db.fetchrow(
            q("research_job_save"),
            {"user_id": user_id, "mission_id": mission_id, "task_id": task_id, "provider_id": provider_id},
        )
        if row is None:  # INSERT … RETURNING always yields the row
            raise RuntimeError("research_job_save returned no row")
        return PendingJob.from_row(user_id, mission_id, row)

    async def touch(self, job: PendingJob) -> None:
        """Note that a poll found the job still pending."""
        await self._db.execute(q("research_job_touch"), job._key())

    async def delete(self, job: PendingJob) -> bool:
        """Forget the job.

        Returns:
            False when the row was already gone or belongs to a newer job by now.
        """
        return await self._db.execute(q("research_job_delete"), job._key()) > 0
