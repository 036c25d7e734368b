"""OpenAI fidelity of the embedded server through the official ``openai`` client: error classes
with ``param`` and a string ``code``, ``models.retrieve``, unknown models, unsupported parameters,
edge validation (NaN, surrogates, 64-bit seeds, token ids), the body limit, keep-alive after bad
requests, non-streamed disconnects, the OpenAPI schema, and requests in = answers out.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import httpx
import pytest

from joulebench.meters.fake import FakeMeter
from joulebench.serve.launch import embedded_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.integration

FAST = {"update_period_s": 1e-4}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    from joulebench.workloads.models import load_model

    return load_model(str(tiny_model_dir), "fp32")


@pytest.fixture(scope="module")
def served(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="dynamic", meter=FakeMeter(5.0, **FAST), max_body_mib=0.25
    ) as url:
        yield url, embedded_server.last  # type: ignore[attr-defined]


def _client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_models_retrieve_and_unknown_model(served, tiny_loaded):
    url, _ = served
    client = _client(url)
    assert client.models.retrieve(tiny_loaded.name).id == tiny_loaded.name
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=1)
    assert e.value.code == "model_not_found" and e.value.param == "model"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"seed": 2**70}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"temperature": 7.0}, "temperature"),
    ],
)
def test_refusals_are_400_naming_the_parameter(served, tiny_loaded, kwargs, param):
    url, _ = served
    with pytest.raises(openai.BadRequestError) as e:
        _client(url).chat.completions.create(
            model=tiny_loaded.name, messages=[{"role": "user", "content": "hi"}], **kwargs
        )
    assert e.value.status_code == 400 and e.value.param == param
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the client unwraps "error"
    assert body["code"] is None or isinstance(body["code"], str)


def test_out_of_vocabulary_token_ids_are_400(served, tiny_loaded):
    url, engine = served
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary") as e:
        _client(url).completions.create(
            model=tiny_loaded.name, prompt=[1, engine.vocab_size], max_tokens=2
        )
    assert e.value.param == "prompt"


BAD_BODIES = [
    (b'{"prompt": "hi", "max_tokens": 2, "temperature": NaN}', "temperature"),
    (b'{"prompt": "hi", "max_tokens": 2, "top_p": Infinity}', "top_p"),
    (b'{"prompt": "hi \\ud800", "max_tokens": 2}', "prompt"),
    (b'{"prompt": "hi", "max_tokens": 2, "seed": 36893488147419103232}', "seed"),
    (b'{"prompt": "hi", "max_tokens": 2, "seed": 1e999}', "seed"),
    (b'{"prompt": [5, -1], "max_tokens": 2}', "prompt[1]"),
    (b'{"prompt": "hi", "max_tokens": "many"}', "max_tokens"),
    (b'{"max_tokens": 2}', "prompt"),
    (b"\xff\xfe", None),
]


def _http(sock: socket.socket, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive socket; returns (status, body)."""
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    return int(head.split()[1]), rest[:length]


def test_bad_bodies_are_400_and_keep_the_connection_alive(served):
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for body, param in BAD_BODIES:
            status, answer = _http(sock, body)
            assert status == 400, (body, answer)
            err = httpx.Response(200, content=answer).json()["error"]
            assert err["param"] == param, (body, err)
            assert body.decode("utf-8", "replace")[:20] not in err["message"] or param is None
        status, answer = _http(sock, b'{"prompt": "hello", "max_tokens": 2}')
        assert status == 200  # same socket: never reset after a bad request


def test_body_over_the_limit_is_413_and_not_echoed(served, tiny_loaded):
    url, _ = served
    huge = "hello " * 60_000  # ≈ 360 KB > 0.25 MiB
    r = httpx.post(url + "/v1/completions", json={"prompt": huge, "model": tiny_loaded.name})
    assert r.status_code == 413 and len(r.content) < 500
    assert "0.25 MiB" in r.json()["error"]["message"]
    r = httpx.post(url + "/generate", json={"inputs": huge})
    assert r.status_code == 413 and r.json()["error_type"] == "validation"


