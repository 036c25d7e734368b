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


def finish_figure(
    fig: Any, out_dir: Path, key: str, title: str, caption: str, method_labels: Iterable[str]
) -> FigureFile:
    """Save ``fig`` (PNG + SVG) and describe it; the caption ends with its data's meter methods."""
    methods = split_methods(method_labels)
    png, svg = save(fig, out_dir, key)
    return FigureFile(key, title, caption + method_caption(methods), png, svg, methods)


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, Sequence[tuple[float | None, float | None]]],
    *,
    ylabel: str,
    log: bool = False,
    notes: Mapping[str, Sequence[str | None]] | None = None,
) -> int:
    """Bars of each series per group, with error bars.

    A ``None`` value leaves a gap, unless ``notes[series][group]`` names why: that text is then
    written upright in the bar's slot (``no steady state``), so an absent number is explicit.
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
        slot_notes = list((notes or {}).get(name) or [])
        for g, (value, _) in enumerate(values):
            note = slot_notes[g] if g < len(slot_notes) else None
            if note and (value is None or not math.isfinite(value)):
                _slot_note(ax, g - 0.4 + width * (i + 0.5), note)
        if xs:
            # energy is never negative: the lower whisker stops at zero
            yerr = [[min(e, y) for e, y in zip(errs, ys, strict=True)], errs] if any(errs) else None
            ax.bar(xs, ys, width=width * 0.95, yerr=yerr, capsize=3, label=name, color=f"C{i}")
            drawn += len(xs)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) <= 6 else 50, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log and drawn:
        ax.set_yscale("log")
    if len(series) > 1 and drawn:
        # every series in the legend, bars or not; colours fixed by position across panels
        from matplotlib.patches import Patch

        handles = [Patch(color=f"C{i}", label=name) for i, name in enumerate(series)]
        ax.legend(handles=handles, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return drawn


def _slot_note(ax: Any, x: float, text: str) -> None:
    """Upright text at the foot of an empty bar slot (x in data, y in axes coordinates)."""
    from matplotlib.transforms import blended_transform_factory

    ax.text(
        x,
        0.02,
        text,
        transform=blended_transform_factory(ax.transData, ax.transAxes),
        rotation=90,
        ha="center",
        va="bottom",
        fontsize=6,
        color="#6e7781",
        style="italic",
    )
