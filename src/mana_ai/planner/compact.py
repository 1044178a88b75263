"""Context compaction for long planner runs (SPEC §13).

When a run's token usage nears the model's context window, the loop asks a cheap model to fold the
middle of the conversation into a fixed four-section summary (Goal, Decisions, Tools Called, Current
Progress) and continues with ``[system, user, assistant(<compact-summary>), ...recent turns]``. The
summary is an ``assistant`` message because some providers reject system messages deep in a history.

Two deliberate differences from the original, both only visible in histories the original mishandled:

* Every message before the tail that is not one of the two anchors (first system, first user message)
  goes into the summary. The original dropped non-anchor messages in front of the first user message
  without summarising them.
* The tail never starts with a ``tool`` message: the cut moves back to the assistant message that issued
  the call. Otherwise both the compaction request (an assistant ``tool_calls`` message without its
  results) and every later round (a tool result without its call) would be rejected by OpenAI-compatible
  providers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mana_ai.planner.types import ChatMessage, Compactor, CompactResult, LlmClient

DEFAULT_COMPACT_THRESHOLD = 0.92
DEFAULT_COMPACT_KEEP_RECENT = 4
DEFAULT_COMPACT_MODEL = "google/gemini-2.5-flash-lite"
DEFAULT_COMPACT_TEMPERATURE = 0.2

COMPACT_SYSTEM_PROMPT = """Du fasst einen laufenden Agenten-Dialog zusammen, damit er in einem deutlich kleineren \
Kontext weitergefuehrt werden kann.

Antworte mit genau einem Markdown-Block, der aus diesen vier Abschnitten in dieser Reihenfolge besteht:

## Goal
<Ein Satz: Welches Ziel wurde urspruenglich verfolgt?>

## Decisions
<Stichpunkte: Welche Festlegungen gab es zu Richtung, Prioritaeten und Umfang?>

## Tools Called
<Stichpunkte im Format toolname(kurze Argumente) -> kurzes Ergebnis. Fehlgeschlagene Aufrufe ausdruecklich \
als Fehler kennzeichnen.>

## Current Progress
<Ein Satz: Wie weit ist die Arbeit jetzt, und was ist der naechste konkrete Schritt?>

