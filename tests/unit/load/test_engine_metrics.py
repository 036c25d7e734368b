"""Engine /metrics reduced to batch occupancy, in each engine's own exposition format."""

from __future__ import annotations

import pytest

from joulebench.load.engines.scrape import reduce_prometheus, reduce_trtllm

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.75
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1234.0
"""

TGI = """\
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 12
# TYPE tgi_queue_size gauge
tgi_queue_size 5
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 4096
"""


def test_vllm_running_waiting_and_kv_cache() -> None:
    assert reduce_prometheus(VLLM) == {"running": 7.0, "waiting": 3.0, "kv_cache_usage": 0.5}


def test_older_vllm_gpu_cache_name() -> None:
    text = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.4\nvllm:num_requests_running{model_name="m"} 2\n'
    assert reduce_prometheus(text) == {"running": 2.0, "kv_cache_usage": pytest.approx(0.4)}


def test_tgi_batch_and_queue() -> None:
    assert reduce_prometheus(TGI) == {"running": 12.0, "waiting": 5.0}


def test_joulebench_sglang_llamacpp() -> None:
    jb = "joulebench_running_requests 4\njoulebench_queue_length 1\njoulebench_busy_seconds_total 2.5\n"
    assert reduce_prometheus(jb) == {"running": 4.0, "waiting": 1.0, "busy_s": 2.5}
    sg = 'sglang:num_running_reqs{model_name="m"} 9\nsglang:num_queue_reqs{model_name="m"} 0\nsglang:token_usage{model_name="m"} 0.1\n'
    assert reduce_prometheus(sg) == {"running": 9.0, "waiting": 0.0, "kv_cache_usage": 0.1}
    lc = "llamacpp:requests_processing 2\nllamacpp:requests_deferred 6\nllamacpp:kv_cache_usage_ratio 0.3\n"
    assert reduce_prometheus(lc) == {"running": 2.0, "waiting": 6.0, "kv_cache_usage": 0.3}


def test_unknown_metrics_give_nothing() -> None:
    assert reduce_prometheus("# nothing\nprocess_cpu_seconds_total 3\n") == {}


def test_trtllm_json_iteration_stats() -> None:
    stats = [
        {"numActiveRequests": 1, "numQueuedRequests": 0},
        {
            "numActiveRequests": 6,
            "numQueuedRequests": 2,
            "kvCacheStats": {"usedNumBlocks": 25, "maxNumBlocks": 100},
        },
    ]
    assert reduce_trtllm(stats) == {"running": 6.0, "waiting": 2.0, "kv_cache_usage": 0.25}
    assert reduce_trtllm([]) == {}


def test_power_series_from_cumulative_energy_keeps_the_energy() -> None:
    from joulebench.analysis.records import power_series

    rows = [{"t_s": t / 10, "energy_j": 30.0 * t / 10} for t in range(101)]
    pts = power_series(rows)
    assert len(pts) == 100 and all(w == pytest.approx(30.0) for _, w in pts)
    coarse = power_series(rows, max_points=7)
    assert len(coarse) <= 8 and coarse[-1][0] == pytest.approx(10.0)
    assert all(w == pytest.approx(30.0) for _, w in coarse)
    assert power_series(rows[:1]) == []
