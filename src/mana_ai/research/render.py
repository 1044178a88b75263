"""Render research results as the Markdown input the planner sees (SPEC §8.1 step 3, §8.2 "completed").

Pure functions. The layout (headings, the counts line, ``URL:``/``Datum:`` lines, the closing ``---`` and the
"use only these URLs" instruction) follows the original so a model sees the same frame either way.
Backend text is flattened to one line where the layout needs it (a newline inside an excerpt would end the
``>`` quote and let feed text pose as prompt structure).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mana_ai.planner.prompts import ResolvedInput
from mana_ai.research.base import Article, Citation

WEB_RESEARCH_INPUT_ID = "__web-research__"
WEB_RESEARCH_MODULE = "news-research"
WEB_RESEARCH_TABLE = "web"

TITLE_OBJECTIVE_CHARS = 60

SOURCES_INSTRUCTION = (
    "Nutze diese Quellen fuer deinen Plan. Verwende nur URLs die oben stehen; erfinde keine."
)
"""The closing line of every research input (kept verbatim from the original)."""

MAX_RESEARCH_CHARS = 20_000
"""The longest research input the planner gets. A provider's report can be far longer than the planner's
whole input limit (``planner.guardrails.MAX_INPUT_CHARS``), which would fail the mission for good after the
finished job was already taken; longer research is cut at a line and keeps its closing instruction."""

_LINE_SEARCH_CHARS = 2_000

TRUNCATED_NOTE = "[... gekuerzt]"
"""The line that marks where over-long research was cut."""

_WHITESPACE = re.compile(r"\s+")


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def shallow_title(objective: str) -> str:
    """Input title for shallow research: ``Web-Research: "<first 60 chars of the objective>"``."""
    return f'Web-Research: "{objective[:TITLE_OBJECTIVE_CHARS]}"'


def deep_title(objective: str) -> str:
    """Input title for deep research: ``Deep Research: "<first 60 chars of the objective>"``."""
    return f'Deep Research: "{objective[:TITLE_OBJECTIVE_CHARS]}"'


def render_shallow_markdown(query: str, feed_count: int, articles: Sequence[Article]) -> str:
    """Render shallow research results.

    Args:
        query: The research query (the mission objective).
        feed_count: How many sources were searched.
        articles: The articles, best first.

    Returns:
        Markdown: title, counts line, one section per article, then the sources instruction.
    """
    lines = [
        f'# Web-Research: "{_one_line(query)}"',
        "",
        f"{feed_count} Quellen durchsucht, {len(articles)} relevante Artikel gefunden:",
        "",
    ]
    for article in articles:
        lines.append(f"## {_one_line(article.title) or article.url}")
        if article.excerpt and _one_line(article.excerpt):
            lines.append(f"> {_one_line(article.excerpt)}")
        lines.append(f"URL: {article.url}")
        if article.published_at:
            lines.append(f"Datum: {article.published_at}")
        lines.append("")
    lines += ["---", SOURCES_INSTRUCTION]
    return "\n".join(lines)


def render_deep_markdown(objective: str, answer: str, citations: Sequence[Citation]) -> str:
    """Render a completed deep-research answer.

    Args:
        objective: The mission objective the research was submitted for.
        answer: The research answer (Markdown from the provider).
        citations: The cited sources.

    Returns:
        Markdown: title, the trimmed answer, a ``## Quellen`` list when there are citations, then the
        sources instruction.
    """
    lines = [f'# Deep-Research: "{_one_line(objective)}"', "", answer.strip(), ""]
    if citations:
        lines.append("## Quellen")
        for citation in citations:
            line = f"- [{_one_line(citation.title) or citation.url}]({citation.url})"
            if citation.snippet and _one_line(citation.snippet):
                line += f" — {_one_line(citation.snippet)}"
            lines.append(line)
        lines.append("")
    lines += ["---", SOURCES_INSTRUCTION]
    return "\n".join(lines)


def web_research_input(title: str, content: str) -> ResolvedInput:
    """Wrap rendered research as the mission input the prompt builder expects (SPEC §5 step 5, §8.2).

    Args:
        title: :func:`shallow_title` or :func:`deep_title` of the objective.
        content: :func:`render_shallow_markdown` or :func:`render_deep_markdown` output.
    """
    return ResolvedInput(
        id=WEB_RESEARCH_INPUT_ID,
        module=WEB_RESEARCH_MODULE,
        table=WEB_RESEARCH_TABLE,
        content=_capped(content),
        title=title,
    )


def _capped(content: str) -> str:
    """``content`` cut to :data:`MAX_RESEARCH_CHARS` at a line end, closing with the sources instruction."""
    if len(content) <= MAX_RESEARCH_CHARS:
        return content
    tail = f"\n{TRUNCATED_NOTE}\n\n---\n{SOURCES_INSTRUCTION}"
    head = content[: MAX_RESEARCH_CHARS - len(tail)]
    cut = head.rfind(
        "\n", len(head) - _LINE_SEARCH_CHARS
    )  # a whole line (a URL) or, if none is near, a hard cut
    return (head[:cut] if cut >= 0 else head) + tail
