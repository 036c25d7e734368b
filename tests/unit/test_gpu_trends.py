"""``scripts/gpu_checks_trends.py``: the kit's rows set beside the study's trends and headlines."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import gpu_checks_trends as trends


def phase_row(precision: str, j_per_out: float, b: int = 1) -> dict:
    return {"model": "m", "precision": precision, "batch_size": b,
            "normalized": {"per_output_token_j": j_per_out}}  # fmt: skip


def batch_row(b: int, prefill_j: float, decode_j: float, eff: int, comp: int, out: int) -> dict:
    return {
        "model": "llama", "precision": "bf16", "batch_size": b,
        "config": {"model": "llama", "precision": "bf16", "batch_size": b, "bucketing": "none"},
        "prefill": {"energy_j": prefill_j}, "decode": {"energy_j": decode_j},
        "tokens": {"input_effective": eff, "input_computed": comp, "decode_output": out},
    }  # fmt: skip


def test_quantized_decode_costlier_than_bf16_agrees_with_the_study():
    step = {"figures": {"rows": [phase_row("bf16", 1.0), phase_row("int8-bnb", 2.5),
                                 phase_row("int4-nf4", 0.8), {"error": "load failed"}]}}  # fmt: skip
    t = trends.precision_trend(step)
    assert t["verdict"] == "agrees" and "int8-bnb 2.50× bf16" in t["here"]
    assert "int4-nf4" not in t["here"]
    cheaper = {"figures": {"rows": [phase_row("bf16", 1.0), phase_row("int4-fp4", 0.5)]}}
    assert trends.precision_trend(cheaper)["verdict"] == "differs"
    assert trends.precision_trend(None)["verdict"] == "not enough data"


def test_batch_trends_and_the_precision_caveat():
    # prefill per effective token rises (padding), decode per request lowest at b=4, output falls
    rows = [batch_row(1, 1.0, 8.0, 100, 100, 15), batch_row(4, 5.0, 12.0, 400, 480, 60),
            batch_row(16, 30.0, 80.0, 1600, 2400, 240)]  # fmt: skip
    got = {t["key"]: t for t in trends.batch_trends({"figures": {"rows": rows}})}
    assert got["batch_prefill"]["verdict"] == "agrees"
    assert got["batch_decode"]["verdict"] == "agrees" and "b=4" in got["batch_decode"]["here"]
    assert got["batch_output"]["verdict"] == "agrees"
    assert all("bf16 here, fp32 in the study" in t["here"] for t in got.values())


def test_serving_headlines_and_the_idle_floor():
    runs = [
        {"arrival": "sequential", "per_request_wh": {"paper_whole_window": 0.05},
         "idle_x_interval_wh": None, "method": "counter"},
        {"arrival": "fixed:500ms", "per_request_wh": {"paper_whole_window": 0.004},
         "idle_x_interval_wh": 75.0 * 0.5 / 3600, "method": "counter"},
    ]  # fmt: skip
    step = {"figures": {"runs": runs}}
    arrival = trends.arrival_trend(step)
    assert arrival["verdict"] == "agrees" and "12.5×" in arrival["here"]
    heads = {h["key"]: h for h in trends.headlines(step)}
    # the study's 1.1e-3 Wh at 500 ms is below what a 75 W idle GPU draws in 0.5 s
    assert heads["tgi_fixed_500ms"]["paper_below_idle_floor_here"] is True
    assert heads["naive_sequential"]["paper_below_idle_floor_here"] is None
    assert heads["tgi_burst"]["here_wh"] is None
