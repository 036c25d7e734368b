from __future__ import annotations

import random

import pytest

from joulebench.analysis.attribution import WorkSpan, attribute_energy


def linear_series(power_w: float, t0: float, t1: float, n: int) -> list[tuple[float, float]]:
    step = (t1 - t0) / (n - 1)
    return [(t0 + i * step, power_w * i * step) for i in range(n)]


def test_two_overlapping_spans_share_by_work():
    series = linear_series(100.0, 0.0, 1.0, 11)
    spans = [WorkSpan("a", 0.0, 1.0, 30.0), WorkSpan("b", 0.0, 1.0, 10.0)]
    att = attribute_energy(series, spans)
    assert att.per_key_j["a"] == pytest.approx(75.0)
    assert att.per_key_j["b"] == pytest.approx(25.0)
    assert att.idle_gap_j == pytest.approx(0.0, abs=1e-9)
    assert att.method == "timeline-token-share"


def test_disjoint_spans_get_their_own_slices():
    # 0–1 s at 100 W (a), 1–2 s at 300 W (b): power differs, attribution follows it.
    series = [(0.0, 0.0), (1.0, 100.0), (2.0, 400.0)]
    att = attribute_energy(series, [WorkSpan("a", 0.0, 1.0, 5), WorkSpan("b", 1.0, 2.0, 5)])
    assert att.per_key_j == pytest.approx({"a": 100.0, "b": 300.0})


def test_partial_slice_overlap_is_split_by_time():
    # One 10 s slice at 10 W; a span covering 2 s of it gets 20 J active, the rest is idle gap.
    series = [(0.0, 0.0), (10.0, 100.0)]
    att = attribute_energy(series, [WorkSpan("x", 4.0, 6.0, 3)])
    assert att.active_j == pytest.approx(20.0)
    assert att.idle_gap_j == pytest.approx(80.0)
    assert att.per_key_j["x"] == pytest.approx(100.0)  # idle gap spread onto the only request


def test_idle_gap_spread_in_proportion_to_active_energy():
    series = linear_series(10.0, 0.0, 10.0, 101)  # 100 J over 10 s
    spans = [WorkSpan("a", 0.0, 2.0, 1), WorkSpan("b", 2.0, 3.0, 1)]  # a: 20 J, b: 10 J active
    att = attribute_energy(series, spans)
    assert att.idle_gap_j == pytest.approx(70.0)
    assert att.per_key_j["a"] == pytest.approx(20.0 + 70.0 * 2 / 3)
    assert att.per_key_j["b"] == pytest.approx(10.0 + 70.0 * 1 / 3)
    assert att.sum_rel_err < 1e-9


def test_net_attribution_with_idle_power():
    series = linear_series(10.0, 0.0, 10.0, 11)  # 10 W throughout
    spans = [WorkSpan("a", 0.0, 5.0, 1), WorkSpan("b", 5.0, 10.0, 3)]
    att = attribute_energy(series, spans, idle_power_w=4.0)
    assert att.total_net_j == pytest.approx(60.0)
    assert att.per_key_net_j == pytest.approx({"a": 30.0, "b": 30.0})
    assert sum(att.per_key_j.values()) == pytest.approx(100.0)


def test_zero_work_spans_share_equally_where_nobody_works():
    series = [(0.0, 0.0), (2.0, 20.0)]
    spans = [WorkSpan("q1", 0.0, 1.0, 0), WorkSpan("q2", 0.0, 1.0, 0), WorkSpan("w", 1.0, 2.0, 4)]
    att = attribute_energy(series, spans)
    assert att.per_key_j == pytest.approx({"q1": 5.0, "q2": 5.0, "w": 10.0})


