"""The GPU branch of ``scripts/gpu_checks_steps.py``'s ``nvml`` step, on a fake NVML.

No GPU here: ``pynvml`` is :mod:`tests.unit.meters.fake_nvml` on the real clock (a constant-power
GPU whose counter updates every 100 ms) and the matmul loop only sleeps, so the step's
bookkeeping (counter vs polled vs averaged over the same windows, update period, idle power,
the quantisation-aware tolerance) runs exactly as it would on the H200.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from joulebench.meters import nvml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "meters"))

import gpu_checks_steps as steps
from fake_nvml import FakeGpu, FakePynvml
from gpu_checks_proc import Ctx, StepRecord


class RealClock:
    @property
    def now(self) -> float:
        return time.monotonic()


def sleeping_loop(device: str, seconds: float) -> tuple[float, int]:
    time.sleep(seconds)  # the matmul loop, without a GPU
    return seconds, 0


def run_step(tmp_path, monkeypatch, gpu: FakeGpu) -> dict:
    fake = FakePynvml([gpu], clock=RealClock())  # type: ignore[arg-type]
    monkeypatch.setattr(nvml, "load_pynvml", lambda: fake)
    monkeypatch.setattr(steps, "_matmul_loop", sleeping_loop)
    monkeypatch.setattr(steps, "MATMUL_WINDOWS_S", (0.5, 1.0))
    monkeypatch.setattr(steps, "IDLE_WINDOW_S", 0.5)
    ctx = Ctx(out=tmp_path, smoke=False, deadline=time.monotonic() + 60)
    rec = StepRecord("nvml", path=tmp_path / "nvml.json")
    steps.step_nvml(ctx, rec)
    rec.finish()
    return json.loads((tmp_path / "nvml.json").read_text())


def test_counter_polled_and_averaged_agree_on_a_steady_gpu(tmp_path, monkeypatch):
    r = run_step(tmp_path, monkeypatch, FakeGpu("GPU-0", power_w=300.0, quantum_s=0.1))
    assert r["status"] == "passed", r["checks"]
    names = [c["name"] for c in r["checks"]]
    assert names[:2] == ["counter_supported", "idle_power"]
    assert {"window_0.5s_polled_vs_counter", "window_1.0s_polled_vs_counter"} <= set(names)
    f = r["figures"]
    assert f["counter_update_period"]["source"] == "measured"
    assert f["counter_update_period"]["period_s"] == pytest.approx(0.1, abs=0.03)
    for w in f["windows"]:
        assert w["energy_j"]["counter"] == pytest.approx(300.0 * w["duration_s"], rel=0.35)
        assert abs(w["rel_to_counter"]["polled"]) < 0.5
    assert f["idle"]["power_w"]["polled"] == pytest.approx(300.0, rel=0.05)
    assert {"counter", "polled-instant"} <= set(r["meter_methods"])


def test_a_counter_that_never_moves_is_reported(tmp_path, monkeypatch):
    gpu = FakeGpu("GPU-0", power_w=300.0, quantum_s=1e9)  # the counter never updates
    r = run_step(tmp_path, monkeypatch, gpu)
    first = next(c for c in r["checks"] if c["name"] == "counter_supported")
    assert first["passed"] is False and "rose 0.0 J" in first["detail"]
    assert r["status"] == "failed"
