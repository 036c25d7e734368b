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


def _assemble(measured):
    from joulebench.profile.result import assemble

    return assemble(
        measured,
        TOKENS,
        method="subtraction",
        consistency_tolerance=0.05,
        device="cpu",
        roofline_for=lambda s: {"available": False, "reason": "test"},
        idle_w=None,
        update_period_s=0.01,
        header={},
    )


def test_negative_subtracted_decode_fails_an_audit_and_warns():
    # generate(N) measured below generate(1) (noise): decode = 9 − 10 = −1 J was published as a
    # decode energy (and per-token figures) with every audit passing
    out, checks = _assemble({"generate_1": _m("g1", 10.0, 0.1), "generate_n": _m("gn", 9.0, 0.09)})
    assert out["decode"]["energy_j"] == pytest.approx(-1.0)
    failed = {c.name for c in checks if not c.passed}
    assert "decode/subtraction:difference_resolved" in failed
    assert not out["audit_passed"]
    assert any("subtracted decode energy" in w for w in out["warnings"])
    assert out["roofline"]["available"] is False


def test_resolved_subtracted_decode_passes():
    out, checks = _assemble({"generate_1": _m("g1", 10.0, 0.1), "generate_n": _m("gn", 30.0, 0.3)})
    chk = next(c for c in checks if c.name == "decode/subtraction:difference_resolved")
    assert chk.passed and out["decode"]["energy_j"] == pytest.approx(20.0)
    assert not out["warnings"]


def test_one_resolved_repeat_reports_no_spread():
    # two repeats, one too short (no energy): the energy rests on one value; its std was 0.0
    from joulebench.profile.result import phase_section

    reps = [
        RepeatRecord("prefill", "direct", 0, False, 3, 0.3, 0.1, 5.0, 2.0),
        RepeatRecord("prefill", "direct", 1, False, 1, 0.005, 0.1, None, None),
    ]
    sec = phase_section(PhaseMeasurement("prefill", "direct", [], reps, False, 0.1), 10, "x")
    assert sec["energy_j"] == pytest.approx(5.0)
    assert sec["energy_std_j"] is None and sec["energy_ci95_j"] is None
    assert sec["latency_std_s"] == pytest.approx(0.0)  # two latencies: a real (zero) spread
    one = phase_section(PhaseMeasurement("prefill", "direct", [], reps[:1], False, 0.1), 10, "x")
    assert one["latency_std_s"] is None
