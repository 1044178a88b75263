"""Turning raw benchmark results into metrics: the rich table, ``results.json`` and the PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Metric:
    """One reported number: the median of the repetitions, with min and max."""

    name: str
    params: dict[str, Any]
    unit: str
    median: float | None
    min: float | None
    max: float | None
    n: int
    target: float | None = None
    higher_is_better: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    sub: bool = False
    """Shown indented under the metric before it (a detail of the same run)."""

    @property
    def met(self) -> bool | None:
        if self.target is None or self.median is None:
            return None
        return self.median >= self.target if self.higher_is_better else self.median <= self.target

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["met"] = self.met
        return body


def metric(
    name: str,
    summary: dict[str, Any],
    unit: str,
    params: dict[str, Any],
    *,
    target: float | None = None,
    higher_is_better: bool = False,
    scale: float = 1.0,
    sub: bool = False,
    **extra: Any,
) -> Metric:
    def scaled(value: Any) -> float | None:
        return None if value is None else float(value) * scale

    return Metric(
        name,
        params,
        unit,
        scaled(summary.get("median")),
        scaled(summary.get("min")),
        scaled(summary.get("max")),
        int(summary.get("n", 0)),
        target,
        higher_is_better,
        extra,
        sub,
    )


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return text + " " + unit if unit else text


_SHORT = {
    "history": ("", " rows"),
    "missions": ("", " missions"),
    "users": ("", " users"),
    "latency_ms": ("LLM ", " ms"),
    "concurrency": ("c=", ""),
    "in_flight": ("in flight ", ""),
    "tools": ("", " tools"),
    "db_pool": ("db pool ", ""),
    "processes": ("", " proc"),
}


def _params_text(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        prefix, suffix = _SHORT.get(key, (key + "=", ""))
        shown = (
            f"{value:,}"
            if isinstance(value, int) and value >= 10_000
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
        parts.append(prefix + shown + suffix)
    return ", ".join(parts)


def print_table(console: Console, metrics: list[Metric], failures: list[str]) -> None:
    table = Table(title="mana-ai benchmarks (median of repetitions; min..max)", show_lines=False)
    table.add_column("benchmark", no_wrap=True)
    table.add_column("setup", no_wrap=True)
    table.add_column("median", justify="right")
    table.add_column("min .. max", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for m in metrics:
        target = (
            "-" if m.target is None else ((">= " if m.higher_is_better else "<= ") + _fmt(m.target, m.unit))
        )
        verdict = {True: "[green]ok[/green]", False: "[red]MISSED[/red]", None: ""}[m.met]
        table.add_row(
            ("  └ " if m.sub else "") + m.name,
            _params_text(m.params),
            _fmt(m.median, m.unit),
            "" if m.min is None else _fmt(m.min, m.unit) + " .. " + _fmt(m.max, m.unit),
            target,
            verdict,
        )
    console.print(table)
    for failure in failures:
        console.print("[red]failed:[/red] " + failure)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# --- plots ------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_refresh(path: Path, points: list[dict[str, Any]]) -> None:
    """Refresh time vs history size (log-log), with the issue's targets."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [p["history_rows"] for p in points]
    series = (
        ("bootstrap_s", "bootstrap (empty snapshots)", "tab:blue", 1.0),
        ("incremental_s", "incremental (1,000 new rows)", "tab:orange", 0.1),
        ("nothing_new_s", "nothing new", "tab:green", 0.02),
    )
    for key, label, colour, target in series:
        have = [(size, p[key]) for size, p in zip(sizes, points, strict=True) if p.get(key, {}).get("median")]
        if not have:
            continue
        xs = [size for size, _ in have]
        meds = [s["median"] for _, s in have]
        errors = [[s["median"] - s["min"] for _, s in have], [s["max"] - s["median"] for _, s in have]]
        ax.errorbar(xs, meds, yerr=errors, marker="o", capsize=3, color=colour, label=label)
        ax.axhline(target, color=colour, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("history size (ai/aiMissions rows)")
    ax.set_ylabel("refresh time (s)")
    ax.set_title("Snapshot refresh (dotted: targets)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(
    path: Path, points: list[dict[str, Any]], *, x_key: str, x_label: str, title: str, ideal: Any
) -> None:
    """Missions/s vs one parameter, with the ideal bound and the p50/p99 service latency."""
    plt = _pyplot()
    points = sorted(points, key=lambda p: p["params"][x_key])
    xs = [p["params"][x_key] for p in points]
    meds = [p["throughput_per_s"]["median"] for p in points]
    lows = [m - p["throughput_per_s"]["min"] for m, p in zip(meds, points, strict=True)]
    highs = [p["throughput_per_s"]["max"] - m for m, p in zip(meds, points, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 5.2))
    ax.errorbar(xs, meds, yerr=[lows, highs], marker="o", capsize=3, label="measured (missions/s)")
    ideal_points = [(x, ideal(p)) for x, p in zip(xs, points, strict=True) if ideal(p) is not None]
    if ideal_points:
        ax.plot([x for x, _ in ideal_points], [y for _, y in ideal_points], "k--", label="ideal bound")
    for x, y in zip(xs, meds, strict=True):
        ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("missions / s")
    ax.set_title(title)
    top = max(meds + [y for _, y in ideal_points if y is not None]) if meds else 1
    ax.set_ylim(0, top * 1.15)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    p50 = [p["service_latency_ms"].get("p50") for p in points]
    p99 = [p["service_latency_ms"].get("p99") for p in points]
    ax2.plot(xs, p50, color="tab:gray", marker=".", linestyle=":", label="p50 claim→write-back (ms)")
    ax2.plot(xs, p99, color="tab:red", marker=".", linestyle=":", label="p99 claim→write-back (ms)")
    ax2.set_ylabel("per-mission latency (ms)")
    ax2.set_ylim(0, max([v for v in p99 if v is not None] or [1]) * 1.15)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(
        lines[0] + lines2[0],
        lines[1] + lines2[1],
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_llm_cost(path: Path, raw: dict[str, Any]) -> None:
    """CPU per LLM round by mode, against the 0.5 ms target."""
    plt = _pyplot()
    keys = [k for k in raw if isinstance(raw[k], dict) and "cpu_ms_per_round" in raw[k]]
    meds = [raw[k]["cpu_ms_per_round"]["median"] for k in keys]
    names = {"client": "client", "loop": "planner loop", "codec": "JSON codec\n(no I/O)"}
    labels = []
    for key in keys:
        mode, _, conc = key.partition("_c")
        labels.append(names.get(mode, mode) + ("\n" + conc + " in flight" if conc else ""))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, meds, color="tab:blue")
    ax.axhline(0.5, color="tab:red", linestyle="--", label="target 0.5 ms")
    for i, m in enumerate(meds):
        ax.annotate(f"{m:.3f}", (i, m), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.set_ylabel("CPU ms per LLM round (service process)")
    ax.set_title("LLM client cost, 62 tools per request, fake server at 0 ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaleout(path: Path, raw: dict[str, Any]) -> None:
    """Missions/s vs worker processes: measured, linear scaling from one process, the ideal bound, targets."""
    plt = _pyplot()
    points = sorted(raw["points"], key=lambda p: p["processes"])
    xs = [p["processes"] for p in points]
    meds = [p["throughput_per_s"]["median"] for p in points]
    lows = [m - p["throughput_per_s"]["min"] for m, p in zip(meds, points, strict=True)]
    highs = [p["throughput_per_s"]["max"] - m for m, p in zip(meds, points, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    ax.errorbar(xs, meds, yerr=[lows, highs], marker="o", capsize=3, label="measured (missions/s)")
    ax.plot(xs, [p["ideal_per_s"] for p in points], "k--", label="ideal bound (16 × processes / 0.2 s)")
    ax.plot(
        xs, [meds[0] * x / xs[0] for x in xs], color="tab:gray", linestyle=":", label="linear from 1 process"
    )
    targets = {2: 1.8, 4: 3.2}
    have = [(x, meds[0] * targets[x]) for x in xs if x in targets]
    if have:
        ax.scatter(
            [x for x, _ in have],
            [y for _, y in have],
            marker="_",
            s=400,
            color="tab:red",
            label="target (1.8×, 3.2×)",
        )
    for x, y, p in zip(xs, meds, points, strict=True):
        ratio = p["ratio_to_1"]["median"]
        ax.annotate(
            f"{y:.0f}/s ({ratio:.2f}×)",
            (x, y),
            textcoords="offset points",
            xytext=(-8, 4),
            ha="right",
            fontsize=8,
        )
    ax.set_xticks(xs)
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.4)
    ax.set_xlabel("mana-ai worker processes (concurrency 16 each)")
    ax.set_ylabel("missions / s")
    params = raw["params"]
    ax.set_title(
        f"Scale-out ({raw['missions']:,} missions, LLM {params['latency_ms']:g} ms, "
        f"{params['reps']} rep{'s' if params['reps'] != 1 else ''})"
    )
    ax.set_ylim(0, max(meds + [p["ideal_per_s"] for p in points]) * 1.15)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ceiling_median(point: dict[str, Any]) -> float | None:
    ceiling = point.get("ceiling") or {}
    value = (ceiling.get("missions_per_s") or {}).get("median")
    return None if value is None else float(value)


def plot_deploy(path: Path, planning: list[dict[str, Any]], refresh: dict[str, Any] | None) -> None:
    """The deployment-shaped workload: missions/s against the goals, CPU per mission of the service and of
    PostgreSQL, and the ticks with the refresh against their goals."""
    plt = _pyplot()
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(13, 4.2))
    labels = [f"{p['params']['latency_ms']:g} ms\n{p['params'].get('processes', 1)} proc." for p in planning]
    xs = list(range(len(planning)))
    meds = [p["throughput_per_s"]["median"] for p in planning]
    left.bar(xs, meds, color="tab:blue", label="measured")
    goals = [{0: 600.0, 100: 280.0}.get(int(p["params"]["latency_ms"])) for p in planning]
    left.scatter(xs, [g or 0 for g in goals], marker="_", s=900, color="tab:red", label="goal")
    ceilings = [(x, _ceiling_median(p)) for x, p in zip(xs, planning, strict=True)]
    if any(c is not None for _, c in ceilings):
        left.scatter(
            [x for x, c in ceilings if c is not None],
            [c for _, c in ceilings if c is not None],
            marker="_",
            s=900,
            color="black",
            label="LLM server's ceiling (bare client)",
        )
    tops = meds + [g or 0 for g in goals] + [c or 0 for _, c in ceilings]
    left.set_ylim(0, max(tops) * 1.35)
    for x, y, p in zip(xs, meds, planning, strict=True):
        load = max(p.get("loadavg_1m") or [0.0])
        left.annotate(f"{y:.0f}/s\nload {load:.1f}", (x, y), ha="center", va="bottom", fontsize=8)
    left.set_xticks(xs, labels)
    left.set_xlabel("LLM latency per request")
    left.set_ylabel("missions / s")
    left.set_title("serve over HTTP: 1,000 missions")
    left.legend(fontsize=7, loc="upper right")
    width = 0.38
    service = [p["service_cpu_ms_per_mission"]["median"] for p in planning]
    postgres = [p["postgres_cpu_ms_per_mission"]["median"] for p in planning]
    mid.bar([x - width / 2 for x in xs], service, width, label="service")
    mid.bar([x + width / 2 for x in xs], postgres, width, label="PostgreSQL")
    for x, p in zip(xs, planning, strict=True):
        trips = p["round_trips_per_mission"]["median"]
        mid.annotate(
            f"{trips:.2f}\nround trips",
            (x, 0),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    mid.set_xticks(xs, labels)
    mid.set_ylabel("CPU ms per planned mission")
    mid.set_title("CPU per mission")
    mid.legend(fontsize=8)
    if refresh:
        names = ["bootstrap\n(200,000 rows)", "1,000 new rows", "nothing new"]
        values = [refresh[k]["median"] for k in ("bootstrap_s", "incremental_s", "nothing_new_s")]
        targets = [1.0, 0.1, 0.02]
        rx = list(range(3))
        right.bar(rx, values, color="tab:green", label="measured")
        right.scatter(rx, targets, marker="_", s=900, color="tab:red", label="goal")
        right.set_yscale("log")
        right.set_xticks(rx, names)
        right.set_ylabel("tick wall time over HTTP (s)")
        right.set_title("tick with the snapshot refresh")
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
