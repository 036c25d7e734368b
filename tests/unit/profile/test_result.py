from __future__ import annotations

import pytest

from joulebench.profile.consistency import both_methods
from joulebench.profile.phases import PhaseMeasurement, RepeatRecord
from joulebench.profile.tokens import Tokens

TOKENS = Tokens(
    n_requests=4, n_batches=2, input_effective=30, input_computed=40, decode_output=16,
    decode_steps=8,
)  # fmt: skip


def _m(key: str, energy_j: float, latency_s: float, method: str = "x") -> PhaseMeasurement:
    reps = [
        RepeatRecord(key, method, i, False, 3, latency_s * 3, latency_s, energy_j, energy_j / 2)
        for i in range(3)
    ]
    return PhaseMeasurement(key, method, [], reps, True, 0.1)


def _measured(pre, dec, gen1, genn):
    return {
        "prefill": _m("prefill", *pre, method="direct"),
        "decode": _m("decode", *dec, method="direct"),
        "generate_1": _m("generate_1", *gen1, method="subtraction"),
        "generate_n": _m("generate_n", *genn, method="subtraction"),
    }


def _clocks(pre: float, dec: float, gen1: float, genn: float) -> dict[str, dict[str, float]]:
    """Forward clocks with these seconds per op spent outside the model's forward."""
    return {
        k: {"ops": 10, "op_s": 1.0, "forward_s": 1.0 - 10 * v, "outside_forward_per_op_s": v}
        for k, v in (("prefill", pre), ("decode", dec), ("generate_1", gen1), ("generate_n", genn))
    }


def consistency_section(measured, t, tolerance, *, compiled=False, clocks=None):
    """The consistency section and check, as the profiler builds them (``both_methods``)."""
    both, chk = both_methods(measured, t, tolerance, compiled, clocks)
    assert both["consistency_rel_err"] == both["consistency"]["rel_err"]
    assert ("generate_overhead" in both) == (clocks is not None)
    return both["consistency"], chk


# direct 10 + 20 = 30 J in 0.3 s; generate 40 J in 0.4 s (100 W): 25 % more time and energy
GAP = ((10, 0.1), (20, 0.2), (14, 0.14), (40, 0.4))


def test_generate_overhead_figure_per_call_and_per_step():
    from joulebench.profile.consistency import generate_overhead

    # outside the forward: direct prefill 0.002 s, decode 0.008 s; generate(1) 0.042 s,
    # generate(N) 0.11 s per op (2 batches, 8 decode steps)
    ov = generate_overhead(_measured(*GAP), TOKENS, _clocks(0.002, 0.008, 0.042, 0.11))
    assert ov is not None and ov["method"] == "forward_clock"
    assert ov["per_call_s"] == pytest.approx((0.042 - 0.002) / 2)
    assert ov["per_step_s"] == pytest.approx((0.11 - 0.042 - 0.008) / 8)
    assert ov["total_s"] == pytest.approx(0.11 - 0.002 - 0.008)
    assert ov["power_w"] == pytest.approx(100.0)  # generate(N): 40 J in 0.4 s
    assert ov["per_call_j"] == pytest.approx(ov["per_call_s"] * 100.0)
    assert ov["per_step_j"] == pytest.approx(ov["per_step_s"] * 100.0)
    assert ov["total_j"] == pytest.approx(10.0)
    assert "outside the model's forward" in ov["note"]
    assert generate_overhead(_measured(*GAP), TOKENS, {}) is None


def test_gap_that_is_generate_overhead_passes():
    # generate spends 0.1 s (10 J) more outside its forward than the direct path: the whole gap
    sec, chk = consistency_section(
        _measured(*GAP), TOKENS, 0.05, clocks=_clocks(0.002, 0.008, 0.042, 0.11)
    )
    assert chk.passed and sec["passed"] and "note" not in sec
    assert sec["rel_err"] == pytest.approx(0.0, abs=1e-9)
    assert sec["generate_overhead_j"] == pytest.approx(10.0)
    assert sec["predicted_energy_j"] == pytest.approx(40.0)
    assert sec["latency_rel_err"] == pytest.approx(0.0, abs=1e-9)
    assert "generate_overhead" in sec["compared"]
    assert "argmax" in " ".join(sec["direct_decode_does"])


def test_gap_in_the_model_work_still_fails():
    # same 25 % gap, but generate spends no more outside its forward than the direct path: the
    # forward work differs, which no overhead explains
    sec, chk = consistency_section(
        _measured(*GAP), TOKENS, 0.05, clocks=_clocks(0.002, 0.008, 0.002, 0.01)
    )
    assert not chk.passed and sec["rel_err"] == pytest.approx(0.25)
    assert sec["signed_rel_err"] == pytest.approx(-0.25)
    assert "do not do the same model work" in chk.detail and sec["note"] in chk.detail


