"""``joulebench shape`` as a real process, and ``shape-compare``/``shape-sweep`` through Typer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from joulebench.cli.app import app
from joulebench.load.stub import StubConfig, stub_server
from joulebench.results.shaping import validate_comparison, validate_sweep
from joulebench.shape.runner import serve_in_thread
from joulebench.shape.testing import EchoUpstream

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shape_command_serves_a_gateway() -> None:
    port = _free_port()
    with serve_in_thread(EchoUpstream()) as upstream:
        proc = subprocess.Popen(
            [sys.executable, "-m", "joulebench", "shape", "--upstream", upstream,
             "--policy", "window:2,100ms", "--max-delay-ms", "60", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(base + "/health", timeout=1).json()
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(proc.stderr.read().decode()) from None
                    time.sleep(0.1)
            assert health["policy"]["spec"] == "window:2,100ms"
            assert health["policy"]["bound_ms"] == pytest.approx(60)
            r = httpx.post(base + "/v1/chat/completions", json={"id": "cli"}, timeout=5)
            assert r.status_code == 200 and r.json()["id"] == "cli"
            assert 40 <= float(r.headers["x-gateway-delay-ms"]) <= 60 + 100
            metrics = httpx.get(base + "/metrics").text.splitlines()
            assert "joulebench_gateway_requests_released_total 1.0" in metrics
        finally:
            proc.terminate()
            proc.wait(10)


def test_shape_command_rejects_bad_input() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["shape", "--upstream", "localhost:8000"])
    assert res.exit_code == 2 and "http(s) URL" in res.output
    res = runner.invoke(app, ["shape", "--upstream", "http://h", "--policy", "window:x,1ms"])
    assert res.exit_code == 2 and "must be an integer" in res.output


def test_shape_compare_and_sweep_commands(tmp_path) -> None:
    runner = CliRunner()
    with stub_server(StubConfig(tokens=3, token_delay_s=0.003)) as url:
        common = ["--url", url, "--arrival", "poisson:40", "--n", "10", "--output-length", "3",
                  "--meter", "fake", "--idle-s", "0.2", "--json"]  # fmt: skip
        res = runner.invoke(app, ["shape-compare", "--policy", "cadence:50ms", *common])
        assert res.exit_code == 0, res.output
        out = validate_comparison(json.loads(res.stdout))
        assert out["shaped"]["gateway"]["released"] == 10
        assert out["config"]["idle_power_w"] is not None
        table = [a for a in common if a != "--json"]
        res = runner.invoke(app, ["shape-compare", "--policy", "slo:80ms", *table])
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())  # rich wraps long lines
        assert "slo:80ms" in text and "releases, mean group" in text
        assert "batch predicted" in text and "vs realised" in text and "passthrough" in text
        res = runner.invoke(
            app,
            ["shape-sweep", "--policy", "cadence:40ms", "--policy", "window:3,50ms",
             "--policy", "slo:60ms", "--out", str(tmp_path), *common],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    sweep = validate_sweep(json.loads((tmp_path / "sweep.json").read_text()))
    assert [p["policy"] for p in sweep["points"]] == [
        "direct", "cadence:40ms", "window:3,50ms", "slo:60ms",
    ]  # fmt: skip
    slo_run = sweep["runs"][3]
    assert slo_run["gateway"]["released"] == 10 and slo_run["added_delay_ms"]["max"] <= 60
    assert len(slo_run["gateway"]["decisions"]["releases"]) == slo_run["gateway"]["groups"]
    assert (tmp_path / "pareto.png").stat().st_size > 1000
