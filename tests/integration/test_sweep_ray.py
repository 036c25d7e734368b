"""``joulebench sweep --executor ray`` as a real process on a real local Ray cluster.

The cluster (2 CPUs, no dashboard) is started by a fixture in the test process and shut down by
it; the CLI joins it with ``--ray-address``. DuckDB allows one writer, so the store is read only
after the CLI process has ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulebench.results.store import ResultStore

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_address(tiny_model_dir: Path) -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    env.pop("RAY_ADDRESS", None)
    return env


def _sweep_file(tmp_path: Path, model: Path, **extra: object) -> Path:
    cfg = {
        "name": "ray_test",
        "models": [str(model)],
        "precisions": ["fp32"],
        "batch_sizes": [1, 2],
        "prompts": ["quick"],
        "n": 2,
        "method": "direct",
        "warmup": 1,
        "min_window_s": 0.2,
        "min_repeats": 2,
        "max_repeats": 2,
        "idle_s": 0.2,
    }
    cfg.update(extra)
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "joulebench", "sweep", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def test_cells_fan_out_over_ray_into_one_store(
    ray_address: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # fp8 cells fail on a CPU worker (the model load), the fp32 ones are measured
    sweep = _sweep_file(tmp_path, tiny_model_dir, precisions=["fp32", "fp8"])
    db = tmp_path / "ray.duckdb"
    out = _cli(str(sweep), "--executor", "ray", "--ray-address", ray_address, "--meter", "fake",
               "--store", str(db))  # fmt: skip
    assert out.returncode == 1, out.stderr  # failed cells: non-zero exit, after the sweep
    assert "2 done, 0 skipped (already done), 2 failed" in " ".join(out.stdout.split())
    with ResultStore(db) as store:
        run = store.query("SELECT status, meter FROM runs")
        cells = store.query("SELECT cell_key, status, error, config, result FROM cells")
        repeats = store.query("SELECT cell_key, count(*) AS n FROM repeats GROUP BY cell_key")
    assert len(run) == 1 and run[0]["status"] == "done_with_failures"
    meter = json.loads(run[0]["meter"])
    assert meter["spec"] == "fake" and meter["executor"] == "ray"
    assert meter["address"] == ray_address and meter["gpus_per_cell"] == 0.0  # CPU sweep: 0
    done = [c for c in cells if c["status"] == "done"]
    failed = [c for c in cells if c["status"] == "failed"]
    assert len(done) == 2 and len(failed) == 2
    for c in done:
        result = json.loads(c["result"])
        assert result["meter_methods"] == {"gpu:0": "fake"}  # each worker's own meter
        assert result["worker"]["pid"] not in (os.getpid(),)
        assert result["worker"]["ray_node_id"]
    for c in failed:
        assert json.loads(c["config"])["precision"] == "fp8"
        assert "fp8 needs a CUDA GPU" in c["error"]
    assert {r["cell_key"]: r["n"] for r in repeats} == {c["cell_key"]: 6 for c in done}

    # the same command resumes: done cells are skipped, failed ones are tried again
    again = _cli(str(sweep), "--executor", "ray", "--ray-address", ray_address, "--meter",
                 "fake", "--store", str(db), "--json")  # fmt: skip
    summary = json.loads(again.stdout)
    assert (summary["skipped"], summary["done"], summary["failed"]) == (2, 0, 2)
    assert summary["resumed"] is True
    with ResultStore(db) as store:
        assert store.query("SELECT count(*) AS n FROM cells")[0]["n"] == 4
        assert store.query("SELECT count(*) AS n FROM repeats")[0]["n"] == 12


def test_ray_flag_errors_are_clear(ray_address: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    sweep = _sweep_file(tmp_path, tiny_model_dir, name="errors")
    db = tmp_path / "e.duckdb"
    gpu = _cli(str(sweep), "--executor", "ray", "--ray-address", ray_address, "--gpus-per-cell",
               "1", "--meter", "fake", "--store", str(db))  # fmt: skip
    assert gpu.returncode == 2
    assert "1 GPU(s) but the Ray cluster has 0" in " ".join(gpu.stderr.split())
    local = _cli(str(sweep), "--ray-address", ray_address, "--store", str(db))
    assert local.returncode == 2 and "need(s) --executor ray" in local.stderr
    unknown = _cli(str(sweep), "--executor", "dask", "--store", str(db))
    assert unknown.returncode == 2 and "known: local, ray" in unknown.stderr
