"""A load's summary against its declared type (results/load_summary.py), both ways: what
LoadResult.to_json writes is declared, and the declarations refuse what they do not name."""

from __future__ import annotations

import pytest

from joulebench.load.runner import run_load
from joulebench.load.stub import StubConfig, stub_server
from joulebench.meters.fake import FakeMeter
from joulebench.results.load_summary import validate_load_summary
from support.schemas import MISSING, assert_refused


@pytest.mark.parametrize("metered", [False, True])
def test_a_summary_with_failures_validates(metered):
    meter = dict(meter=FakeMeter(40.0, update_period_s=0.01), idle_power_w=10.0) if metered else {}
    cfg = StubConfig(tokens=4, token_delay_s=0.002, failure_rate=0.3, seed=3)
    with stub_server(cfg) as url:
        result = run_load(
            url, "openai-chat", "fixed:5ms", ["hi there"], n=12, output_length=4, **meter
        )
    j = result.to_json()
    assert validate_load_summary(j) is j
    assert j["requests"]["failed"] > 0 and j["estimated"] is False


def test_the_declarations_refuse_an_undeclared_key_or_a_wrong_type():
    with stub_server(StubConfig(tokens=2)) as url:
        j = run_load(url, "tgi", "burst", ["hi"], n=3, output_length=2).to_json()
    assert_refused(validate_load_summary, j, ("requests", "dropped"), 1)
    assert_refused(validate_load_summary, j, ("ttft_ms", "n"), "three")
    assert_refused(validate_load_summary, j, ("requests", "ok"), MISSING)
