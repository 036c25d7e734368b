"""The embedded server on loopback: the official openai client for every scheduler, TGI endpoints,
metrics, attribution sums, overload, bad input, API key and client disconnects.

The model is the shared tiny llama (``tiny_model_dir`` in tests/conftest.py), loaded once here.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from joulebench.errors import UnknownName
from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


def engine():
    return embedded_server.last  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic", "continuous"])
def test_openai_client_each_scheduler(tiny_loaded, scheduler):
    with embedded_server(tiny_loaded, scheduler=scheduler, meter=FakeMeter(40.0, **FAST)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == [tiny_loaded.name]
        chat = client.chat.completions.with_raw_response.create(
            model=tiny_loaded.name,
            messages=[{"role": "user", "content": "hello"}],
            max_completion_tokens=4,
        )
        body = chat.parse()
        assert body.usage.completion_tokens <= 4 and body.usage.prompt_tokens > 0
        energy = body.usage.model_extra["energy"]
        assert energy["energy_j"] > 0 and energy["meter_method"] == "fake"
        assert float(chat.headers["x-energy-j"]) == pytest.approx(energy["energy_j"])
        assert chat.headers["x-energy-method"].startswith("timeline-token-work")
        assert float(chat.headers["x-queue-ms"]) >= 0
        comp = client.completions.create(model=tiny_loaded.name, prompt="hello world", max_tokens=3)
        assert comp.choices[0].finish_reason in ("length", "stop")
        assert comp.usage.completion_tokens <= 3
        chunks = list(
            client.chat.completions.create(
                model=tiny_loaded.name,
                messages=[{"role": "user", "content": "thank you"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 5
        assert chunks[-1].usage.model_extra["energy"]["energy_j"] > 0
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
        assert engine().outstanding == 0


def test_sampling_rejected_explicitly_by_continuous(tiny_loaded):
    with embedded_server(tiny_loaded, scheduler="continuous", meter=FakeMeter(1.0, **FAST)) as url:
        r = httpx.post(
            url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2, "temperature": 0.7}
        )
        assert r.status_code == 400 and "greedily" in r.json()["error"]["message"]


def test_dynamic_sampling_seed_is_reproducible(tiny_loaded):
    with embedded_server(tiny_loaded, scheduler="dynamic", meter=FakeMeter(1.0, **FAST)) as url:
        body = {"prompt": "hello", "max_tokens": 6, "temperature": 1.0, "top_p": 0.9, "seed": 7}
        a = httpx.post(url + "/v1/completions", json=body).json()
        b = httpx.post(url + "/v1/completions", json=body).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_tgi_generate_and_stream(tiny_loaded):
    with embedded_server(tiny_loaded, scheduler="dynamic", meter=FakeMeter(5.0, **FAST)) as url:
        r = httpx.post(
            url + "/generate",
            json={"inputs": "hello", "parameters": {"max_new_tokens": 3, "details": True}},
        )
        assert r.status_code == 200, r.text
        d = r.json()["details"]
        assert d["generated_tokens"] == len(d["tokens"]) <= 3
        assert d["finish_reason"] in ("length", "eos_token")
        assert d["energy"]["energy_j"] > 0 and "x-energy-j" in r.headers
        with httpx.stream(
            "POST",
            url + "/generate_stream",
            json={"inputs": "hello", "parameters": {"max_new_tokens": 3}},
        ) as s:
            events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
        assert events[-1]["details"]["energy"]["energy_j"] > 0
        assert events[-1]["generated_text"] is not None
        assert all(e["details"] is None for e in events[:-1])


def test_attribution_sums_to_measured_total_in_a_burst(tiny_loaded):
    meter = FakeMeter(80.0, **FAST)
    with embedded_server(tiny_loaded, scheduler="continuous", meter=meter) as url:

        async def burst():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                rs = await asyncio.gather(
                    *[
                        c.post(
                            "/v1/completions", json={"prompt": "hello " * (i + 1), "max_tokens": 4}
                        )
                        for i in range(8)
                    ]
                )
            return [r.json()["usage"]["energy"]["energy_j"] for r in rs]

        per_response = asyncio.run(burst())
        eng = engine()
        total = eng.ledger.busy_energy_j()
        assert eng.ledger.open_accounts == 0
        assert sum(per_response) == pytest.approx(total, rel=0.01)
        assert total == pytest.approx(80.0 * eng.ledger.busy_duration_s(), rel=0.01)


def test_metrics_exposition(tiny_loaded):
    with embedded_server(tiny_loaded, scheduler="sequential", meter=FakeMeter(3.0, **FAST)) as url:
        httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2})
        resp = httpx.get(url + "/metrics")
        text = resp.text
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'joulebench_energy_joules_total{domain="gpu:0",method="fake"' in text
        assert f'joulebench_tokens_total{{model="{tiny_loaded.name}",phase="decode"' in text
        assert 'reason="length"' in text or 'reason="stop"' in text
        for name in (
            "joulebench_queue_length",
            "joulebench_batch_size",
            "joulebench_requests_total",
        ):
            assert f"# TYPE {name}" in text
        # Prometheus' own parser reads the scrape: one family per concept, typed
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["joulebench_queue_time_seconds"].type == "summary"
        assert families["joulebench_busy_seconds"].type == "counter"
        (requests,) = [s for s in families["joulebench_requests"].samples if s.value]
        assert requests.value == 1.0 and requests.labels["endpoint"] == "completions"


def test_bad_input_and_api_key(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST), api_key="s3cret"
    ) as url:
        auth = {"authorization": "Bearer s3cret"}
        assert httpx.post(url + "/v1/completions", json={"prompt": "x"}).status_code == 401
        assert httpx.get(url + "/health").status_code == 200
        r = httpx.post(url + "/v1/completions", content=b"{not json", headers=auth)
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = httpx.post(
            url + "/v1/completions", json={"prompt": "hi", "max_tokens": 10_000}, headers=auth
        )
        assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
        too_long = "hello " * (tiny_loaded.context_length + 10)
        r = httpx.post(
            url + "/v1/completions", json={"prompt": too_long, "max_tokens": 2}, headers=auth
        )
        assert r.status_code == 400 and "context" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "hi", "n": 2}, headers=auth)
        assert r.status_code == 400 and "n=2" in r.json()["error"]["message"]
        ok = httpx.post(
            url + "/v1/completions", json={"prompt": "hi", "max_tokens": 1}, headers=auth
        )
        assert ok.status_code == 200


def test_overload_gives_429_with_retry_after(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST), max_queue=1
    ) as url:

        async def flood():
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                return await asyncio.gather(
                    *[
                        c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 20})
                        for _ in range(8)
                    ]
                )

        rs = asyncio.run(flood())
        codes = [r.status_code for r in rs]
        assert 429 in codes and 200 in codes
        r429 = next(r for r in rs if r.status_code == 429)
        assert r429.headers["retry-after"] == "1"


@pytest.mark.parametrize("scheduler", ["continuous", "dynamic"])
def test_disconnect_mid_stream_frees_the_slot(tiny_loaded, scheduler):
    with embedded_server(
        tiny_loaded, scheduler=scheduler, meter=FakeMeter(1.0, **FAST), default_max_tokens=200
    ) as url:
        with httpx.stream(
            "POST",
            url + "/v1/completions",
            json={"prompt": "hello", "max_tokens": 200, "stream": True},
        ) as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    break  # first token arrived: hang up
        eng = engine()
        deadline = time.monotonic() + 10
        while eng.outstanding and time.monotonic() < deadline:
            time.sleep(0.02)
        assert eng.outstanding == 0
        text = httpx.get(url + "/metrics").text
        assert 'reason="cancelled"' in text


def test_unknown_scheduler_lists_known(tiny_loaded):
    with (
        pytest.raises(UnknownName, match="continuous, dynamic, sequential"),
        embedded_server(tiny_loaded, scheduler="bogus", meter=FakeMeter(1.0, **FAST)),
    ):
        pass


def test_a_failing_request_gets_500_and_the_server_lives(tiny_loaded, monkeypatch):
    original = tiny_loaded.model.generate

    def flaky(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 20:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "generate", flaky)
    with embedded_server(tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST)) as url:
        bad = httpx.post(url + "/v1/completions", json={"prompt": "hello " * 30, "max_tokens": 2})
        assert bad.status_code == 500 and "injected failure" in bad.json()["error"]["message"]
        good = httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2})
        assert good.status_code == 200
