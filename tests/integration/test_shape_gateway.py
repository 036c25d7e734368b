"""The shaping gateway on loopback, in front of the scriptable echo upstream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest

from joulebench.shape.runner import run_gateway, serve_in_thread
from joulebench.shape.testing import EchoUpstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, EchoUpstream]]:
    app = EchoUpstream()
    with serve_in_thread(app) as url:
        yield url, app


def _wait_for(cond, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_200_concurrent_requests_no_loss_duplication_or_reordering(upstream) -> None:
    url, app = upstream
    ids = [f"c{i}" for i in range(200)]
    with run_gateway(url, "window:16,40ms") as gw:

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gw.url, timeout=20) as client:
                paths = ["/v1/chat/completions", "/v1/completions", "/generate"]
                return await asyncio.gather(
                    *[client.post(paths[i % 3], json={"id": rid}) for i, rid in enumerate(ids)]
                )

        responses = asyncio.run(main())
        snapshot = gw.gateway.metrics.snapshot()
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["id"] for r in responses] == ids  # every client got its own answer
    assert all(r.headers["x-energy-j"] == "0.5" for r in responses)  # energy headers pass
    seen = [s for s in app.seen if isinstance(s.request_id, str) and s.request_id.startswith("c")]
    assert sorted(s.request_id for s in seen) == sorted(ids)  # upstream saw each exactly once
    by_seq = {int(r.headers["x-gateway-seq"]): r for r in responses}
    assert sorted(by_seq) == list(range(200))
    assert {s.gateway_seq for s in seen} == set(range(200))
    groups: dict[int, list[httpx.Response]] = defaultdict(list)
    for r in responses:
        groups[int(r.headers["x-gateway-group"])].append(r)
    for members in groups.values():
        members.sort(key=lambda r: int(r.headers["x-gateway-position"]))
        size = int(members[0].headers["x-gateway-group-size"])
        assert [int(r.headers["x-gateway-position"]) for r in members] == list(range(size))
        seqs = [int(r.headers["x-gateway-seq"]) for r in members]
        assert seqs == sorted(seqs)  # a group keeps arrival order
        assert all(float(r.headers["x-gateway-delay-ms"]) >= 0 for r in members)
    assert max(len(m) for m in groups.values()) == 16
    assert snapshot["released"] == 200 and snapshot["rejected"] == 0
    assert snapshot["mean_group_size"] == pytest.approx(200 / len(groups))


def test_streams_pass_through_chunk_by_chunk(upstream) -> None:
    url, _ = upstream
    with run_gateway(url, "passthrough") as gw, httpx.Client(base_url=gw.url, timeout=10) as client:
        for path, body in [
            ("/v1/chat/completions", {"id": "s1", "stream": True}),
            ("/generate_stream", {"id": "s2"}),
        ]:
            arrivals: list[tuple[float, bytes]] = []
            t0 = time.monotonic()
            with client.stream(
                "POST", path, json={**body, "chunks": 4, "chunk_delay_s": 0.12}
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                assert r.headers["x-energy-j"] == "0.25"
                assert "x-gateway-delay-ms" in r.headers
                for chunk in r.iter_raw():
                    arrivals.append((time.monotonic() - t0, chunk))
            events = b"".join(c for _, c in arrivals).split(b"\n\n")
            assert events[-2] == b"data: [DONE]" and len(events) == 6
            # the first token reached the client long before the stream ended
            assert arrivals[0][0] < arrivals[-1][0] - 0.25
            assert len(arrivals) >= 4


def test_upstream_status_codes_and_bodies_are_passed_on(upstream) -> None:
    url, _ = upstream
    with (
        run_gateway(url, "cadence:20ms") as gw,
        httpx.Client(base_url=gw.url, timeout=10) as client,
    ):
        r = client.post("/v1/chat/completions", json={"id": "e1", "status": 500})
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "scripted failure for e1"
        r = client.post("/generate", json={"id": "e2", "status": 400})
        assert r.status_code == 400 and r.json()["error"]["type"] == "scripted"
        r = client.post(
            "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and "malformed JSON" in r.json()["error"]["message"]
        assert client.get("/v1/models").json()["data"][0]["id"] == "echo"
        # wrong methods and unknown paths are the upstream's to answer, in its shape
        r = client.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        r = client.get("/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["policy"]["spec"] == "cadence:20ms"
        text = client.get("/metrics").text
    lines = text.splitlines()
    assert 'joulebench_gateway_responses_total{status="500"} 1.0' in lines
    assert 'joulebench_gateway_responses_total{status="422"} 1.0' in lines
    assert "joulebench_gateway_group_size_count 3.0" in lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_upstream_gives_502_with_reason() -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with (
        run_gateway(dead, "passthrough") as gw,
        httpx.Client(base_url=gw.url, timeout=10) as client,
    ):
        r = client.post("/v1/chat/completions", json={"id": 1})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "upstream_unreachable" and dead in err["message"]
        assert err["type"] == "server_error" and err["param"] is None
        r = client.post("/generate", json={"id": 2})  # TGI routes answer in TGI's error form
        assert r.status_code == 502 and r.json()["error_type"] == "upstream_unreachable"
        assert client.get("/v1/models").status_code == 502
        metrics = gw.gateway.metrics.snapshot()
    assert metrics["upstream_errors"] == {"unreachable": 3}


def test_upstream_timeout_gives_504_and_cancels_upstream(upstream) -> None:
    url, app = upstream
    with (
        run_gateway(url, "passthrough", upstream_timeout_s=0.3) as gw,
        httpx.Client(base_url=gw.url, timeout=10) as client,
    ):
        t0 = time.monotonic()
        r = client.post("/v1/completions", json={"id": "slow", "sleep_s": 5})
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert time.monotonic() - t0 < 3
    assert _wait_for(lambda: "slow" in app.cancelled)


def test_client_disconnect_mid_stream_cancels_upstream(upstream) -> None:
    url, app = upstream
    with run_gateway(url, "passthrough") as gw:
        with (
            httpx.Client(base_url=gw.url, timeout=10) as client,
            client.stream(
                "POST",
                "/generate_stream",
                json={"id": "gone", "chunks": 200, "chunk_delay_s": 0.05},
            ) as r,
        ):
            it = r.iter_raw()
            next(it)
            next(it)
        # leaving the block closed the connection after two chunks
        assert _wait_for(lambda: "gone" in app.cancelled)
        assert "gone" not in app.completed
        assert _wait_for(lambda: gw.gateway.metrics.client_disconnects == 1)
        assert _wait_for(lambda: gw.gateway.metrics.in_flight == 0)


def test_client_leaving_while_queued_never_reaches_upstream(upstream) -> None:
    url, app = upstream
    with run_gateway(url, "cadence:10s") as gw, httpx.Client(base_url=gw.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/completions", json={"id": "impatient"}, timeout=0.3)
        assert _wait_for(lambda: gw.gateway.metrics.cancelled_queued == 1)
        assert gw.gateway.shaper.queue_length == 0
    assert "impatient" not in [s.request_id for s in app.seen]


def _tgi_client_outcome(url: str) -> str:
    """What ``huggingface_hub.InferenceClient`` makes of a ``POST /`` through the gateway."""
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import OverloadedError

    try:
        hub.InferenceClient(base_url=url).text_generation("x", max_new_tokens=1)
    except OverloadedError:
        return "overloaded"
    except Exception as exc:  # the test says which other error it was
        return repr(exc)
    return "ok"


def test_full_queue_answers_429_with_retry_after(upstream, monkeypatch) -> None:
    url, _ = upstream
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)  # loopback only
    with run_gateway(url, "window:100,2s", max_queue=2) as gw:

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
                waiting = [
                    asyncio.create_task(client.post("/v1/completions", json={"id": f"q{i}"}))
                    for i in range(2)
                ]
                while gw.gateway.shaper.queue_length < 2:
                    await asyncio.sleep(0.01)
                rejected = await client.post("/generate", json={"id": "q2"})
                assert await asyncio.to_thread(_tgi_client_outcome, gw.url) == "overloaded"
                return [rejected, *await asyncio.gather(*waiting)]

        rejected, *held = asyncio.run(main())
    assert rejected.status_code == 429
    assert rejected.json()["error_type"] == "overloaded"  # TGI's word for it
    assert 1 <= int(rejected.headers["retry-after"]) <= 2
    assert [r.status_code for r in held] == [200, 200]  # the queued ones still complete
    assert all(float(r.headers["x-gateway-delay-ms"]) >= 1900 for r in held)


def test_gateway_errors_are_in_the_upstream_protocols_shape() -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with run_gateway(dead, "passthrough") as gw, httpx.Client(base_url=gw.url) as client:
        err = client.post("/v1/completions", json={"prompt": "x"}).json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert isinstance(err["code"], str)
        for path in ("/", "/generate", "/generate_stream"):
            r = client.post(path, json={"inputs": "x"})
            assert r.status_code == 502 and set(r.json()) == {"error", "error_type"}, path


def test_joulebench_serve_answers_pass_through_unchanged(tiny_model_dir) -> None:
    """In front of the real server: its 400/404/413/422, /v1/models/{id}, /info, POST / and a
    non-streamed disconnect all behave as they do without the gateway."""
    from joulebench.meters.fake import FakeMeter
    from joulebench.serve.launch import embedded_server
    from joulebench.workloads.models import load_model

    loaded = load_model(str(tiny_model_dir), "fp32")
    meter = FakeMeter(1.0, update_period_s=1e-4)
    with (
        embedded_server(
            loaded, scheduler="dynamic", meter=meter, default_max_tokens=4000, max_body_mib=0.25
        ) as url,
        run_gateway(url, "cadence:10ms") as gw,
        httpx.Client(timeout=30) as client,
    ):
        engine = embedded_server.last  # type: ignore[attr-defined]
        cases = [
            ("POST", "/v1/completions", {"prompt": "hi", "model": "nope"}),
            ("POST", "/v1/completions", {"prompt": "hi", "seed": 2**70}),
            ("POST", "/v1/chat/completions", {"messages": [], "max_tokens": 1}),
            ("POST", "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": -1}}),
            ("POST", "/", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}),
            ("GET", f"/v1/models/{loaded.name}", None),
            ("GET", "/v1/models/nope", None),
            ("GET", "/v1/completions", None),
            # 16 × the body limit: the gateway's client writes it all before reading the 413
            ("POST", "/v1/completions", {"prompt": "hello " * 700_000}),
            ("POST", "/generate", {"inputs": "hello " * 700_000}),
        ]
        for method, path, body in cases:
            direct = client.request(method, url + path, json=body)
            via = client.request(method, gw.url + path, json=body)
            assert via.status_code == direct.status_code, path
            assert via.json() == direct.json() or direct.status_code == 200, path
        assert client.get(gw.url + "/info").json()["model_id"] == loaded.name
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                gw.url + "/v1/completions",
                json={"prompt": "hello", "max_tokens": 4000},
                timeout=1.0,
            )
        assert _wait_for(lambda: engine.outstanding == 0, timeout_s=5.0)
        assert 'reason="cancelled"' in client.get(url + "/metrics").text