def test_async_clients_get_the_413_of_a_body_far_over_the_limit(served, tiny_loaded):
    """httpx's async client (the gateway's, ``openai.AsyncOpenAI``'s) writes the whole body
    before it reads: a 413 sent while it writes reached it as a reset connection."""
    url, _ = served
    huge = "hello " * 700_000  # ≈ 4 MB, 16 × the 0.25 MiB limit

    async def send() -> None:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for _ in range(2):  # and again on the same kept-alive connection
            with pytest.raises(openai.APIStatusError) as e:
                await client.completions.create(model=tiny_loaded.name, prompt=huge, max_tokens=1)
            assert e.value.status_code == 413 and e.value.code == "request_too_large"
        ok = await client.completions.create(model=tiny_loaded.name, prompt="hi", max_tokens=1)
        assert ok.choices[0].finish_reason == "length"
        await client.close()

    asyncio.run(send())


def test_bodies_sent_as_form_data_are_read_as_json(served, tiny_loaded):
    """``curl -d '{...}'`` labels its JSON application/x-www-form-urlencoded."""
    url, _ = served
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = httpx.post(
        url + "/v1/completions", content=b'{"prompt": "hi", "max_tokens": 2}', headers=form
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    r = httpx.post(url + "/v1/completions", content=b'{"prompt": "hi", "n": 3}', headers=form)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = httpx.post(url + "/generate", content=b'{"inputs": "hi"}', headers=form)
    assert r.status_code == 200 and "generated_text" in r.json()


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"", "no body"), (b"[1, 2]", "must be a JSON object"), (b'"hi"', "must be a JSON object")],
)
def test_a_missing_or_non_object_body_is_named(served, body, says):
    url, _ = served
    r = httpx.post(url + "/v1/completions", content=body, headers=JSON)
    assert r.status_code == 400 and says in r.json()["error"]["message"]
    r = httpx.post(url + "/generate", content=body, headers=JSON)
    assert r.status_code == 422 and says in r.json()["error"]


def test_a_full_queue_is_a_rate_limit_error(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST), max_queue=1
    ) as url:

        async def flood() -> list[object]:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            calls = [
                client.completions.create(model=tiny_loaded.name, prompt="hello", max_tokens=20)
                for _ in range(8)
            ]
            out = await asyncio.gather(*calls, return_exceptions=True)
            await client.close()
            return out

        outcomes = asyncio.run(flood())
    limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert limited and len(limited) < len(outcomes)
    assert all(o.response.headers["retry-after"] == "1" for o in limited)
    assert all(o.type == "rate_limit_error" and o.body["param"] is None for o in limited)
    assert all(not isinstance(o, Exception) for o in outcomes if o not in limited)


