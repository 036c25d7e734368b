"""``joulebench load`` against ``transformers serve``: a real OpenAI-compatible server we did not
write, with a tiny local model, on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from joulebench.load.runner import run_load
from joulebench.meters.fake import FakeMeter

pytestmark = pytest.mark.integration

STARTUP_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from joulebench.workloads.tiny import tiny_model_path

        return tiny_model_path()


@pytest.fixture(scope="module")
def transformers_server(model_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("transformers-serve")
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed (pip install 'transformers[serving]')")
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            str(exe if exe.exists() else "transformers"),
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.skip(
                    f"transformers serve exited ({proc.returncode}): "
                    f"{(tmp_path / 'serve.log').read_text()[-500:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"transformers serve did not answer /health within {STARTUP_S:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions"])
def test_load_against_transformers_serve(transformers_server, model_dir, protocol):
    result = run_load(
        transformers_server,
        protocol,
        "fixed:50ms",
        ["hello there", "what is energy"],
        n=4,
        output_length=6,
        model=str(model_dir),
        timeout_s=60.0,
        meter=FakeMeter(25.0, update_period_s=0.01),
        idle_power_w=5.0,
        timeline_hz=50.0,
    )
    j = result.to_json()
    assert j["requests"]["ok"] == 4, j["requests"]
    for r in result.records:
        assert r.first_token_s is not None and r.first_token_s <= r.end_s
        assert 1 <= r.output_tokens <= 6
    assert j["ttft_ms"]["p50"] > 0 and j["e2e_ms"]["p99"] >= j["ttft_ms"]["p50"]
    assert j["energy"]["attribution_sum_rel_err"] < 0.01
    assert j["energy"]["per_request_wh"]["idle_subtracted"] is not None
