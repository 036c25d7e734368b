"""``scripts/gpu_checks.py --smoke``: every step of the GPU kit, on the CPU, writes its JSON.

The GPU run cannot happen here; the smoke run drives the same step code with tiny models and the
sensorless estimator, and checks that NVML-only checks are skipped with a reason, that a step
stopped at its limit still leaves its JSON (status "timeout") without stopping the next step,
that results pack and unpack into docs/results/<date>-<gpu>/, and that bad flags are refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_checks.py"
STEPS = ["nvml", "phases", "batching", "serving"]


def gpu_checks(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def step(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def check(record: dict, name: str) -> dict:
    return next(c for c in record["checks"] if c["name"] == name)


def test_smoke_runs_every_step_and_lands_results(tmp_path):
    out, packed = tmp_path / "res", tmp_path / "OUT"
    p = gpu_checks("--smoke", "--out", str(out), "--pack", str(packed))
    records = {n: step(out, n) for n in STEPS}
    for name, rec in records.items():  # every step ran to its end and recorded checks
        assert rec["status"] in ("passed", "failed"), (name, rec["status"], rec["error"], p.stderr)
        assert rec["error"] is None, (name, rec["error"])
        assert rec["checks"] and rec["mode"] == "smoke"
        assert rec["meter_methods"] and set(rec["meter_methods"]) <= {"estimated", "fake"}

    nvml = records["nvml"]
    skipped = check(nvml, "nvml_available")
    assert skipped["passed"] is None and "NVML unavailable" in skipped["detail"]
    assert all(w["energy_j"]["estimate"] > 0 for w in nvml["figures"]["windows"])

    rows = records["phases"]["figures"]["rows"]
    got = {(r["model"], r["precision"], r["batch_size"]) for r in rows if "error" not in r}
    assert got == {("tiny-qwen2-tiny", "bf16", 1)} | {
        ("tiny-llama-tiny", p_, b) for p_ in ("fp32", "bf16") for b in (1, 2)
    }
    for r in rows:
        assert all(0 < v <= 1 for v in r["roofline_efficiency"].values())
        assert r["consistency"]["rel_err"] is not None
        assert r["prefill"]["energy_j"] > 0 and r["decode"]["energy_per_token_j"] > 0
    head, comp = records["phases"]["figures"]["compile"]  # the token check, then the energies
    assert head.items() <= comp.items()
    assert isinstance(comp["tokens_identical"], bool) and comp["tokens_compared"] == 8
    assert comp["compiled_vs_eager_energy"] > 0

    batch = records["batching"]["figures"]["rows"]
    assert [r["batch_size"] for r in batch] == [1, 2]
    assert all(r["normalized"]["per_computed_input_token_j"] > 0 for r in batch)

    runs = records["serving"]["figures"]["runs"]
    assert [r["arrival"] for r in runs] == ["sequential", "burst", "fixed:50ms", "fixed:500ms"]
    for r in runs:
        assert r["requests"]["ok"] >= 2 and not r["requests"]["failed"]
        assert set(r["per_request_wh"]) == {
            "paper_whole_window", "idle_subtracted", "steady_state", "attributed_mean"
        }  # fmt: skip
        assert "load:energy_ge_idle_x_duration" in r["audits"]
    assert runs[3]["idle_floor_wh_per_request"] > 0
    assert records["serving"]["figures"]["shaping"]["table"]

    md = (out / "summary.md").read_text()
    assert "ESTIMATED" in md and "date (UTC)" in md and "Trends beside the study's" in md
    for name in STEPS:
        assert f"| {name} | **{records[name]['status']}** |" in md
    for key in ("precision", "batch_prefill", "batch_decode", "batch_output", "arrival_shaping"):
        assert f"| {key} |" in md
    header = json.loads((out / "header-call0.json").read_text())
    assert header["libraries"]["torch"] and header["mode"].startswith("smoke")

    # at most 8 files come back from a device call; they land in docs/results/<date>-<gpu>/
    files = sorted(f.name for f in packed.iterdir())
    assert files == ["gpu-results-all.tar.gz", "summary-all.md"]
    into = tmp_path / "docs-results"
    u = gpu_checks("--unpack", str(packed / "gpu-results-all.tar.gz"), "--into", str(into))
    assert u.returncode == 0, u.stderr
    (landed,) = into.iterdir()
    assert landed.name == f"{header['date_utc'][:10]}-cpu-smoke"
    assert {f"{n}.json" for n in STEPS} <= {f.name for f in landed.iterdir()}
    assert (landed / "summary.md").read_text() == md


def test_timed_out_step_still_writes_json_and_next_step_runs(tmp_path):
    out = tmp_path / "res"
    p = gpu_checks("--smoke", "--only", "nvml,batching", "--limit", "nvml=0.8", "--out", str(out))
    assert p.returncode == 1
    nvml = step(out, "nvml")
    assert nvml["status"] == "timeout" and "limit" in nvml["error"]
    assert nvml["step"] == "nvml" and nvml["limit_s"] == 0.8
    batching = step(out, "batching")  # ran although nvml did not finish
    assert batching["status"] == "passed", batching
    assert "| nvml | **timeout** |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nvml,bogus"], "unknown step"),
        (["--limit", "nvml=abc"], "--limit"),
        (["--limit", "nosuch=10"], "--limit"),
        (["--call", "7"], "known calls are"),
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
    p = gpu_checks("--call", "1", "--out", str(tmp_path / "x"), timeout=120)
    assert p.returncode == 2 and "run with --smoke for the CPU variant" in p.stderr
