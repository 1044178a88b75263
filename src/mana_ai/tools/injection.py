"""Instruction-injection markers in tool-call arguments (SPEC §16.3).

A planner that read hostile input (a web page, a shared note) may copy an instruction into a
tool call, e.g. a note body saying "ignore previous instructions". These heuristics find the
common shapes. They are a tripwire, not a filter: the caller decides whether to log or drop.

Short strings (under 16 characters) are skipped: ids, enum values and tags cannot carry a
meaningful instruction, and skipping them keeps false positives such as a bare ``<system>`` tag
name out. Only values are checked, not object keys (keys come from the tool schema).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["INJECTION_PATTERNS", "MIN_LENGTH", "detect_injection_marker"]

MIN_LENGTH = 16

INJECTION_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(source, re.IGNORECASE)
    for source in (
        r"ignore (all |the )?previous (instructions|messages)",
        r"you are now .{0,40}(assistant|gpt|claude|gemini)",
        r"<\s*system\b",
        r"\{\{.+\}\}",
        r"```\s*system",
    )
)


def _match(text: str) -> str | None:
    if len(text) < MIN_LENGTH:
        return None
    for pattern in INJECTION_PATTERNS:
        if pattern.search(text):
            return pattern.pattern
    return None


def detect_injection_marker(value: Any) -> str | None:
    """Find the first injection marker in a JSON-like value.

    Walks nested dicts, lists and tuples depth-first in order (iteratively, so deeply nested
    input cannot exhaust the stack).

    Args:
        value: a string, or a structure of dicts/lists holding strings; other values are ignored.

    Returns:
        The source of the first matching pattern, or ``None``.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            marker = _match(item)
            if marker is not None:
                return marker
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return None