def test_direct_above_generate_fails_as_negative_overhead():
    # direct 30 J vs generate 24 J: the direct path spends 0.06 s more outside the forward
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (8, 0.08), (24, 0.24)),
        TOKENS,
        0.05,
        clocks=_clocks(0.01, 0.07, 0.01, 0.02),
    )
    assert sec["generate_overhead_j"] == pytest.approx(-6.0)
    assert sec["rel_err"] == pytest.approx(0.0, abs=1e-9)  # the overhead would hide it ...
    assert not chk.passed and "does work outside the forward" in chk.detail  # ... but fails


def test_without_clocks_direct_is_compared_with_generate_alone():
    sec, chk = consistency_section(_measured(*GAP), TOKENS, 0.05)
    assert not chk.passed and sec["rel_err"] == pytest.approx(0.25)
    assert sec["generate_overhead_j"] is None and "not measured" in sec["note"]


def test_within_tolerance_passes_without_note():
    sec, chk = consistency_section(
        _measured((10, 0.1), (20, 0.2), (10.2, 0.1), (30.6, 0.305)), TOKENS, 0.05
    )
    assert chk.passed and sec["passed"] and "note" not in sec
    assert sec["rel_err"] == pytest.approx(0.6 / 30.6)


def test_compiled_decode_gap_is_not_blamed_on_generate():
    sec, chk = consistency_section(
        _measured(*GAP), TOKENS, 0.05, compiled=True, clocks=_clocks(0.002, 0.008, 0.002, 0.01)
    )
    assert not chk.passed
    assert sec["direct_decode_compiled"] and "compile effect" in chk.detail


def test_headline_phases_carry_their_method_and_the_subtraction_beside():
    out, _ = _assemble(_measured(*GAP), method="both", clocks=_clocks(0.002, 0.008, 0.042, 0.11))
    assert out["headline_method"] == "direct"
    assert out["prefill"]["method"] == out["decode"]["method"] == "direct"
    assert out["prefill"]["subtraction_energy_j"] == pytest.approx(14.0)  # generate(1)
    assert out["decode"]["subtraction_energy_j"] == pytest.approx(26.0)  # 40 − 14
    assert out["decode"]["subtraction_latency_s"] == pytest.approx(0.26)
    assert out["generate_overhead"]["total_j"] == pytest.approx(10.0)
    assert out["consistency"]["passed"]


def _assemble(measured, method="subtraction", **kw):
    from joulebench.profile.result import assemble

    return assemble(
        measured,
        TOKENS,
        method=method,
        consistency_tolerance=0.05,
        device="cpu",
        roofline_for=lambda s: {"available": False, "reason": "test"},
        idle_w=None,
        update_period_s=0.01,
        header={},
        **kw,
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


def _spread_m(key: str, energies: list[float], method: str = "x") -> PhaseMeasurement:
    reps = [RepeatRecord(key, method, i, False, 3, e / 100 * 3, e / 100, e, e / 2)
            for i, e in enumerate(energies)]  # fmt: skip
    return PhaseMeasurement(key, method, [], reps, True, 0.1)


def test_a_gap_within_the_measurement_spread_says_no_verdict():
    # direct 30 J ± a lot vs generate 40 J: 25 % apart, but the windows scatter by ±40 %
    measured = {
        "prefill": _spread_m("prefill", [5, 10, 15], "direct"),
        "decode": _spread_m("decode", [10, 20, 30], "direct"),
        "generate_1": _spread_m("generate_1", [14, 14, 14], "subtraction"),
        "generate_n": _spread_m("generate_n", [20, 40, 60], "subtraction"),
    }
    sec, chk = consistency_section(measured, TOKENS, 0.05, clocks=_clocks(0.0, 0.0, 0.0, 0.0))
    assert not chk.passed and sec["gap_ci95_rel"] > 0.25
    assert "no verdict" in sec["note"] and "reaches the ±5.0% tolerance" in chk.detail
    # the same means without spread: a real difference in the work
    sec, chk = consistency_section(_measured(*GAP), TOKENS, 0.05, clocks=_clocks(0, 0, 0, 0))
    assert sec["gap_ci95_rel"] == pytest.approx(0.0) and "same model work" in sec["note"]


def test_a_gap_without_an_interval_says_so_instead_of_a_zero_spread():
    # one repeat per measurement: no 95 % interval can be estimated, so none is printed
    measured = {
        "prefill": _spread_m("prefill", [10], "direct"),
        "decode": _spread_m("decode", [20], "direct"),
        "generate_1": _spread_m("generate_1", [14], "subtraction"),
        "generate_n": _spread_m("generate_n", [40], "subtraction"),
    }
    sec, chk = consistency_section(measured, TOKENS, 0.05, clocks=_clocks(0.0, 0.0, 0.0, 0.0))
    assert not chk.passed and sec["gap_ci95_rel"] is None
    assert "no 95 % interval" in sec["note"] and "±0.0%" not in sec["note"]
