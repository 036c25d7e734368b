"""The dynamic scheduler's cost model and its cut of collected requests into batches."""

from __future__ import annotations

import itertools

import pytest

from joulebench.serve.schedulers.batch_cost import BatchCostModel, plan_buckets


def calibrated(step_s: float, row_s: float, prefill_s: float, token_s: float) -> BatchCostModel:
    m = BatchCostModel(decay=1.0)
    for rows, width in itertools.product((1, 4, 16, 64), (10, 40, 100)):
        m.observe_decode(rows, step_s + row_s * rows)
        m.observe_prefill(rows * width, prefill_s + token_s * rows * width)
    return m


def test_the_fit_recovers_the_costs_and_predicts_a_batch() -> None:
    m = calibrated(1e-3, 2e-5, 5e-3, 1e-6)
    c = m.coefficients()
    assert c is not None
    assert c["step_s"] == pytest.approx(1e-3) and c["row_s"] == pytest.approx(2e-5)
    assert c["prefill_s"] == pytest.approx(5e-3) and c["token_s"] == pytest.approx(1e-6)
    # prefill of 8 × 50 padded tokens, then 31 decode steps of 8 rows
    assert m.predict_s(8, 50, 32) == pytest.approx(5e-3 + 400e-6 + 31 * (1e-3 + 8 * 2e-5))


def test_not_ready_until_both_lines_are_identifiable() -> None:
    m = BatchCostModel()
    for _ in range(20):  # always one row and one width: the slopes cannot be told apart
        m.observe_decode(1, 1e-3)
        m.observe_prefill(30, 2e-3)
    assert not m.ready and m.coefficients() is None
    with pytest.raises(RuntimeError, match="not calibrated"):
        m.predict_s(1, 30, 8)
    with pytest.raises(ValueError, match="decay"):
        BatchCostModel(decay=0)


def test_a_negative_slope_from_noise_is_read_as_flat() -> None:
    m = BatchCostModel(decay=1.0)
    for rows, t in [(1, 3e-3), (2, 2e-3), (3, 1e-3)] * 4:
        m.observe_decode(rows, t)
        m.observe_prefill(rows * 10, 1e-3 * rows)
    c = m.coefficients()
    assert c is not None and c["row_s"] == 0.0 and c["step_s"] == pytest.approx(2e-3)


def test_fixed_step_cost_merges_and_padding_cost_splits() -> None:
    lengths = [25] * 16 + [50] * 16 + [75] * 16 + [100] * 16
    steps = [32] * 64
    # decode steps dominate (small model, CPU): one wide batch
    cheap_pad = calibrated(6e-4, 2e-5, 1e-3, 1e-7)
    assert plan_buckets(lengths, steps, 64, cheap_pad.predict_s) == [(0, 64)]
    # padded prompt tokens dominate (long prompts, big model): cut at every length change
    dear_pad = calibrated(1e-5, 1e-6, 1e-5, 1e-3)
    assert plan_buckets(lengths, steps, 64, dear_pad.predict_s) == [
        (0, 16), (16, 32), (32, 48), (48, 64),
    ]  # fmt: skip


def test_the_plan_covers_every_request_once_and_respects_the_batch_cap() -> None:
    lengths = sorted([3, 9, 9, 20, 21, 40, 41, 41, 90, 200, 201])
    steps = [8, 16, 4, 32, 8, 8, 64, 1, 16, 8, 2]
    m = calibrated(1e-3, 1e-4, 1e-3, 1e-5)
    plan = plan_buckets(lengths, steps, 3, m.predict_s)
    assert [i for a, b in plan for i in range(a, b)] == list(range(len(lengths)))
    assert all(0 < b - a <= 3 for a, b in plan)
    with pytest.raises(ValueError, match="sorted"):
        plan_buckets([5, 3], [1, 1], 4, m.predict_s)
    assert plan_buckets([], [], 4, m.predict_s) == []


def test_the_plan_is_optimal_against_brute_force() -> None:
    lengths = [4, 8, 8, 16, 30, 31, 60]
    steps = [16, 8, 32, 16, 16, 4, 8]
    m = calibrated(2e-4, 3e-5, 1e-3, 2e-5)

    def total(plan: list[tuple[int, int]]) -> float:
        return sum(m.predict_s(b - a, lengths[b - 1], max(steps[a:b])) for a, b in plan)

    n, best = len(lengths), float("inf")
    for mask in range(2 ** (n - 1)):  # every set of cut points
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        plan = list(itertools.pairwise(cuts))
        if all(b - a <= 4 for a, b in plan):
            best = min(best, total(plan))
    assert total(plan_buckets(lengths, steps, 4, m.predict_s)) == pytest.approx(best)


def _requests(lengths: list[int], max_new_tokens: int = 32) -> list:
    from joulebench.serve.request import GenRequest, SamplingParams

    return [
        GenRequest(f"r{i}", [1] * n, max_new_tokens, SamplingParams(), 0.0)
        for i, n in enumerate(lengths)
    ]


def test_the_dynamic_scheduler_uses_the_ratio_rule_until_calibrated_then_the_cheapest_cut() -> None:
    from joulebench.serve.schedulers.dynamic import DynamicScheduler

    sched = DynamicScheduler(None, None, None, max_batch_size=64)
    reqs = _requests([100, 25, 50, 75] * 16)
    assert sched.bucketing == "cost" and not sched.cost_model.ready
    before = sched.buckets(reqs)  # ratio rule: 25 | 50, 75 | 100
    assert [len(b) for b in before] == [16, 32, 16]
    sched.cost_model = calibrated(6e-4, 2e-5, 1e-3, 1e-7)  # decode steps dominate
    after = sched.buckets(reqs)
    assert [len(b) for b in after] == [64]
    assert sorted(r.id for r in after[0]) == sorted(r.id for r in reqs)
    ratio = DynamicScheduler(None, None, None, max_batch_size=64, bucketing="ratio")
    ratio.cost_model = sched.cost_model  # calibrated, but the ratio rule was asked for
    assert [len(b) for b in ratio.buckets(reqs)] == [16, 32, 16]
    with pytest.raises(ValueError, match="bucketing must be one of cost, ratio"):
        DynamicScheduler(None, None, None, bucketing="size")
