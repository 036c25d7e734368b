"""Shared plotting plumbing: headless matplotlib, PNG + SVG output, method-labelled captions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulebench.extras import require

#: Methods that mean "no sensor was read".
_ESTIMATED = {"estimated"}
_TEST_ONLY = {"fake", "replay"}


@dataclass(frozen=True, slots=True)
class FigureFile:
    """A drawn figure: its files and a caption that names the meter method."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path
    methods: tuple[str, ...]

    @property
    def estimated(self) -> bool:
        return any(m in _ESTIMATED for m in self.methods)


@dataclass(frozen=True, slots=True)
class MissingFigure:
    """A figure the store has no data for, and why."""

    key: str
    title: str
    reason: str


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display, no network)."""
    mpl = require("matplotlib", "report", "report figures")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def split_methods(labels: Iterable[str]) -> tuple[str, ...]:
    """``["estimated", "counter+rapl"]`` → ``("counter", "estimated", "rapl")``."""
    out: set[str] = set()
    for label in labels:
        out.update(p for p in str(label).split("+") if p)
    return tuple(sorted(out))


def method_caption(methods: Sequence[str]) -> str:
    """The sentence every caption ends with: which meter method produced the numbers."""
    if not methods:
        return "Meter method: unknown (not recorded in the store)."
    text = f"Meter method: {', '.join(methods)}."
    if any(m in _ESTIMATED for m in methods):
        text += (
            " ESTIMATED: no energy sensor was read; energies come from the sensorless model"
            " (its parameters are in each run's meter record)."
        )
    if any(m in _TEST_ONLY for m in methods):
        text += " Test data (fake/replay meter): not a measurement."
    if len(methods) > 1:
        text += " Methods are mixed across the plotted runs."
    return text


def save(fig: Any, out_dir: Path, key: str) -> tuple[Path, Path]:
    """Write ``key.png`` and ``key.svg`` and close the figure."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{key}.png", out_dir / f"{key}.svg"
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    fig.savefig(svg)
    plt.close(fig)
    return png, svg


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, Sequence[tuple[float | None, float | None]]],
    *,
    ylabel: str,
    log: bool = False,
) -> int:
    """Bars of each series per group, with error bars; ``None`` values leave a gap.

    Returns how many bars were drawn.
    """
    n = max(len(series), 1)
    width = 0.8 / n
    drawn = 0
    for i, (name, values) in enumerate(series.items()):
        xs: list[float] = []
        ys: list[float] = []
        errs: list[float] = []
        for g, (value, err) in enumerate(values):
            if value is not None and math.isfinite(value):
                xs.append(g - 0.4 + width * (i + 0.5))
                ys.append(value)
                errs.append(err if err is not None and math.isfinite(err) else 0.0)
        if xs:
            # energy is never negative: the lower whisker stops at zero
            yerr = [[min(e, y) for e, y in zip(errs, ys, strict=True)], errs] if any(errs) else None
            ax.bar(xs, ys, width=width * 0.95, yerr=yerr, capsize=3, label=name)
            drawn += len(xs)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) <= 6 else 50, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log and drawn:
        ax.set_yscale("log")
    if len(series) > 1 and drawn:
        ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return drawn
