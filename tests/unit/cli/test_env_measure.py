"""``joulebench env`` and ``joulebench measure`` through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

PY = sys.executable
ROOT = Path(__file__).resolve().parents[3]


def jb(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [PY, "-m", "joulebench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def test_env_json_lists_every_meter_with_reason():
    r = jb("env", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    for key in ("os", "python", "cpu", "ram_gb", "gpus", "libraries", "meters"):
        assert key in info
    assert info["cpu"]["logical_cores"] >= 1
    assert info["libraries"]["duckdb"]
    assert set(info["meters"]) >= {"nvml", "rapl", "estimate", "prometheus", "codecarbon"}
    assert info["meters"]["estimate"]["available"]
    for name, m in info["meters"].items():
        assert m["available"] or m["reason"], name


def _measure_estimated(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``joulebench measure`` with the estimator at a 64 W TDP over ``python -c CODE``."""
    return jb("measure", *flags, "--meter", "estimate", "--cpu-tdp-w", "64", "--", PY, "-c", code)


def test_measure_json_estimated_and_exit_code_propagated():
    r = _measure_estimated(
        "import sys; s = sum(i * i for i in range(300000)); print('child out'); sys.exit(3)",
        "--json",
    )
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)  # stdout holds only the JSON: the child's stdout went to stderr
    assert "child out" in r.stderr
    for key in (
        "duration_s",
        "energy_j",
        "net_energy_j",
        "idle_power_w",
        "domains",
        "meter",
        "audit",
    ):
        assert key in out
    assert out["exit_code"] == 3 and out["estimated"] is True
    assert {d["method"] for d in out["domains"]} == {"estimated"}
    assert out["energy_j"] > 0
    assert out["meter"]["parameters"]["cpu_tdp_w"] == 64.0
    assert "measure:measured_not_estimated" in [a["name"] for a in out["audit"]]
    assert out["timeline"]["samples"] >= 2


def test_measure_human_output_says_estimated():
    r = _measure_estimated("import time; time.sleep(0.2)")
    assert r.returncode == 0, r.stderr
    assert "ESTIMATED" in r.stderr and "cpu:0" in r.stderr and "duration" in r.stderr
    text = " ".join(r.stderr.split())  # the model's constants are printed, with the override
    assert "CPU 64 W TDP" in text and "user (--cpu-tdp-w)" in text and "W/GB" in text


def test_fake_meter_idle_baseline_and_net_energy():
    r = jb(
        "measure",
        "--json",
        "--meter",
        "fake",
        "--fake-power-w",
        "100",
        "--idle-s",
        "0.3",
        "--",
        PY,
        "-c",
        "import time; time.sleep(0.5)",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["idle_power_w"] == pytest.approx(100.0, rel=0.35)
    assert out["domains"][0]["method"] == "fake"
    # constant power: gross ≈ idle × duration, so net is small next to gross
    assert abs(out["net_energy_j"]) < 0.4 * out["energy_j"]
    assert out["estimated"] is False


def test_window_too_short_reports_no_number():
    r = jb(
        "measure", "--json", "--meter", "replay", "--replay-path", str(_slow_trace()), "--", "true"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["too_short"] is True and out["energy_j"] is None
    assert out["domains"][0]["energy_j"] is None
    assert "measure:window_ge_update_period" in [a["name"] for a in out["audit"]]


def _slow_trace() -> Path:
    import tempfile

    p = Path(tempfile.mkdtemp()) / "slow.csv"
    p.write_text("t_s,domain,energy_j\n0,gpu:0,0\n10,gpu:0,1000\n20,gpu:0,2000\n")
    return p


def test_missing_command_exits_127():
    r = jb("measure", "--meter", "estimate", "--", "no-such-command-joulebench")
    assert r.returncode == 127
    assert "command not found" in r.stderr


def test_unknown_and_unavailable_meters_exit_2():
    r = jb("measure", "--meter", "nvlm", "--", "true")
    assert r.returncode == 2 and "known:" in r.stderr and "nvml" in r.stderr
    r = jb("measure", "--meter", "prometheus", "--", "true")
    assert r.returncode == 2 and "--prometheus-url" in r.stderr


def test_unwritable_store_fails_before_the_command_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    marker = tmp_path / "ran"
    r = jb(
        "measure",
        "--meter",
        "estimate",
        "--store",
        str(blocker / "db.duckdb"),
        "--",
        PY,
        "-c",
        f"open({str(marker)!r}, 'w').close()",
    )
    assert r.returncode == 2 and "store" in r.stderr
    assert not marker.exists()


def test_sigint_stops_child_prints_and_stores_partial_result(tmp_path):
    db = tmp_path / "r.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "joulebench",
            "measure",
            "--json",
            "--meter",
            "fake",
            "--store",
            str(db),
            "--",
            PY,
            "-c",
            "import time; print('started', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    seen = ""
    while "started" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()  # the child's stdout goes to stderr with --json
    assert "started" in seen
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    out = json.loads(stdout)
    assert out["interrupted"] is True and out["signal"] == "SIGINT"
    assert out["energy_j"] > 0
    assert "measure:complete" in [a["name"] for a in out["audit"]]
    con = duckdb.connect(str(db), read_only=True)
    status, kind = con.execute("SELECT status, kind FROM runs").fetchone()
    assert (status, kind) == ("interrupted", "measure")
    assert con.execute("SELECT count(*) FROM timelines").fetchone()[0] >= 2
    assert con.execute("SELECT count(*) FROM audits WHERE NOT passed").fetchone()[0] >= 1
    con.close()
