"""The ``slo`` policy on a simulated clock: scripted arrivals, a modelled upstream."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence

import pytest

from joulebench.errors import ConfigError
from joulebench.exposition import render
from joulebench.shape.policies import EPS_S, ResponseEvent, parse_policy
from joulebench.shape.shaper import Release
from joulebench.shape.simulate import ModelUpstream, Served, busy_s, simulate
from joulebench.shape.slo import COLD_RESERVE, MIN_TTFTS, SloPolicy
from joulebench.shape.slo_model import CostModel

BUDGET_S = 0.5


def poisson(rng: random.Random, rate: float, t0: float, t1: float) -> list[float]:
    out, t = [], t0
    while (t := t + rng.expovariate(rate)) < t1:
        out.append(t)
    return out


def check_invariants(arrivals: list[float], releases: list[Release], bound_s: float) -> None:
    """Every request released once, within the bound, FIFO, groups intact and in order."""
    assert sorted(r.seq for r in releases) == list(range(len(arrivals)))  # nothing lost/doubled
    assert [r.seq for r in releases] == list(range(len(arrivals)))  # released in arrival order
    for r in releases:
        assert r.arrived_s == arrivals[r.seq]
        assert -EPS_S <= r.delay_s <= bound_s + EPS_S, r
    for _, members in itertools.groupby(releases, key=lambda r: r.group):
        group = list(members)
        assert [r.position for r in group] == list(range(len(group)))
        assert {r.group_size for r in group} == {len(group)}
        assert len({r.released_s for r in group}) == 1


# -- parsing ---------------------------------------------------------------------------------
def test_parse_slo_specs() -> None:
    p = parse_policy("slo:500ms")
    assert isinstance(p, SloPolicy)
    assert p.budget_s == pytest.approx(0.5) and p.max_batch == 32
    assert p.spec() == "slo:500ms" and p.bound_s() == pytest.approx(0.5)
    q = parse_policy("slo:0.25s,8", max_delay_ms=100)
    assert q.spec() == "slo:250ms,8" and q.bound_s() == pytest.approx(0.1)
    assert parse_policy(q.spec()).spec() == q.spec()  # round trip


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("slo", "needs a budget"),
        ("slo:", "needs a budget"),
        ("slo:fast", "cannot read duration"),
        ("slo:0ms", "must be positive"),
        ("slo:500ms,x", "max batch must be an integer"),
        ("slo:500ms,0", "max batch must be ≥ 1"),
        ("slo:500ms,4,2", "needs a budget"),
    ],
)
def test_bad_slo_specs_say_what_to_fix(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_policy(spec)


# -- the bound, order, and the hold ----------------------------------------------------------
def test_rate_step_2_to_50_holds_bound_and_hold_shrinks() -> None:
    rng = random.Random(7)
    arrivals = poisson(rng, 2.0, 0.0, 60.0) + poisson(rng, 50.0, 60.0, 72.0)
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals)
    check_invariants(arrivals, releases, BUDGET_S)
    slow = [r.delay_s for r in releases if 20.0 < r.arrived_s < 60.0]
    fast = [r.delay_s for r in releases if r.arrived_s > 62.0]
    assert statistics.mean(slow) > 0.2  # at 2 req/s it waits for company…
    assert statistics.mean(fast) < 0.5 * statistics.mean(slow)  # …at 50 far less
    big = [rec.size for rec in policy.releases if rec.released_s > 62.0]
    small = [rec.size for rec in policy.releases if 20.0 < rec.released_s < 60.0]
    assert statistics.mean(small) < 3 and max(small) < 8
    # at 50 req/s the upstream runs many at once: the policy knows it and predicted it
    late = [rec for rec in policy.releases if rec.released_s > 62.0 and rec.realised_batch]
    assert statistics.mean(r.predicted_batch for r in late) > 5
    assert statistics.mean(r.realised_batch for r in late) > 5  # type: ignore[misc]
    assert big  # the fast phase was released, not left waiting


@pytest.mark.parametrize("rates", [(2.0, 10.0, 30.0)])
def test_mean_hold_decreases_with_steady_rate(rates: tuple[float, ...]) -> None:
    holds = []
    for rate in rates:
        rng = random.Random(int(rate))
        arrivals = poisson(rng, rate, 0.0, 300 / rate)
        releases = simulate(SloPolicy(BUDGET_S), arrivals)
        check_invariants(arrivals, releases, BUDGET_S)
        holds.append(statistics.mean(r.delay_s for r in releases[50:]))
    assert holds == sorted(holds, reverse=True), holds
    assert holds[-1] < 0.5 * holds[0]


def test_bursts_are_released_whole_in_order_within_the_bound() -> None:
    rng = random.Random(3)
    arrivals = poisson(rng, 5.0, 0.0, 10.0)
    for start in (10.0, 12.0, 14.0):  # three bursts of 40 simultaneous requests
        arrivals += [start] * 40
        arrivals += poisson(rng, 5.0, start + 1e-6, start + 2.0)
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals)
    check_invariants(arrivals, releases, BUDGET_S)
    for start in (12.0, 14.0):  # warmed up: a burst fills the target batch, sent at once
        burst = [r for r in releases if r.arrived_s == start]
        assert len(burst) == 40
        assert max(r.delay_s for r in burst) < 1e-9
        # in big groups, not one by one (the first requests of a burst leave together; once the
        # upstream runs the target batch, the rest go as they come)
        assert statistics.mean(r.group_size for r in burst) >= 6


def test_silence_then_a_lone_request_is_not_held_for_company() -> None:
    rng = random.Random(5)
    arrivals = poisson(rng, 10.0, 0.0, 20.0)
    arrivals += [60.0]  # 40 s of silence, then one request
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals)
    check_invariants(arrivals, releases, BUDGET_S)
    assert releases[-1].delay_s == 0.0
    assert policy.releases[-1].reason.startswith("passthrough: too few arrivals")

    # the rate estimate falls through a silence instead of freezing at the last value
    est = SloPolicy(BUDGET_S).rate
    for t in arrivals[:-1]:
        est.observe(t)
    assert est.rate_rps(20.0) > 5  # type: ignore[operator]
    assert est.rate_rps(22.0) < 2  # type: ignore[operator]
    assert est.rate_rps(31.0) is None  # nothing left in the window: unusable, not stale


def test_too_few_requests_pass_straight_through() -> None:
    arrivals = [0.0, 0.3, 0.6]  # fewer than the 4 arrivals a rate estimate needs
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals)
    assert [r.delay_s for r in releases] == [0.0] * 3
    assert all(rec.reason.startswith("passthrough") for rec in policy.releases)


def test_failing_upstream_degrades_to_passthrough_and_recovers() -> None:
    rng = random.Random(11)
    arrivals = poisson(rng, 10.0, 0.0, 40.0)
    failing = {i for i, t in enumerate(arrivals) if 10.0 <= t < 20.0}
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals, ModelUpstream(fails=failing.__contains__))
    check_invariants(arrivals, releases, BUDGET_S)
    during = [rec for rec in policy.releases if 12.0 < rec.released_s < 20.0]
    assert during and all("upstream failing" in rec.reason for rec in during)
    assert all(rec.delay_max_ms == 0.0 for rec in during)
    after = [rec for rec in policy.releases if rec.released_s > 30.0]
    assert statistics.mean(rec.size for rec in after) > 1.5  # shaping again once it answers


def test_busy_upstream_gets_requests_at_once() -> None:
    policy = SloPolicy(BUDGET_S)
    sim_rng = random.Random(2)
    simulate(policy, poisson(sim_rng, 10.0, 0.0, 10.0))  # learn rate and cost
    now = 10.0
    for t in (9.9, 9.95, 10.0):
        policy.observe_arrival(t)
    waiting = [10.0]
    assert policy.decide(waiting, now).release_n == 0  # idle upstream: worth holding
    busy = {"joulebench_running_requests": 2.0, "joulebench_queue_length": 3.0}
    policy.observe_upstream(now - 0.1, busy)
    assert policy.decide(waiting, now).release_n == 0  # one scrape: maybe our own group
    policy.observe_upstream(now, busy)
    assert policy.decide(waiting, now).release_n == 1  # still waiting up there: send now
    policy.observe_upstream(
        now, {"joulebench_running_requests": 40.0, "joulebench_queue_length": 0}
    )
    assert policy.decide(waiting, now).release_n == 1  # already a big batch: joins it
    # a scrape older than FRESH_S (1 s: four scrape periods) is not trusted
    assert policy.decide([10.9], 10.95).release_n == 1
    assert policy.decide([11.1], 11.15).release_n == 0


def test_batching_that_does_not_pay_is_not_held_for() -> None:
    """An upstream whose time per request grows in proportion to its batch (no sharing), at
    half its capacity (so it is the gain, not saturation, that says not to hold)."""
    rng = random.Random(4)
    arrivals = poisson(rng, 5.0, 0.0, 60.0)
    flat = ModelUpstream(base_s=0.0 + 1e-4, per_row_s=0.1)
    policy = SloPolicy(BUDGET_S)
    releases = simulate(policy, arrivals, flat)
    check_invariants(arrivals, releases, BUDGET_S)
    assert statistics.mean(r.delay_s for r in releases[100:]) < 0.05


def test_reported_energy_not_time_decides_when_the_upstream_gives_it() -> None:
    """The same upstream as above in time (no sharing), but whose reported energy per request
    halves with every doubling of the batch (a fixed cost per step shared by its rows, as on the
    CPU: estimated energy per request fell 38 % with grouping while time barely moved). Without
    the energy the policy does not hold; with it, it holds and forms groups, within the bound."""
    rng = random.Random(4)
    arrivals = poisson(rng, 5.0, 0.0, 60.0)  # half the upstream's capacity
    flat = ModelUpstream(base_s=1e-4, per_row_s=0.1)
    by_time = SloPolicy(BUDGET_S)
    simulate(by_time, arrivals, flat)
    shared = ModelUpstream(base_s=1e-4, per_row_s=0.1, energy_base_j=1.0, energy_per_row_j=0.05)
    by_energy = SloPolicy(BUDGET_S)
    releases = simulate(by_energy, arrivals, shared)
    check_invariants(arrivals, releases, BUDGET_S)
    model = by_energy.explain()["model"]
    assert model["basis"] == "energy" and model["responses_with_energy"] > 100  # type: ignore[index]
    assert by_time.explain()["model"]["basis"] == "time"  # type: ignore[index]
    assert by_energy.cost.target_batch(0.02, 32) > by_time.cost.target_batch(0.02, 32)
    late = releases[100:]
    assert statistics.mean(r.delay_s for r in late) > 0.1
    assert statistics.mean(r.group_size for r in late) > 2.0
    families = render(by_energy.metric_families())
    assert 'joulebench_gateway_slo_cost_basis{basis="energy"} 1.0' in families


def test_near_capacity_nothing_is_held() -> None:
    """An upstream that finishes at most 1 / d1 = 20 req/s: at 18 req/s (90 %) a request goes
    at once and the record says why; at 6 req/s (30 %) the same policy holds it."""

    def policy_at(rate: float) -> SloPolicy:
        policy = SloPolicy(BUDGET_S)
        for i in range(40):  # D(b) = 0.1 + 0.05·b s: capacity b / D(b) → 20 req/s
            b = 1 + i % 8
            policy.cost.observe(float(b), 0.1 + 0.05 * b, 1, 0.01, running_at_release=b - 1)
        for k in range(20):
            policy.observe_arrival(k / rate)
        return policy

    now = 19 / 18.0
    busy = policy_at(18.0)
    assert busy.cost.capacity_rps() == pytest.approx(20.0, rel=0.05)  # the prior pulls a little
    assert busy.decide([now], now).release_n == 1
    assert busy._verdict is not None and busy._verdict.reason.startswith("near capacity: 18")
    now = 19 / 6.0
    assert policy_at(6.0).decide([now], now).release_n == 0  # held for company


def test_a_slower_first_token_beside_a_busy_batch_shortens_the_hold() -> None:
    """An upstream whose first token comes 30 ms later per request already running: the policy
    learns that term (per_running), sees the upstream's first-token p99 grow, and holds less
    than in front of the same upstream without it — every request still within the bound."""

    def run(per_running_s: float) -> tuple[float, dict]:
        rng = random.Random(5)
        arrivals = poisson(rng, 10.0, 0.0, 40.0)
        policy = SloPolicy(BUDGET_S)
        releases = simulate(policy, arrivals, ModelUpstream(ttft_per_running_s=per_running_s))
        check_invariants(arrivals, releases, BUDGET_S)
        return statistics.mean(r.delay_s for r in releases[50:]), policy.explain()["model"]  # type: ignore[return-value]

    calm_hold, calm = run(0.0)
    busy_hold, busy = run(0.03)
    assert busy["ttft_s"]["per_running"] > 10 * max(calm["ttft_s"]["per_running"], 1e-4)
    assert busy["upstream_extra_ttft_p99_ms"] > 2 * calm["upstream_extra_ttft_p99_ms"]
    assert busy_hold < 0.8 * calm_hold


def test_a_cold_gateway_keeps_part_of_the_budget_back_until_first_tokens_come_in() -> None:
    """Before MIN_TTFTS first tokens have come back, nothing is known of what a group costs its
    own first token: a hold then leaves COLD_RESERVE of the budget for it. Once they are in, a
    quick upstream's first tokens free the reserve and holds grow past it. (An upstream slow to
    answer, so the cold start lasts: without the reserve a cold hold here reaches 267 ms.)"""
    rng = random.Random(8)
    arrivals = poisson(rng, 10.0, 0.0, 10.0)
    slow = ModelUpstream(base_s=0.6, ttft_base_s=0.2)
    policy = SloPolicy(BUDGET_S)
    cold: list[bool] = []  # per release: were first tokens still too few?
    observe = policy.observe_release

    def record(group: int, arrivals_s: Sequence[float], released_s: float) -> None:
        cold.append(len(policy._ttfts) < MIN_TTFTS)
        observe(group, arrivals_s, released_s)

    policy.observe_release = record  # type: ignore[method-assign]
    releases = simulate(policy, arrivals, slow)
    check_invariants(arrivals, releases, BUDGET_S)
    assert COLD_RESERVE == 0.5
    cap_ms = 0.5 * BUDGET_S * 1e3 + 1e-6
    delays = [
        (was_cold, rec.delay_max_ms) for was_cold, rec in zip(cold, policy.releases, strict=True)
    ]
    assert any(ms > 0 for was_cold, ms in delays if was_cold)  # it did hold while cold…
    assert all(ms <= cap_ms for was_cold, ms in delays if was_cold)  # …within the reserve
    assert max(ms for was_cold, ms in delays if not was_cold) > cap_ms  # warm: it is freed


def test_the_target_batch_grows_with_the_batches_seen_not_the_prior() -> None:
    """Until the batches vary, the cost line's slope is the prior's, which promises gains up to
    the maximum: a target is never more than REACH times the largest batch measured."""
    cost = CostModel()
    cost.observe(1.0, 0.12, 1, 0.04)
    assert cost.target_batch(0.02, 32) == 2 and cost.reach(32) == 2
    assert cost.expected_gain(2.0, 50.0, 32) == pytest.approx(0.0)  # nothing past 2 promised
    cost.observe(3.2, 0.15, 3, 0.06)
    assert cost.reach(32) == 7 and cost.target_batch(0.02, 32) <= 7
    for _ in range(20):
        cost.observe(20.0, 0.5, 8, 0.1)
    assert cost.reach(32) == 32 and cost.reach(12) == 12
    assert cost.to_dict(0.02, 32)["seen_batch"] == 20.0


def test_every_release_is_explained() -> None:
    rng = random.Random(9)
    policy = SloPolicy(BUDGET_S)
    simulate(policy, poisson(rng, 10.0, 0.0, 20.0))
    info = policy.explain()
    recs = info["releases"]
    assert isinstance(recs, list) and len(recs) == len(policy.releases)
    for rec in recs:
        assert rec["size"] >= 1 and rec["reason"] and rec["predicted_batch"] >= rec["size"]
        assert rec["answered"] == rec["size"] and rec["realised_batch"] is not None
        assert 0 <= rec["delay_max_ms"] <= BUDGET_S * 1e3
    assert sum(info["decisions"].values()) == len(recs)  # type: ignore[union-attr]
    model = info["model"]
    assert model["duration_s"]["d1"] == pytest.approx(0.02, rel=0.3)  # type: ignore[index]
    text = render(policy.metric_families())
    last = policy.releases[-1]
    assert (
        f'joulebench_gateway_slo_release_group_size{{group="{last.group}"}} {float(last.size)!r}'
        in text
    )
    assert "joulebench_gateway_slo_arrival_rate_rps" in text
    assert 'joulebench_gateway_slo_decisions_total{reason="' in text


def test_max_delay_caps_the_hold_and_says_so() -> None:
    rng = random.Random(6)
    arrivals = poisson(rng, 4.0, 0.0, 30.0)
    policy = parse_policy("slo:500ms", max_delay_ms=100)
    releases = simulate(policy, arrivals)
    check_invariants(arrivals, releases, 0.1)
    assert isinstance(policy, SloPolicy)
    assert any(rec.reason == "max delay" for rec in policy.releases)
    assert not any(rec.reason == "hold" for rec in policy.releases)


def test_reproduce_plans_take_slo_policies() -> None:
    from pydantic import ValidationError

    from joulebench.reproduce.plan import ShapingPlan, bundled_plan

    assert ShapingPlan(arrival="poisson:5", policies=["slo:500ms"], n=3).policies == ["slo:500ms"]
    with pytest.raises(ValidationError, match="cannot read duration"):
        ShapingPlan(arrival="poisson:5", policies=["slo:fast"], n=3)
    full = bundled_plan("full")
    assert full.shaping is not None and "slo:500ms" in full.shaping.policies


@pytest.mark.parametrize("rate", [4.0, 10.0, 30.0])
def test_one_spec_lands_near_the_best_fixed_policy_in_the_modelled_regime(rate: float) -> None:
    """On the modelled continuous-batching upstream (not a measurement: its busy time stands
    for energy), ``slo:500ms`` — never tuned per rate — costs within 10 % of the best fixed
    policy whose added TTFT p99 stays within 500 ms, and itself stays within 500 ms."""
    arrivals = poisson(random.Random(int(rate)), rate, 0.0, 400 / rate)

    def run(spec: str) -> tuple[float, float]:
        served: list[Served] = []
        simulate(parse_policy(spec), arrivals, served=served)
        ttft = sorted(s.first_byte_s - arrivals[s.seq] for s in served)
        return busy_s(served) / len(served), ttft[int(0.99 * (len(ttft) - 1))]

    direct_cost, direct_p99 = run("passthrough")
    fixed = [run(spec) for spec in ("cadence:250ms", "cadence:400ms", "window:4,400ms",
                                    "window:8,400ms", "window:8,450ms", "window:16,450ms")]  # fmt: skip
    within = [cost for cost, p99 in fixed if p99 - direct_p99 <= BUDGET_S + 1e-9]
    slo_cost, slo_p99 = run("slo:500ms")
    assert slo_p99 - direct_p99 <= BUDGET_S
    assert slo_cost <= 1.10 * min(within)
    assert slo_cost < direct_cost


def test_forgetting_releases_keeps_what_was_learnt_and_frees_the_old_group_ids() -> None:
    """A warmed policy (``Trial.warm_n``) moves to a new gateway, whose group ids start at 0
    again: its record restarts, its estimates do not, and an old group left open (a request the
    old gateway never answered) neither counts as in flight nor takes the new group's answers."""
    rng = random.Random(12)
    policy = SloPolicy(BUDGET_S)
    simulate(policy, poisson(rng, 10.0, 0.0, 20.0))
    learnt = policy.explain()["model"]
    policy.observe_release(0, [20.0, 20.01], 20.02)  # group 0 of the old gateway, unanswered
    assert policy._in_flight == 2
    policy.forget_releases()
    info = policy.explain()
    assert info["releases"] == [] and info["decisions"] == {}
    assert info["model"] == learnt  # what it learnt stays
    assert policy._in_flight == 0 and not policy._open
    policy.observe_release(0, [21.0], 21.0)  # the new gateway's group 0
    policy.observe_response(ResponseEvent(0, 21.0, 21.05, 21.2, 200, True))
    rec = policy.releases[0]
    assert (rec.size, rec.answered) == (1, 1) and rec.realised_batch == pytest.approx(1.0)
