from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from joulebench.errors import UnknownName
from joulebench.load.clients import make_client
from joulebench.load.metrics import RequestRecord


def sse(*events: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def run(protocol, body: bytes, *, status=200, headers=None, tokenizer=None, model="m"):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["json"] = json.loads(request.content)
        return httpx.Response(status, content=body, headers=headers or {})

    client = make_client(protocol, model=model, tokenizer=tokenizer)
    ticks = itertools.count(start=1.0, step=0.5)

    async def go() -> RequestRecord:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://x"
        ) as http:
            return await client.send(http, RequestRecord(0, 0.0), "a b c", 7, lambda: next(ticks))

    return asyncio.run(go()), seen


def chat_chunk(text, finish=None):
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_openai_chat_payload_usage_and_energy_extension():
    body = sse(
        chat_chunk("Hel"),
        chat_chunk("lo", "stop"),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 2,
                "energy": {"energy_j": 1.5, "method": "counter"},
            },
        },
    )
    rec, seen = run("openai-chat", body)
    assert seen["path"] == "/v1/chat/completions"
    assert seen["json"]["stream"] is True
    assert seen["json"]["stream_options"] == {"include_usage": True}
    assert seen["json"]["max_tokens"] == 7 and seen["json"]["model"] == "m"
    assert seen["json"]["messages"] == [{"role": "user", "content": "a b c"}]
    assert rec.ok and rec.output_tokens == 2 and rec.input_tokens == 3
    assert rec.token_source == "usage"
    assert rec.server_energy_j == 1.5 and rec.server_energy_method == "counter"
    assert rec.first_token_s is not None and rec.first_token_s > rec.actual_send_s


def test_energy_and_queue_headers_are_captured():
    body = sse({"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]})
    rec, seen = run(
        "openai-completions",
        body,
        headers={"x-energy-j": "0.25", "x-energy-method": "estimated", "x-queue-time": "12.5"},
    )
    assert seen["json"]["prompt"] == "a b c"
    assert rec.server_energy_j == 0.25 and rec.server_energy_method == "estimated"
    assert rec.queue_ms == 12.5


def test_tokenizer_fallback_then_chunk_count():
    body = sse(chat_chunk("one "), chat_chunk("two three", "stop"))
    rec, _ = run("openai-chat", body, tokenizer=lambda text: len(text.split()))
    assert rec.output_tokens == 3 and rec.token_source == "tokenizer"
    assert rec.input_tokens == 3
    rec, _ = run("openai-chat", body)
    assert rec.output_tokens == 2 and rec.token_source == "chunks"
    assert rec.input_tokens is None


def test_tgi_stream_with_details():
    events = [
        {"token": {"id": 1, "text": " a", "special": False}, "generated_text": None},
        {
            "token": {"id": 2, "text": "</s>", "special": True},
            "generated_text": " a",
            "details": {"finish_reason": "eos_token", "generated_tokens": 2},
        },
    ]
    rec, seen = run("tgi", sse(*events, done=False))
    assert seen["path"] == "/generate_stream"
    assert seen["json"]["parameters"]["max_new_tokens"] == 7
    assert rec.ok and rec.output_tokens == 2 and rec.text_parts == [" a"]


@pytest.mark.parametrize(
    ("protocol", "body", "match"),
    [
        ("openai-chat", sse(chat_chunk("a"), {"error": {"message": "boom"}}), "boom"),
        ("openai-chat", b"data: {not json\n\n", "malformed SSE"),
        ("openai-chat", sse(chat_chunk("a"), done=False), "before the server said"),
        (
            "tgi",
            sse({"token": {"text": "a"}, "generated_text": None}, done=False),
            "before the server said",
        ),
    ],
)
def test_broken_streams_fail(protocol, body, match):
    rec, _ = run(protocol, body)
    assert not rec.ok and match in rec.error
    assert rec.end_s is not None


def test_http_errors_keep_status_and_body():
    rec, _ = run("openai-chat", b'{"error": "model not loaded"}', status=503)
    assert not rec.ok and rec.http_status == 503
    assert "HTTP 503" in rec.error and "model not loaded" in rec.error


def test_unknown_protocol_lists_known():
    with pytest.raises(UnknownName, match="openai-chat, openai-completions, tgi"):
        make_client("vllm")


ENERGY = {"energy_j": 0.5, "method": "timeline-token-work", "meter_method": "fake", "queue_ms": 1}
LABEL = "timeline-token-work;meter=fake"


def test_streamed_energy_label_matches_the_plain_header_for_every_protocol():
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "energy": ENERGY, "queue_ms": 4.5}
    chat, _ = run("openai-chat", sse(chat_chunk("a", "stop"), {"choices": [], "usage": usage}))
    done = {"token": {"text": "a"}, "generated_text": "a",
            "details": {"finish_reason": "length", "generated_tokens": 1, "energy": ENERGY,
                        "queue_ms": 2.0}}  # fmt: skip
    tgi, _ = run("tgi", sse(done, done=False))
    # a server that only labels its header (older joulebench serve, or another server)
    plain, _ = run(
        "openai-completions",
        sse({"choices": [{"text": "a", "finish_reason": "stop"}]}),
        headers={"x-energy-j": "0.5", "x-energy-method": LABEL},
    )
    for rec in (chat, tgi, plain):
        assert rec.ok and rec.server_energy_j == 0.5 and rec.server_energy_method == LABEL
    assert chat.queue_ms == 4.5 and tgi.queue_ms == 2.0  # queue time from the body extension


def test_energy_label_prefers_the_servers_label():
    from joulebench.load.clients import energy_label

    assert energy_label({"label": "x;meter=y", "method": "x"}) == "x;meter=y"
    assert energy_label({"method": "m"}) == "m"
    assert energy_label({"energy_j": 1.0}) is None
