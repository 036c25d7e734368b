from __future__ import annotations

from joulebench.analysis import audit


def test_energy_above_idle_fails_on_impossible_energy():
    bad = audit.energy_above_idle(4.0, 60.0, 0.5)  # the study's 1.1e-3 Wh at 500 ms on an H100
    assert not bad.passed and "<" in bad.detail
    assert audit.energy_above_idle(40.0, 60.0, 0.5).passed
    assert audit.energy_above_idle(29.5, 60.0, 0.5, resolution_j=1.0).passed
    assert not audit.energy_above_idle(None, 60.0, 0.5).passed
    assert audit.energy_above_idle(1.0, None, 0.5).passed  # no baseline: not applicable


def test_floor_window_and_consistency_checks():
    assert not audit.energy_above_floor(0.1, 50.0, 0.01).passed
    assert audit.energy_above_floor(1.0, 50.0, 0.01).passed
    assert not audit.window_long_enough(0.05, 0.1).passed
    assert (
        audit.window_long_enough(0.2, 0.1, scope="decode").name == "decode:window_ge_update_period"
    )
    ok, rel = audit.phase_consistency(1.0, 9.0, 10.2)
    assert ok.passed and rel is not None and abs(rel - 0.2 / 10.2) < 1e-12
    bad, rel = audit.phase_consistency(1.0, 7.0, 10.0)
    assert not bad.passed and rel is not None and abs(rel - 0.2) < 1e-12
    missing, rel = audit.phase_consistency(None, 7.0, 10.0)
    assert not missing.passed and rel is None


def test_attribution_sum_and_failing_filter():
    good = audit.attribution_sum([1.0, 2.0, 3.0], 6.0)
    assert good.passed
    assert not audit.attribution_sum([1.0, 2.0], 6.0).passed
    assert not audit.attribution_sum([7.0, -1.0], 6.0).passed  # negative parts never pass
    assert audit.failing([good, audit.AuditCheck("x", False, "d")]) == [
        {"name": "x", "passed": False, "detail": "d"}
    ]


def test_difference_resolved_fails_on_noise():
    ok = audit.difference_resolved(2.0, 0.5, scope="decode/subtraction")
    assert ok.passed and ok.name == "decode/subtraction:difference_resolved"
    assert not audit.difference_resolved(-0.3, 0.1).passed
    assert not audit.difference_resolved(0.0, None).passed
    wide = audit.difference_resolved(0.4, 0.6)
    assert not wide.passed and "includes zero" in wide.detail
    assert not audit.difference_resolved(None, None).passed
    assert audit.difference_resolved(1.0, None).passed  # one repeat: no CI to compare


def test_quiet_host_fails_on_a_busy_window_or_a_foreign_gpu_process():
    quiet = [{"other_cores": 0.01}, {"other_cores": 0.04}]
    assert audit.quiet_host(quiet).passed
    bad = audit.quiet_host([*quiet, {"other_cores": 0.9}], scope="decode/direct")
    assert not bad.passed and bad.name == "decode/direct:quiet_host"
    assert "0.900 cores at most" in bad.detail and "1 above 0.05" in bad.detail
    assert audit.quiet_host([{"other_cores": 0.9}], max_other_cores=1.0).passed
    gpu = audit.quiet_host([{"other_cores": 0.0, "gpu_processes": ["pid 7 on gpu:0"]}])
    assert not gpu.passed and "pid 7 on gpu:0" in gpu.detail
    assert not audit.quiet_host([]).passed  # not watched is not quiet


def test_precision_reached_fails_at_the_cap():
    assert audit.precision_reached(0.015, 0.02, 4, 10).passed
    capped = audit.precision_reached(0.08, 0.02, 10, 10, scope="prefill/direct")
    assert not capped.passed and "stopped at 10 of --max-repeats 10" in capped.detail
    assert not audit.precision_reached(None, 0.02, 10, 10).passed


def test_quiet_host_allows_for_the_cpu_counters_resolution():
    # one 10 ms tick over a 0.3 s window reads as 0.033 cores: within ±0.067 it is not a neighbour
    assert audit.quiet_host([{"other_cores": 0.1, "resolution_cores": 0.067}]).passed
    assert not audit.quiet_host([{"other_cores": 0.2, "resolution_cores": 0.067}]).passed


def test_measured_not_estimated_and_complete_name_what_failed():
    from joulebench.analysis.audit import measured_not_estimated, run_complete

    ok = measured_not_estimated({"gpu:0": "counter", "cpu:0": "rapl"}, scope="measure")
    assert ok.passed and ok.name == "measure:measured_not_estimated"
    some = measured_not_estimated({"gpu:0": "counter", "ram": "estimated"})
    assert not some.passed and some.detail.startswith("ram ESTIMATED")
    every = measured_not_estimated({"cpu:0": "estimated"})
    assert not every.passed and every.detail.startswith("every domain")
    assert run_complete(False).passed and not run_complete(True).passed