Regeln:
- Kein Text vor oder nach dem Block.
- Erfinde nichts. Was du nicht sicher weisst, markierst du mit "unklar".
- IDs, Feldnamen und andere fachliche Bezeichner uebernimmst du wortwoertlich.
- Schreib auf Deutsch, auch wenn Tool-Ergebnisse in einer anderen Sprache vorliegen."""

COMPACT_INSTRUCTION = (
    "Fasse den bisherigen Verlauf jetzt im vorgegebenen Schema zusammen (## Goal / ## Decisions / "
    "## Tools Called / ## Current Progress). Gib ausschliesslich den Markdown-Block aus."
)
"""Closing user message of the compaction request."""

ORIGINAL_SYSTEM_PREFIX = "Urspruenglicher System-Prompt:\n"

_HEADERS = ("Goal", "Decisions", "Tools Called", "Current Progress")


@dataclass(frozen=True, slots=True)
class CompactSummary:
    """The four sections of a compaction answer; a missing section is ``""``."""

    goal: str = ""
    decisions: str = ""
    tools_called: str = ""
    current_progress: str = ""


def should_compact(
    total_tokens: int, max_context_tokens: int | None, threshold: float = DEFAULT_COMPACT_THRESHOLD
) -> bool:
    """Decide whether usage is close enough to the context window to compact.

    Args:
        total_tokens: tokens used so far (prompt + completion).
        max_context_tokens: the context window; None or ``<= 0`` disables compaction.
        threshold: share of the window at which to compact.

    Returns:
        True when ``total_tokens / max_context_tokens >= threshold`` and both are positive.
    """
    if max_context_tokens is None or max_context_tokens <= 0 or total_tokens <= 0:
        return False
    return total_tokens / max_context_tokens >= threshold


def _section(raw: str, header: str) -> str:
    # Only horizontal whitespace may follow "##" and the header name: the original's "\s*\n" also
    # swallowed the blank line after an empty section, so "## Goal\n\n## Decisions" read the next header
    # as the goal. The body runs to the next "##" header, a closing </compact-summary> tag (a model may
    # echo an earlier rendered summary) or the end.
    pattern = r"##[ \t]+" + re.escape(header) + r"[ \t\r]*(?:\n|\Z)(.*?)(?=\n##\s|\n</compact-summary>|\Z)"
    match = re.search(pattern, raw, re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else ""


def parse_compact_summary(raw: str) -> CompactSummary:
    """Parse a compaction answer leniently.

    Args:
        raw: the model's answer.

    Returns:
        The four sections (headers matched case-insensitively); missing sections are empty strings,
        because a partial summary is still better than none.
    """
    goal, decisions, tools_called, current_progress = (_section(raw, h) for h in _HEADERS)
    return CompactSummary(goal, decisions, tools_called, current_progress)


def render_compact_summary(summary: CompactSummary) -> str:
    """Render a summary as the text of the ``assistant`` message that replaces the folded turns.

    Args:
        summary: the parsed summary.

    Returns:
        The four sections wrapped in ``<compact-summary>`` tags, with ``unklar`` / ``(keine)`` for
        empty sections.
    """
    return "\n".join(
        [
            "<compact-summary>",
            "## Goal\n" + (summary.goal or "unklar"),
            "",
            "## Decisions\n" + (summary.decisions or "(keine)"),
            "",
            "## Tools Called\n" + (summary.tools_called or "(keine)"),
            "",
            "## Current Progress\n" + (summary.current_progress or "unklar"),
            "</compact-summary>",
        ]
    )


def _first_index(messages: list[ChatMessage], role: str) -> int:
    return next((i for i, m in enumerate(messages) if m.get("role") == role), -1)


async def compact_history(
    messages: list[ChatMessage],
    *,
    llm: LlmClient,
    model: str = DEFAULT_COMPACT_MODEL,
    keep_recent: int = DEFAULT_COMPACT_KEEP_RECENT,
    temperature: float = DEFAULT_COMPACT_TEMPERATURE,
) -> CompactResult:
    """Fold the middle of a conversation into one summary message.

    The first system and the first user message are kept verbatim, as are the last ``keep_recent``
    messages; everything else before that tail is sent to ``llm`` and replaced by the rendered summary.
    The input list and its messages are never modified.

    Args:
        messages: the conversation in OpenAI wire format.
        llm: client for the compaction call (sent without tools).
        model: model for the compaction call.
        keep_recent: number of most recent messages kept verbatim (more when the cut would otherwise
            separate tool results from their call).
        temperature: sampling temperature; low, as this is summarisation.

    Returns:
        The new history with ``compacted_turns`` = number of folded messages, the rendered summary and
        the compaction call's usage. When there is nothing to fold, ``messages`` itself is returned
        with ``compacted_turns == 0`` and no LLM call is made.

    Raises:
        ValueError: ``keep_recent`` is negative.
        ProviderError: the compaction call failed.
    """
    if keep_recent < 0:
        raise ValueError("keep_recent must not be negative")
    first_system = _first_index(messages, "system")
    first_user = _first_index(messages, "user")
    min_length = (first_system >= 0) + (first_user >= 0) + keep_recent + 1
    if len(messages) < min_length:
        return CompactResult(messages=messages, compacted_turns=0)

    tail_start = len(messages) - keep_recent
    while 0 < tail_start < len(messages) and messages[tail_start].get("role") == "tool":
        tail_start -= 1
    anchors = [i for i in sorted({first_system, first_user}) if 0 <= i < tail_start]
    middle = [m for i, m in enumerate(messages[:tail_start]) if i not in anchors]
    if not middle:
        return CompactResult(messages=messages, compacted_turns=0)

    system_msg = messages[first_system] if first_system in anchors else None
    user_msg = messages[first_user] if first_user in anchors else None
    request: list[ChatMessage] = [{"role": "system", "content": COMPACT_SYSTEM_PROMPT}]
    if system_msg is not None:
        request.append(
            {**system_msg, "content": ORIGINAL_SYSTEM_PREFIX + str(system_msg.get("content") or "")}
        )
    if user_msg is not None:
        request.append(user_msg)
    request += middle
    request.append({"role": "user", "content": COMPACT_INSTRUCTION})

    response = await llm.complete(request, tools_json=b"[]", model=model, temperature=temperature)
    rendered = render_compact_summary(parse_compact_summary(response.content or ""))

    result: list[ChatMessage] = [m for m in (system_msg, user_msg) if m is not None]
    result.append({"role": "assistant", "content": rendered})
    result += messages[tail_start:]
    return CompactResult(messages=result, compacted_turns=len(middle), summary=rendered, usage=response.usage)


def make_compactor(
    llm: LlmClient,
    *,
    max_context_tokens: int,
    model: str = DEFAULT_COMPACT_MODEL,
    keep_recent: int = DEFAULT_COMPACT_KEEP_RECENT,
    threshold: float = DEFAULT_COMPACT_THRESHOLD,
) -> Compactor | None:
    """Build the loop's compactor.

    Args:
        llm: client for compaction calls.
        max_context_tokens: the planner model's context window; ``<= 0`` disables compaction.
        model: model for compaction calls.
        keep_recent: messages kept verbatim at the end of the history.
        threshold: share of ``max_context_tokens`` at which the loop compacts.

    Returns:
        A :class:`Compactor`, or None when compaction is disabled.
    """
    if max_context_tokens <= 0:
        return None

    async def compact(messages: list[ChatMessage]) -> CompactResult:
        return await compact_history(messages, llm=llm, model=model, keep_recent=keep_recent)

    return Compactor(max_context_tokens=max_context_tokens, compact=compact, threshold=threshold)
