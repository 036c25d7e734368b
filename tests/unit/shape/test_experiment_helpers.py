from __future__ import annotations

import pytest

from joulebench.analysis.pareto import pareto_front
from joulebench.analysis.stats import quantile
from joulebench.errors import ConfigError
from joulebench.exposition import render
from joulebench.shape.experiment import parse_prometheus, server_batching
from joulebench.shape.metrics import GatewayMetrics

SCRAPE = """# HELP joulebench_steps_total Forward steps run.
# TYPE joulebench_steps_total counter
joulebench_steps_total{{model="tiny",scheduler="continuous"}} {steps}
joulebench_tokens_total{{model="tiny",phase="prefill",scheduler="continuous"}} 999.0
joulebench_tokens_total{{model="tiny",phase="decode",scheduler="continuous"}} {decode}
joulebench_batch_size_max{{model="tiny",scheduler="continuous"}} 7.0
garbage line
"""


def test_server_batching_from_counter_deltas() -> None:
    before = parse_prometheus(SCRAPE.format(steps=10.0, decode=20.0))
    after = parse_prometheus(SCRAPE.format(steps=30.0, decode=100.0))
    out = server_batching(before, after)
    assert out["mean_batch_size"] == pytest.approx(80 / 20)
    assert out["steps"] == 20 and out["batch_size_max_since_start"] == 7.0
    assert server_batching(before, before)["mean_batch_size"] is None  # no step in the run
    assert server_batching(None, after)["note"] == "server exposes no /metrics"


def test_server_batching_prefers_a_histogram() -> None:
    before = {"joulebench_batch_size_sum": 10.0, "joulebench_batch_size_count": 5.0}
    after = {"joulebench_batch_size_sum": 70.0, "joulebench_batch_size_count": 15.0}
    assert server_batching(before, after)["mean_batch_size"] == pytest.approx(6.0)


def test_pareto_front_and_its_eligibility() -> None:
    from joulebench.analysis.pareto import excluded

    # (energy, latency): b dominates d; a and c trade off; e ties a on energy but is slower
    pts = [(1.0, 10.0), (2.0, 5.0), (0.5, 30.0), (2.5, 6.0), (1.0, 12.0)]
    assert pareto_front(pts) == [True, True, True, False, False]
    assert excluded(1.0, 10.0, 0) is None
    assert "failed" in (excluded(1.0, 10.0, 2) or "")
    assert "idle" in (excluded(0.0, 10.0, 0) or "") and excluded(None, 1.0, 0)


def test_metrics_render_and_quantiles() -> None:
    m = GatewayMetrics(policy='window:2,5ms "x"', upstream="http://u")
    m.observe_group([0.0, 0.004])
    m.observe_group([0.2])
    m.rejected = 3
    text = render(m.families())
    assert 'policy="window:2,5ms \\"x\\""' in text
    lines = text.splitlines()
    assert "joulebench_gateway_requests_released_total 3.0" in lines
    assert "joulebench_gateway_requests_rejected_total 3.0" in lines
    assert 'joulebench_gateway_added_delay_seconds_bucket{le="0.005"} 2.0' in lines
    assert 'joulebench_gateway_added_delay_seconds_bucket{le="+Inf"} 3.0' in lines
    assert 'joulebench_gateway_group_size_bucket{le="1.0"} 1.0' in lines
    assert "joulebench_gateway_group_size_count 2.0" in lines
    assert "joulebench_gateway_group_size_sum 3.0" in lines
    samples = parse_prometheus(text)
    assert samples[
        'joulebench_gateway_added_delay_quantile_seconds{quantile="0.5"}'
    ] == pytest.approx(0.004)
    assert m.mean_group_size == 1.5
    assert m.delay_quantiles_ms()["max"] == pytest.approx(200.0)
    assert quantile([], 0.5) is None
    assert quantile([1.0, 3.0], 0.5) == 2.0
    empty = render(GatewayMetrics().families())
    assert 'quantile="0.99"} NaN' in empty


def _run(label: str, energy_j: float | None, p99: float, ok: int, failed: int):
    from joulebench.shape.experiment import RunSummary

    load = {
        "requests": {"ok": ok, "failed": failed},
        "ttft_ms": {"p50": p99 / 2, "p99": p99},
        "energy": {"method": "estimated", "per_request_j": {"idle_subtracted": energy_j}},
    }
    return RunSummary(label, load, None, {"mean_batch_size": None})


def test_sweep_front_excludes_points_that_dropped_requests_or_fell_below_idle() -> None:
    # a policy that lost half its requests (429s, timeouts) has cheap, fast *successes*; one whose
    # net energy is ≤ 0 measured nothing: neither may beat the honest runs
    from joulebench.shape.sweep import Sweep

    runs = [
        _run("direct", 2.0, 50.0, 10, 0),
        _run("window:4,50ms", 1.5, 80.0, 10, 0),
        _run("lossy", 0.5, 10.0, 5, 5),
        _run("below-idle", -0.3, 40.0, 10, 0),
    ]
    pts = {p.label: p for p in Sweep(runs, "idle_subtracted", "ttft_ms:p99", {}, "x").points()}
    assert pts["direct"].on_front and pts["window:4,50ms"].on_front
    assert not pts["lossy"].on_front and "5 failed" in (pts["lossy"].excluded or "")
    assert not pts["below-idle"].on_front and "≤ 0" in (pts["below-idle"].excluded or "")
    assert pts["direct"].excluded is None
    assert pts["lossy"].to_dict()["pareto_excluded"] == pts["lossy"].excluded


def test_change_is_only_computed_between_positive_figures() -> None:
    from joulebench.shape.experiment import _rel

    assert _rel(2.0, 1.0) == pytest.approx(-0.5)
    assert _rel(2.0, 0.0) == pytest.approx(-1.0)  # all of it saved
    # net energies at or under the idle baseline: a "change" between them saves nothing real
    assert _rel(-0.1, 0.2) is None and _rel(0.2, -0.1) is None and _rel(0.0, 1.0) is None
    assert _rel(None, 1.0) is None and _rel(1.0, None) is None


def test_warming_traffic_goes_unmeasured_on_another_seed_and_its_failures_are_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from joulebench.shape.experiment import WARM_SEED, Trial, _warm

    calls: list[tuple[str, dict[str, object]]] = []

    def load(url: str, **kw: object) -> SimpleNamespace:
        calls.append((url, kw))
        return SimpleNamespace(records=[SimpleNamespace(ok=False), SimpleNamespace(ok=True)])

    trial = Trial("http://up", "poisson:5", ["hi"], n=8, seed=3, warm_n=2)
    with caplog.at_level("WARNING"):
        _warm(trial, load, "http://gw", {"n": 8, "seed": 3, "meter": object(), "idle_power_w": 1.0})
    assert calls == [
        ("http://gw", {"n": 2, "seed": 3 + WARM_SEED, "meter": None, "idle_power_w": None})
    ]
    assert "warming traffic to http://gw: 1 of 2 requests failed" in caplog.text
    with pytest.raises(ConfigError, match="warming requests must be ≥ 0, got -1"):
        Trial("http://up", "poisson:5", ["hi"], n=8, warm_n=-1)
