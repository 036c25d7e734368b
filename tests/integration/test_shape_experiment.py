"""The measured experiment and the sweep, on loopback against the load engineer's stub server."""

from __future__ import annotations

import pytest

from joulebench.load.stub import StubConfig, stub_server
from joulebench.meters.fake import FakeMeter
from joulebench.results.shaping import validate_comparison, validate_sweep
from joulebench.shape.experiment import Trial, compare
from joulebench.shape.sweep import sweep

pytestmark = pytest.mark.integration

PROMPTS = ["hello there", "tell me a story", "what is energy?"]


def test_compare_runs_the_same_trace_direct_and_shaped() -> None:
    meter = FakeMeter(50.0, update_period_s=0.02)
    with stub_server(StubConfig(tokens=4, token_delay_s=0.005)) as url:
        trial = Trial(
            url,
            "poisson:40",
            PROMPTS,
            n=24,
            output_length=4,
            seed=7,
            meter=meter,
            idle_power_w=20.0,
            warmup_n=2,
        )
        result = compare(trial, "cadence:80ms")
    out = validate_comparison(result.to_json())  # the declared keys, no others
    d, s = out["direct"], out["shaped"]
    assert d["ok"] == s["ok"] == 24 and d["failed"] == s["failed"] == 0
    assert out["energy_method"] == "fake"
    assert s["gateway"]["released"] == 24  # the shaped run really went through the gateway
    assert d["gateway"] is None
    # the gateway's hold shows up in the shaped run's latency and added delay
    assert 0 < s["added_delay_ms"]["p50"] <= 80 + 40
    assert s["added_delay_ms"]["max"] <= 80 + 40
    assert s["ttft_ms"]["p50"] > d["ttft_ms"]["p50"]
    assert s["mean_group_size"] > 1
    # both runs report every accounting: gross and net, net < gross with a 20 W idle
    for run in (d, s):
        e = run["energy_per_request_j"]
        assert e["paper_whole_window"] > e["idle_subtracted"] > 0
        assert e["attributed_mean"] > 0
    table = {row["metric"]: row for row in out["table"]}
    assert "energy/request J · idle_subtracted (net)" in table
    assert table["added delay ms p99"]["direct"] == 0.0
    assert table["server mean batch size"]["direct"] is None  # the stub has no /metrics
    assert d["server"]["note"] == "server exposes no /metrics"


def test_sweep_builds_a_pareto_table_and_figure(tmp_path) -> None:
    meter = FakeMeter(30.0, update_period_s=0.02)
    with stub_server(StubConfig(tokens=3, token_delay_s=0.004)) as url:
        trial = Trial(
            url,
            "poisson:50",
            PROMPTS,
            n=16,
            output_length=3,
            meter=meter,
            idle_power_w=10.0,
            warmup_n=0,
        )
        result = sweep(trial, ["cadence:50ms", "window:4,60ms"])
    points = result.points()
    assert [p.label for p in points] == ["direct", "cadence:50ms", "window:4,60ms"]
    assert all(p.energy_j is not None and p.latency_ms is not None for p in points)
    assert any(p.on_front for p in points)
    assert points[0].added_delay_p99_ms == 0.0
    png = result.figure(tmp_path / "pareto.png")
    assert png.stat().st_size > 1000
    js = validate_sweep(result.to_json())
    assert js["accounting_kind"] == "net" and len(js["points"]) == 3


def test_a_warmed_gateway_learns_before_the_measured_run_and_reports_only_it() -> None:
    """``warm_n``: the same unmeasured traffic before every run (another seed); an adaptive
    policy keeps what it learnt from it, while the measured run's gateway counts and explains
    only the measured requests."""
    meter = FakeMeter(30.0, update_period_s=0.02)
    sent: list[tuple[str, int, int, object]] = []
    from joulebench.load.runner import run_load

    def load(url: str, **kw):  # type: ignore[no-untyped-def]
        sent.append((url, kw["n"], kw["seed"], kw["meter"]))
        return run_load(url, **kw)

    with stub_server(StubConfig(tokens=3, token_delay_s=0.004)) as url:
        trial = Trial(
            url, "poisson:60", PROMPTS, n=20, output_length=3, seed=5, meter=meter,
            idle_power_w=10.0, warmup_n=0, warm_n=30, load_fn=load,
        )  # fmt: skip
        result = compare(trial, "slo:200ms")
    out = validate_comparison(result.to_json())
    assert out["config"]["warm_n"] == 30
    # warm direct, direct, warm through a gateway, shaped: the warming unmeasured, other seed
    assert [(n, seed, m is None) for _, n, seed, m in sent] == [
        (30, 10_005, True),
        (20, 5, False),
        (30, 10_005, True),
        (20, 5, False),
    ]
    assert sent[0][0] == sent[1][0] == url and sent[2][0] != sent[3][0] != url  # two gateways
    s = out["shaped"]
    assert s["ok"] == 20 and s["gateway"]["released"] == 20 and s["gateway"]["admitted"] == 20
    decisions = s["gateway"]["decisions"]
    assert sum(r["size"] for r in decisions["releases"]) == 20  # only the measured requests
    assert sum(decisions["decisions"].values()) == len(decisions["releases"])
    assert decisions["model"]["responses"] == 50  # but it learnt from all of them
    assert not any(r["reason"].startswith("passthrough") for r in decisions["releases"])
