"""Build the report from a results store: every figure that has data, then ``index.html``.

Reads the store only (read-only connection); nothing here measures anything.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from joulebench._version import __version__
from joulebench.analysis.paper import batch_observations, compare
from joulebench.analysis.records import StoreContents, read_store
from joulebench.report.figures_engine import engine_occupancy
from joulebench.report.figures_profile import PROFILE_FIGURES
from joulebench.report.figures_serving import SERVING_FIGURES
from joulebench.report.figures_shaping import shaping_adaptive
from joulebench.report.html import page_template, render_html
from joulebench.report.plotting import FigureFile, MissingFigure
from joulebench.results.store import ResultStore

log = logging.getLogger(__name__)

FIGURES = (*PROFILE_FIGURES, *SERVING_FIGURES, shaping_adaptive, engine_occupancy)


@dataclass(slots=True)
class ReportResult:
    """What ``build_report`` wrote."""

    index_html: Path
    figures: list[FigureFile] = field(default_factory=list)
    missing: list[MissingFigure] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "index_html": str(self.index_html),
            "figures": [
                {"key": f.key, "png": str(f.png), "svg": str(f.svg), "methods": list(f.methods)}
                for f in self.figures
            ],
            "missing": [{"key": m.key, "reason": m.reason} for m in self.missing],
        }


def draw_figures(
    contents: StoreContents, out_dir: Path
) -> tuple[list[FigureFile], list[MissingFigure]]:
    drawn: list[FigureFile] = []
    missing: list[MissingFigure] = []
    for fn in FIGURES:
        result = fn(contents, out_dir)
        if isinstance(result, FigureFile):
            drawn.append(result)
        else:
            log.info("figure %s not drawn: %s", result.key, result.reason)
            missing.append(result)
    return drawn, missing


def build_report(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    title: str = "joulebench report",
) -> ReportResult:
    """Write ``out_dir/figures/*.png|svg`` and a self-contained ``out_dir/index.html``."""
    page_template()  # a missing ``joulebench[report]`` fails here, before any figure is drawn
    out = Path(out_dir)
    with ResultStore(store_path, read_only=True) as store:
        contents = read_store(store)
    out.mkdir(parents=True, exist_ok=True)
    figures, missing = draw_figures(contents, out / "figures")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_html(
        contents,
        figures,
        missing,
        compare(contents),
        batch_observations(contents.cells),
        title=title,
        subtitle=f"from {Path(store_path).name} · joulebench {__version__} · built {stamp}",
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return ReportResult(index, figures, missing)
