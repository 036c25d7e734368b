"""A stored load run keeps status done/failed/interrupted; audits never hide it from the report."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from joulebench.analysis.records import read_store
from joulebench.load.runner import run_load
from joulebench.load.stub import StubConfig, stub_server
from joulebench.meters.fake import FakeMeter
from joulebench.report import figures_serving
from joulebench.report.build import build_report
from joulebench.results.loads import run_status, store_interrupted, store_load_result
from joulebench.results.store import ResultStore

pytestmark = pytest.mark.integration

PROMPTS = ["how many joules", "say hello"]


def _run(idle_power_w: float, *, failure_rate: float = 0.0):
    with stub_server(
        StubConfig(tokens=4, token_delay_s=0.005, failure_rate=failure_rate, seed=3)
    ) as url:
        meter = FakeMeter(50.0, update_period_s=0.01)
        result = run_load(
            url,
            "openai-chat",
            "fixed:10ms",
            PROMPTS,
            n=8,
            output_length=4,
            meter=meter,
            idle_power_w=idle_power_w,
            timeline_hz=50,
        )
    return result, result.to_json()


def test_failing_audit_keeps_status_done_and_the_run_in_the_figures(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    # idle power far above the 50 W the meter reports: energy ≥ idle × duration must fail
    result, j = _run(idle_power_w=5000.0)
    assert "load:energy_ge_idle_x_duration" in j["audits"]["failed"]
    clean, j2 = _run(idle_power_w=10.0)
    assert j2["audits"]["failed"] == []
    with ResultStore(db) as store:
        run_id = store_load_result(store, result, j, "audited")
        clean_id = store_load_result(store, clean, j2, "clean")

    con = duckdb.connect(str(db), read_only=True)
    rows = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    assert rows == {run_id: "done", clean_id: "done"}
    failed_checks = con.execute(
        "SELECT check_name FROM audits WHERE run_id = ? AND NOT passed", [run_id]
    ).fetchall()
    assert ("load:energy_ge_idle_x_duration",) in failed_checks
    summary = json.loads(
        con.execute("SELECT summary FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    )
    assert summary["audits"]["failed"] == j["audits"]["failed"]
    con.close()

    with ResultStore(db, read_only=True) as store:
        contents = read_store(store)
    loads = figures_serving._done_loads(contents)
    assert {lr.run.run_id for lr in loads} == {run_id, clean_id}
    labels = {lr.run.run_id: figures_serving._group_label(lr) for lr in loads}
    assert labels[run_id].endswith("⚠ audit") and "⚠" not in labels[clean_id]
    report = build_report(db, tmp_path / "out")
    assert "energy_per_request_arrival" in {f.key for f in report.figures}
    page = report.index_html.read_text()
    assert "FAIL: load:energy_ge_idle_x_duration" in page


def test_no_successful_request_is_failed_and_still_listed(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    result, j = _run(idle_power_w=10.0, failure_rate=1.0)
    assert j["requests"]["ok"] == 0
    with ResultStore(db) as store:
        run_id = store_load_result(store, result, j, "all-failed")
    with ResultStore(db, read_only=True) as store:
        contents = read_store(store)
    (run,) = contents.runs
    assert run.status == "failed" and run.finished
    # finished runs are drawn; with no successful request the slot says so instead of a gap
    (lr,) = figures_serving._done_loads(contents)
    assert figures_serving._missing_note(lr, "paper_whole_window", None) == "no successful request"
    page = build_report(db, tmp_path / "out").index_html.read_text()
    assert run_id in page and "status <b>failed</b>" in page


def test_interrupted_load_is_recorded_as_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with ResultStore(db) as store:
        run_id = store_interrupted(store, {"n": 5, "arrival": {"spec": "burst"}}, "ctrl-c")
    with ResultStore(db, read_only=True) as store:
        contents = read_store(store)
    (run,) = contents.runs
    assert run.run_id == run_id and run.status == "interrupted" and not run.finished
    assert figures_serving._done_loads(contents) == []
    page = build_report(db, tmp_path / "out").index_html.read_text()
    assert "status <b>interrupted</b>" in page


def test_run_status_ignores_audits() -> None:
    ok = {"ok": 3, "total": 3}
    assert run_status({"requests": ok, "audits": {"failed": ["x"]}}) == "done"
    assert run_status({"requests": {"ok": 2, "total": 3}}) == "partial"  # a request was lost
    assert run_status({"requests": {"ok": 0, "total": 3}}) == "failed"
    assert run_status({}) == "failed"
