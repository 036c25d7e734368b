"""The serving figure names each accounting and says why a bar is absent (never a silent gap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from joulebench.analysis.records import read_store
from joulebench.report import figures_serving, plotting
from joulebench.report.plotting import grouped_bars, pyplot
from joulebench.results.store import ResultStore

METER = {"methods": {"cpu:0": "estimated"}}


def _summary(steady: float | None, idle: float | None) -> dict[str, Any]:
    return {
        "requests": {"total": 10, "ok": 10, "failed": 0},
        "e2e_ms": {"p50": 400.0, "p90": 500.0, "p99": 600.0},
        "energy": {
            "gross_j": 36.0,
            "per_request_wh": {
                "paper_whole_window": 0.001,
                "idle_subtracted": idle,
                "steady_state": steady,
                "attributed_mean": 0.00095,
            },
        },
        "meter_methods": METER["methods"],
    }


def _store(path: Path) -> Path:
    with ResultStore(path) as db:
        for spec, steady, idle in (("burst", None, 0.0006), ("fixed:500ms", 0.0007, None)):
            config = {"arrival": {"spec": spec}, "scheduler": "continuous"}
            run = db.start_run("load", config=config, meter=METER)
            db.finish_run(run, summary=_summary(steady, idle))
    return path


def test_absent_bars_are_labelled_and_every_accounting_is_in_the_legend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real_save = plotting.save

    def spy(fig: Any, out: Path, key: str) -> tuple[Path, Path]:
        ax = fig.axes[0]
        seen["texts"] = [t.get_text() for t in ax.texts]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        return real_save(fig, out, key)

    monkeypatch.setattr(plotting, "save", spy)  # finish_figure saves through it
    with ResultStore(_store(tmp_path / "s.duckdb"), read_only=True) as db:
        contents = read_store(db)
    fig = figures_serving.energy_per_request_arrival(contents, tmp_path / "figs")
    assert isinstance(fig, figures_serving.FigureFile)
    assert sorted(seen["texts"]) == ["no idle baseline", "no steady state"]
    assert seen["legend"] == [
        figures_serving.ACCOUNTING_LABELS[a] for a in figures_serving.ACCOUNTINGS
    ]
    assert all(("gross" in t) != ("net" in t) for t in seen["legend"])
    assert seen["ticks"] == ["burst", "fixed:500ms"]
    assert "'no steady state'" in fig.caption and "gross" in fig.caption and "net" in fig.caption


def test_grouped_bars_keeps_colours_by_series_and_notes_only_absent_values() -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    series = {"a": [(None, None), (2.0, None)], "b": [(1.0, None), (3.0, None)]}
    notes = {"a": ["why a0", "never shown"], "b": ["never shown", None]}
    drawn = grouped_bars(ax, ["g0", "g1"], series, ylabel="Wh", notes=notes)
    assert drawn == 3
    assert [t.get_text() for t in ax.texts] == ["why a0"]
    # series b keeps colour C1 although series a has a missing first value
    colours = {tuple(p.get_facecolor()) for p in ax.containers[1].patches}
    from matplotlib.colors import to_rgba

    assert colours == {to_rgba("C1")}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    plt.close(fig)


@pytest.mark.parametrize(
    ("accounting", "wh", "ok", "gross", "expected"),
    [
        ("steady_state", None, 5, 1.0, "no steady state"),
        ("idle_subtracted", None, 5, 1.0, "no idle baseline"),
        ("idle_subtracted", -0.1, 5, 1.0, "≤ 0 (below idle)"),
        ("attributed_mean", None, 0, 1.0, "no successful request"),
        ("paper_whole_window", None, 5, None, "not measured"),
        ("paper_whole_window", 0.2, 5, 1.0, None),
    ],
)
def test_missing_note(
    accounting: str, wh: float | None, ok: int, gross: float | None, expected: str | None
) -> None:
    from joulebench.analysis.records import LoadRun, RunRecord

    summary = {"requests": {"ok": ok}, "energy": {"gross_j": gross}}
    run = RunRecord("r", "load", None, "done", None, summary=summary)
    assert figures_serving._missing_note(LoadRun(run), accounting, wh) == expected


def test_attributed_error_bar_uses_student_t_for_few_requests():
    # 3 requests: t(2) = 4.303, not the large-sample 1.96 (a bar less than half as wide)
    from joulebench.analysis.records import RunRecord, StoreContents

    run = RunRecord("r1", "load", None, "done", None)
    contents = StoreContents([run], [], [], [], {}, {"r1": (3, 10.0, 2.0)})
    lr = contents.load_runs[0]
    half_wh = figures_serving._attributed_ci_wh(contents, lr)
    assert half_wh == pytest.approx(4.3027 * 2.0 / 3**0.5 / 3600.0, rel=1e-4)
    contents = StoreContents([run], [], [], [], {}, {"r1": (1, 10.0, 0.0)})
    assert figures_serving._attributed_ci_wh(contents, contents.load_runs[0]) is None


def test_shaping_pareto_point_with_failures_is_not_eligible():
    def summary(failed: int, wh: float) -> dict[str, Any]:
        return {
            "requests": {"ok": 10 - failed, "failed": failed},
            "e2e_ms": {"p99": 100.0},
            "energy": {"per_request_wh": {"attributed_mean": wh}},
        }

    assert figures_serving._point(summary(0, 1e-3), "a", False)["eligible"]
    assert not figures_serving._point(summary(3, 1e-4), "b", True)["eligible"]
    assert not figures_serving._point(summary(0, -1e-4), "c", True)["eligible"]
