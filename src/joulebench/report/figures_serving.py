"""Figures from load runs: energy per request by arrival pattern, latency, shaping Pareto."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulebench.analysis.pareto import excluded, pareto_front
from joulebench.analysis.records import ACCOUNTINGS, LoadRun, StoreContents, num
from joulebench.analysis.stats import t_quantile_975
from joulebench.report.plotting import (
    FigureFile,
    MissingFigure,
    finish_figure,
    grouped_bars,
    pyplot,
)

FigureFn = Callable[[StoreContents, Path], "FigureFile | MissingFigure"]

ACCOUNTING_LABELS = {
    "paper_whole_window": "whole window ÷ successful requests (the study's; gross)",
    "idle_subtracted": "whole window − idle power × duration, ÷ successful (net)",
    "steady_state": "steady-state window (gross)",
    "attributed_mean": "per-request attribution, mean (gross)",
}
_LATENCIES = (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms/token)"), ("e2e_ms", "E2E (ms)"))


def _done_loads(contents: StoreContents) -> list[LoadRun]:
    """Every finished load run with a summary: ``done`` or ``failed``, audits passed or not.

    A failing audit check marks the run (its group label) but never drops it from a figure.
    """
    return [lr for lr in contents.load_runs if lr.run.finished and lr.run.summary]


def _group_label(lr: LoadRun) -> str:
    label = lr.arrival
    if lr.run.status != "done":
        label += f" [{lr.run.status}]"
    if lr.run.failed_audits:
        label += " ⚠ audit"
    return label


def _missing_note(lr: LoadRun, accounting: str, wh: float | None) -> str | None:
    """Why a bar is absent, written in its slot (``None`` when there is a bar)."""
    if wh is not None and wh > 0:
        return None
    if wh is not None:
        return "≤ 0 (below idle)"
    if not lr.requests_ok:
        return "no successful request"
    if num(lr.run.summary, "energy", "gross_j") is None:
        return "not measured"
    if accounting == "steady_state":
        return "no steady state"
    if accounting == "idle_subtracted":
        return "no idle baseline"
    return "not computed"


def _attributed_ci_wh(contents: StoreContents, lr: LoadRun) -> float | None:
    """95 % CI half-width of the mean attributed energy per request, from the requests table."""
    stats = contents.request_energy_j.get(lr.run.run_id)
    if not stats or stats[0] < 2:
        return None
    n, _, std = stats
    # Student t, not 1.96: with a handful of requests the large-sample bar is far too narrow
    return t_quantile_975(n - 1) * std / math.sqrt(n) / 3600.0


def energy_per_request_arrival(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "energy_per_request_arrival", "Energy per request vs arrival pattern"
    loads = [lr for lr in _done_loads(contents) if not lr.shaped]
    if not loads:
        return MissingFigure(key, title, "no completed load run (unshaped)")
    plt = pyplot()
    # one row of panels per scheduler, so many runs stay readable
    by_scheduler: dict[str, list[LoadRun]] = {}
    for lr in loads:
        by_scheduler.setdefault(lr.scheduler, []).append(lr)
    widest = max(len(v) for v in by_scheduler.values())
    fig, axes = plt.subplots(
        len(by_scheduler),
        1,
        figsize=(max(7.0, 1.5 * widest + 3), 3.4 * len(by_scheduler) + 0.6),
        sharey=True,
        squeeze=False,
    )
    drawn = 0
    for i, (ax, (scheduler, runs)) in enumerate(zip(axes[:, 0], by_scheduler.items(), strict=True)):
        series: dict[str, list[tuple[float | None, float | None]]] = {}
        notes: dict[str, list[str | None]] = {}
        for acc in ACCOUNTINGS:
            row, why = [], []
            for lr in runs:
                wh = lr.per_request_wh(acc)
                err = _attributed_ci_wh(contents, lr) if acc == "attributed_mean" else None
                row.append((wh if wh is None or wh > 0 else None, err))
                why.append(_missing_note(lr, acc, wh))
            series[ACCOUNTING_LABELS[acc]] = row
            notes[ACCOUNTING_LABELS[acc]] = why
        drawn += grouped_bars(
            ax,
            [_group_label(lr) for lr in runs],
            series,
            ylabel="energy per request (Wh)",
            log=True,
            notes=notes,
        )
        ax.set_title(f"scheduler: {scheduler}", fontsize=9)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()
    if not drawn:
        plt.close(fig)
        return MissingFigure(key, title, "load runs hold no per-request energy")
    fig.suptitle(title)
    fig.tight_layout()
    caption = (
        "One panel per scheduler, one group per load run (arrival pattern), one bar per energy "
        "accounting, in this order and colour in every panel — they answer different questions "
        "and are never mixed: (1) the study's whole window ÷ successful requests, gross (idle "
        "gaps and failed requests charged to the successful ones); (2) the same window less idle "
        "power × duration, net; (3) the steady-state window from the moment the server is full "
        "until the last send, gross; (4) the mean of the per-request attributions of the power "
        "timeline, gross (error bar: 95 % CI over requests). An empty slot says why it is empty: "
        "'no steady state' (a burst only fills and drains, sparse arrivals never fill the "
        "server), 'no idle baseline', '≤ 0 (below idle)'. '⚠ audit' marks a run with a failing "
        "audit check (see Audits); it is drawn, not dropped. Log scale. "
    )
    return finish_figure(fig, out, key, title, caption, (lr.run.method for lr in loads))


def latency_arrival(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "latency_arrival", "Latency vs arrival pattern (TTFT, TPOT, E2E)"
    loads = _done_loads(contents)
    loads = [lr for lr in loads if any(lr.latency_ms(m, "p50") is not None for m, _ in _LATENCIES)]
    if not loads:
        return MissingFigure(key, title, "no load run holds latency percentiles")
    plt = pyplot()
    # stacked panels, width by run count: many runs keep readable tick labels
    fig, axes = plt.subplots(3, 1, figsize=(max(8.0, 0.6 * len(loads) + 3), 12.0))
    labels = [lr.label for lr in loads]
    for ax, (metric, ylabel) in zip(axes, _LATENCIES, strict=True):
        series = {
            pct: [(lr.latency_ms(metric, pct), None) for lr in loads]
            for pct in ("p50", "p90", "p99")
        }
        grouped_bars(ax, labels, series, ylabel=ylabel)
        ax.set_title(metric.removesuffix("_ms").upper())
    fig.suptitle(title)
    caption = (
        "Client-side percentiles (p50, p90, p99) of successful requests: time to first token, "
        "time per output token after the first, end-to-end. Energy meter of these runs: "
    )
    return finish_figure(fig, out, key, title, caption, (lr.run.method for lr in loads))


def _point(summary: dict[str, Any], label: str, shaped: bool) -> dict[str, Any] | None:
    wh = num(summary, "energy", "per_request_wh", "attributed_mean")
    if wh is None:
        wh = num(summary, "energy", "per_request_wh", "paper_whole_window")
    p99 = num(summary, "e2e_ms", "p99")
    if wh is None or p99 is None:
        return None
    # figures over successful requests only: a run that lost some, or whose energy is ≤ 0, is
    # drawn but may not be on the front (its cheap, fast successes are not a better policy)
    failed = int(num(summary, "requests", "failed") or 0)
    return {"label": label, "wh": wh, "p99_ms": p99, "shaped": shaped,
            "eligible": excluded(wh, p99, failed) is None}  # fmt: skip


def front_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The eligible points no other beats on both energy and p99 latency, sorted by latency."""
    eligible = [p for p in points if p["eligible"]]
    flags = pareto_front([(p["wh"], p["p99_ms"]) for p in eligible])
    return sorted(
        (p for p, on in zip(eligible, flags, strict=True) if on), key=lambda p: p["p99_ms"]
    )


