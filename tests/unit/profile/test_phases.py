from __future__ import annotations

import time

import pytest

from joulebench.analysis.stats import StoppingRule
from joulebench.meters.fake import FakeMeter
from joulebench.profile.phases import Phase, measure_repeated


def test_windows_reach_min_length_and_warmups_are_apart():
    calls = []

    def op():
        calls.append(1)
        time.sleep(0.002)

    m = measure_repeated(
        op,
        FakeMeter(50.0, update_period_s=0.02),
        phase=Phase.PREFILL,
        method="direct",
        rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=4),
        min_window_s=0.05,
        warmup=3,
    )
    assert len(m.warmups) == 3 and all(w.warmup and w.energy_j is None for w in m.warmups)
    assert 2 <= len(m.repeats) <= 4
    assert all(r.duration_s >= 0.05 and r.n_ops > 1 for r in m.repeats)
    assert len(calls) == 3 + sum(r.n_ops for r in m.repeats)
    # constant 50 W: per-op energy ≈ 50 W × op time (within the 20 ms counter quantum per window)
    for r in m.repeats:
        assert r.energy_j == pytest.approx(
            50.0 * r.duration_s / r.n_ops, abs=50.0 * 0.02 / r.n_ops + 1e-9
        )
    assert m.repeats[0].domains[0]["method"] == "fake"


def test_window_never_shorter_than_update_period():
    m = measure_repeated(
        lambda: None,
        FakeMeter(10.0, update_period_s=0.05),
        phase=Phase.DECODE,
        method="direct",
        rule=StoppingRule(min_repeats=2, max_repeats=2),
        min_window_s=0.001,
        warmup=0,
    )
    assert m.min_window_s == 0.05
    assert all(r.duration_s >= 0.05 and r.energy_j is not None for r in m.repeats)


def test_negative_warmup_is_rejected():
    with pytest.raises(ValueError):
        measure_repeated(
            lambda: None,
            FakeMeter(),
            phase=Phase.PREFILL,
            method="direct",
            rule=StoppingRule(),
            min_window_s=0.1,
            warmup=-1,
        )


def test_window_chunks_shrink_so_a_window_ends_about_one_op_past_its_target():
    from joulebench.profile.phases import window_chunk

    assert window_chunk(1.0, None) == 1  # no estimate yet: one op, then measure
    assert window_chunk(1.0, 0.01) == 60  # 100 ops needed: run 60 %, then look again
    assert window_chunk(0.015, 0.01) == 2  # the last one or two run alone
    # simulated window whose ops slow down 1.5× after the first chunk (a busy shared CPU):
    # committing to the whole window from the warm-up estimate overshot by ~50 %
    target, elapsed, n, last, per_true = 0.5, 0.0, 0, 0.0, 0.001
    k = window_chunk(target / 2, 0.001)
    while True:
        elapsed += k * per_true
        n += k
        per_true = 0.0015
        if elapsed >= target:
            break
        k_next = window_chunk(target - elapsed, max(elapsed / n, (elapsed - last) / k))
        last, k = elapsed, k_next
    assert target <= elapsed <= target + 2 * per_true


def test_repeats_stopped_at_the_cap_fail_precision_reached():
    from joulebench.profile.result import phase_audits

    sizes = iter([0.001, 0.02, 0.004, 0.03] * 5)  # op times vary 30×: the CI cannot reach 1 %

    m = measure_repeated(
        lambda: time.sleep(next(sizes)),
        FakeMeter(10.0, update_period_s=0.01),
        phase=Phase.DECODE,
        method="direct",
        rule=StoppingRule(ci_target=0.001, min_repeats=2, max_repeats=3),
        min_window_s=0.001,
        warmup=0,
    )
    assert len(m.repeats) == 3 and not m.converged
    checks = {c.name: c for c in phase_audits(m, None, None, 0.01)}
    assert not checks["decode/direct:precision_reached"].passed
    assert "--max-repeats 3" in checks["decode/direct:precision_reached"].detail
    assert "decode/direct:quiet_host" not in checks  # the host was not watched here


def test_converged_repeats_pass_precision_reached():
    from joulebench.profile.result import phase_audits

    m = measure_repeated(
        lambda: time.sleep(0.002),
        FakeMeter(10.0, update_period_s=0.01),
        phase=Phase.PREFILL,
        method="direct",
        rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=6),
        min_window_s=0.05,
        warmup=0,
    )
    checks = {c.name: c for c in phase_audits(m, None, None, 0.01)}
    assert m.converged and checks["prefill/direct:precision_reached"].passed


def test_interleaved_measurements_alternate_windows_and_stop_on_their_own_rule():
    """One window of each op per round (order alternating), until each op's rule is met."""
    from joulebench.profile.phases import RepeatedMeasurement, measure_interleaved

    log: list[str] = []
    meter = FakeMeter(lambda t: {"gpu:0": 10.0 + 1e3 * t}, update_period_s=0.001)  # never steady

    def make(name: str, max_repeats: int) -> RepeatedMeasurement:
        def op() -> None:
            log.append(name)
            time.sleep(0.001)

        return RepeatedMeasurement(
            op, meter, phase=Phase.PREFILL, method=name, min_window_s=0.01, warmup=1,
            rule=StoppingRule(ci_target=1e-9, min_repeats=2, max_repeats=max_repeats),
        )  # fmt: skip

    out = measure_interleaved({"a": make("a", 2), "b": make("b", 4)})
    assert [len(out[k].repeats) for k in "ab"] == [2, 4]
    assert not out["a"].converged and out["a"].method == "a"
    # warm-ups first, then windows: a b | b a | b | b (runs of ops, one run per window)
    runs = [log[0]]
    for x in log[1:]:
        if x != runs[-1]:
            runs.append(x)
    assert runs[:2] == ["a", "b"]  # the warm-ups, one each
    assert runs[2:] == ["a", "b", "a", "b"]  # a's 2 windows paired with b's; b goes on alone
