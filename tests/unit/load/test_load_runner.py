from __future__ import annotations

import itertools

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.load.runner import run_load
from joulebench.load.stub import StubConfig, stub_server
from joulebench.meters.fake import FakeMeter

PROMPTS = ["tell me about joules", "and watts please"]


def test_failed_requests_are_counted_apart_never_averaged_in():
    with stub_server(StubConfig(tokens=6, failure_rate=0.3, seed=1)) as url:
        result = run_load(url, "openai-chat", "burst", PROMPTS, n=60, output_length=6)
    j = result.to_json()
    assert j["requests"]["ok"] + j["requests"]["failed"] == 60
    assert 5 <= j["requests"]["failed"] <= 35
    assert any("injected failure" in k for k in j["requests"]["errors"])
    assert j["e2e_ms"]["n"] == j["ttft_ms"]["n"] == j["requests"]["ok"]
    assert j["tokens"]["output"] == 6 * j["requests"]["ok"]
    failed = [r for r in result.records if not r.ok]
    assert all(r.http_status == 500 and r.first_token_s is None for r in failed)


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions", "tgi"])
def test_each_protocol_streams_tokens_and_timings(protocol):
    with stub_server(StubConfig(tokens=5, token_delay_s=0.002)) as url:
        result = run_load(url, protocol, "fixed:5ms", PROMPTS, n=8, output_length=4)
    j = result.to_json()
    assert j["requests"] == {
        "total": 8, "ok": 8, "failed": 0, "truncated": 0, "timed_out": 0, "errored": 0,
        "failed_rate": 0.0, "errors": {},
    }  # fmt: skip
    assert all(r.output_tokens == 4 and r.token_source == "usage" for r in result.records)
    assert j["tpot_ms"]["p50"] >= 1.5  # 2 ms between tokens on the server
    assert j["ttft_ms"]["p50"] < j["e2e_ms"]["p50"]
    assert j["itl_ms"]["n"] == 8 * 3


def test_fixed_schedule_is_kept_and_lag_measured():
    with stub_server(StubConfig(tokens=2)) as url:
        result = run_load(url, "openai-completions", "fixed:20ms", PROMPTS, n=15, output_length=2)
    sends = [r.actual_send_s for r in result.records]
    intended = [r.intended_send_s for r in result.records]
    assert intended[1] - intended[0] == pytest.approx(0.02)
    assert all(s >= i for s, i in zip(sends, intended, strict=True))  # never early
    j = result.to_json()
    assert j["schedule_lag_ms"]["n"] == 15
    assert j["target_rate_rps"] == pytest.approx(50.0)
    assert j["achieved_over_target"] == pytest.approx(1.0, abs=0.2)


def test_concurrency_cap_shows_up_as_lag_and_is_honoured():
    with stub_server(StubConfig(tokens=3, token_delay_s=0.01)) as url:
        result = run_load(url, "tgi", "burst", PROMPTS, n=6, output_length=3, concurrency=2)
    recs = sorted(result.records, key=lambda r: r.actual_send_s)
    for i in range(len(recs)):  # never more than 2 in flight
        t = recs[i].actual_send_s
        assert sum(r.actual_send_s <= t < r.end_s for r in recs) <= 2
    lags = [r.lag_ms for r in result.records]
    assert max(lags) > 20.0  # the last pair waited for two earlier rounds (≥ 2 × 20 ms)


def test_sequential_is_a_closed_loop():
    with stub_server(StubConfig(tokens=3, token_delay_s=0.003)) as url:
        result = run_load(url, "openai-chat", "sequential", PROMPTS, n=5, output_length=3)
    recs = result.records
    for prev, nxt in itertools.pairwise(recs):
        assert nxt.actual_send_s >= prev.end_s
    assert result.to_json()["target_rate_rps"] is None


def test_timeouts_are_reported_as_such():
    with stub_server(StubConfig(tokens=5, token_delay_s=0.2)) as url:
        result = run_load(url, "openai-chat", "burst", PROMPTS, n=3, output_length=5, timeout_s=0.3)
    j = result.to_json()
    assert j["requests"]["timed_out"] == 3 and j["requests"]["ok"] == 0
    assert j["ttft_ms"]["n"] == 0 and j["e2e_ms"]["p50"] is None
    assert all("timed out after 0.3 s" in r.error for r in result.records)


