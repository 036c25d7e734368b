"""A cut-off answer is not a success: ok only with a proper end, and the tokens asked for."""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from joulebench.load.accounting import account, steady_state
from joulebench.load.clients import make_client
from joulebench.load.metrics import FAILED, OK, TRUNCATED, RequestRecord
from joulebench.load.runner import run_load
from joulebench.load.stub import StubConfig, stub_server


def sse(*events: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def send(protocol: str, body: bytes, *, forced: bool = False, max_tokens: int = 4):
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["json"] = json.loads(request.content)
        return httpx.Response(200, content=body)

    client = make_client(protocol, model="m", forced=forced)
    ticks = itertools.count(start=1.0, step=0.5)

    async def go() -> RequestRecord:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://x"
        ) as http:
            return await client.send(
                http, RequestRecord(0, 0.0), "p", max_tokens, lambda: next(ticks)
            )

    return asyncio.run(go()), seen


def chunk(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def usage(n: int) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n}}


def test_done_without_a_finish_reason_is_truncated():
    # llama.cpp's server under overlapping streams: one token, then [DONE], no finish_reason
    rec, _ = send("openai-chat", sse(chunk("a")))
    assert rec.status == TRUNCATED and not rec.ok
    assert "[DONE] without a finish_reason" in (rec.error or "")
    rec, _ = send("openai-chat", sse(chunk("a"), done=False))  # the connection just closed
    assert rec.status == TRUNCATED and "before the server said" in (rec.error or "")


def test_a_finish_reason_ends_the_answer_and_a_given_up_one_fails():
    rec, _ = send("openai-chat", sse(chunk("a"), chunk("b", "stop"), usage(2)))
    assert rec.status == OK and rec.finish_reason == "stop" and rec.asked_tokens == 4
    rec, _ = send("openai-completions", sse({"choices": [{"text": "a", "finish_reason": "abort"}]}))
    assert rec.status == FAILED and "abort" in (rec.error or "")


def test_tgi_needs_its_final_event_with_details():
    token = {"token": {"text": "a", "special": False}, "generated_text": None, "details": None}
    final = {**token, "generated_text": "a"}
    rec, _ = send("tgi", sse(token, done=False))
    assert rec.status == TRUNCATED
    rec, _ = send("tgi", sse(final, done=False))  # a final event but no details: no reason
    assert rec.status == TRUNCATED and "final event without a finish_reason" in (rec.error or "")
    details = {"finish_reason": "eos_token", "generated_tokens": 1}
    rec, _ = send("tgi", sse({**final, "details": details}, done=False))
    assert rec.status == OK and rec.finish_reason == "stop"


def test_forced_length_asks_ignore_eos_and_needs_the_tokens():
    short = sse(chunk("a"), chunk("b", "stop"), usage(2))
    rec, seen = send("openai-chat", short, forced=True)
    assert seen["json"]["ignore_eos"] is True
    assert rec.status == TRUNCATED and "2 of 4 tokens" in (rec.error or "")
    # finish_reason length but the server counted fewer tokens than asked
    rec, _ = send("openai-chat", sse(chunk("a", "length"), usage(3)), forced=True)
    assert rec.status == TRUNCATED and "3 of 4" in (rec.error or "")
    rec, _ = send("openai-chat", sse(chunk("abcd", "length"), usage(4)), forced=True)
    assert rec.status == OK
    # not forced: no ignore_eos, and an early natural stop is a proper end
    rec, seen = send("openai-chat", short)
    assert "ignore_eos" not in seen["json"] and rec.status == OK


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions", "tgi"])
def test_a_truncating_server_gives_no_success_and_no_per_request_energy(protocol):
    from joulebench.meters.fake import FakeMeter

    cfg = StubConfig(tokens=6, token_delay_s=0.005, truncate_rate=0.75, truncate_after=1)
    with stub_server(cfg) as url:
        result = run_load(
            url, protocol, "fixed:20ms", ["hello there"], n=12, output_length=6,
            meter=FakeMeter(40.0, update_period_s=0.01), idle_power_w=10.0, timeline_hz=100.0,
        )  # fmt: skip
    j = result.to_json()
    req = j["requests"]
    assert req["truncated"] >= 6 and req["ok"] + req["truncated"] == 12
    assert req["failed"] == req["truncated"] and req["failed_rate"] == pytest.approx(
        req["truncated"] / 12
    )
    assert j["energy"]["successful_requests"] == req["ok"]
    for r in result.records:
        assert (r.energy_j is None) == (not r.ok)
    assert j["ttft_ms"]["n"] == req["ok"]


def test_forced_length_on_the_stub_ignore_eos_vs_tgi():
    cfg = StubConfig(tokens=8, eos_after=3)
    with stub_server(cfg) as url:
        chat = run_load(url, "openai-chat", "burst", ["x"], n=3, output_length=8, forced=True)
        tgi = run_load(url, "tgi", "burst", ["x"], n=3, output_length=8, forced=True)
        natural = run_load(url, "tgi", "burst", ["x"], n=3, output_length=8)
    assert all(r.ok and r.output_tokens == 8 for r in chat.records)  # ignore_eos honoured
    assert all(r.status == TRUNCATED and r.output_tokens == 3 for r in tgi.records)
    assert all(r.ok and r.finish_reason == "stop" for r in natural.records)
    assert chat.config["forced_length"] and not natural.config["forced_length"]


def test_steady_state_takes_a_success_with_usage_tokens_but_no_text_chunk():
    def rec(i: int, send_s: float, end_s: float, first: float | None) -> RequestRecord:
        return RequestRecord(
            i, send_s, actual_send_s=send_s, first_token_s=first, end_s=end_s, status=OK,
            output_tokens=10,
        )  # fmt: skip

    records = [rec(0, 0.0, 2.0, None), rec(1, 0.1, 2.0, 0.5), rec(2, 0.2, 2.2, 0.6)]
    series = [(i * 0.01, 10.0 * i * 0.01) for i in range(251)]
    st = steady_state(records, series, concurrency=2, min_duration_s=0.05)
    assert st.per_request_j is not None and st.per_request_j > 0


def test_net_at_or_below_idle_is_never_a_per_request_number():
    records = [
        RequestRecord(i, i * 0.5, actual_send_s=i * 0.5, first_token_s=i * 0.5 + 0.1,
                      end_s=i * 0.5 + 0.4, status=OK, output_tokens=5)
        for i in range(4)
    ]  # fmt: skip
    series = [(i * 0.01, 10.0 * i * 0.01) for i in range(201)]  # 10 W over 2 s
    out = account(records, series, idle_power_w=12.0, meter_label="fake", concurrency=None,
                  min_window_s=0.1, update_period_s=0.01)  # fmt: skip
    assert out["net_j"] < 0 and out["net_at_or_below_idle"] is True
    assert out["per_request_j"]["idle_subtracted"] is None
    assert out["accountings"]["idle_subtracted"].startswith("≤ idle")
    assert all(r.energy_net_j is None for r in records)
    assert out["requests_net_at_or_below_idle"] == 4
