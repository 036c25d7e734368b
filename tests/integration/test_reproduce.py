"""``joulebench reproduce`` end to end on a reduced plan with the fake meter (< 60 s).

Runs the three studies (and the shaping comparison) on the tiny model, then checks what the
store holds and that the report shows the study's figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from joulebench.analysis.records import read_store
from joulebench.cli.app import app
from joulebench.results.store import ResultStore

pytestmark = pytest.mark.integration

_FAST = {
    "prompts": ["quick"],
    "n": 2,
    "method": "direct",
    "output_length": "4",
    "warmup": 0,
    "min_window_s": 0.05,
    "min_repeats": 2,
    "max_repeats": 2,
    "idle_s": 0.2,
}
PLAN = {
    "name": "itest",
    "device": "cpu",
    "precision": {"models": ["tiny:llama:tiny"], "precisions": ["fp32", "bf16"], **_FAST},
    "batch": {
        "models": ["tiny:llama:tiny"],
        "batch_sizes": [1, 2],
        "bucketing": ["none", "sorted"],
        **_FAST,
    },
    "serving": {
        "model": "tiny:llama:tiny",
        "schedulers": ["sequential", "continuous"],
        "arrivals": ["sequential", "burst", "fixed:200ms", "uniform:10ms,30ms"],
        "n": 3,
        "output_length": 4,
        "idle_s": 0.2,
        "warmup_n": 1,
    },
    "shaping": {"arrival": "uniform:10ms,30ms", "policies": ["cadence:50ms"], "n": 3},
}


@pytest.mark.timeout(180)
def test_reproduce_reduced_plan_fills_store_and_report(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["reproduce", "--plan", str(plan), "--meter", "fake", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["plan"] == "itest" and summary["meter_methods"]
    assert set(summary["studies"]) == {"precision", "batch", "serving", "shaping"}
    assert summary["studies"]["precision"]["done"] == 2
    assert summary["studies"]["batch"]["done"] == 4
    assert summary["studies"]["serving"]["done"] == 8
    assert isinstance(summary["audit_failures"], int)
    assert all(h["method"] for h in summary["headlines"])

    store = out / "results.duckdb"
    with ResultStore(store, read_only=True) as db:
        contents = read_store(db)
    studies = [c.study for c in contents.cells if c.ok]
    assert studies.count("precision") == 2 and studies.count("batch") == 4
    loads = [lr for lr in contents.load_runs if lr.run.status == "done"]
    pairs = {(lr.arrival.partition(" ")[0].partition(":")[0], lr.scheduler) for lr in loads}
    assert {("sequential", "sequential"), ("burst", "continuous"), ("fixed", "continuous")} <= pairs
    assert any(lr.shaped for lr in loads)
    assert all(lr.run.config["model"] == "tiny:llama:tiny" for lr in loads)

    index = Path(summary["index_html"])
    assert index == out / "index.html" and index.is_file()
    html = index.read_text(encoding="utf-8")
    for key in ("energy_model_precision", "energy_per_token_batch", "energy_per_request_arrival"):
        assert key in summary["figures"], summary["missing_figures"]
        png = out / "figures" / f"{key}.png"
        assert png.stat().st_size > 1000
    assert html.count("data:image/png;base64,") >= 3
