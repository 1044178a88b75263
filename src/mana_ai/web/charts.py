"""Inline SVG bar charts for the token-usage panels (pure; no JavaScript, no external assets)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def bar_chart(
    values: Sequence[int],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 480,
    height: int = 140,
    label_every: int = 1,
) -> Markup:
    """A bar chart of ``values`` with an x label under every ``label_every``-th bar and a ``<title>`` per bar.

    Args:
        values: non-negative bar heights (tokens).
        labels: one label per value.
        title: accessible name of the chart (``aria-label``).
        width: SVG width in px.
        height: SVG height in px (the plot area leaves 18 px for labels and 14 px for the maximum).
        label_every: show every n-th label, so 24 hourly labels stay readable.
    """
    top, bottom = 14, 18
    plot = height - top - bottom
    peak = max(values, default=0)
    n = max(len(values), 1)
    slot = width / n
    bar = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="10" class="chart-max">max {peak:,}</text>',
        f'<line x1="0" y1="{top + plot}" x2="{width}" y2="{top + plot}" class="chart-axis"/>',
    ]
    for i, value in enumerate(values):
        h = 0.0 if peak <= 0 else plot * value / peak
        x = i * slot + (slot - bar) / 2
        y = top + plot - h
        label = labels[i] if i < len(labels) else ""
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" class="chart-bar">'
            f"<title>{escape(label)}: {value:,} tokens</title></rect>"
        )
        if label and i % max(label_every, 1) == 0:
            parts.append(
                f'<text x="{i * slot + slot / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                f'class="chart-label">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
