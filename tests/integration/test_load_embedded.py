"""``joulebench load`` against joulebench's own embedded server, with every arrival process."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from joulebench.load.runner import run_load
from joulebench.meters.fake import FakeMeter

pytestmark = pytest.mark.integration

PROMPTS = ["what is a joule?", "how do batteries work?", "say something kind"]


@pytest.fixture(scope="module")
def embedded():
    launch = pytest.importorskip("joulebench.serve.launch")
    meter = FakeMeter(60.0, update_period_s=0.01)
    with launch.embedded_server(
        model="tiny", precision="fp32", scheduler="continuous", meter=meter
    ) as url:
        yield url, meter


@pytest.mark.parametrize(
    "arrival",
    ["sequential", "burst", "fixed:20ms", "uniform:5ms,30ms", "poisson:50", "gamma:50,2", "trace"],
)
def test_every_arrival_process_against_the_embedded_server(embedded, arrival, tmp_path):
    url, meter = embedded
    if arrival == "trace":
        trace = tmp_path / "t.txt"
        trace.write_text("0\n0.005\n0.04\n0.041\n")
        arrival = f"trace:{trace}"
    protocol = {"burst": "tgi", "sequential": "openai-completions"}.get(arrival, "openai-chat")
    result = run_load(
        url,
        protocol,
        arrival,
        PROMPTS,
        n=4,
        output_length=4,
        meter=meter,
        idle_power_w=20.0,
        timeline_hz=100.0,
        timeout_s=120.0,
    )
    j = result.to_json()
    assert j["requests"]["ok"] == 4, j["requests"]
    assert all(1 <= r.output_tokens <= 4 for r in result.records)
    assert j["energy"]["attribution_sum_rel_err"] < 0.01
    assert j["energy"]["per_request_wh"]["paper_whole_window"] > 0
    if arrival == "sequential":
        recs = result.records
        assert all(b.actual_send_s >= a.end_s for a, b in itertools.pairwise(recs))


def test_cli_starts_the_embedded_server_without_url():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "joulebench",
            "load",
            "--n",
            "3",
            "--arrival",
            "burst",
            "--prompts",
            "quick",
            "--output-length",
            "4",
            "--scheduler",
            "sequential",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    j = json.loads(proc.stdout)
    assert j["requests"]["ok"] == 3 and j["config"]["target"] == "embedded"
    methods = set(j["meter_methods"].values())
    assert methods  # every energy number carries its label
    assert j["estimated"] is (methods == {"estimated"})  # sensorless: the output says ESTIMATED
    assert j["energy"]["server_reported"]["n"] == 3
    assert j["config"]["scheduler"] == "sequential"  # the embedded server's options reach it


def test_embedded_server_options_are_refused_with_url():
    proc = subprocess.run(
        [sys.executable, "-m", "joulebench", "load", "--url", "http://127.0.0.1:9", "--device",
         "cuda", "--n", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--device" in proc.stderr and "embedded server" in proc.stderr
