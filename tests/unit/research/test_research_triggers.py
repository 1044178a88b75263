"""Trigger regexes behave exactly like the original JavaScript ones.

Every expectation below was checked with ``node`` against the original patterns
(``/\\b(...)/i`` and ``/\\b(...)\\b/i``).
"""

from __future__ import annotations

import pytest

from mana_ai.research.triggers import (
    DEEP_RESEARCH_TRIGGER,
    RESEARCH_TRIGGER,
    wants_deep_research,
    wants_research,
)

SHALLOW_CASES = [
    ("Recherchiere die neuesten KI-News", True),
    ("Finden wir heraus", True),  # prefix match: "finde" in "finden"
    ("Newsletter schreiben", True),  # prefix match: "news" in "newsletter"
    ("aktuellen Trends", True),
    ("AKTUELLE Lage", True),
    ("neuestes Modell", True),
    ("Suche nach Hotels", True),
    ("today I learned", True),
    ("ON THIS DAY", True),
    ("history of rome", True),
    ("KI-news", True),  # "-" is a word boundary
    ("deep  research", True),  # "research" on its own
    ("Deep-Research", True),
    # Umlauts and "ß" are non-word characters for JS's ASCII-only \b, so a boundary sits right after them.
    ("Spaßnews", True),
    ("Fußsuche", True),
    ("Müsuche", True),
    # "übersuche": the boundary is between "ü" and "b", and "bersuche" starts with no trigger word.
    ("übersuche", False),
    ("Übersuche", False),
    ("Versuche es", False),
    ("Besuche Oma", False),
    ("herausfinden", False),  # no boundary before "finde"
    ("prehistory", False),
    ("recherche", False),  # the trigger is "recherchier"
    ("Wetter heute", False),
    ("Schreibe ein Gedicht", False),
    ("ſuche", False),  # JS /i (without u) never folds a non-ASCII letter onto "s"
    ("ﬁnde", False),
]

DEEP_CASES = [
    ("deep research please", True),
    ("Mach eine tiefe Recherche", True),
    ("Tiefe Recherche", True),
    ("Hintergrundrecherche zum Thema", True),
    ("deep dive.", True),
    ("ädeep dive", True),  # boundary after the umlaut
    ("umfassende Recherchen", False),  # trailing \b: "Recherchen" continues the word
    ("deep researching", False),
    ("deep diver", False),
    ("Deep-Research", False),
    ("deep  research", False),
    ("Recherchiere die neuesten KI-News", False),
]


@pytest.mark.parametrize(("text", "expected"), SHALLOW_CASES)
def test_shallow_trigger_matches_like_js(text: str, expected: bool) -> None:
    assert bool(RESEARCH_TRIGGER.search(text)) is expected
    assert wants_research(text) is expected


@pytest.mark.parametrize(("text", "expected"), DEEP_CASES)
def test_deep_trigger_matches_like_js(text: str, expected: bool) -> None:
    assert bool(DEEP_RESEARCH_TRIGGER.search(text)) is expected
    assert wants_deep_research(text) is expected


def test_objective_or_concept_triggers() -> None:
    assert wants_research("Plane meine Woche", "Bitte suche passende Termine")
    assert wants_research("Recherchiere die neuesten KI-News", None)
    assert not wants_research("Plane meine Woche", "Ordne die Termine")
    assert wants_deep_research("Plane meine Woche", "Mach eine Hintergrundrecherche")
    assert not wants_deep_research("Plane meine Woche", None)


def test_empty_and_missing_texts_do_not_trigger() -> None:
    assert not wants_research("", "")
    assert not wants_research(None, None)
    assert not wants_deep_research("", None)
