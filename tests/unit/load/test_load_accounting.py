from __future__ import annotations

import pytest

from joulebench.load.accounting import account, request_spans, steady_state
from joulebench.load.metrics import OK, RequestRecord, in_flight_steps


def rec(idx, send, first, end, out=10, inp=5, status=OK, queue_ms=None):
    r = RequestRecord(
        idx,
        send,
        actual_send_s=send,
        first_token_s=first,
        end_s=end,
        status=status,
        output_tokens=out,
        input_tokens=inp,
    )
    r.queue_ms = queue_ms
    return r


def const_series(power_w, t0, t1, step=0.01):
    n = round((t1 - t0) / step)
    return [(t0 + i * step, power_w * i * step) for i in range(n + 1)]


def test_in_flight_steps_orders_completions_first():
    steps = in_flight_steps([rec(0, 0.0, 0.1, 1.0), rec(1, 1.0, 1.1, 2.0)])
    assert [lvl for _, lvl in steps] == [1, 0, 1, 0]


def test_spans_split_prefill_and_decode_and_skip_queue():
    spans = request_spans([rec(0, 0.0, 0.5, 1.5, out=11, inp=7, queue_ms=200.0)])
    assert [(s.start_s, s.end_s, s.work) for s in spans] == [(0.2, 0.5, 7.0), (0.5, 1.5, 10.0)]