def test_a_missing_api_key_is_a_declared_401_in_each_protocols_shape(tiny_loaded):
    with embedded_server(
        tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST), api_key="s3cret"
    ) as url:
        with pytest.raises(openai.AuthenticationError) as e:
            _client(url).models.list()
        assert e.value.type == "authentication_error"
        schema = httpx.get(url + "/openapi.json").json()
        guarded = [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
        for path, method, op in guarded:
            if path == "/health":
                continue
            body = {} if method == "post" else None
            r = httpx.request(method, url + path.replace("{model_id}", "x"), json=body)
            assert r.status_code == 401 and "401" in op["responses"], (method, path)
            if path in ("/", "/generate", "/generate_stream", "/info"):
                assert set(r.json()) == {"error", "error_type"}, path
            else:
                assert r.json()["error"]["type"] == "authentication_error", path


def test_404_405_and_500_are_openai_shaped(tiny_loaded, monkeypatch):
    original = tiny_loaded.model.generate

    def flaky(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 20:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "generate", flaky)
    with embedded_server(tiny_loaded, scheduler="sequential", meter=FakeMeter(1.0, **FAST)) as url:
        client = _client(url)
        with pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model=tiny_loaded.name, prompt="hello " * 30, max_tokens=2)
        assert e.value.type == "server_error" and "injected failure" in e.value.message
        r = httpx.get(url + "/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = httpx.get(url + "/v1/completions")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert "detail" not in r.json()


@pytest.mark.parametrize("scheduler", ["sequential", "dynamic", "continuous"])
def test_non_streamed_client_leaving_cancels_the_request(tiny_loaded, scheduler):
    with embedded_server(
        tiny_loaded, scheduler=scheduler, meter=FakeMeter(1.0, **FAST), default_max_tokens=4000
    ) as url:
        eng = embedded_server.last  # type: ignore[attr-defined]
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                url + "/v1/completions", json={"prompt": "hello", "max_tokens": 4000}, timeout=1.0
            )
        deadline = time.monotonic() + 10
        while eng.outstanding and time.monotonic() < deadline:
            time.sleep(0.02)
        assert eng.outstanding == 0, "the abandoned request kept generating"
        assert time.monotonic() - t0 < 8
        assert 'reason="cancelled"' in httpx.get(url + "/metrics").text


def test_openapi_declares_errors_and_sse(served):
    url, _ = served
    schema = httpx.get(url + "/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions"):  # OpenAI: invalid input is 400
        responses = schema["paths"][path]["post"]["responses"]
        assert {"400", "401", "404", "413", "429", "500"} <= set(responses)
        assert "422" not in responses
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/OpenAIError"
        )
    for path in ("/", "/generate", "/generate_stream"):  # TGI: invalid input is 422, TGI-shaped
        responses = schema["paths"][path]["post"]["responses"]
        assert {"401", "422", "413", "429"} <= set(responses)
        assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/TGIError"
        )
    assert "HTTPValidationError" not in str(schema)
    for path in ("/v1/completions", "/v1/chat/completions", "/", "/generate_stream"):
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]
        assert "text/event-stream" in content


def _requests_total(metrics_text: str) -> int:
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics_text.splitlines()
        if line.startswith("joulebench_requests_total{")
    )


def test_requests_in_equal_answers_out(served, tiny_loaded):
    """A mixed burst (valid, invalid, streamed, TGI): each request gets exactly one answer, the
    engine finishes exactly the admitted ones, nothing stays in flight."""
    url, engine = served
    before = _requests_total(httpx.get(url + "/metrics").text)
    name = tiny_loaded.name
    bodies = [
        ("/v1/completions", {"prompt": "hello", "max_tokens": 3, "model": name}),
        ("/v1/completions", {"prompt": [1, 10**6], "max_tokens": 3}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": [], "max_tokens": 2}),
        ("/generate", {"inputs": "hello", "parameters": {"max_new_tokens": 2}}),
        ("/", {"inputs": "hello", "stream": True, "parameters": {"max_new_tokens": 2}}),
        ("/", {"inputs": "", "parameters": {"max_new_tokens": 2}}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": True}),
    ] * 3

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(*[c.post(p, json=b) for p, b in bodies])

    rs = asyncio.run(burst())
    assert len(rs) == len(bodies)
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 5 * 3 and all(r.status_code in (200, 400, 422) for r in rs)
    for r in ok:  # every answer is complete, once
        if r.headers["content-type"].startswith("text/event-stream"):
            events = [e for e in r.text.split("\n\n") if e.startswith("data:")]
            finals = [e for e in events if '"finish_reason": "' in e or '"details": {' in e]
            assert len(finals) == 1, r.text
    deadline = time.monotonic() + 10
    while engine.outstanding and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.outstanding == 0 and engine.ledger.open_accounts == 0
    after = _requests_total(httpx.get(url + "/metrics").text)
    assert after - before == len(ok)  # refused requests never reached the engine
