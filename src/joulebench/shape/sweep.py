"""Policy sweep: one direct baseline and several policies on the same trace → a Pareto table.

Every point is a measured run (:func:`joulebench.shape.experiment.measure_run`) against the same
server with the same meter and idle baseline. A point is on the Pareto front when no other point
has both lower energy per request (the chosen accounting, net by default) and lower latency (TTFT
p99 by default). A point with failed requests or energy ≤ 0 is listed but never on the front
(``pareto_excluded`` says why). The figure plots energy against latency, front joined, each
point labelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulebench.analysis.pareto import excluded, pareto_front
from joulebench.errors import ConfigError
from joulebench.extras import require
from joulebench.results.shaping import SweepResult
from joulebench.shape.experiment import GROSS_NET, RunSummary, Trial, measure_direct_and_shaped
from joulebench.shape.policies import Policy

LATENCY_METRICS = ("ttft_ms:p99", "ttft_ms:p50", "e2e_ms:p99", "e2e_ms:p50")


@dataclass(frozen=True, slots=True)
class SweepPoint:
    label: str
    energy_j: float | None
    latency_ms: float | None
    added_delay_p99_ms: float | None
    mean_batch_size: float | None
    failed: int
    on_front: bool = False
    excluded: str | None = None  # why the point may not be on the front

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.label,
            "energy_per_request_j": self.energy_j,
            "latency_ms": self.latency_ms,
            "added_delay_p99_ms": self.added_delay_p99_ms,
            "mean_batch_size": self.mean_batch_size,
            "failed": self.failed,
            "pareto": self.on_front,
            "pareto_excluded": self.excluded,
        }


def _excluded(p: SweepPoint) -> str | None:
    """Why ``p`` may not be on the Pareto front, or ``None`` (:func:`analysis.pareto.excluded`)."""
    return excluded(p.energy_j, p.latency_ms, p.failed)


@dataclass(slots=True)
class Sweep:
    runs: list[RunSummary]
    accounting: str
    latency: str
    config: dict[str, Any]
    method: str | None
    engine: dict[str, Any] | None = None  # the launched engine's process section, if any

    def points(self) -> list[SweepPoint]:
        metric, q = self.latency.split(":")
        raw = []
        for r in self.runs:
            failed = int((r.load.get("requests") or {}).get("failed") or 0)
            raw.append(
                SweepPoint(
                    r.label,
                    r.per_request_j().get(self.accounting),
                    r.latency_ms(metric, q),
                    r.added_delay_ms.get("p99"),
                    r.server.get("mean_batch_size"),
                    failed,
                )
            )
        excluded = [_excluded(p) for p in raw]
        usable = [i for i, why in enumerate(excluded) if why is None]
        flags = pareto_front([(raw[i].energy_j, raw[i].latency_ms) for i in usable])  # type: ignore[misc]
        front = {i for i, f in zip(usable, flags, strict=True) if f}
        return [
            SweepPoint(
                p.label,
                p.energy_j,
                p.latency_ms,
                p.added_delay_p99_ms,
                p.mean_batch_size,
                p.failed,
                i in front,
                excluded[i],
            )
            for i, p in enumerate(raw)
        ]

    def to_json(self) -> SweepResult:
        j: SweepResult = {
            "accounting": self.accounting,
            "accounting_kind": GROSS_NET[self.accounting],
            "latency": self.latency,
            "energy_method": self.method,
            "estimated": bool(self.method and "estimated" in self.method),
            "config": self.config,
            "points": [p.to_dict() for p in self.points()],
            "runs": [r.to_dict() for r in self.runs],
        }
        if self.engine is not None:
            j["engine"] = self.engine
        return j

    def figure(self, path: Path) -> Path:
        """Energy vs latency scatter with the Pareto front; PNG or SVG by suffix."""
        require("matplotlib", "report", "the sweep figure")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pts = [p for p in self.points() if p.energy_j is not None and p.latency_ms is not None]
        xy = [(float(p.latency_ms or 0.0), float(p.energy_j or 0.0)) for p in pts]
        if not pts:
            raise ConfigError("no point of the sweep has both energy and latency: nothing to plot")
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for p, (x, y) in zip(pts, xy, strict=True):
            ax.scatter(x, y, color="tab:red" if p.on_front else "tab:gray", zorder=3)
            ax.annotate(p.label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = sorted(xy_ for p, xy_ in zip(pts, xy, strict=True) if p.on_front)
        ax.plot(
            [f[0] for f in front],
            [f[1] for f in front],
            color="tab:red",
            lw=1,
            label="Pareto front",
        )
        label = f"energy per request, J ({self.accounting}, {GROSS_NET[self.accounting]}"
        label += f"; {self.method})" if self.method else ")"
        ax.set_xlabel(self.latency.replace(":", " ").replace("_ms", " (ms)"))
        ax.set_ylabel(label, fontsize=8)
        ax.set_title("Arrival shaping: energy vs latency", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def sweep(
    trial: Trial,
    policies: Sequence[str | Policy],
    *,
    accounting: str = "idle_subtracted",
    latency: str = "ttft_ms:p99",
) -> Sweep:
    """``trial``'s direct baseline then each policy (parsed up front, so a typo fails before any
    run), ranked by ``accounting`` and ``latency``."""
    if accounting not in GROSS_NET:
        raise ConfigError(f"unknown accounting {accounting!r}; known: {', '.join(GROSS_NET)}")
    if latency not in LATENCY_METRICS:
        raise ConfigError(
            f"unknown latency metric {latency!r}; known: {', '.join(LATENCY_METRICS)}"
        )
    if not policies:
        raise ConfigError("the sweep needs at least one policy")
    parsed = [trial.policy(p) for p in policies]
    runs, idle_power_w = measure_direct_and_shaped(trial, parsed)
    method = (runs[0].load.get("energy") or {}).get("method")
    config = {
        "url": trial.url or "embedded",
        "arrival": trial.arrival,
        "n": trial.n,
        "seed": trial.seed,
        "idle_power_w": idle_power_w,
        "warm_n": trial.warm_n,
    }
    return Sweep(runs, accounting, latency, config, method)
