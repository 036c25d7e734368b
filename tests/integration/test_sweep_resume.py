"""``joulebench sweep`` as a real process: SIGKILL mid-sweep, resume, and failing cells.

DuckDB allows one writer, so the store is read only after each process has ended.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from joulebench.results.store import ResultStore

pytestmark = pytest.mark.integration

DONE = re.compile(r"^done .* \[([0-9a-f]{16})\]")
SKIP = re.compile(r"^skip \(done\) .* \[([0-9a-f]{16})\]")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "250",  # one line per event (rich wraps at 80 columns when piped)
    }


def _sweep_file(tmp_path: Path, model: Path, **extra: object) -> Path:
    cfg = {
        "name": "resume_test",
        "models": [str(model)],
        "precisions": ["fp32"],
        "batch_sizes": [1, 2, 3, 4, 5],
        "prompts": ["quick"],
        "n": 5,
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


def _cmd(sweep: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "joulebench", "sweep", str(sweep), "--meter", "fake",
            "--store", str(db)]  # fmt: skip


def _cells(db: Path) -> list[dict]:
    with ResultStore(db) as store:
        return store.query("SELECT cell_key, status, error FROM cells ORDER BY cell_key")


def test_killed_sweep_resumes_skipping_done_cells(tiny_model_dir: Path, tmp_path: Path) -> None:
    sweep = _sweep_file(tmp_path, tiny_model_dir)
    db = tmp_path / "sweep.duckdb"
    grid = 5
    proc = subprocess.Popen(
        _cmd(sweep, db), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env()
    )
    done_before: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            m = DONE.match(line.strip())
            if m:
                done_before.append(m.group(1))
            if len(done_before) == 2:
                time.sleep(0.3)  # the third cell is now being measured
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert len(done_before) == 2

    before = {c["cell_key"]: c["status"] for c in _cells(db)}
    assert [k for k, s in before.items() if s == "done"] == sorted(done_before)
    cut = [k for k, s in before.items() if s != "done"]
    assert len(cut) == 1 and before[cut[0]] == "running"  # cut in the middle

    out = subprocess.run(_cmd(sweep, db), capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln.strip() for ln in out.stdout.splitlines()]
    skipped = {m.group(1) for ln in lines if (m := SKIP.match(ln))}
    redone = [m.group(1) for ln in lines if (m := DONE.match(ln))]
    assert any(ln.startswith("resuming run") for ln in lines)
    assert skipped == set(done_before)  # completed cells were not measured again
    assert cut[0] in redone and len(redone) == grid - 2  # the cut cell was redone
    assert not set(redone) & skipped

    cells = _cells(db)
    assert len(cells) == grid and all(c["status"] == "done" for c in cells)
    with ResultStore(db) as store:
        runs = store.query("SELECT run_id, status, summary FROM runs")
        per_cell = store.query("SELECT cell_key, count(*) AS n FROM repeats GROUP BY cell_key")
        dupes = store.query(
            "SELECT cell_key, phase, method, idx, warmup, count(*) AS n FROM repeats "
            "GROUP BY ALL HAVING count(*) > 1"
        )
    assert len(runs) == 1 and runs[0]["status"] == "done"  # the same run, found by name
    # direct method, 1 warm-up + 2 repeats for prefill and for decode: 6 rows for every cell
    assert {r["n"] for r in per_cell} == {6} and len(per_cell) == grid
    assert dupes == []


def test_failing_cells_are_recorded_and_the_sweep_goes_on(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-prompts.jsonl"
    sweep = _sweep_file(
        tmp_path,
        tiny_model_dir,
        name="failing",
        precisions=["fp8", "fp32"],  # fp8 needs a CUDA GPU: the model load fails on CPU
        batch_sizes=[2],
        prompts=[str(missing), "quick"],  # a prompt set that cannot load: the cell fails
        n=2,
    )
    db = tmp_path / "failing.duckdb"
    out = subprocess.run(_cmd(sweep, db), capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 1, out.stderr  # failures make a non-zero exit, after the sweep
    assert out.stdout.count("FAILED") == 3
    assert "1 done, 0 skipped (already done), 3 failed" in " ".join(out.stdout.split())
    with ResultStore(db) as store:
        rows = store.query("SELECT status, error, config FROM cells")
        run = store.query("SELECT status FROM runs")[0]
    by = {}
    for r in rows:
        cfg = json.loads(r["config"]) if isinstance(r["config"], str) else r["config"]
        by[(cfg["precision"], Path(cfg["prompts"]).name)] = r
    assert len(by) == 4
    assert by[("fp32", "quick")]["status"] == "done" and by[("fp32", "quick")]["error"] is None
    for prompts in (missing.name, "quick"):
        fp8 = by[("fp8", prompts)]
        assert fp8["status"] == "failed" and "fp8 needs a CUDA GPU" in fp8["error"]
    bad = by[("fp32", missing.name)]
    assert bad["status"] == "failed" and "no-such-prompts" in bad["error"]
    assert run["status"] == "done_with_failures"


def test_json_stdout_is_one_object_and_cells_carry_the_study(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    sweep = _sweep_file(
        tmp_path, tiny_model_dir, name="json_study", study="batching", batch_sizes=[2], n=2
    )
    db = tmp_path / "json.duckdb"
    out = subprocess.run(
        [*_cmd(sweep, db), "--json"], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)  # the whole of stdout: one JSON object, nothing else
    assert isinstance(summary, dict)
    assert summary["done"] == 1 and summary["failed"] == 0 and summary["store"] == str(db)
    assert "done " in out.stderr  # the progress lines went to stderr
    with ResultStore(db) as store:
        cells = store.query("SELECT study, status FROM cells")
    assert [(c["study"], c["status"]) for c in cells] == [("batching", "done")]


def test_ctrl_c_marks_the_run_interrupted_and_the_same_command_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    sweep = _sweep_file(tmp_path, tiny_model_dir, name="ctrl_c", batch_sizes=[1, 2, 3])
    db = tmp_path / "ctrl_c.duckdb"
    proc = subprocess.Popen(
        _cmd(sweep, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            if DONE.match(line.strip()):
                time.sleep(0.3)  # the second cell is now being measured
                proc.send_signal(signal.SIGINT)
                break
        proc.wait(60)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resumes" in err
    with ResultStore(db) as store:
        assert store.query("SELECT status FROM runs")[0]["status"] == "interrupted"
    statuses = [c["status"] for c in _cells(db)]
    # the cell cut short says so (it did not "fail"); none is left "running"
    assert "done" in statuses and set(statuses) <= {"done", "interrupted"}
    out = subprocess.run(_cmd(sweep, db), capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    with ResultStore(db) as store:
        runs = store.query("SELECT status, summary FROM runs")
    assert len(runs) == 1 and runs[0]["status"] == "done"
    assert {c["status"] for c in _cells(db)} == {"done"} and len(_cells(db)) == 3