def shaping_pareto(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "shaping_pareto", "Arrival shaping: energy per request vs p99 latency"
    points: list[dict[str, Any]] = []
    methods_src: list[str] = []
    loads = _done_loads(contents)
    if any(lr.shaped for lr in loads):
        for lr in loads:
            p = _point(lr.run.summary, lr.label, lr.shaped)
            if p:
                points.append(p)
                methods_src.append(lr.run.method)
    for run in contents.shape_runs:
        for i, item in enumerate(run.summary.get("points") or []):
            if isinstance(item, dict):
                label = str(item.get("policy") or item.get("label") or f"{run.run_id}#{i}")
                p = _point(item, label, item.get("policy") not in (None, "passthrough"))
                if p:
                    points.append(p)
                    methods_src.append(run.method)
    if not any(p["shaped"] for p in points):
        return MissingFigure(key, title, "no shaped load run or shape-sweep in this store")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for shaped, marker, name in ((False, "o", "unshaped"), (True, "s", "shaped")):
        sel = [p for p in points if p["shaped"] == shaped]
        if sel:
            ax.scatter(
                [p["p99_ms"] for p in sel], [p["wh"] for p in sel], marker=marker, label=name
            )
            for p in sel:
                ax.annotate(p["label"], (p["p99_ms"], p["wh"]), fontsize=7, alpha=0.8)
    front = front_points(points)
    ax.plot(
        [p["p99_ms"] for p in front], [p["wh"] for p in front], "k--", lw=1, label="Pareto front"
    )
    ax.set_xlabel("p99 end-to-end latency (ms)")
    ax.set_ylabel("energy per request (Wh)")
    if all(p["wh"] > 0 for p in points):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    caption = (
        "Each point is one load test at the same offered load, shaped (gateway pacing or "
        "batching arrivals) or not; energy per request is the mean per-request attribution "
        "(whole-window ÷ requests when absent). Points on the dashed line are not beaten on both "
        "axes; a run with failed requests or energy ≤ 0 is drawn but never on the line (its "
        "figures cover only the requests that succeeded). "
    )
    return finish_figure(fig, out, key, title, caption, methods_src)


SERVING_FIGURES: tuple[FigureFn, ...] = (
    energy_per_request_arrival,
    latency_arrival,
    shaping_pareto,
)
