from __future__ import annotations

import math

import pytest

from joulebench.analysis.stats import StoppingRule, summarize, t_quantile_975


def test_summary_matches_hand_computation():
    s = summarize([10.0, 12.0, 14.0])
    assert s.mean == pytest.approx(12.0)
    assert s.std == pytest.approx(2.0)
    assert s.ci_halfwidth == pytest.approx(4.3027 * 2.0 / math.sqrt(3))
    assert s.ci_halfwidth_rel == pytest.approx(s.ci_halfwidth / 12.0)


def test_single_value_has_no_ci_and_empty_is_an_error():
    assert summarize([3.0]).ci_halfwidth is None
    assert summarize([3.0]).std is None  # one value has no spread, not a spread of 0
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_t_quantile_large_df_approaches_normal():
    assert t_quantile_975(30) == pytest.approx(2.0423)
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=2e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_stopping_rule_stops_on_ci_or_cap():
    rule = StoppingRule(ci_target=0.02, min_repeats=3, max_repeats=6)
    assert not rule.done([1.0, 1.0])  # below min repeats
    assert rule.done([1.0, 1.001, 0.999])  # tight
    assert not rule.done([1.0, 2.0, 3.0])  # wide
    assert rule.done([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])  # cap
    assert not rule.converged([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        StoppingRule(min_repeats=1)
    with pytest.raises(ValueError):
        StoppingRule(min_repeats=5, max_repeats=3)


def test_forgetting_line_fits_forgets_and_uses_its_prior() -> None:
    from joulebench.analysis.stats import ForgettingLine

    line = ForgettingLine()
    assert line.params() is None
    for x in (1.0, 2.0, 3.0, 4.0):
        line.observe(x, 0.5 + 2.0 * x)
    line.observe(float("nan"), 1.0)  # ignored
    a, s = line.params() or (None, None)
    assert a == pytest.approx(0.5) and s == pytest.approx(2.0) and line.n == 4
    one_x = ForgettingLine()
    for _ in range(5):
        one_x.observe(2.0, 3.0)
    assert one_x.params() is None  # slope not identifiable without a prior
    prior = ForgettingLine(prior_ratio=0.5, prior_weight=2.0)
    for _ in range(5):
        prior.observe(2.0, 3.0)
    a, s = prior.params() or (0.0, 0.0)
    assert a + 2.0 * s == pytest.approx(3.0, rel=0.05) and s == pytest.approx(0.5 * a, rel=0.2)
    # forgetting: after the machine changes, the fit follows the new points
    drifting = ForgettingLine(forget=0.5)
    for x in (1.0, 2.0) * 5:
        drifting.observe(x, 1.0 + x)
    for x in (1.0, 2.0) * 10:
        drifting.observe(x, 3.0 + 2.0 * x)
    a, s = drifting.params() or (0.0, 0.0)
    assert a == pytest.approx(3.0, abs=1e-3) and s == pytest.approx(2.0, abs=1e-3)


def test_forgetting_fit_of_two_variables_and_its_priors() -> None:
    from joulebench.analysis.stats import ForgettingFit

    fit = ForgettingFit(2)
    for x1, x2 in ((0, 0), (1, 0), (0, 1), (2, 3), (4, 1), (3, 5)):
        fit.observe_point((x1, x2), 1.0 + 2.0 * x1 + 3.0 * x2)
    assert fit.coefficients() == pytest.approx((1.0, 2.0, 3.0))
    flat = ForgettingFit(2)
    for x1 in range(5):
        flat.observe_point((x1, 7.0), 1.0 + x1)  # x2 never varies: not identifiable
    assert flat.coefficients() is None
    ridge = ForgettingFit(2, prior_ratios=(1.0, 0.5), prior_weight=2.0)  # s1 ≈ a agrees
    for x1 in range(5):
        ridge.observe_point((x1, 0.0), 1.0 + x1)
    a, s1, s2 = ridge.coefficients() or (0.0, 0.0, 0.0)
    assert s2 == pytest.approx(0.5 * a, rel=1e-6) and (a, s1) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="prior ratios"):
        ForgettingFit(2, prior_ratios=(1.0,))
