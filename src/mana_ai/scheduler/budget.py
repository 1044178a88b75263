"""An agent's daily token budget, pure: how it stands in words (``mana-ai agents show``, the workbench), and
what one LLM round may cost at most (the reservation before each round, :mod:`mana_ai.runner.budget`)."""

from __future__ import annotations

from typing import Final

WARN_RATIO = 0.8
"""From this share of the cap on, the budget is shown (and alerted) as running out."""


def budget_line(used: int, reserved: int, cap: int | None) -> str:
    """``"1,200 used + 300 reserved of 2,000 tokens per 24 h (75 %)"``; without a cap, no percentage."""
    head = f"{used:,} used + {reserved:,} reserved"
    if cap is None:
        return head + " tokens in the last 24 h (no daily cap)"
    share = (used + reserved) / cap if cap > 0 else 1.0
    warning = " — running out" if share >= WARN_RATIO else ""
    return f"{head} of {cap:,} tokens per 24 h ({share * 100:.0f} %){warning}"


TEMPLATE_TOKENS: Final = 256
"""Room for the text a server's chat template adds around the messages and tools (role markers, a tools
preamble): a request's prompt is taken as one token per byte of its body plus this."""


def round_worst_case(body_bytes: int, max_tokens: int | None, context_tokens: int) -> int:
    """The most tokens one request can cost (pure).

    The prompt: one token per byte of the request body (a token of a byte-level tokenizer covers at least one
    byte; the body's JSON syntax is more text than the template's own markers), plus
    :data:`TEMPLATE_TOKENS`. The answer: ``max_tokens``; when none is sent, the model's context window
    (``MANA_LLM_CONTEXT_TOKENS``), which bounds an answer only as far as that setting is true.
    """
    answer = max_tokens if max_tokens is not None and max_tokens > 0 else context_tokens
    return max(body_bytes, 0) + TEMPLATE_TOKENS + max(answer, 0)
