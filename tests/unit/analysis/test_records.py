"""Tolerant views of store rows: explicit profiler keys first, derived values as fallback."""

from __future__ import annotations

import json

import pytest

from joulebench.analysis.records import LoadRun, ProfileCell, RunRecord, methods_label, num


def _cell(result: dict, config: dict | None = None, status: str = "done") -> ProfileCell:
    row = {"run_id": "r", "cell_key": "k", "study": None, "status": status,
           "config": json.dumps(config or {"model": "m", "precision": "fp32", "batch_size": 4}),
           "result": json.dumps(result), "error": None}  # fmt: skip
    return ProfileCell.from_row(row)


def test_explicit_keys_win_over_derived() -> None:
    c = _cell({
        "n_requests": 8,
        "prefill": {"energy_j": 80.0, "per_request_j": 9.0, "energy_per_effective_input_token_j": 0.5},
        "decode": {"energy_j": 160.0},
        "tokens": {"input_effective": 100, "input_computed": 200, "output": 40, "decode_output": 32},
        "normalized": {"per_request_j": 31.0},
        "latency": {"ttft_s": 0.25, "decode_s_per_token": 0.01},
    })  # fmt: skip
    assert c.phase_per_request_j("prefill") == 9.0
    assert c.phase_per_request_j("decode") == pytest.approx(20.0)  # 160 J over 8 requests
    assert c.per_request_j() == 31.0
    per = c.per_token_j()
    assert per == {"effective_input": 0.5, "computed_input": 0.4, "output": pytest.approx(5.0)}
    assert c.latency_ms() == (pytest.approx(250.0), pytest.approx(10.0))


def test_derived_values_without_explicit_keys() -> None:
    c = _cell({
        "prefill": {"energy_j": 40.0, "latency_s": 2.0},
        "decode": {"energy_j": 80.0, "latency_s": 4.0},
        "tokens": {"input_effective": 100, "input_computed": 0, "output": 40},
    })  # fmt: skip
    assert c.n_requests == 4  # batch size when the profiler's count is absent
    assert c.per_request_j() == pytest.approx(30.0)
    assert c.per_token_j() == {"effective_input": 0.4, "computed_input": None, "output": 2.0}
    ttft, tpot = c.latency_ms()
    assert ttft == pytest.approx(2000.0) and tpot == pytest.approx(4000.0 / 10)


def test_missing_sections_give_none_not_errors() -> None:
    c = _cell({}, status="failed")
    assert not c.ok and c.per_request_j() is None and c.latency_ms() == (None, None)
    assert c.phase("prefill") is None and c.method == "unknown"


@pytest.mark.parametrize(
    ("config", "bucketed", "label"),
    [
        ({"model": "m", "precision": "int8", "batch_size": 2, "bucketing": "none"}, False, "m · int8 · b=2"),
        ({"model": "m", "bucketing": "sorted"}, True, "m · ? · bucketed"),
        ({"model": {"name": "q"}, "precision": "bf16", "bucketing": True}, True, "q · bf16 · bucketed"),
    ],
)  # fmt: skip
def test_cell_labels(config: dict, bucketed: bool, label: str) -> None:
    c = _cell({}, config)
    assert c.bucketing is bucketed and c.label == label


def test_methods_and_numbers() -> None:
    assert (
        methods_label({"gpu:0": "counter", "cpu:0": "rapl", "ram": "estimated"})
        == "counter+estimated+rapl"
    )
    assert methods_label({}, "estimated") == "estimated" and methods_label(None) == "unknown"
    assert num({"a": {"b": float("nan")}}, "a", "b") is None
    assert num({"a": True}, "a") is None and num({"a": 3}, "a") == 3.0


def test_load_run_view() -> None:
    run = RunRecord.from_row({
        "run_id": "l1", "kind": "load", "name": None, "status": "done", "created_at": None,
        "config": json.dumps({"arrival": {"spec": "fixed:500ms", "kind": "fixed"},
                              "scheduler": {"kind": "continuous"}, "via_shape": {"policy": "x"}}),
        "environment": None, "meter": json.dumps({"methods": {"cpu:0": "estimated"}}),
        "summary": json.dumps({"requests": {"ok": 9, "failed": 1},
                               "energy": {"per_request_wh": {"steady_state": 0.01}}}),
    })  # fmt: skip
    lr = LoadRun(run)
    assert lr.label == "fixed:500ms · continuous · shaped"
    assert (
        lr.per_request_wh("steady_state") == 0.01 and lr.per_request_wh("idle_subtracted") is None
    )
    assert (lr.requests_ok, lr.requests_failed) == (9, 1) and run.method == "estimated"


def test_per_request_halfwidth_adds_the_phases_in_quadrature() -> None:
    c = _cell({
        "n_requests": 4,
        "prefill": {"energy_j": 40.0, "ci_halfwidth_rel": 0.03},  # 10 J/request ± 0.3
        "decode": {"energy_j": 160.0, "ci_halfwidth_rel": 0.01},  # 40 J/request ± 0.4
    })  # fmt: skip
    assert c.per_request_j() == pytest.approx(50.0)
    assert c.per_request_halfwidth_j() == pytest.approx(0.5)
    no_ci = _cell(
        {"prefill": {"energy_j": 4.0}, "decode": {"energy_j": 8.0, "ci_halfwidth_rel": 0.1}}
    )
    assert no_ci.per_request_halfwidth_j() is None  # a phase without a CI: no spread is made up
