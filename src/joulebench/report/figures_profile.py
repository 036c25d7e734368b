"""Figures from profile cells: model × precision, batch size, latency, roofline efficiency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from joulebench.analysis.records import PHASES, ProfileCell, StoreContents, num
from joulebench.report.plotting import (
    FigureFile,
    MissingFigure,
    finish_figure,
    finite,
    grouped_bars,
    pyplot,
)

FigureFn = Callable[[StoreContents, Path], "FigureFile | MissingFigure"]


def precision_cells(contents: StoreContents) -> list[ProfileCell]:
    """Cells of the precision study; unlabelled, the unbucketed cells at the smallest batch."""
    done = [c for c in contents.cells if c.ok]
    labelled = [c for c in done if c.study == "precision"]
    if labelled:
        return labelled
    plain = [c for c in done if not c.bucketing]
    smallest = min((c.batch_size or 1 for c in plain), default=1)
    return [c for c in plain if (c.batch_size or 1) == smallest]


def batch_groups(contents: StoreContents) -> dict[tuple[str, str, bool], list[ProfileCell]]:
    """(model, precision, bucketing) → cells sorted by batch size, with ≥ 2 batch sizes."""
    done = [c for c in contents.cells if c.ok and c.batch_size is not None]
    labelled = [c for c in done if c.study == "batch"]
    groups: dict[tuple[str, str, bool], list[ProfileCell]] = {}
    for c in labelled or done:
        groups.setdefault((c.model, c.precision, c.bucketing), []).append(c)
    return {
        k: sorted(v, key=lambda c: c.batch_size or 0)
        for k, v in groups.items()
        if len({c.batch_size for c in v}) >= 2
    }


def _grid(cells: Sequence[ProfileCell]) -> tuple[list[str], list[str]]:
    models = sorted({c.model for c in cells})
    precisions = sorted({c.precision for c in cells})
    return models, precisions


def energy_model_precision(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "energy_model_precision", "Energy by model × precision, prefill and decode"
    cells = precision_cells(contents)
    if not cells:
        return MissingFigure(key, title, "no completed profile cells of the precision study")
    models, precisions = _grid(cells)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = 0
    for ax, phase in zip(axes, PHASES, strict=True):
        series = {}
        for p in precisions:
            row = []
            for m in models:
                c = next((c for c in cells if c.model == m and c.precision == p), None)
                st = c.phase(phase) if c else None
                per_req = c.phase_per_request_j(phase) if c else None
                row.append((per_req, st.halfwidth(per_req) if st else None))
            series[p] = row
        drawn += grouped_bars(ax, models, series, ylabel=f"{phase} energy per request (J)")
        ax.set_title(phase)
    if not drawn:
        plt.close(fig)
        return MissingFigure(key, title, "precision cells hold no prefill/decode energy")
    fig.suptitle(title)
    caption = (
        "Gross energy per request of each phase (prefill = first token; decode = the rest), "
        "bars grouped by model, one colour per precision; error bars are the 95 % confidence "
        "half-widths of the stored repeats. "
    )
    return finish_figure(fig, out, key, title, caption, (c.method for c in cells))


_TOKEN_SERIES = (
    ("effective_input", "per effective input token (prefill)"),
    ("computed_input", "per computed input token (prefill, with padding)"),
    ("output", "per output token (decode)"),
)

#: The latency figure's panels, in the order of :data:`PHASES`: phase, y label, panel title.
_LATENCY_PANELS = (
    ("prefill", "time to first token per batch (ms)", "prefill (time to first token)"),
    (
        "decode",
        "decode time per token step (ms/token)",
        "decode (time per output token, per request)",
    ),
)


def energy_per_token_batch(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "energy_per_token_batch", "Energy per token vs batch size"
    groups = batch_groups(contents)
    if not groups:
        return MissingFigure(key, title, "no batch-size study (cells at ≥ 2 batch sizes)")
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (token, label) in zip(axes, _TOKEN_SERIES, strict=True):
        positive = True
        for (model, precision, bucketed), cells in groups.items():
            xs: list[int | None] = []
            ys: list[float] = []
            errs: list[float] = []
            phase = "decode" if token == "output" else "prefill"
            for c in cells:
                value = c.per_token_j()[token]
                st = c.phase(phase)
                if value is not None and finite(value):
                    xs.append(c.batch_size)
                    ys.append(value)
                    err = st.halfwidth(value) if st else None
                    errs.append(err if err is not None and finite(err) else 0.0)
            if xs:
                name = f"{model} {precision}" + (" bucketed" if bucketed else "")
                # energy is never negative; on the log axis the whisker stops just above zero
                low = [min(e, 0.999 * y) for e, y in zip(errs, ys, strict=True)]
                positive = positive and all(y > 0 for y in ys)
                ax.errorbar(
                    xs, ys, yerr=[low, errs], marker="o", capsize=3, label=name,
                    linestyle="--" if bucketed else "-",
                )  # fmt: skip
        ax.set_xscale("log", base=2)
        if positive and ax.has_data():
            ax.set_yscale("log")  # per-token energies span orders of magnitude across batches
        ax.set_xlabel("batch size (requests)")
        ax.set_ylabel("energy (J/token)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    all_cells = [c for cs in groups.values() for c in cs]
    fig.suptitle(title + " (solid: no bucketing, dashed: length bucketing)")
    caption = (
        "Prefill energy divided by effective input tokens (padding excluded) and by computed "
        "input tokens (padding included); decode energy divided by output tokens. Error bars: "
        "95 % confidence half-widths of the stored repeats. "
    )
    return finish_figure(fig, out, key, title, caption, (c.method for c in all_cells))


def latency_profile(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "latency_profile", "Latency: prefill (TTFT) and decode per token"
    cells = [c for c in contents.cells if c.ok]
    rows = []
    for c in cells:
        ms = dict(zip(PHASES, c.latency_ms(), strict=True))  # TTFT, ms per decode step
        if any(v is not None for v in ms.values()):
            rows.append((c, ms))
    if not rows:
        return MissingFigure(key, title, "no profile cell holds phase latencies")
    plt = pyplot()
    # stacked panels, width by group count: many cells keep readable tick labels
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.5 * len(rows) + 3), 9.0))
    fig.suptitle(title)
    labels = [c.label for c, _ in rows]
    for ax, (phase, ylabel, panel) in zip(axes, _LATENCY_PANELS, strict=True):
        ax.set_title(panel)
        grouped_bars(ax, labels, {phase: [(ms[phase], None) for _, ms in rows]}, ylabel=ylabel)
    caption = (
        "Mean wall-clock latency of the measured windows, synchronized at both edges: prefill "
        "time per batch (the batch's time to first token) and decode time per token step (each "
        "step yields one token for every request of the batch). Energy meter of these cells: "
    )
    return finish_figure(fig, out, key, title, caption, (c.method for c, _ in rows))


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def roofline_efficiency(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    key, title = "roofline_efficiency", "Roofline efficiency (time floor ÷ measured time)"
    cells = [c for c in contents.cells if c.ok and isinstance(c.result.get("roofline"), dict)]
    rows = []
    for c in cells:
        roof = c.result["roofline"]
        eff = {p: num(roof, p, "efficiency") for p in PHASES}
        if any(finite(v) for v in eff.values()):
            rows.append((c, eff))
    if not rows:
        reasons = sorted(
            {
                str(r)
                for c in contents.cells
                if (r := (c.result.get("roofline") or {}).get("reason"))
            }
        )
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return MissingFigure(key, title, "no profile cell holds a roofline efficiency" + why)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 3), 4.2))
    series = {p: [(_percent(e[p]), None) for _, e in rows] for p in PHASES}
    grouped_bars(
        ax, [c.label for c, _ in rows], series, ylabel="efficiency (% of roofline)", log=True
    )
    ax.set_title(title)
    caption = (
        "Roofline time floor = max(FLOPs ÷ peak compute, bytes ÷ memory bandwidth) from the model "
        "config, dtype and lengths, divided by the measured phase time (log scale). Energy meter "
        "of these cells: "
    )
    return finish_figure(fig, out, key, title, caption, (c.method for c, _ in rows))


PROFILE_FIGURES: tuple[FigureFn, ...] = (
    energy_model_precision,
    energy_per_token_batch,
    latency_profile,
    roofline_efficiency,
)