def test_energy_accountings_with_a_fake_meter():
    meter = FakeMeter(50.0, update_period_s=0.01)
    cfg = StubConfig(
        tokens=4, token_delay_s=0.005, energy_per_token_j=0.5, failure_rate=0.2, seed=3
    )
    with stub_server(cfg) as url:
        result = run_load(
            url,
            "openai-chat",
            "poisson:100",
            PROMPTS,
            n=40,
            output_length=4,
            meter=meter,
            idle_power_w=20.0,
            timeline_hz=100.0,
        )
    j = result.to_json()
    e = j["energy"]
    n_ok = j["requests"]["ok"]
    assert e["gross_j"] == pytest.approx(50.0 * e["window_s"], rel=0.05)
    assert e["net_j"] == pytest.approx(30.0 * e["window_s"], rel=0.1)
    wh = e["per_request_wh"]
    assert wh["paper_whole_window"] == pytest.approx(e["gross_j"] / n_ok / 3600)
    assert wh["idle_subtracted"] == pytest.approx(e["net_j"] / n_ok / 3600)
    assert e["attribution_sum_rel_err"] < 0.01
    # failed requests got some energy, so successful ones average less than the study's figure
    assert wh["attributed_mean"] <= wh["paper_whole_window"] * 1.0001
    assert j["meter_methods"] == {"gpu:0": "fake"}
    assert e["method"] == "fake"
    assert e["server_reported"]["methods"] == ["fake"]
    rows = result.request_rows()
    ok_rows = [r for r in rows if r["status"] == "ok"]
    # only the requests that ended properly carry a figure; the others' share is stated apart
    assert all(r["energy_j"] is None for r in rows if r["status"] != "ok")
    total = sum(r["energy_j"] for r in ok_rows) + (e["not_ok_share_j"] or 0.0)
    assert total == pytest.approx(e["gross_j"], rel=0.01)
    assert all(r["energy_method"] == "fake/timeline-token-share" for r in ok_rows)
    assert len(result.timeline) >= 2


def test_burst_has_no_steady_state_but_capped_burst_does():
    with stub_server(StubConfig(tokens=4, token_delay_s=0.01)) as url:
        burst = run_load(
            url,
            "openai-chat",
            "burst",
            PROMPTS,
            n=10,
            output_length=4,
            meter=FakeMeter(10.0, update_period_s=0.01),
            timeline_hz=100.0,
        )
        capped = run_load(
            url,
            "openai-chat",
            "burst",
            PROMPTS,
            n=20,
            output_length=4,
            concurrency=2,
            meter=FakeMeter(10.0, update_period_s=0.01),
            timeline_hz=100.0,
        )
    b = burst.to_json()["energy"]
    assert b["per_request_wh"]["steady_state"] is None
    assert b["steady_state"]["note"].startswith("no steady state")
    c = capped.to_json()["energy"]
    assert c["steady_state"]["plateau_in_flight"] == 2
    assert c["per_request_wh"]["steady_state"] is not None
    # constant power: per-request energy in steady state ≈ window energy / requests in it
    assert c["per_request_wh"]["steady_state"] == pytest.approx(
        c["per_request_wh"]["paper_whole_window"], rel=0.35
    )


def test_queue_time_is_read_from_the_server():
    with stub_server(StubConfig(tokens=3, token_delay_s=0.01, max_concurrency=1)) as url:
        result = run_load(url, "tgi", "burst", PROMPTS, n=4, output_length=3)
    queues = sorted(r.queue_ms for r in result.records)
    assert queues[0] < 5.0 and queues[-1] > 40.0
    assert result.to_json()["queue_ms"]["n"] == 4


def test_json_has_the_documented_keys_without_a_meter():
    with stub_server(StubConfig(tokens=2)) as url:
        j = run_load(url, "openai-chat", "burst", PROMPTS, n=3, output_length=2).to_json()
    for key in (
        "requests",
        "achieved_rate_rps",
        "schedule_lag_ms",
        "ttft_ms",
        "tpot_ms",
        "e2e_ms",
        "energy",
        "meter_methods",
    ):
        assert key in j
    for key in ("p50", "p90", "p99"):
        assert key in j["e2e_ms"] and key in j["ttft_ms"] and key in j["tpot_ms"]
    assert set(j["schedule_lag_ms"]) >= {"p50", "p99"}
    assert set(j["energy"]["per_request_wh"]) == {
        "paper_whole_window",
        "idle_subtracted",
        "steady_state",
        "attributed_mean",
    }
    assert j["energy"]["gross_j"] is None and "no meter" in j["energy"]["note"]


