"""Adaptive shaping beside fixed shaping: net energy per request vs TTFT p99, per arrival pattern.

One panel per arrival pattern that has an adaptive (``slo:…``) shaped run: the direct run, every
fixed policy (cadence, window) and the adaptive one, each a measured load test on the same trace.
The dotted line is direct's TTFT p99 plus the adaptive policy's budget: points right of it added
more first-token latency than the budget allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from joulebench.analysis.records import LoadRun, StoreContents, num
from joulebench.report.figures_serving import _done_loads
from joulebench.report.plotting import FigureFile, MissingFigure, finish_figure, pyplot

KEY = "shaping_adaptive"
TITLE = "Adaptive shaping (slo) beside fixed policies: energy vs first-token latency"
ENERGY = "idle_subtracted"


def policy_of(lr: LoadRun) -> dict[str, Any] | None:
    """``{"spec", "kind", "bound_ms"}`` of a shaped run (``None`` for a direct one)."""
    if not lr.shaped:
        return None
    pol = lr.run.config.get("shape_policy")
    via = lr.run.config.get("via_shape")
    if isinstance(pol, Mapping) and pol.get("spec"):
        spec = str(pol["spec"])
        return {"spec": spec, "kind": str(pol.get("kind") or spec.split(":")[0]),
                "bound_ms": num(pol, "bound_ms")}  # fmt: skip
    spec = via if isinstance(via, str) else "shaped"
    return {"spec": spec, "kind": spec.split(":")[0], "bound_ms": None}


def _xy(lr: LoadRun) -> tuple[float, float] | None:
    x, y = lr.latency_ms("ttft_ms", "p99"), lr.per_request_wh(ENERGY)
    return None if x is None or y is None else (x, y)


def panels(contents: StoreContents) -> dict[str, dict[str, list[tuple[LoadRun, str]]]]:
    """arrival → {"direct"|"fixed"|"adaptive": [(run, label)]}, only arrivals with an adaptive run."""
    out: dict[str, dict[str, list[tuple[LoadRun, str]]]] = {}
    for lr in _done_loads(contents):
        pol = policy_of(lr)
        role = "direct" if pol is None else "adaptive" if pol["kind"] == "slo" else "fixed"
        label = "direct" if pol is None else pol["spec"]
        out.setdefault(lr.arrival, {"direct": [], "fixed": [], "adaptive": []})[role].append(
            (lr, label)
        )
    return {a: p for a, p in out.items() if p["adaptive"]}


def shaping_adaptive(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    groups = panels(contents)
    if not groups:
        return MissingFigure(KEY, TITLE, "no adaptive (slo:…) shaped load run in this store")
    plt = pyplot()
    n = len(groups)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.4 * rows), squeeze=False)
    methods: list[str] = []
    style = {
        "direct": ("o", "black", "direct"),
        "fixed": ("s", "tab:gray", "fixed policy"),
        "adaptive": ("*", "tab:red", "adaptive (slo)"),
    }
    for ax, (arrival, roles) in zip(axes.flat, sorted(groups.items()), strict=False):
        for role, (marker, color, name) in style.items():
            pts = [(lr, label, xy) for lr, label in roles[role] if (xy := _xy(lr)) is not None]
            if not pts:
                continue
            ax.scatter([xy[0] for *_, xy in pts], [xy[1] for *_, xy in pts], marker=marker,
                       color=color, s=140 if role == "adaptive" else 40, label=name, zorder=3)  # fmt: skip
            for lr, label, xy in pts:
                methods.append(lr.run.method)
                ax.annotate(label, xy, fontsize=7, xytext=(4, 3), textcoords="offset points")
        direct = [_xy(lr) for lr, _ in roles["direct"]]
        budget = [policy_of(lr) for lr, _ in roles["adaptive"]]
        bound = next((p["bound_ms"] for p in budget if p and p["bound_ms"] is not None), None)
        if direct and direct[0] is not None and bound is not None:
            ax.axvline(direct[0][0] + bound, color="tab:red", ls=":", lw=1,
                       label=f"direct p99 + {bound:g} ms budget")  # fmt: skip
        ax.set_title(arrival, fontsize=9)
        ax.set_xlabel("TTFT p99 (ms)")
        ax.set_ylabel("net energy per request (Wh)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(TITLE, fontsize=10)
    caption = (
        "Each point is one load test on the same seeded trace and server: sent directly, "
        "through a fixed policy (cadence or window), or through the adaptive slo policy, which "
        "was given only a latency budget (the same spec at every rate). Energy is net of idle "
        "power (whole window − idle × duration, ÷ successful requests); down and left is "
        "better; points right of the dotted line added more TTFT p99 than the budget. "
    )
    return finish_figure(fig, out, KEY, TITLE, caption, methods)