def test_random_workload_sums_within_one_percent():
    rng = random.Random(5)
    t, e, series = 0.0, 0.0, [(0.0, 0.0)]
    while t < 30.0:
        dt = rng.uniform(0.05, 0.15)
        t += dt
        e += rng.uniform(50, 300) * dt
        series.append((t, e))
    spans = []
    for i in range(400):
        a = rng.uniform(-1.0, 31.0)  # some spans stick out of the timeline
        spans.append(WorkSpan(i, a, a + rng.uniform(0.0, 2.0), rng.randint(0, 200)))
    att = attribute_energy(series, spans, idle_power_w=40.0)
    assert att.sum_rel_err < 0.01
    assert sum(att.per_key_j.values()) == pytest.approx(att.total_j, rel=0.01)
    assert att.per_key_net_j is not None
    assert sum(att.per_key_net_j.values()) == pytest.approx(att.total_net_j, rel=0.01)
    assert all(v >= 0 for v in att.per_key_j.values())


def test_keys_with_several_spans_accumulate():
    series = linear_series(10.0, 0.0, 4.0, 5)
    spans = [WorkSpan("r", 0.0, 1.0, 1), WorkSpan("r", 1.0, 4.0, 1), WorkSpan("s", 1.0, 4.0, 1)]
    att = attribute_energy(series, spans)
    assert att.per_key_j == pytest.approx({"r": 10.0 + 15.0, "s": 15.0})


def test_no_spans_reports_everything_as_idle():
    att = attribute_energy([(0.0, 0.0), (1.0, 5.0)], [])
    assert att.per_key_j == {}
    assert att.idle_gap_j == pytest.approx(5.0)
    assert att.sum_rel_err == 1.0


@pytest.mark.parametrize(
    ("series", "match"),
    [
        ([(0.0, 0.0)], "at least 2"),
        ([(1.0, 0.0), (0.5, 1.0)], "must not decrease"),
        ([(1.0, 0.0), (1.0, 1.0)], "covers no time"),
    ],
)
def test_bad_series(series, match):
    with pytest.raises(ValueError, match=match):
        attribute_energy(series, [])


def test_bad_spans_and_idle_power():
    with pytest.raises(ValueError, match="before it starts"):
        WorkSpan("x", 2.0, 1.0, 1)
    with pytest.raises(ValueError, match="invalid work"):
        WorkSpan("x", 0.0, 1.0, -1)
    with pytest.raises(ValueError, match="idle_power_w"):
        attribute_energy([(0.0, 0.0), (1.0, 1.0)], [], idle_power_w=-1.0)


def test_dense_short_spans_leave_no_rounding_residue_for_workless_ones():
    # Sub-millisecond spans have huge work densities; once they end, a rounding residue of
    # their sum must not count as "work in flight" for a later span with no work (a failure).
    series = [(4594.0 + 0.01 * i, 40.0 * 0.01 * i) for i in range(101)]
    rng = random.Random(2)
    spans = []
    for i in range(300):
        t = 4594.0 + rng.uniform(0.0, 0.8)
        spans.append(WorkSpan(i, t, t + rng.uniform(1e-5, 3e-3), float(rng.randint(1, 4))))
    spans.append(WorkSpan("failed", 4594.9, 4594.95, 0.0))
    att = attribute_energy(series, spans)
    assert att.sum_rel_err < 1e-9
    assert att.per_key_j["failed"] > 0


def test_net_idle_gap_does_not_explode_on_mixed_sign_net_shares():
    # A counter that steps every 100 ms: request a's span (0–1 s) sees no step, b's (1–2 s) all
    # of it, then an idle gap (2–3 s). With 5 W idle, a's net active energy is −5 J and b's
    # +5.05 J: their sum is 0.05 J, and spreading the 4.95 J net idle gap by net shares gave
    # a −500 J and b +505 J. The gap is spread by gross active shares: a keeps −5 J.
    series = [(0.0, 0.0), (1.0, 0.0), (1.1, 10.05), (2.0, 10.05), (3.0, 20.0)]
    spans = [WorkSpan("a", 0.0, 1.0, 5.0), WorkSpan("b", 1.0, 2.0, 5.0)]
    att = attribute_energy(series, spans, idle_power_w=5.0)
    assert att.total_net_j == pytest.approx(5.0)
    assert att.per_key_net_j == pytest.approx({"a": -5.0, "b": 10.0})
    assert sum(att.per_key_net_j.values()) == pytest.approx(att.total_net_j)
    assert att.per_key_j == pytest.approx({"a": 0.0, "b": 20.0})