def test_steady_state_window_with_a_cap():
    # cap 2: two lanes of back-to-back 1 s requests, sends at 0,0,1,1,2,2,3,3
    records = [rec(i, float(i // 2), i // 2 + 0.1, i // 2 + 1.0) for i in range(8)]
    series = const_series(50.0, 0.0, 4.0)
    st = steady_state(records, series, concurrency=2, min_duration_s=0.2)
    assert st.plateau_in_flight == 2
    assert (st.start_s, st.end_s) == (0.0, 3.0)
    assert st.energy_j == pytest.approx(150.0)
    # 6 requests' worth of tokens decoded in [0, 3] → 25 J per request of 10 tokens
    assert st.per_request_j == pytest.approx(25.0, rel=1e-6)


def test_no_steady_state_for_a_burst_or_a_lone_request():
    burst = [rec(i, 0.0, 0.1 * (i + 1), 0.1 * (i + 2)) for i in range(5)]
    st = steady_state(burst, const_series(10.0, 0.0, 1.0), concurrency=None, min_duration_s=0.1)
    assert st.per_request_j is None and "burst" in st.note
    lone = [rec(0, 0.0, 0.1, 0.2), rec(1, 1.0, 1.1, 1.2)]
    st = steady_state(lone, const_series(10.0, 0.0, 2.0), concurrency=None, min_duration_s=0.1)
    assert st.per_request_j is None and "never filled" in st.note


def test_account_study_vs_idle_subtracted_vs_attribution():
    # 2 ok requests and 1 failure over 4 s at 10 W with 6 W idle
    records = [
        rec(0, 0.0, 0.5, 1.0),
        rec(1, 1.0, 1.5, 2.0),
        rec(2, 2.0, None, 2.5, out=0, status="failed"),
    ]
    out = account(
        records,
        const_series(10.0, 0.0, 4.0),
        idle_power_w=6.0,
        meter_label="fake",
        concurrency=None,
        min_window_s=0.1,
        update_period_s=0.01,
    )
    j = out["per_request_j"]
    assert out["gross_j"] == pytest.approx(40.0)
    assert j["paper_whole_window"] == pytest.approx(20.0)  # failure's energy charged to successes
    assert j["idle_subtracted"] == pytest.approx((40.0 - 24.0) / 2)
    # the failed request drew its share of the total, but it is nobody's per-request figure
    assert records[2].energy_j is None and records[2].energy_net_j is None
    assert out["not_ok_share_j"] > 0
    assert sum(r.energy_j for r in records[:2]) + out["not_ok_share_j"] == pytest.approx(40.0)
    assert j["attributed_mean"] < j["paper_whole_window"]
    spread = out["attributed_spread_j"]  # over the successful requests only, failed one excluded
    assert spread["n"] == 2
    assert spread["mean"] == pytest.approx(j["attributed_mean"])
    ok_j = sorted(r.energy_j for r in records[:2])
    assert spread["p50"] == pytest.approx(sum(ok_j) / 2)
    assert ok_j[0] <= spread["p90"] <= ok_j[1]
    assert out["accountings"]["paper_whole_window"].startswith("fake;")
    assert all(a["passed"] for a in out["audits"])


def test_account_without_successes_or_meter():
    failed = [rec(0, 0.0, None, 0.5, out=0, status="failed")]
    out = account(
        failed,
        const_series(10.0, 0.0, 1.0),
        idle_power_w=None,
        meter_label="fake",
        concurrency=None,
        min_window_s=0.1,
    )
    assert out["per_request_wh"]["paper_whole_window"] is None
    assert "no successful request" in out["note"]
    out = account(
        failed, None, idle_power_w=None, meter_label=None, concurrency=None, min_window_s=0.1
    )
    assert out["gross_j"] is None and "no meter" in out["note"]


def test_account_gives_no_per_request_figure_for_a_window_shorter_than_the_update_period():
    # 60 ms of requests against a counter that steps every 100 ms: zero or one step may fall
    # inside, so 0 J (or a whole step) per request would be an artefact, not a measurement
    records = [rec(0, 0.0, 0.02, 0.04), rec(1, 0.03, 0.05, 0.06)]
    out = account(
        records,
        [(0.0, 0.0), (0.06, 0.0)],
        idle_power_w=30.0,
        meter_label="fake",
        concurrency=None,
        min_window_s=0.1,
        update_period_s=0.1,
    )
    assert set(out["per_request_j"].values()) == {None}
    assert set(out["per_request_wh"].values()) == {None}
    assert "update period" in out["note"] and "not resolved" in out["note"]
    failed = {a["name"] for a in out["audits"] if not a["passed"]}
    assert "load:window_ge_update_period" in failed


def test_unresolved_window_leaves_no_per_request_energy_on_the_records():
    # the per-request rows (stored, averaged by shape-compare's attributed_net_mean and the
    # report's CI) must not carry figures the summary refuses to give
    records = [rec(0, 0.0, 0.02, 0.04), rec(1, 0.03, 0.05, 0.06)]
    out = account(
        records,
        [(0.0, 0.0), (0.03, 1.0), (0.06, 2.0)],
        idle_power_w=5.0,
        meter_label="fake",
        concurrency=None,
        min_window_s=0.1,
        update_period_s=0.1,
    )
    assert out["per_request_j"]["attributed_mean"] is None
    assert [r.energy_j for r in records] == [None, None]
    assert [r.energy_net_j for r in records] == [None, None]
    assert out["attributed_spread_j"]["n"] == 0 and out["attributed_spread_j"]["mean"] is None


def test_requests_on_another_clock_than_the_meter_get_no_per_request_figure():
    # requests timed with the wall clock (~1.7e9 s), timeline on the monotonic clock (~100 s)
    wall = 1.7e9
    records = [rec(0, wall, wall + 0.1, wall + 1.0), rec(1, wall + 0.5, wall + 0.6, wall + 1.5)]
    out = account(
        records,
        const_series(40.0, 100.0, 102.0),
        idle_power_w=10.0,
        meter_label="estimated",
        concurrency=None,
        min_window_s=0.1,
        update_period_s=0.01,
    )
    assert set(out["per_request_j"].values()) == {None}
    assert [r.energy_j for r in records] == [None, None]
    failed = {a["name"] for a in out["audits"] if not a["passed"]}
    assert "load:clocks_aligned" in failed
    assert "meter's clock" in out["note"]
    # the same requests on the meter's clock pass
    records = [rec(0, 100.1, 100.2, 101.0), rec(1, 100.5, 100.6, 101.5)]
    out = account(
        records,
        const_series(40.0, 100.0, 102.0),
        idle_power_w=10.0,
        meter_label="estimated",
        concurrency=None,
        min_window_s=0.1,
        update_period_s=0.01,
    )
    assert out["per_request_j"]["paper_whole_window"] == pytest.approx(40.0)
    assert all(a["passed"] for a in out["audits"] if a["name"] == "load:clocks_aligned")
