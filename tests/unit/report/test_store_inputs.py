"""Reading per-request energies and the study's comparison out of a filled store."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulebench.analysis.estimate import per_request_from_store
from joulebench.analysis.paper import batch_observations, compare, hardware_note, headlines
from joulebench.analysis.records import arrival_label, read_store
from joulebench.errors import ConfigError, UnknownName
from joulebench.results.store import ResultStore


def _contents(path: Path):
    with ResultStore(path, read_only=True) as db:
        return read_store(db)


def test_load_run_accountings(load_only_store: Path) -> None:
    c = _contents(load_only_store)
    seq = next(lr for lr in c.load_runs if lr.arrival == "sequential")
    got = per_request_from_store(c, run=seq.run.run_id, accounting="paper_whole_window")
    assert got.wh_per_request == pytest.approx(0.12)
    assert got.method == "estimated" and "paper_whole_window" in got.source
    att = per_request_from_store(c, run=seq.run.run_id)
    assert att.wh_per_request == pytest.approx(0.12 * 0.95)


def test_profile_cell_is_prefill_plus_decode_per_request(profile_only_store: Path) -> None:
    c = _contents(profile_only_store)
    cell = next(x for x in c.cells if x.ok and x.batch_size == 4 and not x.bucketing)
    got = per_request_from_store(c, cell=cell.cell_key[:4])
    pre, dec = cell.phase("prefill"), cell.phase("decode")
    assert pre and dec and pre.energy_j and dec.energy_j
    # phase energies cover the whole pass over n_requests, not one batch
    assert cell.n_requests == 8
    assert got.wh_per_request == pytest.approx((pre.energy_j + dec.energy_j) / 8 / 3600)
    assert got.method == "estimated"


def test_ambiguous_or_unknown_choices_list_candidates(full_store: Path) -> None:
    c = _contents(full_store)
    with pytest.raises(ConfigError, match="candidates; choose one: --run load-"):
        per_request_from_store(c)
    with pytest.raises(ConfigError, match="no completed profile cell matches"):
        per_request_from_store(c, cell="nope")
    with pytest.raises(ConfigError, match="has 14 cells"):
        per_request_from_store(c, run=c.cells[0].run_id)
    with pytest.raises(UnknownName, match="attributed_mean"):
        per_request_from_store(c, run="x", accounting="average")
    # a failed cell is never a source
    with pytest.raises(ConfigError, match="no completed profile cell"):
        per_request_from_store(c, cell="c99")


def test_empty_store_says_so(empty_store: Path) -> None:
    with pytest.raises(ConfigError, match="no completed load run or profile cell"):
        per_request_from_store(_contents(empty_store))


def test_compare_matches_each_headline(full_store: Path) -> None:
    cmp = {x.headline.key: x for x in compare(_contents(full_store))}
    assert set(cmp) == {h.key for h in headlines()}
    assert cmp["naive_sequential"].here_wh["paper_whole_window"] == pytest.approx(0.12)
    assert cmp["tgi_burst"].here_wh["paper_whole_window"] == pytest.approx(0.0096)
    fixed = cmp["tgi_fixed_500ms"]
    assert fixed.here_wh["paper_whole_window"] == pytest.approx(0.0011)
    assert "idle" in fixed.headline.caveat
    assert "different hardware" in fixed.hardware_note and fixed.here_method == "estimated"


def test_compare_without_load_runs(profile_only_store: Path) -> None:
    for x in compare(_contents(profile_only_store)):
        assert x.here_wh == {} and x.here_run is None


def test_batch_observations_follow_the_data(profile_only_store: Path) -> None:
    obs = batch_observations(_contents(profile_only_store).cells)
    assert obs["batch_prefill"].startswith("rises")  # padding grows with batch
    assert obs["batch_output"].startswith("falls")
    assert "b=" in obs["batch_decode"]


def test_hardware_note_and_arrival_labels() -> None:
    assert "same GPU family" in hardware_note({"gpu": [{"name": "NVIDIA H100 80GB HBM3"}]})
    assert "no GPU" in hardware_note({"cpu": {"model": "EPYC"}})
    assert arrival_label({"kind": "fixed", "interval_ms": 300}) == "fixed 300 ms"
    assert (
        arrival_label({"kind": "uniform", "low_ms": 50, "high_ms": 300}) == "uniform U(50, 300) ms"
    )
    assert arrival_label({"spec": "poisson:20", "kind": "poisson"}) == "poisson:20"
    assert arrival_label(None) == "?"


def test_runs_against_a_continuous_engine_stand_beside_the_studys_tgi_figures(tmp_path) -> None:
    """``reproduce --engine tgi`` stores its serving runs as ``engine:tgi``: they match the
    study's continuous-batching headlines (said so in the note), never the naive sequential
    one; an engine joulebench does not know (``--launch``: ``engine:custom``) matches none."""
    meter = {"name": "estimate", "methods": {"cpu:0": "estimated"}, "update_period_s": 0.1}
    environment = {"cpu": {"model": "Test CPU 2-core", "cores": 2}, "gpu": None}

    def summary(wh: float) -> dict:
        return {
            "requests": {"total": 10, "ok": 10, "failed": 0},
            "energy": {"gross_j": wh * 36000, "per_request_wh": {"paper_whole_window": wh},
                       "method": "estimated"},
        }  # fmt: skip

    path = tmp_path / "engines.duckdb"
    with ResultStore(path) as db:
        for scheduler, arrival, wh in (
            ("engine:tgi", "burst", 0.01),
            ("engine:custom", "fixed", 0.002),
            ("engine:tgi", "sequential", 0.1),
        ):
            config = {"arrival": {"spec": arrival, "kind": arrival, "interval_ms": 500.0},
                      "scheduler": scheduler}  # fmt: skip
            run = db.start_run("load", config=config, environment=environment, meter=meter)
            db.finish_run(run, summary=summary(wh))
    cmp = {x.headline.key: x for x in compare(_contents(path))}
    burst = cmp["tgi_burst"]
    assert burst.here_wh["paper_whole_window"] == pytest.approx(0.01)
    assert burst.hardware_note.startswith("measured on engine:tgi (continuous batching)")
    assert cmp["tgi_fixed_500ms"].here_run is None  # engine:custom: not known to batch
    assert cmp["naive_sequential"].here_run is None  # an engine is not the naive baseline
