"""One energy label for every response of the embedded server (streamed or not, OpenAI or TGI),
read identically by the load generator; and the server's per-response energies against the
load generator's measured busy energy on the same fake meter."""

from __future__ import annotations

import json

import httpx
import pytest

from joulebench.load.runner import run_load
from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

pytestmark = pytest.mark.integration

LABEL = "timeline-token-work;meter=fake"
PROMPTS = ["what is a joule?", "how do batteries work?", "say something kind"]
#: Server-reported sum ÷ the load's busy energy (timeline energy while a request is in flight)
#: must lie in [BUSY_FLOOR, 1 + 1 %]: the server charges forward steps only, the load's busy
#: energy also covers HTTP, tokenization and streaming. With a constant-power fake meter the ratio
#: is the fraction of in-flight time the model computed (0.6–0.95 here, lower on a loaded box).
BUSY_FLOOR = 0.4
#: Server-reported sum vs the load's measured power × the server's busy seconds (``/metrics``):
#: the same quantity measured from both sides, equal up to timeline interpolation.
BUSY_REL_TOL = 0.03


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    meter = FakeMeter(50.0, update_period_s=1e-4)
    with embedded_server(str(tiny_model_dir), scheduler="continuous", meter=meter) as url:
        yield url, meter


def _events(url: str, path: str, body: dict) -> tuple[httpx.Headers, list[dict]]:
    with httpx.stream("POST", url + path, json=body, timeout=60) as s:
        assert s.status_code == 200
        lines = [line[5:].strip() for line in s.iter_lines() if line.startswith("data:")]
        return s.headers, [json.loads(x) for x in lines if x != "[DONE]"]


def test_streamed_and_plain_responses_carry_the_same_label(server) -> None:
    url, _ = server
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    r = httpx.post(url + "/v1/chat/completions", json=chat, timeout=60)
    assert r.headers["x-energy-method"] == LABEL
    assert r.json()["usage"]["energy"]["label"] == LABEL
    assert "idle waits" in r.json()["usage"]["energy"]["scope"]

    stream = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    headers, events = _events(url, "/v1/chat/completions", stream)
    assert headers["x-energy-method"] == LABEL
    finishing = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finishing[-1]["energy"]["label"] == LABEL
    assert events[-1]["usage"]["energy"]["label"] == LABEL
    assert events[-1]["usage"]["energy"]["energy_j"] > 0

    headers, events = _events(
        url, "/v1/completions", {"prompt": "hello", "max_tokens": 3, "stream": True}
    )
    assert headers["x-energy-method"] == LABEL
    assert events[-1]["energy"]["label"] == LABEL  # no usage chunk asked: the finishing chunk

    tgi = {"inputs": "hello", "parameters": {"max_new_tokens": 3, "details": True}}
    r = httpx.post(url + "/generate", json=tgi, timeout=60)
    assert r.headers["x-energy-method"] == LABEL
    assert r.json()["details"]["energy"]["label"] == LABEL
    headers, events = _events(url, "/generate_stream", tgi)
    assert headers["x-energy-method"] == LABEL
    assert events[-1]["details"]["energy"]["label"] == LABEL


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions", "tgi"])
def test_load_reads_the_same_label_for_every_protocol(server, protocol) -> None:
    url, _ = server
    result = run_load(url, protocol, "burst", PROMPTS, n=2, output_length=3, timeout_s=60)
    assert [r.ok for r in result.records] == [True, True]
    assert {r.server_energy_method for r in result.records} == {LABEL}
    assert all(r.server_energy_j and r.server_energy_j > 0 for r in result.records)
    sr = result.to_json()["energy"]["server_reported"]
    assert sr["methods"] == [LABEL] and sr["n"] == 2
    assert sr["mean_j"] == pytest.approx(sr["sum_j"] / 2)


def _busy_s(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("joulebench_busy_seconds_total"))
    return float(line.split()[-1])


@pytest.mark.parametrize("arrival", ["burst", "poisson:40"])
def test_server_energies_sum_to_the_loads_busy_energy(server, arrival) -> None:
    url, meter = server
    busy_before_s = _busy_s(url)
    result = run_load(
        url,
        "openai-chat",
        arrival,
        PROMPTS,
        n=6,
        output_length=12,
        meter=meter,
        timeline_hz=100.0,
        timeout_s=60,
        seed=3,
    )
    e = result.to_json()["energy"]
    assert result.to_json()["requests"]["ok"] == 6
    sr = e["server_reported"]
    assert sr["n"] == 6 and sr["methods"] == [LABEL]
    # the load's own attribution spreads idle gaps and sums to the whole window
    assert e["attribution_method"] == "timeline-token-share"
    assert e["attribution_sum_rel_err"] < 0.01
    assert 0 < e["busy_j"] <= e["gross_j"] * 1.0001
    # the server's busy-only figures: at most the busy energy, and most of it
    assert sr["over_busy"] == pytest.approx(sr["sum_j"] / e["busy_j"])
    assert BUSY_FLOOR <= sr["over_busy"] <= 1.01, sr
    assert sr["over_gross"] <= sr["over_busy"]
    # both sides measure the same thing: load-measured power × server busy time
    server_busy_s = _busy_s(url) - busy_before_s
    load_power_w = e["gross_j"] / e["window_s"]
    assert sr["sum_j"] == pytest.approx(load_power_w * server_busy_s, rel=BUSY_REL_TOL)
