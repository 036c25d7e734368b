"""Batch occupancy beside power: what a launched engine's /metrics said while the meter ran.

One panel per load run that scraped its engine (``joulebench load --launch/--engine``): the
meter's power over the run (all measured domains) and, on the right axis, the requests the
engine was running and holding in its queue, scraped at 1 Hz. Occupancy is the mechanism by
which arrival shaping saves energy: the same power spread over a fuller batch.
"""

from __future__ import annotations

from pathlib import Path

from joulebench.analysis.records import LoadRun, StoreContents, dig
from joulebench.report.figures_serving import _done_loads
from joulebench.report.plotting import FigureFile, MissingFigure, finish_figure, pyplot

KEY = "engine_occupancy"
TITLE = "Engine batch occupancy beside power"
MAX_PANELS = 8


def _panels(contents: StoreContents) -> list[tuple[LoadRun, list[dict[str, float]]]]:
    out = []
    for lr in _done_loads(contents):
        samples = dig(lr.run.summary, "engine", "metrics", "samples") or []
        if samples and contents.engine_power_w.get(lr.run.run_id):
            out.append((lr, samples))
    return out[-MAX_PANELS:]


def engine_occupancy(contents: StoreContents, out: Path) -> FigureFile | MissingFigure:
    panels = _panels(contents)
    if not panels:
        return MissingFigure(
            KEY, TITLE, "no load run scraped a launched engine's /metrics beside a power timeline"
        )
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.0, 3.2 * len(panels)), squeeze=False)
    for ax, (lr, samples) in zip(axes[:, 0], panels, strict=True):
        power = contents.engine_power_w[lr.run.run_id]
        t0 = min(power[0][0], samples[0]["t_s"])
        ax.plot([t - t0 for t, _ in power], [w for _, w in power], color="tab:red", lw=1.0)
        ax.set_ylabel("power (W)", color="tab:red")
        ax.set_xlabel("time since the load started (s)")
        occ = ax.twinx()
        for key, color in (("running", "tab:blue"), ("waiting", "tab:gray")):
            pts = [(s["t_s"] - t0, s[key]) for s in samples if key in s]
            if pts:
                occ.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=color,
                         label=f"{key} (engine)")  # fmt: skip
        occ.set_ylabel("requests")
        occ.set_ylim(bottom=0)
        occ.legend(loc="upper right", fontsize=8)
        engine = dig(lr.run.summary, "engine", "preset") or "engine"
        ax.set_title(f"{lr.label} · {engine}", fontsize=9)
    fig.suptitle(TITLE)
    caption = (
        "Left axis: the meter's power over each launched-engine load run (all measured domains). "
        "Right axis: requests the engine reported running (its batch) and waiting, scraped from "
        "its /metrics at 1 Hz. Meter of these runs: "
    )
    return finish_figure(fig, out, KEY, TITLE, caption, (lr.run.method for lr, _ in panels))
