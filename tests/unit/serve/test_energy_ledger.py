"""The energy ledger: step sharing by token work, abutting busy steps, sums, and the shared
attribution algorithm agreeing with it."""

from __future__ import annotations

import itertools

import pytest

from joulebench.analysis.attribution import WorkSpan, attribute_energy
from joulebench.meters.base import MeterInfo
from joulebench.meters.fake import FakeMeter
from joulebench.meters.timeline import PowerTimeline
from joulebench.serve.energy import ATTRIBUTION_METHOD, EnergyLedger


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(power_w: float = 100.0):
    clock = Clock()
    meter = FakeMeter(power_w, update_period_s=1e-6, clock=clock)
    timeline = PowerTimeline(meter)
    timeline.sample_now()
    return clock, timeline, EnergyLedger(timeline, MeterInfo.of(meter), idle_power_w=20.0)


def test_steps_are_shared_by_token_work_and_sum_to_busy_energy():
    clock, _, ledger = make(100.0)
    a, b = "a", "b"
    ledger.open(a)
    ledger.open(b)
    clock.t = 1.0
    ledger.record_step(0.0, 1.0, {a: 30, b: 10})  # prefill: 100 J shared 3:1
    clock.t = 1.5
    ledger.record_step(1.2, 1.5, {a: 1, b: 1})  # busy: abuts at 1.0 → 50 J shared 1:1
    ea = ledger.finish(a)
    assert ea.energy_j == pytest.approx(75.0 + 25.0)
    assert ea.net_energy_j == pytest.approx(100.0 - 20.0 * (0.75 + 0.25))
    ledger.mark_idle()
    clock.t = 3.0
    ledger.record_step(2.5, 3.0, {b: 1})  # after idle: starts at its own start
    eb = ledger.finish(b)
    assert eb.energy_j == pytest.approx(25.0 + 25.0 + 50.0)
    assert ledger.busy_spans() == [(0.0, 1.5), (2.5, 3.0)]
    total = ea.energy_j + eb.energy_j
    assert total == pytest.approx(ledger.busy_energy_j(), rel=1e-9)
    assert ea.to_dict()["method"] == ATTRIBUTION_METHOD
    assert ea.to_dict()["meter_method"] == "fake"


def test_unopened_or_finished_keys_do_not_take_energy():
    clock, _, ledger = make(10.0)
    ledger.open("live")
    clock.t = 1.0
    ledger.record_step(0.0, 1.0, {"live": 1, "never-opened": 1})
    assert ledger.finish("live").energy_j == pytest.approx(10.0)
    assert ledger.open_accounts == 0
    assert ledger.finish("unknown").energy_j == 0.0


def test_ledger_agrees_with_shared_attribution_algorithm():
    clock, timeline, ledger = make(50.0)
    keys = ["r1", "r2", "r3"]
    for k in keys:
        ledger.open(k)
    spans, t = [], 0.0
    for i, work in zip(
        itertools.count(),
        [{"r1": 8, "r2": 4}, {"r1": 1, "r2": 1, "r3": 6}, {"r2": 1, "r3": 1}, {"r3": 1}],
    ):
        end = t + 0.1 * (i + 1)
        clock.t = end
        timeline.sample_now()
        ledger.record_step(t, end, work)
        spans += [WorkSpan(k, t, end, w) for k, w in work.items()]
        t = end
    ours = {k: ledger.finish(k).energy_j for k in keys}
    theirs = attribute_energy(timeline.series(), spans)
    for k in keys:
        assert ours[k] == pytest.approx(theirs.per_key_j[k], rel=1e-9)


def test_a_response_shorter_than_the_update_period_says_it_is_not_resolved():
    clock = Clock()
    meter = FakeMeter(100.0, update_period_s=0.1, clock=clock)
    timeline = PowerTimeline(meter)
    timeline.sample_now()
    ledger = EnergyLedger(timeline, MeterInfo.of(meter))
    ledger.open("short")
    ledger.open("long")
    clock.t = 0.03
    ledger.record_step(0.0, 0.03, {"short": 5, "long": 5})
    short = ledger.finish("short").to_dict()
    assert short["resolved"] is False and "update period" in short["note"]
    assert short["span_s"] == pytest.approx(0.03)
    clock.t = 0.25
    ledger.record_step(0.03, 0.25, {"long": 1})
    long = ledger.finish("long").to_dict()
    assert long["resolved"] is True and long["note"] is None
    ledger.open("never")
    never = ledger.finish("never").to_dict()
    assert never["resolved"] is False and "no step" in never["note"]


def test_busy_totals_cover_every_span_while_only_the_latest_are_kept(monkeypatch):
    """A long-lived server keeps totals, not every span: /metrics reads them in O(1)."""
    import joulebench.serve.energy as energy

    monkeypatch.setattr(energy, "BUSY_SPANS_KEPT", 3)
    _, _, ledger = make(10.0)
    for i in range(10):  # ten stretches of 0.5 s, each extended by an abutting step
        ledger.mark_idle()
        ledger.record_step(2.0 * i, 2.0 * i + 0.25, {})
        ledger.record_step(2.0 * i + 0.3, 2.0 * i + 0.5, {})  # abuts: extends the stretch
    assert ledger.busy_span_count() == 10
    assert ledger.busy_duration_s() == pytest.approx(5.0)
    assert ledger.busy_spans() == [(14.0, 14.5), (16.0, 16.5), (18.0, 18.5)]


def test_busy_energy_counts_the_spans_no_longer_kept(monkeypatch):
    """Energy over all busy time since start, also once old spans have left the window: the
    power steps from 10 to 30 W halfway, so the dropped spans' energy must be their own."""
    import joulebench.serve.energy as energy

    monkeypatch.setattr(energy, "BUSY_SPANS_KEPT", 3)
    clock = Clock()
    meter = FakeMeter(
        lambda t: {"gpu:0": 10.0 if t < 9.5 else 30.0}, update_period_s=0.01, clock=clock
    )
    timeline = PowerTimeline(meter)
    timeline.sample_now()
    ledger = EnergyLedger(timeline, MeterInfo.of(meter))
    for i in range(10):  # ten 0.5-s stretches, 1.5 s idle between them
        ledger.mark_idle()
        for clock.t in (2.0 * i, 2.0 * i + 0.5):
            timeline.sample_now()
        ledger.record_step(2.0 * i, 2.0 * i + 0.5, {})
    assert len(ledger.busy_spans()) == 3  # the first seven left the window
    assert ledger.busy_energy_j() == pytest.approx(5 * 0.5 * 10.0 + 5 * 0.5 * 30.0)
