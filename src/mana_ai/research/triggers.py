"""Keyword triggers that decide whether a mission gets a research pre-step (SPEC §8.1, §8.2).

The patterns are the original JavaScript regular expressions. Two details keep the Python behaviour identical:

- ``re.ASCII``: a JS ``\\b`` (without the ``u`` flag) only knows ASCII word characters, so an umlaut counts
  as a non-word character and "übersuche" has a word boundary between "ü" and "s". Without ``re.ASCII``
  Python would treat "ü" as a word character and miss that match.
- ``re.IGNORECASE`` under ``re.ASCII`` folds only ASCII letters, which is also what JS ``/i`` does without
  ``u`` (it never maps a non-ASCII character such as "ſ" onto an ASCII one).

The shallow trigger has a leading word boundary only, so it matches word *prefixes* ("finden",
"newsletter", "aktuellen"); the deep trigger is bounded on both sides.
"""

from __future__ import annotations

import re

RESEARCH_TRIGGER = re.compile(
    r"\b(recherchier|research|news|finde|suche|aktuelle|neueste|today|history|historisch|on this day)",
    re.ASCII | re.IGNORECASE,
)
"""Shallow (RSS) research trigger, tested against the objective or the concept markdown."""

DEEP_RESEARCH_TRIGGER = re.compile(
    r"\b(deep research|tiefe recherche|umfassende recherche|hintergrundrecherche|deep dive)\b",
    re.ASCII | re.IGNORECASE,
)
"""Deep (asynchronous, cross-tick) research trigger, tested against the objective or the concept."""


def _matches(pattern: re.Pattern[str], *texts: str | None) -> bool:
    return any(text and pattern.search(text) for text in texts)


def wants_research(objective: str | None, concept: str | None = None) -> bool:
    """Whether the mission asks for shallow web research.

    Args:
        objective: The mission objective.
        concept: The mission's concept markdown, if any.

    Returns:
        True when :data:`RESEARCH_TRIGGER` matches either text.
    """
    return _matches(RESEARCH_TRIGGER, objective, concept)


def wants_deep_research(objective: str | None, concept: str | None = None) -> bool:
    """Whether the mission asks for deep research.

    Args:
        objective: The mission objective.
        concept: The mission's concept markdown, if any.

    Returns:
        True when :data:`DEEP_RESEARCH_TRIGGER` matches either text.
    """
    return _matches(DEEP_RESEARCH_TRIGGER, objective, concept)
