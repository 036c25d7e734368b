from __future__ import annotations

import itertools
import statistics

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.load.arrivals import (
    Gamma,
    Poisson,
    UniformRenewal,
    known_arrivals,
    parse_arrival,
    read_trace,
)


def gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


def test_registry_lists_known_names_on_unknown():
    with pytest.raises(UnknownName) as exc:
        parse_arrival("pareto:3")
    for name in ("sequential", "burst", "fixed", "uniform", "poisson", "gamma", "trace"):
        assert name in known_arrivals()
        assert name in str(exc.value)


def test_fixed_and_uniform_read_durations_like_the_shaping_policies():
    # one parser: a bare number is milliseconds here as in cadence:500
    assert parse_arrival("fixed:500").spec == parse_arrival("fixed:500ms").spec == "fixed:500ms"
    assert parse_arrival("uniform:0,300ms").spec == "uniform:0ms,300ms"  # U(0, l) is allowed
    with pytest.raises(ConfigError, match="fixed interval"):
        parse_arrival("fixed:0ms")


def test_sequential_is_closed_loop_and_burst_is_simultaneous():
    seq = parse_arrival("sequential")
    assert seq.closed_loop and seq.target_rate_rps is None
    burst = parse_arrival("burst")
    assert not burst.closed_loop
    assert burst.schedule(5) == [0.0] * 5
    with pytest.raises(ConfigError, match="no arguments"):
        parse_arrival("burst:3")


def test_fixed_interval():
    proc = parse_arrival("fixed:500ms")
    assert proc.schedule(4) == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert proc.target_rate_rps == pytest.approx(2.0)
    assert proc.spec == "fixed:500ms"


def test_uniform_is_a_renewal_process_with_the_right_mean():
    proc = parse_arrival("uniform:50ms,300ms", seed=3)
    offsets = proc.schedule(4001)
    g = gaps(offsets)
    assert offsets == sorted(offsets)  # order is kept: renewal, not redrawn per request
    assert min(g) >= 0.05 and max(g) <= 0.3
    assert statistics.fmean(g) == pytest.approx(0.175, rel=0.02)
    # U(a, b) has sd (b − a)/√12
    assert statistics.pstdev(g) == pytest.approx(0.25 / 12**0.5, rel=0.05)
    assert proc.target_rate_rps == pytest.approx(1 / 0.175)


def test_same_seed_same_schedule_other_seed_differs():
    a = parse_arrival("poisson:10", seed=1).schedule(50)
    b = parse_arrival("poisson:10", seed=1).schedule(50)
    c = parse_arrival("poisson:10", seed=2).schedule(50)
    assert a == b and a != c
    proc = parse_arrival("poisson:10", seed=1)
    assert proc.schedule(50) == proc.schedule(50)  # asking twice does not advance the RNG


def test_poisson_mean_and_cv():
    g = gaps(Poisson(50.0, seed=7).schedule(20001))
    mean = statistics.fmean(g)
    assert mean == pytest.approx(1 / 50, rel=0.03)
    assert statistics.pstdev(g) / mean == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_mean_and_cv(cv):
    g = gaps(Gamma(20.0, cv, seed=11).schedule(40001))
    mean = statistics.fmean(g)
    assert mean == pytest.approx(1 / 20, rel=0.05)
    assert statistics.pstdev(g) / mean == pytest.approx(cv, rel=0.08)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("poisson", "needs a rate"),
        ("poisson:0", "positive"),
        ("poisson:abc", "not a number"),
        ("gamma:10", "RATE,CV"),
        ("gamma:10,-1", "positive"),
        ("uniform:50ms", "two durations"),
        ("uniform:300ms,50ms", "low ≤ high"),
        ("fixed", "needs an interval"),
        ("fixed:0ms", "positive"),
        ("trace", "needs a file"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_arrival(spec)


def test_schedule_needs_at_least_one_request():
    with pytest.raises(ConfigError, match="≥ 1"):
        UniformRenewal(0.1, 0.2).schedule(0)


def test_trace_plain_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("10.0\n10.5\n\n11.25\n")
    proc = parse_arrival(f"trace:{f}")
    assert proc.schedule(3) == pytest.approx([0.0, 0.5, 1.25])
    with pytest.raises(ConfigError, match="--n 3 or fewer"):
        proc.schedule(4)


def test_trace_csv_with_ms_header(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("request,timestamp_ms\na,1000\nb,1250\nc,2000\n")
    assert read_trace(f) == pytest.approx([0.0, 0.25, 1.0])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ("1.0\n0.5\n", "row 2.*earlier"),
        ("1.0\nabc\n", "row 2.*not a number"),
        ("1.0\ninf\n", "not finite"),
        ("id,when\n1,2\n", "no timestamp column"),
        ("t_s\n", "no timestamps"),
    ],
)
def test_trace_errors_name_the_row(tmp_path, content, match):
    f = tmp_path / "t.csv"
    f.write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_trace(f)


def test_trace_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_arrival(f"trace:{tmp_path / 'nope.txt'}")
