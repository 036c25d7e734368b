"""``joulebench load --via-shape POLICY`` end to end: a real process, the embedded tiny server,
the fake meter, the same seeded trace sent directly and through the gateway."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

ACCOUNTINGS = (
    "paper_whole_window",
    "idle_subtracted",
    "steady_state",
    "attributed_mean",
    "attributed_net_mean",
)


def test_load_via_shape_prints_direct_and_shaped_side_by_side(tmp_path) -> None:
    db = tmp_path / "r.duckdb"
    # fixed 100 ms gaps: each run's window spans ≥ 0.5 s, several of the fake counter's 100 ms
    # steps (a 56 ms Poisson trace could fall between two steps and measure nothing)
    cmd = [sys.executable, "-m", "joulebench", "load", "--via-shape", "cadence:150ms",
           "--arrival", "fixed:100ms", "--n", "6", "--seed", "4", "--prompts", "quick",
           "--output-length", "4", "--meter", "fake", "--fake-power-w", "30", "--idle-s", "0.3",
           "--json", "--store", str(db), "--name", "via"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["energy_method"] == "fake" and out["estimated"] is False
    assert out["policy"]["spec"] == "cadence:150ms"
    assert out["config"]["idle_power_w"] == pytest.approx(30.0, rel=0.05)
    direct, shaped = out["direct"], out["shaped"]
    assert direct["label"] == "direct" and shaped["label"] == "cadence:150ms"
    for run in (direct, shaped):
        assert run["ok"] == 6 and run["failed"] == 0
        energy = run["energy_per_request_j"]
        assert set(ACCOUNTINGS) <= set(energy)
        for key in ("paper_whole_window", "attributed_mean"):
            assert energy[key] > 0
        # constant 30 W against a 30 W idle baseline: subtracting idle removes nearly all of
        # it (the fake counter's 100 ms steps leave a residue of either sign); a residue at or
        # below zero is no per-request figure but "≤ idle", said in the accounting
        net = energy["idle_subtracted"]
        if net is None:
            e = run["load"]["energy"]
            assert e["net_at_or_below_idle"] and e["accountings"]["idle_subtracted"].startswith(
                "≤ idle"
            )
        else:
            assert 0 < net < 0.5 * energy["paper_whole_window"]
        for metric in ("ttft_ms", "e2e_ms"):
            assert 0 < run[metric]["p50"] <= run[metric]["p99"]
        # the embedded server exposes its batching: the mean batch size is measured, not None
        # decode rows per forward step from the server's /metrics (prefill-only steps count too)
        assert run["mean_batch_size"] is not None and run["mean_batch_size"] > 0
        assert run["load"]["energy"]["server_reported"]["n"] == 6
    # only the shaped run went through the gateway, and it was held there
    assert direct["gateway"] is None and direct["added_delay_ms"]["max"] == 0.0
    assert shaped["gateway"]["released"] == 6
    assert 0 < shaped["added_delay_ms"]["p50"] <= shaped["added_delay_ms"]["p99"] <= 150 + 100
    # the side-by-side table carries every accounting, latency, delay and batch row
    metrics = {row["metric"] for row in out["table"]}
    for key in ACCOUNTINGS:
        assert any(m.startswith(f"energy/request J · {key} (") for m in metrics), key
    for row in ("ttft_ms p50", "ttft_ms p99", "e2e_ms p50", "e2e_ms p99", "added delay ms p99",
                "server mean batch size"):  # fmt: skip
        assert row in metrics
    assert out["config"]["prompts"] == "quick" and out["config"]["output_length"] == "4"
    # --store keeps both runs as load runs, with per-request rows and the power timeline
    from joulebench.analysis.records import read_store
    from joulebench.results.store import ResultStore

    with ResultStore(db, read_only=True) as store:
        contents = read_store(store)
        rows = store.query("SELECT run_id, count(*) AS n FROM requests GROUP BY run_id")
        samples = store.query("SELECT DISTINCT run_id FROM timelines")
    loads = {lr.run.name: lr for lr in contents.load_runs}
    assert set(loads) == {"via/direct", "via/shaped"}
    assert not loads["via/direct"].shaped and loads["via/shaped"].shaped
    assert all(lr.run.status == "done" and lr.scheduler == "continuous" for lr in loads.values())
    assert {r["n"] for r in rows} == {6} and len(rows) == len(samples) == 2


def test_via_shape_refuses_a_bad_policy_before_starting(tmp_path) -> None:
    base = [sys.executable, "-m", "joulebench", "load", "--n", "2", "--meter", "fake"]
    proc = subprocess.run(
        [*base, "--via-shape", "cadense:100ms"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "cadence" in proc.stderr
