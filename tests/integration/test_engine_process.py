"""Launching an engine process: never ready (timeout, logs shown, nothing left), exits early,
ignores SIGTERM (SIGKILL after the grace period); and /metrics scraped from a stub that speaks
vLLM's and TGI's formats."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from joulebench.load.engines.process import EngineNotReady, group_alive, launched, pid_running
from joulebench.load.engines.scrape import MetricsScraper
from joulebench.load.engines.session import free_port

pytestmark = pytest.mark.integration

#: An "engine" that starts a worker child (same process group), logs, and never serves.
NEVER_READY = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
print("loading weights 1/3", flush=True)
print("CUDA out of memory (pretend)", flush=True)
time.sleep(600)
"""
IGNORES_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
print("serving", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_running(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if pid_running(p)]


def test_never_ready_times_out_with_logs_and_leaves_nothing(tmp_path) -> None:
    script, pids = tmp_path / "engine.py", tmp_path / "pids"
    script.write_text(NEVER_READY)
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with (
        pytest.raises(EngineNotReady) as err,
        launched([sys.executable, str(script), str(pids)], url, tmp_path / "e.log",
                 ready_timeout_s=2.0, grace_s=2.0),
    ):  # fmt: skip
        pytest.fail("an engine that never serves must not be yielded")
    assert time.monotonic() - t0 < 10.0
    message = str(err.value)
    assert "did not answer" in message and "within 2 s" in message
    assert "CUDA out of memory (pretend)" in message and "loading weights" in message
    leader, child = (int(x) for x in pids.read_text().split())
    assert _wait_gone([leader, child]) == []
    assert not group_alive(leader)


def test_engine_that_exits_before_serving_says_so(tmp_path) -> None:
    cmd = [sys.executable, "-c", "import sys; print('bad flag --foo', flush=True); sys.exit(3)"]
    url = f"http://127.0.0.1:{free_port()}"
    with (
        pytest.raises(EngineNotReady, match=r"exited with status 3(.|\n)*bad flag --foo"),
        launched(cmd, url, tmp_path / "e.log", ready_timeout_s=30.0),
    ):
        pytest.fail("an engine that exited must not be yielded")


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(IGNORES_TERM)
    port = free_port()
    with launched([sys.executable, str(script), str(port)], f"http://127.0.0.1:{port}",
                  tmp_path / "e.log", ready_timeout_s=30.0, grace_s=0.5) as engine:  # fmt: skip
        assert engine.ready_s is not None and engine.ready_path == "/health"
        pid = engine.pid
        assert pid is not None and pid_running(pid)
    assert engine.stopped_by == "SIGKILL" and engine.exit_code == -9
    assert not pid_running(pid) and not group_alive(pid)
    assert "serving" in (tmp_path / "e.log").read_text()


VLLM_TEXT = (
    "# TYPE vllm:num_requests_running gauge\n"
    'vllm:num_requests_running{{model_name="m"}} {running}\n'
    'vllm:num_requests_waiting{{model_name="m"}} {waiting}\n'
    'vllm:kv_cache_usage_perc{{model_name="m"}} 0.5\n'
)
TGI_TEXT = "tgi_batch_current_size {running}\ntgi_queue_size {waiting}\n"


@pytest.fixture(params=["vllm", "tgi"])
def metrics_stub(request):
    """A loopback server whose /metrics counts up in the engine's format (running = scrapes)."""
    fmt = VLLM_TEXT if request.param == "vllm" else TGI_TEXT
    hits = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            hits["n"] += 1
            body = fmt.format(running=hits["n"], waiting=2 * hits["n"]).encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", request.param
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scraper_reads_the_engine_format_at_its_rate(metrics_stub) -> None:
    url, engine = metrics_stub
    with MetricsScraper(url, hz=20.0) as scraper:
        time.sleep(0.5)
    samples = scraper.samples
    assert 5 <= len(samples) <= 15, len(samples)  # ~20 Hz over 0.5 s, plus both edges
    assert [s["running"] for s in samples] == list(range(1, len(samples) + 1))
    assert all(s["waiting"] == 2 * s["running"] for s in samples)
    assert ("kv_cache_usage" in samples[0]) is (engine == "vllm")
    times = [s["t_s"] for s in samples]
    assert times == sorted(times)
    d = scraper.to_dict()
    assert d["note"] is None and "running" in d["quantities"]


def test_scraper_without_metrics_says_why(tmp_path) -> None:
    with MetricsScraper(f"http://127.0.0.1:{free_port()}", hz=20.0) as scraper:
        time.sleep(0.1)
    d = scraper.to_dict()
    assert d["samples"] == [] and "ConnectError" in d["note"]
