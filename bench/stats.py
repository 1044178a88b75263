"""Summaries of repeated measurements: median, min, max; percentiles of latency samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of the repetitions, plus the raw values (for the JSON file)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of already sorted values (``q`` in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99, 100)) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {"p" + str(int(q)): percentile(ordered, q) for q in qs}
