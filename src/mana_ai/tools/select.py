"""Which tools one mission is offered, so the prompt fits the model's context window.

The agent's policy decides which tools are allowed at all (:func:`~mana_ai.tools.schema.toolset_for_policy`).
Of those, every tool whose schema fits the tool budget is offered; when not all fit (a small context
window, or ``MANA_LLM_MAX_TOOLS``), the tools are ranked for the mission and the best ones are kept:

1. tools of the modules the mission links inputs from;
2. tools whose module, name or description share words with the mission's title, objective and concept
   (German and English keywords per module, because missions are usually written in German);
3. then catalog order, which puts the everyday modules (todo, calendar, notes) first.

Everything here is pure and cheap; tokens are estimated from the JSON size (:data:`BYTES_PER_TOKEN`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final

import orjson

from mana_ai.tools.schema import ToolSet, to_function_schema
from mana_ai.tools.types import ToolSchema

__all__ = ["estimate_tokens", "select_tools", "tool_budget"]

BYTES_PER_TOKEN: Final = 4
"""Estimate for JSON schemas (SmolLM2's tokenizer: 34 kB of the 62 offered tools were ~8 k tokens)."""
TOOL_SHARE: Final = 0.5
"""Share of the prompt budget (window minus max_tokens) the tool schemas may take."""
LINKED_SCORE: Final = 100
KEYWORD_SCORE: Final = 10

MODULE_KEYWORDS: Final[Mapping[str, tuple[str, ...]]] = {
    "todo": ("aufgabe", "aufgaben", "todo", "task", "tasks", "erledigen", "tag", "tages", "heute", "plan"),
    "calendar": ("termin", "termine", "kalender", "calendar", "event", "meeting", "woche"),
    "notes": ("notiz", "notizen", "note", "notes", "idee", "ideen"),
    "places": ("ort", "orte", "place", "places", "besuch"),
    "drink": ("trinken", "wasser", "getränk", "getränke", "kaffee", "tee", "drink", "water"),
    "food": ("essen", "mahlzeit", "ernährung", "food", "meal"),
    "news": ("news", "nachrichten"),
    "articles": ("artikel", "article", "articles", "lesen"),
    "news-research": ("recherche", "research", "nachrichten", "news"),
    "journal": ("tagebuch", "journal", "reflexion"),
    "habits": ("gewohnheit", "gewohnheiten", "habit", "habits", "routine"),
    "goals": ("ziel", "ziele", "zielen", "goal", "goals"),
    "contacts": ("kontakt", "kontakte", "contact", "person"),
    "mood": ("stimmung", "gefühl", "mood"),
    "finance": ("geld", "ausgabe", "ausgaben", "finanzen", "budget", "finance"),
    "times": ("zeit", "timer", "zeiterfassung", "time"),
    "events": ("veranstaltung", "veranstaltungen", "event", "events"),
    "quiz": ("quiz", "frage", "fragen", "lernen"),
    "invoices": ("rechnung", "rechnungen", "invoice"),
    "library": ("buch", "bücher", "film", "library", "bibliothek"),
    "broadcast": ("newsletter", "kampagne", "broadcast"),
    "website": ("website", "webseite", "seite"),
    "writing": ("text", "schreiben", "entwurf", "writing", "draft"),
    "comic": ("comic", "geschichte", "figur"),
    "augur": ("zeichen", "omen", "augur"),
    "lasts": ("zuletzt", "letzte", "lasts"),
}

_WORD = re.compile(r"[a-zäöüß]{3,}")


def estimate_tokens(tools: Iterable[ToolSchema]) -> int:
    """Approximate prompt tokens of these tools' function schemas."""
    return sum(_tool_tokens(t) for t in tools)


@functools.lru_cache(maxsize=1024)
def _tool_tokens(tool: ToolSchema) -> int:
    return (len(orjson.dumps(to_function_schema(tool))) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def tool_budget(context_tokens: int, max_tokens: int) -> int:
    """Tokens the tool schemas may take in a window of ``context_tokens`` with ``max_tokens`` reserved."""
    return max(int((context_tokens - max_tokens) * TOOL_SHARE), 0)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold()))


def _score(tool: ToolSchema, words: set[str], linked: frozenset[str]) -> int:
    score = LINKED_SCORE if tool.module in linked else 0
    keywords = set(MODULE_KEYWORDS.get(tool.module, ())) | {tool.module}
    score += KEYWORD_SCORE * len(words & keywords)
    score += len(words & (_words(tool.name.replace("_", " ")) | _words(tool.description)))
    return score


def select_tools(
    toolset: ToolSet,
    *,
    mission_text: str,
    linked_modules: Iterable[str] = (),
    budget_tokens: int,
    max_tools: int = 0,
) -> ToolSet:
    """The tools to offer for one mission (see the module docstring).

    Args:
        toolset: what the agent's policy allows.
        mission_text: title, objective and concept (plaintext parts only).
        linked_modules: modules of the mission's linked inputs.
        budget_tokens: estimated tokens the schemas may take.
        max_tools: at most this many tools; 0 for no count limit.

    Returns:
        ``toolset`` itself when everything fits, else a new set in catalog order.
    """
    tools = toolset.tools
    fits_count = max_tools <= 0 or len(tools) <= max_tools
    # The serialised set is at hand: the common case (everything fits) costs one len().
    if fits_count and len(toolset.json) // BYTES_PER_TOKEN <= budget_tokens:
        return toolset
    words = _words(mission_text)
    linked = frozenset(linked_modules)
    order = {t.name: i for i, t in enumerate(tools)}
    ranked = sorted(tools, key=lambda t: (-_score(t, words, linked), order[t.name]))
    kept: list[ToolSchema] = []
    used = 0
    for tool in ranked:
        if max_tools > 0 and len(kept) >= max_tools:
            break
        cost = estimate_tokens((tool,))
        if used + cost > budget_tokens:
            continue
        kept.append(tool)
        used += cost
    kept.sort(key=lambda t: order[t.name])
    return ToolSet(kept)
