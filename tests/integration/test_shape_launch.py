"""``shape-compare`` and ``shape-sweep`` against an engine they launch (joulebench's stub, which
serves /metrics in vLLM's format): the output's ``engine`` section and each run's own (metrics
scraped during that run, the exit status stamped after the engine stopped); nothing left
running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from joulebench.results.shaping import validate_comparison, validate_sweep
from support.engines import assert_nothing_left, jb, pids_of, stub_engine

pytestmark = pytest.mark.integration

RUN = ("--arrival", "poisson:20", "--n", "8", "--prompts", "quick", "--output-length", "4",
       "--idle-s", "0.2", "--meter", "fake", "--json")  # fmt: skip


def _check_runs(top: dict[str, Any], loads: list[dict[str, Any]], log_dir: Path) -> None:
    """The process section at the top, and each run's engine section: the same process, final
    exit status, and /metrics samples of that run only (in run order, none shared)."""
    assert top["preset"] == "custom" and "engine.py" in top["command"]
    assert top["ready_s"] > 0 and top["stopped_by"] == "SIGTERM" and top["exit_code"] is not None
    assert not top["died_during_run"]
    assert (
        Path(top["log_file"]).parent == log_dir and "stub at" in Path(top["log_file"]).read_text()
    )
    previous_end = float("-inf")
    for load in loads:
        assert load["requests"]["ok"] == 8
        e = load["engine"]
        assert {k: e[k] for k in top} == top  # stamped after the stop, like the top section
        samples = e["metrics"]["samples"]
        assert len(samples) >= 2 and {"running", "waiting"} <= set(samples[0])
        assert samples[0]["t_s"] > previous_end  # this run's scrapes, not the previous run's
        previous_end = samples[-1]["t_s"]
        assert e["server_energy"] is None  # the stub reports no energy here


def test_shape_compare_records_its_engine(tmp_path) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    proc = jb(
        "shape-compare", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--policy",
        "cadence:100ms", "--engine-log-dir", str(tmp_path / "logs"), *RUN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "engine ready" in proc.stderr
    j = validate_comparison(json.loads(proc.stdout))
    assert j["engine"]["pid"] == pids_of(pidfile)[0]
    _check_runs(j["engine"], [j["direct"]["load"], j["shaped"]["load"]], tmp_path / "logs")
    assert_nothing_left(pids_of(pidfile), port)


def test_shape_sweep_records_its_engine(tmp_path) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    out = tmp_path / "sweep"
    proc = jb(
        "shape-sweep", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--policy",
        "cadence:100ms", "--policy", "window:2,100ms", "--ready-path", "/v1/models",
        # gross energy: a flat fake meter leaves ~0 J above idle, and --out plots the points
        "--accounting", "paper_whole_window", "--engine-log-dir", str(tmp_path / "logs"),
        "--out", str(out), *RUN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    j = validate_sweep(json.loads(proc.stdout))
    assert j["engine"]["ready_path"] == "/v1/models"
    assert [r["label"] for r in j["runs"]] == ["direct", "cadence:100ms", "window:2,100ms"]
    _check_runs(j["engine"], [r["load"] for r in j["runs"]], tmp_path / "logs")
    written = json.loads((out / "sweep.json").read_text())
    assert written["engine"] == j["engine"]
    assert written["runs"][2]["load"]["engine"]["stopped_by"] == "SIGTERM"
    assert_nothing_left(pids_of(pidfile), port)


def test_load_via_shape_records_its_engine_in_both_runs_and_the_store(tmp_path) -> None:
    """``load --via-shape`` against a launched engine: the same sections as shape-compare, and
    the stored runs keep each run's engine section with its exit status."""
    import duckdb

    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    db = tmp_path / "r.duckdb"
    proc = jb(
        "load", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--via-shape",
        "cadence:100ms", "--engine-log-dir", str(tmp_path / "logs"), "--store", str(db), *RUN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    _check_runs(j["engine"], [j["direct"]["load"], j["shaped"]["load"]], tmp_path / "logs")
    with duckdb.connect(str(db), read_only=True) as con:
        summaries = [json.loads(s) for (s,) in con.execute("SELECT summary FROM runs").fetchall()]
    assert len(summaries) == 2
    assert all(s["engine"]["stopped_by"] == "SIGTERM" for s in summaries), summaries
    assert_nothing_left(pids_of(pidfile), port)