def test_bad_arguments():
    with pytest.raises(UnknownName, match="openai-chat"):
        run_load("http://127.0.0.1:1", "grpc", "burst", PROMPTS, n=1, output_length=1)
    with pytest.raises(ConfigError, match="--n"):
        run_load("http://127.0.0.1:1", "tgi", "burst", PROMPTS, n=0, output_length=1)
    with pytest.raises(ConfigError, match="--concurrency"):
        run_load("http://127.0.0.1:1", "tgi", "burst", PROMPTS, n=1, output_length=1, concurrency=0)
    with pytest.raises(ConfigError, match="≥ 1 token"):
        run_load("http://127.0.0.1:1", "tgi", "burst", PROMPTS, n=1, output_length=0)
    with pytest.raises(ConfigError, match="no prompts"):
        run_load("http://127.0.0.1:1", "tgi", "burst", [], n=1, output_length=1)


def test_unreachable_server_fails_every_request_cleanly():
    result = run_load(
        "http://127.0.0.1:9", "tgi", "burst", PROMPTS, n=3, output_length=1, timeout_s=2.0
    )
    j = result.to_json()
    assert j["requests"]["failed"] == 3
    assert all("ConnectError" in r.error for r in result.records)


def _audits_at_30_w(idle_power_w: float) -> dict[str, dict]:
    """Audits of a 30 W fake-metered load run that claims ``idle_power_w`` of idle draw."""
    with stub_server(StubConfig(tokens=3)) as url:
        j = run_load(
            url,
            "openai-chat",
            "fixed:10ms",
            PROMPTS,
            n=10,
            output_length=3,
            meter=FakeMeter(30.0, update_period_s=0.01),
            idle_power_w=idle_power_w,
            timeline_hz=100.0,
        ).to_json()
    return {a["name"]: a for a in j["energy"]["audits"]}


def test_audits_are_attached_to_the_energy_block():
    audits = _audits_at_30_w(10.0)
    assert audits["load:attribution_sum"]["passed"]
    assert audits["load:energy_ge_idle_x_duration"]["passed"]
    assert audits["load:window_ge_update_period"]["passed"]
    # 30 W with a claimed 1000 W idle: the audit must fail, not be dropped
    audits = _audits_at_30_w(1000.0)
    assert not audits["load:energy_ge_idle_x_duration"]["passed"]


def test_async_entry_point_runs_inside_a_running_loop():
    import asyncio

    from joulebench.load import run_load_async

    async def main(url):
        return await run_load_async(url, "tgi", "fixed:5ms", PROMPTS, n=4, output_length=2)

    with stub_server(StubConfig(tokens=2)) as url:
        result = asyncio.run(main(url))
    assert result.to_json()["requests"]["ok"] == 4


def test_closed_loop_window_starts_before_its_first_send():
    # the closed loop sends at once: a start 20 ms later would shorten the window and inflate
    # throughput (and leave request 0 outside its own test)
    with stub_server(StubConfig(tokens=2)) as url:
        result = run_load(url, "openai-chat", "sequential", PROMPTS, n=2, output_length=2)
    first = min(r.actual_send_s for r in result.records)
    assert result.start_s <= first
    assert result.throughput_rps == pytest.approx(2 / (result.end_s - result.start_s))


def test_a_client_that_crashes_after_success_is_a_failure(monkeypatch):
    import joulebench.load.runner as runner_mod
    from joulebench.load.clients import make_client
    from joulebench.load.metrics import OK

    real = make_client("openai-chat")

    class Crashing(type(real)):  # type: ignore[misc]
        async def send(self, http, rec, prompt, max_tokens, clock):
            await super().send(http, rec, prompt, max_tokens, clock)
            assert rec.status == OK
            raise RuntimeError("token counting broke")

    monkeypatch.setattr(runner_mod, "make_client", lambda *a, **k: Crashing())
    with stub_server(StubConfig(tokens=2)) as url:
        result = run_load(url, "openai-chat", "burst", PROMPTS, n=2, output_length=2)
    j = result.to_json()
    assert j["requests"]["ok"] == 0 and j["requests"]["failed"] == 2
    assert all("token counting broke" in (r.error or "") for r in result.records)
