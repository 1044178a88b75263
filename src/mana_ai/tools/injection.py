"""Instruction-injection markers in tool-call arguments (SPEC §16.3).

A planner that read hostile input (a web page, a shared note) may copy an instruction into a
tool call, e.g. a note body saying "ignore previous instructions". These heuristics find the
common shapes. They are a tripwire, not a filter: the caller decides whether to log or drop.

Short strings (under 16 characters) are skipped: ids, enum values and tags cannot carry a
meaningful instruction, and skipping them keeps false positives such as a bare ``<system>`` tag
name out. The keys of the top-level arguments object are parameter names from the tool schema and
are not checked; the keys of nested objects (``object`` parameters) are the model's own text and are.

Each value is normalised first (NFKC, zero-width characters removed, every run of whitespace one space),
so ``ignore\u200b previous   instructions`` or full-width letters do not slip past ``enforce`` mode. That
raises the bar for copy-paste variants only: homoglyphs, other languages or paraphrases still pass. This is
a tripwire that makes an injection visible, not a defence; the defence is that every write is a proposal a
person approves (docs/security.md).

Every check runs in linear time: a value is model output and can be 100 KB of ``{{{{…``, and a
backtracking pattern for "``{{``, anything, ``}}``" is quadratic on it (it once held the event loop 8.6 s).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = ["INJECTION_PATTERNS", "MIN_LENGTH", "detect_injection_marker", "is_blank"]

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


_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]"
)
"""Unicode's default-ignorable code points (DerivedCoreProperties ``Default_Ignorable_Code_Point``): zero-width
characters, bidi marks and controls, invisible operators, variation selectors, Hangul fillers, tag characters.
Each renders as nothing, so any of them can split a marker word without a visible trace."""
_SPACES = re.compile(r"\s+")
_SPACES_IN_LINE = re.compile(r"[^\S\n]+")


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace and invisible (default-ignorable) characters."""
    return not normalise(text).strip()


def normalise(text: str, *, keep_lines: bool = False) -> str:
    """The text as the patterns see it: NFKC, without zero-width characters, each whitespace run one space
    (``keep_lines``: runs inside a line only, for the patterns whose ``.`` stops at a line break, as the
    original's JavaScript ``.`` does)."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return (_SPACES_IN_LINE if keep_lines else _SPACES).sub(" ", text)


def _braces(text: str) -> bool:
    """``{{`` followed later in the same line by ``}}`` with at least one character between, as the braces
    pattern says, in linear time."""
    for line in text.split("\n"):
        start = line.find("{{")
        if start >= 0 and line.find("}}", start + 3) >= 0:
            return True
    return False


_BRACES_SOURCE = r"\{\{.+\}\}"
_CHECKS: tuple[tuple[str, bool, Callable[[str], object]], ...] = tuple(
    (p.pattern, "." in p.pattern, _braces if p.pattern == _BRACES_SOURCE else p.search)
    for p in INJECTION_PATTERNS
)
"""(source, needs line breaks kept, check) per pattern."""


def _match(text: str) -> str | None:
    if len(text) < MIN_LENGTH:
        return None
    flat = normalise(text)
    lined = normalise(text, keep_lines=True)
    for source, keep_lines, check in _CHECKS:
        if check(lined if keep_lines else flat):
            return source
    return None


def detect_injection_marker(value: Any) -> str | None:
    """Find the first injection marker in a JSON-like value.

    Walks nested dicts, lists and tuples depth-first in order (iteratively, so deeply nested
    input cannot exhaust the stack); the keys of nested dicts are checked, those of ``value`` itself not.

    Args:
        value: a string, or a structure of dicts/lists holding strings; other values are ignored.

    Returns:
        The source of the first matching pattern, or ``None``.
    """
    stack: list[Any] = [value]
    top = value
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            marker = _match(item)
            if marker is not None:
                return marker
        elif isinstance(item, dict):
            if item is top:
                stack.extend(reversed(list(item.values())))
            else:
                # The keys of a nested object (an ``object`` parameter such as ``props`` or ``patch``, the items
                # of ``lines``) are the model's own text, not parameter names from the tool schema.
                stack.extend(reversed([part for key_value in item.items() for part in key_value]))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return None
