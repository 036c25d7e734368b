"""A results store filled with rows shaped like the profiler's and the load generator's.

``fill_store`` writes what ``joulebench profile``/``sweep`` and ``joulebench load`` store (cells
whose ``result`` is the ``profile --json`` object, load runs whose ``summary`` has the
per-request accountings), from a simple deterministic power model, so each part can be switched
off to test a report on a partial store. Replace with real fake-meter runs once the profiler and
load generator are in; the report must not care which wrote the rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from joulebench.results.store import ResultStore

ENVIRONMENT = {
    "cpu": {"model": "Test CPU 2-core", "cores": 2},
    "gpu": None,
    "versions": {
        "python": "3.11",
        "torch": "2.13.0",
        "transformers": "5.23",
        "joulebench": "0.1.0",
    },
}
METER = {
    "name": "estimate",
    "methods": {"cpu:0": "estimated"},
    "update_period_s": 0.1,
    "parameters": {"per_core_w": 10.0, "idle_w": 5.0},
}
MODEL_PARAMS_B = {"tiny-a": 0.01, "tiny-b": 0.03}
PRECISION_FACTOR = {"float32": 1.0, "bfloat16": 0.7, "int8": 1.3}


N_REQUESTS = 8  # requests one measured pass covers, as the profiler's ``n_requests``


def _phase(energy_j: float, latency_s: float, tokens: float, ci: float, n: int = 5) -> dict:
    return {
        "method": "direct",
        "energy_j": energy_j,
        "energy_ci95_j": energy_j * ci,
        "net_energy_j": energy_j - 5.0 * latency_s,
        "latency_s": latency_s,
        "energy_per_token_j": energy_j / tokens,
        "ci_halfwidth_rel": ci,
        "repeats": n,
        "per_request_j": energy_j / N_REQUESTS,
    }


def profile_result(model: str, precision: str, batch: int, bucketing: bool) -> dict:
    """A ``profile --json`` object from a toy power model (padding costs prefill work).

    Phase energies cover one pass over all ``N_REQUESTS`` requests (in ``N_REQUESTS / batch``
    batches); token counts are totals over that pass, as the profiler stores them.
    """
    size = MODEL_PARAMS_B[model] * PRECISION_FACTOR[precision]
    n_batches = N_REQUESTS // batch
    effective = 120.0 * N_REQUESTS
    padding = 0.0 if batch == 1 else (0.08 if bucketing else 0.35) * math.log2(batch)
    computed = effective * (1.0 + padding)
    output = 32.0 * N_REQUESTS
    steps = 32 * n_batches
    prefill_s = 0.002 * computed * size / 0.01
    decode_s = steps * 0.02 * size / 0.01 * (1.0 + 0.15 * (batch - 1) ** 1.2 / batch)
    power_w = 25.0
    pre = _phase(power_w * prefill_s, prefill_s, effective, 0.015)
    dec = _phase(power_w * decode_s, decode_s, output, 0.02)
    pre["energy_per_effective_input_token_j"] = pre["energy_j"] / effective
    pre["energy_per_computed_input_token_j"] = pre["energy_j"] / computed
    dec["energy_per_output_token_j"] = dec["energy_j"] / output
    total = pre["energy_j"] + dec["energy_j"]
    return {
        "model": model,
        "precision": precision,
        "method": "direct",
        "n_requests": N_REQUESTS,
        "n_batches": n_batches,
        "prefill": pre,
        "decode": dec,
        "tokens": {"input_effective": effective, "input_computed": computed, "output": output,
                   "decode_output": output},
        "padding_ratio": padding / (1.0 + padding),
        "normalized": {"per_request_j": total / N_REQUESTS},
        "latency": {"ttft_s": prefill_s / n_batches, "decode_s_per_token": decode_s / steps},
        "meter_methods": {"cpu:0": "estimated"},
        "estimated": True,
        "roofline": {
            "prefill": {"time_floor_s": prefill_s * 0.2, "efficiency": 0.2, "bound": "compute"},
            "decode": {"time_floor_s": decode_s * 0.03, "efficiency": 0.03, "bound": "memory"},
        },
        "audit": [{"name": "prefill:energy_above_idle", "passed": True, "detail": "ok"}],
    }  # fmt: skip


def _add_profile(db: ResultStore, failing_audit: bool) -> str:
    run = db.start_run("sweep", config={"name": "toy"}, environment=ENVIRONMENT, meter=METER)
    cells: list[tuple[str, dict]] = []
    for model in MODEL_PARAMS_B:
        for precision in PRECISION_FACTOR:
            cells.append(("precision", {"model": model, "precision": precision, "batch_size": 1}))
    for bucketing in (False, True):
        for batch in (1, 2, 4, 8):
            cfg = {"model": "tiny-a", "precision": "float32", "batch_size": batch}
            cells.append(("batch", {**cfg, "bucketing": "sorted" if bucketing else "none"}))
    for i, (study, cfg) in enumerate(cells):
        key = f"c{i:02d}-{cfg['model']}-{cfg['precision']}-b{cfg['batch_size']}"
        db.start_cell(run, key, cfg, study=study)
        result = profile_result(
            cfg["model"], cfg["precision"], cfg["batch_size"], bool(cfg.get("bucketing"))
        )
        reps = [
            {"phase": phase, "method": "direct", "idx": r, "warmup": r == 0, "n_ops": 3,
             "duration_s": result[phase]["latency_s"] * 3,
             "energy_j": result[phase]["energy_j"] * 3 * (1 + 0.01 * (r - 2)),
             "net_energy_j": result[phase]["net_energy_j"] * 3}
            for phase in ("prefill", "decode") for r in range(6)
        ]  # fmt: skip
        db.add_repeats(run, key, reps)
        db.add_audits(run, key, result["audit"])
        db.finish_cell(run, key, result=result)
    db.start_cell(
        run,
        "c99-tiny-b-int8-b8",
        {"model": "tiny-b", "precision": "int8", "batch_size": 8},
        study="batch",
    )
    db.finish_cell(run, "c99-tiny-b-int8-b8", error="OutOfMemoryError: could not allocate KV cache")
    if failing_audit:
        db.add_audits(
            run,
            "c00-tiny-a-float32-b1",
            [{"name": "decode:energy_above_floor", "passed": False,
              "detail": "0.8 J < idle 5 W × roofline floor 0.3 s = 1.5 J"}],
        )  # fmt: skip
    db.finish_run(run, summary={"cells": len(cells) + 1, "failed": 1})
    return run


ARRIVALS = (
    ({"spec": "sequential", "kind": "sequential"}, "sequential", 0.12),
    ({"spec": "burst", "kind": "burst"}, "continuous", 0.0096),
    ({"spec": "fixed:500ms", "kind": "fixed"}, "continuous", 0.0011),
    ({"spec": "uniform:50ms,300ms", "kind": "uniform"}, "continuous", 0.004),
)


def load_summary(wh: float, ok: int, failed: int, e2e_p50: float) -> dict:
    return {
        "requests": {"total": ok + failed, "ok": ok, "failed": failed},
        "achieved_rate_rps": 2.0,
        "ttft_ms": {"p50": e2e_p50 * 0.1, "p90": e2e_p50 * 0.2, "p99": e2e_p50 * 0.4},
        "tpot_ms": {"p50": 12.0, "p90": 15.0, "p99": 22.0},
        "e2e_ms": {"p50": e2e_p50, "p90": e2e_p50 * 1.6, "p99": e2e_p50 * 2.5},
        "energy": {
            "gross_j": wh * 3600 * ok,
            "net_j": wh * 3600 * ok * 0.6,
            "per_request_wh": {
                "paper_whole_window": wh,
                "idle_subtracted": wh * 0.6,
                "steady_state": wh * 0.8,
                "attributed_mean": wh * 0.95,
            },
            "method": "estimated",
        },
        "meter_methods": {"cpu:0": "estimated"},
        "estimated": True,
    }


def _add_load(db: ResultStore, shaped: bool) -> list[str]:
    ids = []
    runs = [(a, s, wh, False) for a, s, wh in ARRIVALS]
    if shaped:
        runs.append(({"spec": "uniform:50ms,300ms", "kind": "uniform"}, "continuous", 0.002, True))
        runs.append(
            ({"spec": "uniform:50ms,300ms", "kind": "uniform"}, "continuous", 0.0018, "slo")
        )
    for i, (arrival, scheduler, wh, via_shape) in enumerate(runs):
        config = {
            "arrival": arrival,
            "scheduler": scheduler,
            "protocol": "openai",
            "model": "tiny-a",
        }
        if via_shape == "slo":
            config["via_shape"] = "slo:500ms"
            config["shape_policy"] = {"spec": "slo:500ms", "kind": "slo", "bound_ms": 500.0}
        elif via_shape:
            config["via_shape"] = {"policy": "fixed-cadence", "period_ms": 200}
        run = db.start_run("load", config=config, environment=ENVIRONMENT, meter=METER)
        rows = [
            {"idx": k, "status": "ok", "ttft_ms": 40.0 + k, "tpot_ms": 12.0, "e2e_ms": 400.0 + 10 * k,
             "input_tokens": 100, "output_tokens": 30, "energy_j": wh * 3600 * (0.9 + 0.02 * k),
             "energy_method": "estimated"}
            for k in range(10)
        ]  # fmt: skip
        rows.append({"idx": 10, "status": "error", "http_status": 503, "error": "overloaded"})
        db.add_requests(run, rows)
        db.add_audits(
            run, None, [{"name": "attribution_sum", "passed": True, "detail": "Σ = total"}]
        )
        summary = load_summary(wh, 10, 1, 400.0 * (1 + i))
        if i == 0:  # a launched engine: its /metrics scraped at 1 Hz beside a power timeline
            summary["engine"] = {"preset": "joulebench", "metrics": {"samples": [
                {"t_s": 100.0 + k, "running": min(k, 4), "waiting": max(0, k - 4)}
                for k in range(8)
            ]}}  # fmt: skip
            db.add_timeline(
                run,
                [(100.0 + 0.5 * k, {"cpu:0": 20.0 * k + (k % 3)}) for k in range(16)],
                {"cpu:0": "estimated"},
            )
        db.finish_run(run, summary=summary)
        ids.append(run)
    return ids


def fill_store(
    path: Path,
    *,
    profile: bool = True,
    load: bool = True,
    shaped: bool = True,
    failing_audit: bool = True,
) -> Path:
    with ResultStore(path) as db:
        if profile:
            _add_profile(db, failing_audit)
        if load:
            _add_load(db, shaped)
    return path


@pytest.fixture
def full_store(tmp_path: Path) -> Path:
    return fill_store(tmp_path / "full.duckdb")


@pytest.fixture
def profile_only_store(tmp_path: Path) -> Path:
    return fill_store(tmp_path / "profile.duckdb", load=False)


@pytest.fixture
def load_only_store(tmp_path: Path) -> Path:
    return fill_store(tmp_path / "load.duckdb", profile=False, shaped=False)


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    return fill_store(tmp_path / "empty.duckdb", profile=False, load=False)


@pytest.fixture(scope="session")
def full_report(tmp_path_factory: pytest.TempPathFactory):
    """One report built from a full store, shared by read-only tests (figures take seconds)."""
    from joulebench.report.build import build_report

    base = tmp_path_factory.mktemp("full-report")
    return build_report(fill_store(base / "full.duckdb"), base / "out")
