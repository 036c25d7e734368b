"""The embedded server through ``huggingface_hub.InferenceClient(base_url=...)``, TGI's own client:
``POST /`` (streamed and not), token ``index``, stop sequences kept, TGI's error classes, ``/info``.
"""

from __future__ import annotations

import httpx
import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

hub = pytest.importorskip("huggingface_hub")
from huggingface_hub.errors import OverloadedError, ValidationError  # noqa: E402

pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}


@pytest.fixture(autouse=True)
def loopback_only_is_not_offline(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1; these calls only reach a loopback server."""
    monkeypatch.setattr(hub.constants, "is_offline_mode", lambda: False)


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


@pytest.fixture(scope="module")
def served(tiny_loaded):
    with embedded_server(tiny_loaded, scheduler="dynamic", meter=FakeMeter(5.0, **FAST)) as url:
        yield url, embedded_server.last  # type: ignore[attr-defined]


def test_text_generation_plain_details_and_stream(served):
    url, engine = served
    client = hub.InferenceClient(base_url=url)
    text = client.text_generation("hello there", max_new_tokens=5)
    assert isinstance(text, str) and text
    out = client.text_generation("hello there", max_new_tokens=5, details=True)
    assert out.generated_text == text  # greedy: the same text
    assert out.details.finish_reason in ("length", "eos_token")
    assert out.details.generated_tokens == len(out.details.tokens) <= 5
    chunks = list(
        client.text_generation("hello there", max_new_tokens=5, stream=True, details=True)
    )
    assert [c.index for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[-1].generated_text == text and chunks[-1].details is not None
    assert "".join(c.token.text for c in chunks) == text
    assert engine.outstanding == 0


def test_stop_sequence_is_kept_in_generated_text(served):
    url, _ = served
    client = hub.InferenceClient(base_url=url)
    full = client.text_generation("thank you", max_new_tokens=12)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), f"generated text too short to pick a stop string: {full!r}"
    out = client.text_generation("thank you", max_new_tokens=12, stop=[stop], details=True)
    assert out.details.finish_reason == "stop_sequence"
    assert out.generated_text.endswith(stop)  # TGI keeps the stop sequence
    assert full.startswith(out.generated_text)


def test_tgi_errors_are_tgi_shaped_and_map_to_the_client_classes(served, tiny_loaded):
    url, _ = served
    client = hub.InferenceClient(base_url=url)
    with pytest.raises(ValidationError, match="context"):
        client.text_generation("hello " * (tiny_loaded.context_length + 5), max_new_tokens=2)
    with pytest.raises(ValidationError, match="stop sequences"):
        client.text_generation("hello", max_new_tokens=2, stop=list("abcde"))
    r = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 0}})
    assert r.status_code == 422 and "max_new_tokens must be ≥ 1" in r.json()["error"]
    r = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"seed": 2**70}})
    assert r.status_code == 422
    assert r.json()["error_type"] == "validation" and "seed" in r.json()["error"]
    assert set(r.json()) == {"error", "error_type"}
    r = httpx.post(
        url + "/generate_stream",
        content=b'{"inputs": "hi", "parameters": {"temperature": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "parameters.temperature" in r.json()["error"]


def test_overload_is_an_overloaded_error(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST), max_queue=1
    ) as url:
        import concurrent.futures

        client = hub.InferenceClient(base_url=url)

        def call(_: int) -> str:
            try:
                client.text_generation("hello", max_new_tokens=20)
            except OverloadedError:
                return "overloaded"
            return "ok"

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(8)))
    assert "overloaded" in outcomes and "ok" in outcomes


def test_info_has_tgi_fields(served, tiny_loaded):
    url, _ = served
    info = httpx.get(url + "/info").json()
    assert info["model_id"] == tiny_loaded.name
    assert info["max_total_tokens"] == tiny_loaded.context_length
    assert info["max_input_tokens"] == tiny_loaded.context_length - 1
    assert info["max_stop_sequences"] == 4 and info["model_pipeline_tag"] == "text-generation"
    assert info["joulebench"]["scheduler"]["name"] == "dynamic"
