"""The self-contained HTML report, rendered by Jinja2 from ``joulebench/data/report/``.

This module turns the store's records into rows of formatted text; the templates own every tag.
Autoescaping is on, so every value — model, sweep and run names, error texts, environment
fields — reaches the page escaped. The page is one file: inline CSS, figures as base64 data URIs,
no external request.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joulebench.analysis.paper import CITATION, PAPER_HARDWARE, TRENDS, Comparison
from joulebench.analysis.records import ACCOUNTINGS, StoreContents
from joulebench.extras import require
from joulebench.report.plotting import FigureFile, MissingFigure, split_methods

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "page.html.j2"


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


@dataclass(frozen=True, slots=True)
class Num:
    """A number cell's text ("—" when absent, "± half-width" when known) and footnote mark."""

    text: str
    mark: str = ""


def _num(value: float | None, err: float | None = None, mark: str = "") -> Num:
    if value is None:
        return Num(fmt(None))
    return Num(fmt(value) + (f" ± {fmt(err, 2)}" if err is not None else ""), mark)


@functools.cache
def page_template() -> jinja2.Template:
    """The page template, loaded once; raises ``MissingExtra`` naming ``joulebench[report]``."""
    jinja = require("jinja2", "report", "rendering the HTML report")
    env = jinja.Environment(
        loader=jinja.PackageLoader("joulebench", "data/report"),
        autoescape=True,
        undefined=jinja.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    template: jinja2.Template = env.get_template(TEMPLATE)
    return template


def _figure(f: FigureFile) -> dict[str, str]:
    return {
        "key": f.key,
        "title": f.title,
        "caption": f.caption,
        "png_base64": base64.b64encode(f.png.read_bytes()).decode("ascii"),
        "png_name": f.png.name,
        "svg_name": f.svg.name,
    }


def _summary(c: StoreContents, audits_failed: int) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for r in c.runs:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    methods = split_methods([r.method for r in c.runs] + [x.method for x in c.cells if x.ok])
    methods = tuple(m for m in methods if m != "unknown")
    return {
        "runs": sorted(kinds.items()),
        "cells_done": sum(1 for x in c.cells if x.ok),
        "cells_failed": sum(1 for x in c.cells if x.status == "failed"),
        "audits_passed": len(c.audits) - audits_failed,
        "audits_failed": audits_failed,
        "methods": methods,
        "estimated": "estimated" in methods,
    }


def _flat(prefix: str, obj: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, v in enumerate(obj):
            _flat(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, json.dumps(obj, default=str) if not isinstance(obj, str) else obj))


def _environments(c: StoreContents) -> list[dict[str, Any]]:
    """One field/value table per distinct (environment, meter) of the store's runs."""
    out = []
    seen: set[str] = set()
    for r in c.runs:
        pairs: list[tuple[str, str]] = []
        _flat("", {"environment": r.environment, "meter": r.meter}, pairs)
        text = json.dumps(pairs)
        if not pairs or text in seen:
            continue
        seen.add(text)
        out.append({"kind": r.kind, "run_id": r.run_id, "pairs": pairs})
    return out


def _cells(c: StoreContents) -> list[dict[str, Any]]:
    rows = []
    for x in c.cells:
        pre, dec = x.phase("prefill"), x.phase("decode")
        per = x.per_token_j() if x.ok else {}
        e_pre = pre.energy_j if pre else None
        e_dec = dec.energy_j if dec else None
        texts = (
            x.study,
            x.model,
            x.precision,
            x.batch_size,
            "yes" if x.bucketing else "no",
            x.status,
        )
        numbers = (
            _num(e_pre, pre.halfwidth(e_pre) if pre else None),
            _num(e_dec, dec.halfwidth(e_dec) if dec else None),
            _num(per.get("effective_input")), _num(per.get("computed_input")),
            _num(per.get("output")), _num(x.padding_ratio),
        )  # fmt: skip
        rows.append(
            {
                "run_id": x.run_id,
                "cell_key": x.cell_key,
                "texts": ["" if t is None else t for t in texts],
                "numbers": numbers,
                "method": x.method if x.ok else "—",
                "error": x.error or "",
                "failed": x.status == "failed",
            }
        )
    return rows


def _loads(c: StoreContents) -> dict[str, Any]:
    rows = []
    for lr in c.load_runs:
        s = lr.run.summary
        few = (lr.requests_ok or 0) < 100  # a p99 of fewer than 100 values is about their max
        numbers = [_num(lr.requests_ok), _num(lr.requests_failed), _num(s.get("achieved_rate_rps"))]
        numbers += [_num(lr.per_request_wh(a)) for a in ACCOUNTINGS]
        numbers += [
            _num(lr.latency_ms(m, p), mark="†" if p == "p99" and few else "")
            for m in ("ttft_ms", "e2e_ms")
            for p in ("p50", "p99")
        ]
        bad = lr.run.failed_audits
        rows.append(
            {
                "run_id": lr.run.run_id,
                "texts": [lr.arrival, lr.scheduler, "yes" if lr.shaped else "no", lr.run.status],
                "numbers": numbers,
                "method": lr.run.method,
                "failed_audits": bad,
                "failed": lr.run.status != "done" or bool(bad),
            }
        )
    return {
        "accountings": ACCOUNTINGS,
        "rows": rows,
        "few_requests": any((lr.requests_ok or 0) < 100 for lr in c.load_runs),
    }


def _paper(comparisons: Sequence[Comparison], observations: Mapping[str, str]) -> dict[str, Any]:
    rows = [
        {
            "label": cmp.headline.label,
            "value": fmt(cmp.headline.value),
            "unit": cmp.headline.unit,
            "setting": cmp.headline.setting,
            "here": [(a, fmt(v)) for a, v in cmp.here_wh.items()],
            "method": cmp.here_method or "—",
            "hardware": cmp.hardware_note,
            "caveat": cmp.headline.caveat,
        }
        for cmp in comparisons
    ]
    trends = [
        {
            "claim": t.claim,
            "observed": observations.get(t.key, "not measured here"),
            "figure": t.figure,
        }
        for t in TRENDS
    ]
    return {"hardware": PAPER_HARDWARE, "citation": CITATION, "rows": rows, "trends": trends}


def _missing(c: StoreContents, missing: Sequence[MissingFigure]) -> dict[str, Any]:
    return {
        "figures": list(missing),
        "cells": [x for x in c.cells if x.status == "failed"],
        "runs": [r for r in c.runs if r.status != "done"],
    }


def render_html(
    contents: StoreContents,
    figures: Sequence[FigureFile],
    missing: Sequence[MissingFigure],
    comparisons: Sequence[Comparison],
    observations: Mapping[str, str],
    *,
    title: str,
    subtitle: str,
) -> str:
    """The report page; raises ``MissingExtra`` without ``joulebench[report]``."""
    template = page_template()
    audits_failed = sum(1 for a in contents.audits if not a["passed"])
    return template.render(
        title=title,
        subtitle=subtitle,
        summary=_summary(contents, audits_failed),
        missing=_missing(contents, missing),
        figures=[_figure(f) for f in figures],
        paper=_paper(comparisons, observations),
        cells=_cells(contents),
        loads=_loads(contents),
        audits=contents.audits,
        environments=_environments(contents),
    )
