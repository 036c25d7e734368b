"""Prometheus exposition through prometheus_client: one registry per app, families as written."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from joulebench.exposition import Exposition, counter, gauge, histogram, render, summary


def test_each_app_owns_its_registry() -> None:
    # two servers in one process expose the same names without colliding, each its own state
    state = {"a": 1.0, "b": 2.0}
    apps = {
        k: Exposition(lambda k=k: [gauge("joulebench_queue_length", "Queued.", [({}, state[k])])])
        for k in state
    }
    assert "joulebench_queue_length 1.0" in apps["a"].render().splitlines()
    state["a"] = 5.0  # read again at every scrape
    assert "joulebench_queue_length 5.0" in apps["a"].render().splitlines()
    assert "joulebench_queue_length 2.0" in apps["b"].render().splitlines()


def test_labels_sorted_escaped_and_values_as_floats() -> None:
    text = render(
        [
            counter(
                "joulebench_requests_total",
                "Finished.",
                [
                    ({"reason": 'st"op', "endpoint": "/v1"}, 3),
                    ({"reason": "x", "endpoint": "/"}, 1),
                ],
            ),
            gauge("joulebench_rate", "Rate.", [({}, math.nan)]),
        ]
    )
    lines = text.splitlines()
    assert "# TYPE joulebench_requests_total counter" in lines
    assert 'joulebench_requests_total{endpoint="/v1",reason="st\\"op"} 3.0' in lines
    assert "joulebench_rate NaN" in lines
    with pytest.raises(ValueError, match="_total"):
        counter("joulebench_steps", "Steps.", [])


def test_empty_family_keeps_its_help_and_type() -> None:
    text = render([counter("joulebench_rejected_total", "Refused.", [])])
    assert text.splitlines() == [
        "# HELP joulebench_rejected_total Refused.",
        "# TYPE joulebench_rejected_total counter",
    ]


def test_histogram_buckets_are_cumulative_and_summary_has_count_and_sum() -> None:
    text = render(
        [
            histogram("joulebench_delay_seconds", "Delay.", (0.01, 1.0), [2, 0, 1], 2.5),
            summary("joulebench_queue_time_seconds", "Queue.", 4, 0.5, {"model": "m"}),
        ]
    )
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = [
        (s.labels["le"], s.value)
        for s in fams["joulebench_delay_seconds"].samples
        if "le" in s.labels
    ]
    assert buckets == [("0.01", 2.0), ("1.0", 2.0), ("+Inf", 3.0)]
    assert "joulebench_delay_seconds_count 3.0" in text.splitlines()
    assert "joulebench_delay_seconds_sum 2.5" in text.splitlines()
    assert fams["joulebench_queue_time_seconds"].type == "summary"
    assert 'joulebench_queue_time_seconds_count{model="m"} 4.0' in text.splitlines()
    with pytest.raises(ValueError):
        histogram("joulebench_x", "X.", (1.0,), [1], 1.0)  # one count short
