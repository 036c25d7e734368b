from __future__ import annotations

import pytest

from joulebench.profile.phases import PhaseMeasurement, RepeatRecord
from joulebench.profile.result import Tokens, consistency_section

TOKENS = Tokens(
    n_requests=4, n_batches=2, input_effective=30, input_computed=40, decode_output=16,
    decode_steps=8,
)  # fmt: skip


def _m(key: str, energy_j: float, latency_s: float) -> PhaseMeasurement:
    reps = [
        RepeatRecord(key, "x", i, False, 3, latency_s * 3, latency_s, energy_j, energy_j / 2)
        for i in range(3)
    ]
    return PhaseMeasurement(key, "x", [], reps, True, 0.1)


def _measured(pre, dec, gen1, genn):
    return {
        "prefill": _m("prefill", *pre),
        "decode": _m("decode", *dec),
        "generate_1": _m("generate_1", *gen1),
        "generate_n": _m("generate_n", *genn),
    }


def test_gap_explained_by_generate_overhead():
    # direct 10 + 20 = 30 J in 0.3 s; generate 40 J in 0.4 s: same power, 25 % more time
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (14, 0.14), (40, 0.4)), TOKENS, 0.05
    )
    assert not chk.passed and sec["rel_err"] == pytest.approx(0.25)
    assert sec["signed_rel_err"] == pytest.approx(-0.25)
    assert sec["latency_rel_err"] == pytest.approx(-0.25)
    assert sec["explained_by_generate_overhead"] is True
    assert sec["generate_overhead_s"] == pytest.approx(0.1)
    assert sec["generate_overhead_per_call_s"] == pytest.approx(0.02)  # (0.14 − 0.1) / 2 batches
    assert sec["generate_overhead_per_step_s"] == pytest.approx((0.4 - 0.14 - 0.2) / 8)
    assert "generate()'s own Python overhead" in chk.detail and sec["note"] in chk.detail
    assert "argmax" in " ".join(sec["direct_decode_does"])


def test_gap_not_explained_when_time_agrees():
    # same time, but generate drew far more energy: something else is wrong
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (11, 0.1), (60, 0.3)), TOKENS, 0.05
    )
    assert not chk.passed and sec["explained_by_generate_overhead"] is False
    assert "not explained" in sec["note"] and "not explained" in chk.detail


def test_within_tolerance_passes_without_note():
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (10.2, 0.1), (30.6, 0.305)), TOKENS, 0.05
    )
    assert chk.passed and sec["passed"] and "note" not in sec
    assert sec["rel_err"] == pytest.approx(0.6 / 30.6)


def test_compiled_decode_gap_is_not_blamed_on_generate():
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (14, 0.14), (40, 0.4)), TOKENS, 0.05, compiled=True
    )
    assert not chk.passed and sec["explained_by_generate_overhead"] is False
    assert sec["direct_decode_compiled"] and "compile effect" in chk.detail
