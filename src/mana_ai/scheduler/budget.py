"""How an agent's daily token budget stands, in words (``mana-ai agents show``, the workbench). Pure."""

from __future__ import annotations

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
