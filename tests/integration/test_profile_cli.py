"""``joulebench profile`` as a real process on the tiny model: JSON keys, store rows, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from joulebench.results.store import ResultStore

pytestmark = pytest.mark.integration

PHASE_KEYS = (
    "energy_j",
    "net_energy_j",
    "latency_s",
    "energy_per_token_j",
    "ci_halfwidth_rel",
    "repeats",
)
FAST = ["--meter", "fake", "--n", "3", "--idle-s", "0.2", "--min-window-s", "0.2", "--warmup", "1",
        "--min-repeats", "2", "--max-repeats", "2"]  # fmt: skip


def _env() -> dict[str, str]:
    # one intra-op thread: the tiny model gains nothing from more, and a shared box stays calm
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _profile(model: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "joulebench", "profile", "--model", str(model), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def _check_sections(r: dict, method: str) -> None:
    for phase in ("prefill", "decode"):
        sec = r[phase]
        missing = [k for k in PHASE_KEYS if k not in sec]
        assert not missing, f"{phase} lacks {missing}"
        assert sec["energy_j"] > 0 and sec["latency_s"] > 0 and sec["repeats"] >= 2
        assert sec["method"] == ("subtraction" if method == "subtraction" else "direct")
    t = r["tokens"]
    assert {"input_effective", "input_computed", "output"} <= set(t)
    assert 0 < t["input_effective"] <= t["input_computed"]
    assert t["output"] > r["n_requests"] == 3
    assert r["padding_ratio"] == pytest.approx(1 - t["input_effective"] / t["input_computed"])
    assert r["method"] == method
    assert r["meter_methods"] == {"gpu:0": "fake"}
    assert r["roofline"]["prefill"]["time_floor_s"] > 0
    assert r["roofline"]["decode"]["time_floor_s"] > 0
    assert r["audit"] and all({"name", "passed", "detail"} <= set(a) for a in r["audit"])
    assert r["decode"]["energy_per_token_j"] == pytest.approx(
        r["decode"]["energy_j"] / t["decode_output"]
    )


def test_profile_both_methods_json_and_store(tiny_model_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "profile.duckdb"
    both = _profile(tiny_model_dir, *FAST, "--batch-size", "2", "--json", "--store", str(db),
                    "--consistency-tolerance", "0.5")  # fmt: skip
    direct = _profile(tiny_model_dir, *FAST, "--method", "direct", "--batch-size", "3",
                      "--bucketing", "sorted", "--json")  # fmt: skip
    rc, out, err = _finish(both)
    assert rc == 0, err
    r = json.loads(out)
    _check_sections(r, "both")
    assert isinstance(r["consistency_rel_err"], float)
    assert r["config"]["consistency_tolerance"] == 0.5 == r["consistency"]["tolerance"]
    assert r["consistency"]["passed"] == (r["consistency_rel_err"] <= 0.5)
    assert r["subtraction"]["decode"]["method"] == "subtraction"
    assert r["consistency"]["direct_decode_does"]
    assert r["generate"]["energy_j"] > 0
    assert r["n_batches"] == 2  # 3 prompts in batches of 2

    rc, out, err = _finish(direct)
    assert rc == 0, err
    d = json.loads(out)
    _check_sections(d, "direct")
    assert "consistency_rel_err" not in d and "subtraction" not in d
    assert d["n_batches"] == 1 and d["config"]["bucketing"] == "sorted"

    with ResultStore(db) as store:
        runs = store.query("SELECT run_id, kind, status FROM runs")
        cells = store.query("SELECT cell_key, status, result FROM cells")
        reps = store.query(
            "SELECT phase, method, warmup, count(*) AS n, min(energy_j) AS e FROM repeats "
            "GROUP BY ALL"
        )
        audits = store.query("SELECT check_name, passed FROM audits")
    assert [(x["kind"], x["status"]) for x in runs] == [("profile", "done")]
    assert len(cells) == 1 and cells[0]["status"] == "done"
    assert cells[0]["cell_key"] == r["cell_key"] and r["run_id"] == runs[0]["run_id"]
    stored = cells[0]["result"]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["tokens"] == r["tokens"]
    by = {(x["phase"], x["method"], bool(x["warmup"])): x for x in reps}
    for key in (("prefill", "direct"), ("decode", "direct"), ("prefill", "subtraction"),
                ("generate", "subtraction")):  # fmt: skip
        assert by[(*key, True)]["n"] == 1  # one warm-up, kept apart
        assert by[(*key, False)]["n"] == 2 and by[(*key, False)]["e"] > 0
    assert sorted(a["check_name"] for a in audits) == sorted(a["name"] for a in r["audit"])
    assert "phase_consistency" in {a["check_name"] for a in audits}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp7"], "unknown precision 'fp7'; known:"),
        (["--bucketing", "weird"], "unknown bucketing 'weird'; known: none, sorted, buckets:K"),
        (["--bucketing", "buckets:0"], "buckets:K must be an integer"),
        (["--batch-size", "0"], "--batch-size"),
        (["--method", "fast"], "--method"),
        (["--output-length", "0"], "must be at least 1 token"),
        (["--consistency-tolerance", "1.5"], "--consistency-tolerance"),
        (["--replay-path", "t.csv"], "--replay-path is an option of the replay meter"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(
    tiny_model_dir: Path, args: list[str], message: str
) -> None:
    rc, out, err = _finish(_profile(tiny_model_dir, *FAST, *args))
    assert rc == 2, (out, err)
    flat = " ".join(err.split())  # rich wraps long messages
    assert message in flat, flat
    assert "Traceback" not in err


def test_profile_meter_replay_is_configured_by_its_flag(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``--meter replay`` used to be unusable here: profile had no ``--replay-path``."""
    trace = tmp_path / "trace.csv"
    rows = (f"{i / 100:.2f},cpu:0,{i * 0.5:.2f}" for i in range(60_001))  # 50 W for 600 s
    trace.write_text("t_s,domain,energy_j\n" + "\n".join(rows) + "\n")
    args = ["replay" if a == "fake" else a for a in FAST]
    rc, out, err = _finish(_profile(tiny_model_dir, *args, "--replay-path", str(trace), "--json"))
    assert rc == 0, err
    r = json.loads(out)
    assert r["meter_methods"] == {"cpu:0": "replay"}
    assert r["prefill"]["energy_j"] > 0
