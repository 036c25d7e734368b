"""Figures: drawn when the store has data, named as missing (with a reason) when not."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.analysis.records import read_store
from joulebench.report.build import FIGURES, ReportResult, draw_figures
from joulebench.report.figures_profile import batch_groups, precision_cells
from joulebench.report.figures_serving import front_points
from joulebench.report.plotting import method_caption
from joulebench.results.store import ResultStore

PROFILE_KEYS = {
    "energy_model_precision",
    "energy_per_token_batch",
    "latency_profile",
    "roofline_efficiency",
}
SERVING_KEYS = {
    "energy_per_request_arrival", "latency_arrival", "shaping_pareto", "shaping_adaptive",
    "engine_occupancy",
}  # fmt: skip


def _draw(store: Path, out: Path):
    with ResultStore(store, read_only=True) as db:
        contents = read_store(db)
    return draw_figures(contents, out)


def test_full_store_draws_every_figure(full_report: ReportResult) -> None:
    drawn, missing = full_report.figures, full_report.missing
    assert {f.key for f in drawn} == PROFILE_KEYS | SERVING_KEYS
    assert len(drawn) == len(FIGURES) and missing == []
    for f in drawn:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.png.stat().st_size > 5000
        assert "<svg" in f.svg.read_text()[:2000]
        assert f.methods == ("estimated",) and f.estimated
        assert "ESTIMATED" in f.caption and "Meter method: estimated" in f.caption


def test_profile_only_store_names_serving_figures_missing(
    profile_only_store: Path, tmp_path: Path
) -> None:
    drawn, missing = _draw(profile_only_store, tmp_path)
    assert {f.key for f in drawn} == PROFILE_KEYS
    assert {m.key for m in missing} == SERVING_KEYS
    assert all(m.reason for m in missing)


def test_load_only_store_without_shaping(load_only_store: Path, tmp_path: Path) -> None:
    drawn, missing = _draw(load_only_store, tmp_path)
    # the fixture's first load launched its engine: occupancy beside power is drawn
    assert {f.key for f in drawn} == {
        "energy_per_request_arrival", "latency_arrival", "engine_occupancy",
    }  # fmt: skip
    reasons = {m.key: m.reason for m in missing}
    assert set(reasons) == PROFILE_KEYS | {"shaping_pareto", "shaping_adaptive"}
    assert "shaped" in reasons["shaping_pareto"]
    assert "slo" in reasons["shaping_adaptive"]


def test_empty_store_draws_nothing(empty_store: Path, tmp_path: Path) -> None:
    drawn, missing = _draw(empty_store, tmp_path / "figs")
    assert drawn == [] and len(missing) == len(FIGURES)
    assert not (tmp_path / "figs").exists() or not list((tmp_path / "figs").iterdir())


def test_cell_selection_skips_failed_cells(full_store: Path) -> None:
    with ResultStore(full_store, read_only=True) as db:
        contents = read_store(db)
    precision = precision_cells(contents)
    assert len(precision) == 6 and all(c.study == "precision" for c in precision)
    groups = batch_groups(contents)
    assert set(groups) == {("tiny-a", "float32", False), ("tiny-a", "float32", True)}
    assert [c.batch_size for c in groups[("tiny-a", "float32", False)]] == [1, 2, 4, 8]
    assert all(c.status == "done" for cs in groups.values() for c in cs)


def test_front_points_keep_only_eligible_points_on_the_front() -> None:
    pts = [
        {"label": "a", "wh": 1.0, "p99_ms": 100.0, "eligible": True},
        {"label": "b", "wh": 0.5, "p99_ms": 200.0, "eligible": True},
        {"label": "c", "wh": 0.6, "p99_ms": 300.0, "eligible": True},  # beaten by b on both
        {"label": "d", "wh": 0.1, "p99_ms": 900.0, "eligible": True},
        {"label": "e", "wh": 0.01, "p99_ms": 50.0, "eligible": False},  # lost requests
    ]
    assert [p["label"] for p in front_points(pts)] == ["a", "b", "d"]


@pytest.mark.parametrize(
    ("methods", "needle", "absent"),
    [
        (("counter",), "Meter method: counter.", "ESTIMATED"),
        (("estimated",), "ESTIMATED", "mixed"),
        (("counter", "estimated"), "mixed", "unknown"),
        (("fake",), "not a measurement", "ESTIMATED"),
        ((), "unknown", "ESTIMATED"),
    ],
)
def test_method_caption(methods: tuple[str, ...], needle: str, absent: str) -> None:
    text = method_caption(methods)
    assert needle in text and absent not in text


def test_adaptive_figure_puts_slo_beside_fixed_and_direct(full_store: Path, tmp_path: Path) -> None:
    from joulebench.report.figures_shaping import panels, shaping_adaptive

    with ResultStore(full_store, read_only=True) as db:
        contents = read_store(db)
    groups = panels(contents)
    assert list(groups) == ["uniform:50ms,300ms"]  # only the arrival with an slo run
    roles = groups["uniform:50ms,300ms"]
    assert [label for _, label in roles["adaptive"]] == ["slo:500ms"]
    assert len(roles["fixed"]) == 1 and [label for _, label in roles["direct"]] == ["direct"]
    fig = shaping_adaptive(contents, tmp_path)
    assert fig.key == "shaping_adaptive" and fig.png.stat().st_size > 5000  # type: ignore[union-attr]
