"""System and user prompts for the function-calling planner (SPEC §9).

The system prompt is small on purpose: the model receives the tool schemas through the native ``tools``
request field, so the prompt only states the job, the working procedure and the agent's persona and memory.
The user prompt carries the mission itself in a fixed Markdown layout whose section headers and fallbacks
match the original, so that a model sees the same frame whichever runner (browser or server) planned.

Everything here is pure. Iterations come from user-synced JSON, so the history renderer never trusts a
field's type: unusable entries are skipped instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CIPHERTEXT_PREFIX = "enc:1:"
"""Prefix of a field the server could not decrypt; such text is never shown to the model."""

MAX_HISTORY_ITERATIONS = 3

USER_PROMPT_CLOSING = "Starte jetzt die nächste Iteration und rufe die Tools auf, die du dafür brauchst."
"""The last line of every user prompt."""

_SYSTEM_FRAME: tuple[str, ...] = (
    "Du bist ein Agent, der im Namen des Nutzers an einer langfristigen Mission weiterarbeitet.",
    "",
    "So gehst du vor:",
    "1. Verschaffe dir zuerst mit Lese-Tools einen Überblick; deren Ergebnisse bekommst du sofort zurück.",
    "2. Setze danach das konkrete Ziel mit den passenden Schreib-Tools um.",
    "3. Du hast bis zu 5 Planungsrunden; nach jedem Tool-Aufruf siehst du das Ergebnis und planst darauf "
    "aufbauend weiter.",
    "4. Höre auf, sobald das Ziel erreicht ist oder kein sinnvoller Schritt mehr übrig bleibt.",
    "5. Beachte das Feedback zu früheren Iterationen und wiederhole keinen gescheiterten Schritt unverändert.",
    "",
    "Wichtig:",
    "- Verwende nur die Tools, die dir als Function-Calls zur Verfügung stehen; Tool-Namen im Fließtext "
    "bewirken nichts.",
    "- Voneinander unabhängige Aktionen gibst du gebündelt als parallele Tool-Calls in einer einzigen Runde "
    "aus.",
    "- Liefert ein Tool einen Fehler, gehe darauf ein: versuche einen anderen Weg oder beende die Planung.",
)


@dataclass(frozen=True, slots=True)
class ResolvedInput:
    """A mission input resolved to text (SPEC §6.7)."""

    id: str
    module: str
    table: str
    content: str
    title: str | None = None
    """Heading shown to the model; the record id is used when missing."""


def _usable_agent_text(text: str | None) -> str | None:
    """Return the stripped text, or None when it is empty or still ciphertext."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped or stripped.startswith(CIPHERTEXT_PREFIX):
        return None
    return stripped


def build_system_prompt(agent_persona: str | None, agent_memory: str | None) -> str:
    """Build the planner's system prompt.

    Args:
        agent_persona: the agent's own system prompt; omitted when empty or still encrypted.
        agent_memory: the agent's persistent memory; omitted when empty or still encrypted.

    Returns:
        The role statement, procedure and rules, followed by ``<agent_persona>`` and ``<agent_memory>``
        blocks for the parts that are present.
    """
    lines = list(_SYSTEM_FRAME)
    persona = _usable_agent_text(agent_persona)
    if persona is not None:
        lines += ["\n<agent_persona>", persona, "</agent_persona>"]
    memory = _usable_agent_text(agent_memory)
    if memory is not None:
        lines += ["\n<agent_memory>", memory, "</agent_memory>"]
    return "\n".join(lines)


def _scalar_text(value: Any) -> str | None:
    """Render a JSON scalar as text; None for anything else (objects, arrays, null, booleans)."""
    if isinstance(value, str):
        return value
    # bool is an int subclass; a boolean where text belongs is garbage, not the word "True".
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _step_line(step: Any) -> str | None:
    if not isinstance(step, Mapping):
        return None
    summary = _scalar_text(step.get("summary"))
    if not summary:
        # Fall back to the tool name so a step without summary still tells the model what happened.
        intent = step.get("intent")
        summary = _scalar_text(intent.get("toolName")) if isinstance(intent, Mapping) else None
    if not summary:
        return None
    status = _scalar_text(step.get("status")) or "?"
    return "  - [" + status + "] " + summary


def _render_iteration(iteration: Mapping[str, Any]) -> str:
    started_at = _scalar_text(iteration.get("startedAt")) or "?"
    status = _scalar_text(iteration.get("overallStatus")) or "?"
    lines = ["**" + started_at + "** (" + status + "):"]
    summary = _scalar_text(iteration.get("summary"))
    if summary:
        lines.append("  Summary: " + summary)
    plan = iteration.get("plan")
    if isinstance(plan, list):
        lines += [line for line in map(_step_line, plan) if line is not None]
    feedback = _scalar_text(iteration.get("userFeedback"))
    if feedback:
        lines.append("  Nutzer-Feedback: " + feedback)
    return "\n".join(lines)


def _render_inputs(inputs: Sequence[ResolvedInput]) -> str:
    if not inputs:
        return "_(keine verlinkten Inputs)_"
    blocks = [
        "### "
        + r.module
        + "/"
        + r.table
        + ": "
        + (r.title if r.title is not None else r.id)
        + "\n"
        + r.content
        for r in inputs
    ]
    return "\n\n".join(blocks)


def _render_history(iterations: object) -> str:
    # The caller hands over the synced JSON value; a non-array there is treated like "no history".
    if not isinstance(iterations, list | tuple):
        return "_(erste Iteration)_"
    usable = [it for it in iterations if isinstance(it, Mapping)]
    if not usable:
        return "_(erste Iteration)_"
    return "\n\n".join(_render_iteration(it) for it in usable[-MAX_HISTORY_ITERATIONS:])


def build_user_prompt(
    *,
    title: str | None,
    concept: str | None,
    objective: str | None,
    inputs: Sequence[ResolvedInput],
    iterations: Sequence[Mapping[str, Any]],
) -> str:
    """Build the per-mission user prompt (SPEC §9).

    Args:
        title: mission title.
        concept: the mission's concept Markdown; ``_(leer)_`` when empty.
        objective: the concrete objective; ``_(nicht gesetzt)_`` when empty.
        inputs: resolved inputs in mission order.
        iterations: the mission's iterations as synced (oldest first); only the last three usable
            entries are shown, entries that are not JSON objects are skipped, and a value that is not
            an array at all counts as no history.

    Returns:
        The prompt text, sections joined by single newlines.
    """
    return "\n".join(
        [
            "# Mission: " + (title or ""),
            "",
            "## Konzept",
            concept or "_(leer)_",
            "",
            "## Konkretes Ziel",
            objective or "_(nicht gesetzt)_",
            "",
            "## Verlinkte Inputs",
            _render_inputs(inputs),
            "",
            "## Letzte Iterationen (max. 3)",
            _render_history(iterations),
            "",
            "---",
            "",
            USER_PROMPT_CLOSING,
        ]
    )
