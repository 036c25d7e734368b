from __future__ import annotations

import pytest

from joulebench.shape.experiment import parse_prometheus, server_batching
from joulebench.shape.metrics import GatewayMetrics, quantile
from joulebench.shape.sweep import pareto_front

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


def test_pareto_front() -> None:
    # (energy, latency): b dominates d; a and c trade off; e ties a on energy but is slower
    pts = [(1.0, 10.0), (2.0, 5.0), (0.5, 30.0), (2.5, 6.0), (1.0, 12.0)]
    assert pareto_front(pts) == [True, True, True, False, False]


def test_metrics_render_and_quantiles() -> None:
    m = GatewayMetrics(policy='window:2,5ms "x"', upstream="http://u")
    m.observe_group([0.0, 0.004])
    m.observe_group([0.2])
    m.rejected = 3
    text = m.render()
    assert 'policy="window:2,5ms \\"x\\""' in text
    assert "joulebench_gateway_requests_released_total 3" in text
    assert "joulebench_gateway_requests_rejected_total 3" in text
    assert 'joulebench_gateway_added_delay_seconds_bucket{le="0.005"} 2' in text
    assert 'joulebench_gateway_added_delay_seconds_bucket{le="+Inf"} 3' in text
    assert 'joulebench_gateway_group_size_bucket{le="1.0"} 1' in text
    assert "joulebench_gateway_group_size_count 2" in text
    samples = parse_prometheus(text)
    assert samples[
        'joulebench_gateway_added_delay_quantile_seconds{quantile="0.5"}'
    ] == pytest.approx(0.004)
    assert m.mean_group_size == 1.5
    assert m.delay_quantiles_ms()["max"] == pytest.approx(200.0)
    assert quantile([], 0.5) is None
    assert quantile([1.0, 3.0], 0.5) == 2.0
    empty = GatewayMetrics().render()
    assert 'quantile="0.99"} NaN' in empty
