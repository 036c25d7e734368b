"""Headline numbers of a ``reproduce`` run, each with its method label, read back from the store.

Nothing here measures: it reads what the studies stored (:mod:`joulebench.analysis.records`) and
picks the few numbers the CLI prints under the report's path — per model the cheapest and the
dearest precision, the batching trends, each of the study's serving headlines beside this
machine's counterpart — and counts the failed audit checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from joulebench.analysis.paper import batch_observations, compare
from joulebench.analysis.records import ProfileCell, StoreContents


@dataclass(frozen=True, slots=True)
class Headline:
    """One printed number: what it is, its value and unit, how it was obtained."""

    study: str
    label: str
    value: float | None
    unit: str
    method: str
    note: str = ""
    halfwidth: float | None = None  # 95 % CI half-width of ``value``, where repeats give one

    @property
    def estimated(self) -> bool:
        return "estimated" in self.method

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimated": self.estimated}


def _plan_run_ids(contents: StoreContents, plan_name: str) -> tuple[set[str], set[str]]:
    """(profile sweep run ids, load run ids) that belong to ``plan_name``."""
    sweeps = {
        r.run_id
        for r in contents.runs
        if r.kind == "sweep" and (r.name or "").startswith(f"reproduce-{plan_name}-")
    }
    loads = {
        r.run_id for r in contents.runs if r.kind == "load" and r.config.get("plan") == plan_name
    }
    return sweeps, loads


def _precision_headlines(cells: list[ProfileCell]) -> list[Headline]:
    by_model: dict[str, list[tuple[float, ProfileCell]]] = {}
    for c in cells:
        e = c.per_request_j()
        if c.study == "precision" and c.ok and e is not None:
            by_model.setdefault(c.model, []).append((e, c))
    out = []
    for model, items in sorted(by_model.items()):
        items.sort(key=lambda x: x[0])
        (lo, lo_c), (hi, hi_c) = items[0], items[-1]
        note = f"dearest: {hi_c.precision} {hi:.3g} J" if len(items) > 1 else ""
        out.append(
            Headline(
                "precision",
                f"{model}: cheapest precision {lo_c.precision} (prefill + decode)",
                lo,
                "J/request",
                lo_c.method,
                note,
                lo_c.per_request_halfwidth_j(),
            )
        )
    return out


def _batch_headlines(cells: list[ProfileCell]) -> list[Headline]:
    batch = [c for c in cells if c.study == "batch"]
    method = "+".join(sorted({c.method for c in batch if c.ok})) or "unknown"
    titles = {
        "batch_prefill": "prefill energy per effective input token vs batch",
        "batch_decode": "decode energy per request vs batch",
        "batch_output": "energy per output token vs batch",
    }
    return [
        Headline("batch", titles.get(key, key), None, "", method, text)
        for key, text in batch_observations(batch).items()
    ]


def _serving_headlines(contents: StoreContents, load_ids: set[str]) -> list[Headline]:
    scoped = StoreContents(
        [r for r in contents.runs if r.run_id in load_ids],
        [],
        [],
        [],
        {},
    )
    out = []
    for comp in compare(scoped):
        h = comp.headline
        here = comp.here_wh.get("paper_whole_window")
        attributed = comp.here_wh.get("attributed_mean")
        note = f"study (H100): {h.value:.2g} {h.unit}"
        if attributed is not None:
            note += f"; attributed here {attributed:.3g} Wh"
        if comp.here_run is None:
            note += "; no matching run here"
        interval = "" if h.interval_ms is None else f" {h.interval_ms:g} ms"
        out.append(
            Headline(
                "serving",
                f"{h.arrival_kind}{interval} arrivals · {h.scheduler} scheduler, "
                "whole window ÷ requests",
                here,
                "Wh/request",
                comp.here_method or "—",
                note,
            )
        )
    return out


def headlines(contents: StoreContents, plan_name: str) -> list[Headline]:
    """The printed headline numbers of ``plan_name``'s runs in ``contents``."""
    sweep_ids, load_ids = _plan_run_ids(contents, plan_name)
    cells = [c for c in contents.cells if c.run_id in sweep_ids]
    return (
        _precision_headlines(cells)
        + _batch_headlines(cells)
        + _serving_headlines(contents, load_ids)
    )


def audit_failures(contents: StoreContents, plan_name: str | None = None) -> list[dict[str, Any]]:
    """Failed audit checks (of ``plan_name``'s runs, or of the whole store)."""
    failed = [a for a in contents.audits if not a.get("passed")]
    if plan_name is None:
        return failed
    sweep_ids, load_ids = _plan_run_ids(contents, plan_name)
    return [a for a in failed if str(a.get("run_id")) in sweep_ids | load_ids]
