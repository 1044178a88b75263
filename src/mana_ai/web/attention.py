"""Missions that need the user's attention: failing or paused, with the reason (pure).

The inbox lists them above the proposals (an empty inbox is no news when every mission fails), and a
mission's page shows its own line. The reason is the last failed iteration's error, which says what the
runner saw ("LLM server (model …) unreachable at …", "paused after 5 failed attempts in a row …"); for a
mission paused without one, its last run's error ("the mission's iterations are too large …").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Attention:
    mission_id: str
    title: str
    state: str
    """``paused`` or ``active``."""
    failures: int
    """Failed server iterations in a row at the end of the history."""
    reason: str
    at: str
    """When the last failed iteration finished (JS ISO), or ``""``."""

    @property
    def label(self) -> str:
        if self.state == "paused":
            return "paused"
        return "failing"


def _iterations(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = record.get("iterations")
    return [i for i in raw if isinstance(i, Mapping)] if isinstance(raw, list) else []


def _reason(iteration: Mapping[str, Any]) -> str:
    details = iteration.get("errorDetails")
    if isinstance(details, Mapping) and isinstance(details.get("message"), str):
        return str(details["message"])
    summary = iteration.get("summary")
    return summary if isinstance(summary, str) else ""


def attention_for(record: Mapping[str, Any], run_error: str | None = None) -> Attention | None:
    """The mission's attention line, or ``None`` when it is active and its last run did not fail.

    ``run_error``: why the mission's last run failed, if it did (``mana_ai.mission_runs``); the reason of a
    paused mission without a failed iteration (the runner paused it without writing one).
    """
    if record.get("deletedAt"):
        return None
    state = str(record.get("state") or "active")
    if state not in ("active", "paused"):
        return None
    failures = 0
    last_failed: Mapping[str, Any] | None = None
    for iteration in reversed(_iterations(record)):
        if iteration.get("overallStatus") != "failed":
            break
        failures += 1
        last_failed = last_failed or iteration
    if state == "active" and not failures:
        return None
    if last_failed is not None:
        reason = _reason(last_failed)
        at = str(last_failed.get("finishedAt") or last_failed.get("startedAt") or "")
    else:
        reason, at = run_error or "paused by you: the runner skips it until you resume it", ""
    title = record.get("title")
    return Attention(
        str(record.get("id", "")), title if isinstance(title, str) else "", state, failures, reason, at
    )


def needing_attention(
    records: Iterable[Mapping[str, Any]], run_errors: Mapping[str, str] | None = None
) -> list[Attention]:
    """Failing and paused missions, failing ones first, most recent failure first (``run_errors``: mission
    id → why its last run failed)."""
    errors = run_errors or {}
    found = [a for a in (attention_for(r, errors.get(str(r.get("id")))) for r in records) if a is not None]
    found.sort(key=lambda a: a.at, reverse=True)
    found.sort(key=lambda a: a.failures == 0)  # stable: failing ones first, each group newest first
    return found[:50]
