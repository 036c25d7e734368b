from __future__ import annotations

import time

import pytest

from joulebench.analysis.stats import StoppingRule
from joulebench.meters.fake import FakeMeter
from joulebench.profile.phases import Phase, WindowSettings, measure_repeated


def test_windows_reach_min_length_and_warmups_are_apart():
    calls = []

    def op():
        calls.append(1)
        time.sleep(0.002)

    m = measure_repeated(
        op,
        FakeMeter(50.0, update_period_s=0.02),
        WindowSettings(
            rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=4),
            min_window_s=0.05,
            warmup=3,
        ),
        phase=Phase.PREFILL,
        method="direct",
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
        WindowSettings(
            rule=StoppingRule(min_repeats=2, max_repeats=2), min_window_s=0.001, warmup=0
        ),
        phase=Phase.DECODE,
        method="direct",
    )
    assert m.min_window_s == 0.05
    assert all(r.duration_s >= 0.05 and r.energy_j is not None for r in m.repeats)


def test_negative_warmup_is_rejected():
    with pytest.raises(ValueError):
        measure_repeated(
            lambda: None,
            FakeMeter(),
            WindowSettings(rule=StoppingRule(), min_window_s=0.1, warmup=-1),
            phase=Phase.PREFILL,
            method="direct",
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
        WindowSettings(
            rule=StoppingRule(ci_target=0.001, min_repeats=2, max_repeats=3),
            min_window_s=0.001,
            warmup=0,
        ),
        phase=Phase.DECODE,
        method="direct",
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
        WindowSettings(
            rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=6),
            min_window_s=0.05,
            warmup=0,
        ),
        phase=Phase.PREFILL,
        method="direct",
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

        settings = WindowSettings(
            rule=StoppingRule(ci_target=1e-9, min_repeats=2, max_repeats=max_repeats),
            min_window_s=0.01,
            warmup=1,
        )
        return RepeatedMeasurement(op, meter, settings, phase=Phase.PREFILL, method=name)

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


class ScriptedTimer:
    """A device timer whose stop() returns the scripted op times, one per op."""

    def __init__(self, times_s: list[float]) -> None:
        self.times = iter(times_s)

    def start(self) -> None:
        pass

    def stop(self) -> float:
        return next(self.times)


def _warmups(times_s: list[float], cap: int, settle: float | None):
    from joulebench.profile.phases import RepeatedMeasurement

    calls: list[int] = []
    m = RepeatedMeasurement(
        lambda: calls.append(1),
        FakeMeter(10.0, update_period_s=0.01),
        WindowSettings(rule=StoppingRule(), min_window_s=0.01, warmup=cap, warmup_settle=settle),
        phase=Phase.DECODE,
        method="direct",
    )
    m.timer = ScriptedTimer(times_s)  # type: ignore[assignment]
    stop = m.warm_up()
    assert len(calls) == len(m.warmups) == stop.n  # every warm-up ran once and is kept apart
    assert all(w.warmup and w.energy_j is None for w in m.warmups)
    return m, stop


def test_settled_warmups_stop_once_two_in_a_row_agree():
    # cold first op, then 0.20 → 0.21 s: within 10 % after the third warm-up; 5 is only the cap
    m, stop = _warmups([0.5, 0.2, 0.21, 0.2, 0.2], cap=5, settle=0.10)
    assert (stop.n, stop.reason, stop.rule, stop.cap) == (3, "settled", "settled", 5)
    assert [w.latency_s for w in m.warmups] == [0.5, 0.2, 0.21]
    assert m.result().warmup_stop == stop
    assert m.op_s == 0.21  # the first window is sized from the last warm-up


def test_warmups_that_never_settle_run_to_the_cap_and_say_so():
    _, stop = _warmups([0.1, 0.2, 0.1, 0.2, 0.1, 0.2], cap=5, settle=0.10)
    assert (stop.n, stop.reason) == (5, "cap")


def test_exact_warmups_run_the_whole_count_even_when_settled():
    _, stop = _warmups([0.2] * 5, cap=5, settle=None)  # the study's protocol: 5 warm-ups
    assert (stop.n, stop.reason, stop.rule) == (5, "count", "exact")


def test_warmups_settled_compares_the_last_two_to_the_shorter():
    from joulebench.profile.phases import warmups_settled

    assert not warmups_settled([0.2], 0.1)  # one warm-up: nothing to compare
    assert warmups_settled([0.9, 0.20, 0.22], 0.1)  # 0.02 ≤ 10 % of 0.20
    assert not warmups_settled([0.20, 0.23], 0.1)  # 0.03 > 10 % of 0.20
    assert not warmups_settled([0.23, 0.20], 0.1)  # symmetric


def test_auto_window_is_ten_update_periods_but_never_under_a_quarter_second():
    from joulebench.profile.phases import auto_window_s

    assert auto_window_s(0.01) == 0.25  # the estimator, RAPL
    assert auto_window_s(0.1) == pytest.approx(1.0)  # NVML's ~100 ms counter: the old 1 s
    assert auto_window_s(0.2) == pytest.approx(2.0)
