"""``scripts/gpu_checks.py --smoke``: cheap steps on the CPU write step JSON and a summary.

The GPU variant cannot run here; these runs exercise the same step code with tiny models and the
sensorless estimator, and check that NVML-only checks are skipped with a reason, that a failing
or timed-out step is recorded without stopping the next one, and that bad flags are refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_checks.py"


def gpu_checks(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def step(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def check(record: dict, name: str) -> dict:
    return next(c for c in record["checks"] if c["name"] == name)


def test_smoke_meters_workloads_report(tmp_path):
    out = tmp_path / "res"
    p = gpu_checks("--smoke", "--only", "report,meters,workloads", "--out", str(out))
    # the report over a store holding only a measure run draws no figure: that is a failure
    assert p.returncode == 1, p.stderr

    meters = step(out, "meters")
    assert meters["status"] == "passed", meters
    assert meters["meter_methods"] == ["estimated"]
    skipped = check(meters, "nvml_counter_vs_polled")
    assert skipped["passed"] is None and "NVML unavailable" in skipped["detail"]
    assert check(meters, "idle_power_recorded")["passed"] is True
    assert meters["figures"]["measure"]["energy_j"] > 0
    assert meters["figures"]["measure"]["domains"] == {"cpu:0": "estimated", "ram": "estimated"}

    workloads = step(out, "workloads")
    assert workloads["status"] == "passed", workloads
    rows = workloads["figures"]["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert all(r["load_time_s"] > 0 and r["memory_bytes"] > 0 for r in rows)
    assert 1.9 < rows[0]["memory_bytes"] / rows[1]["memory_bytes"] <= 2.0  # fp32 vs bf16 weights
    assert (out / "workloads" / "shape_loading.json").is_file()

    report = step(out, "report")
    assert report["status"] == "failed"
    assert check(report, "index_html")["passed"] is True
    assert check(report, "figures")["passed"] is False
    assert (out / "report" / "index.html").is_file()

    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["meters", "workloads", "report"]
    assert summary["header"]["mode"].startswith("smoke")
    assert summary["header"]["libraries"]["torch"]
    md = (out / "summary.md").read_text()
    assert "ESTIMATED" in md and "date (UTC)" in md
    assert "| meters | **passed** |" in md and "| report | **failed** |" in md
    assert "[skipped] nvml_counter_vs_polled" in md and "[FAIL] figures" in md


def test_timeout_is_recorded_and_next_step_runs(tmp_path):
    out = tmp_path / "res"
    store = tmp_path / "elsewhere.duckdb"
    p = gpu_checks(
        "--smoke", "--only", "meters,report", "--limit", "meters=1.5", "--out", str(out),
        "--store", str(store),
    )  # fmt: skip
    assert p.returncode == 1
    meters = step(out, "meters")
    assert meters["status"] == "timeout" and "stopped" in meters["error"]
    report = step(out, "report")  # ran although meters did not finish: nothing to report on
    assert report["status"] == "failed"
    md = (out / "summary.md").read_text()
    assert "| meters | **timeout** |" in md


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "meters,bogus"], "unknown step"),
        (["--limit", "meters=abc"], "--limit"),
        (["--limit", "nosuch=10"], "--limit"),
    ],
)
def test_bad_flags_are_refused(tmp_path, args, message):
    p = gpu_checks("--smoke", "--out", str(tmp_path / "x"), *args, timeout=60)
    assert p.returncode != 0 and message in p.stderr
    assert not (tmp_path / "x").exists()


def test_gpu_mode_without_cuda_points_to_smoke(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full run is not a fast test")
    p = gpu_checks("--only", "meters", "--out", str(tmp_path / "x"), timeout=120)
    assert p.returncode == 2 and "--smoke" in p.stderr


@pytest.mark.parametrize(("polled_w", "agrees"), [(100.0, True), (110.0, False)])
def test_nvml_branch_compares_counter_and_polled(tmp_path, monkeypatch, polled_w, agrees):
    """The GPU branch of the meters step, NVML replaced by fake meters of known power."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_checks_steps as steps
    from gpu_checks_proc import Ctx, StepRecord

    from joulebench.meters import nvml
    from joulebench.meters.base import Availability
    from joulebench.meters.fake import FakeMeter

    monkeypatch.setattr(nvml, "probe", lambda: Availability(True, "1 GPU(s): fake"))
    monkeypatch.setattr(
        nvml, "NvmlMeter", lambda mode: FakeMeter(100.0 if mode == "counter" else polled_w)
    )
    ctx = Ctx(out=tmp_path, store=tmp_path / "r.duckdb", smoke=True)
    ctx.deadline = time.monotonic() + 120
    rec = StepRecord("meters")
    steps.step_meters(ctx, rec)
    window = rec.figures["nvml_window"]
    assert window["duration_s"] > 2.0  # the window encloses the whole `joulebench measure`
    assert window["rel_diff"] == pytest.approx(polled_w / 100.0 - 1.0, abs=1e-6)
    assert check({"checks": rec.checks}, "nvml_counter_vs_polled")["passed"] is agrees
    assert {"counter", "polled", "estimated"} <= rec.methods
