from __future__ import annotations

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.shape.policies import (
    Cadence,
    Decision,
    Passthrough,
    Window,
    parse_policy,
)


def test_parse_policies_round_trip() -> None:
    assert isinstance(parse_policy("passthrough"), Passthrough)
    c = parse_policy("cadence:500ms")
    assert isinstance(c, Cadence) and c.period_s == pytest.approx(0.5)
    assert c.spec() == "cadence:500ms"
    w = parse_policy("window:8,200ms", max_delay_ms=150)
    assert isinstance(w, Window) and (w.size, w.timeout_s) == (8, pytest.approx(0.2))
    assert w.max_delay_s == pytest.approx(0.15)
    assert w.describe() == "window:8,200ms max-delay 150ms"
    assert parse_policy("cadence:0.25s").period_s == pytest.approx(0.25)
    assert parse_policy(" Window:2, 50 ").timeout_s == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("cadence", "needs a period"),
        ("cadence:fast", "cannot read duration"),
        ("cadence:0ms", "must be positive"),
        ("window:8", "needs N and T"),
        ("window:x,10ms", "must be an integer"),
        ("window:0,10ms", "≥ 1"),
        ("passthrough:3", "takes no arguments"),
        ("", "known: cadence, passthrough, slo, window"),
    ],
)
def test_bad_specs_say_what_to_fix(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_policy(spec)


def test_unknown_policy_lists_known_names() -> None:
    with pytest.raises(UnknownName) as info:
        parse_policy("pace:5ms")
    assert info.value.known == ["cadence", "passthrough", "slo", "window"]


def test_bad_max_delay() -> None:
    with pytest.raises(ConfigError, match="max-delay"):
        parse_policy("cadence:10ms", max_delay_ms=-1)
    with pytest.raises(ConfigError, match="max-delay"):
        parse_policy("cadence:10ms", max_delay_ms=float("nan"))


def test_passthrough_releases_on_arrival() -> None:
    p = Passthrough()
    arrivals = [0.0, 0.013, 0.5, 0.5, 2.0]
    assert p.release_schedule(arrivals) == arrivals
    assert p.decide([1.0, 1.1], 1.1) == Decision(2, None)


def test_cadence_releases_on_next_tick_from_origin() -> None:
    p = Cadence(0.5)
    p.start(10.0)  # gateway started at t=10 s: ticks at 10.0, 10.5, 11.0, ...
    arrivals = [10.0, 10.1, 10.49, 10.5, 10.51, 11.7, 13.0]
    assert p.release_schedule(arrivals) == pytest.approx([10.0, 10.5, 10.5, 10.5, 11.0, 12.0, 13.0])
    d = p.decide([10.6, 10.7], 10.8)
    assert d == Decision(0, pytest.approx(11.0))
    assert p.decide([10.6, 10.7], 11.0).release_n == 2  # everything queued goes on the tick


def test_window_releases_at_n_or_timeout() -> None:
    p = Window(3, 0.2)
    # three arrive within the window: released when the third comes
    # then two arrive and wait for the oldest's timeout
    arrivals = [0.0, 0.05, 0.1, 1.0, 1.15, 2.0]
    assert p.release_schedule(arrivals) == pytest.approx([0.1, 0.1, 0.1, 1.2, 1.2, 2.2])


def test_window_splits_a_burst_into_groups_of_n() -> None:
    p = Window(4, 0.3)
    d = p.decide([0.0] * 10, 0.0)
    assert d.release_n == 4
    assert p.release_schedule([0.0] * 10) == pytest.approx([0.0] * 8 + [0.3] * 2)


@pytest.mark.parametrize("policy", ["cadence:500ms", "window:16,400ms"])
def test_max_delay_bounds_every_request_under_a_burst(policy: str) -> None:
    p = parse_policy(policy, max_delay_ms=120)
    p.start(0.0)
    # a burst of 50 at t=0.01 then a trickle: nobody may wait more than 120 ms
    arrivals = [0.01] * 50 + [0.02 + 0.037 * i for i in range(40)]
    released = p.release_schedule(arrivals)
    delays = [r - a for a, r in zip(arrivals, released, strict=True)]
    assert len(released) == len(arrivals)
    assert max(delays) <= 0.120 + 1e-9
    assert min(delays) >= 0.0
    # and the policy still holds requests (it is not degenerated into passthrough)
    assert sum(d > 0.05 for d in delays) > 10
    assert p.bound_s() == pytest.approx(0.12)


def test_max_delay_forced_release_keeps_the_group_together() -> None:
    p = Cadence(1.0, max_delay_s=0.1)
    p.start(0.0)
    assert p.decide([0.2, 0.25, 0.29], 0.3) == Decision(3, None)
    assert p.decide([0.2, 0.25], 0.25) == Decision(0, pytest.approx(0.3))


def test_release_order_is_fifo_and_schedule_monotone() -> None:
    p = parse_policy("window:5,70ms", max_delay_ms=50)
    arrivals = sorted(0.003 * ((i * 7919) % 101) for i in range(101))
    released = p.release_schedule(arrivals)
    assert released == sorted(released)
    with pytest.raises(ValueError, match="sorted"):
        p.release_schedule([1.0, 0.5])


def test_bounds() -> None:
    assert Passthrough().bound_s() == 0.0
    assert Cadence(0.5).bound_s() == pytest.approx(0.5)
    assert Window(4, 0.2, max_delay_s=0.5).bound_s() == pytest.approx(0.2)
    assert parse_policy("cadence:300ms").to_dict()["bound_ms"] == pytest.approx(300)
