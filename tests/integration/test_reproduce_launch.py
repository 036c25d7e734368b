"""``joulebench reproduce --launch``: a plan's serving and shaping studies against a launched stub
engine (started once, stopped at the end; every stored run carries its engine section), an
engine that never serves (both studies failed with its log), Ctrl-C mid-study, and the flags
refused where they cannot apply. Nothing of the engine is left running after any of them."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from joulebench.load.engines.session import free_port
from support.engines import (
    assert_nothing_left,
    interrupt_when_engine_runs,
    jb,
    pids_of,
    stub_engine,
)

pytestmark = pytest.mark.integration

SERVING = {"model": "tiny:llama:tiny", "schedulers": ["sequential", "continuous"],
           "arrivals": ["burst", "fixed:50ms"], "n": 4, "output_length": 4, "idle_s": 0.2,
           "warmup_n": 1}  # fmt: skip
PLAN = {
    "name": "eng",
    "serving": SERVING,
    "shaping": {"arrival": "uniform:10ms,30ms", "policies": ["cadence:50ms"], "n": 4},
}


def _plan(tmp_path: Path, **serving: object) -> str:
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump({**PLAN, "serving": {**SERVING, **serving}}))
    return str(f)


def _reproduce(tmp_path: Path, *args: str) -> list[str]:
    out = tmp_path / "report"
    return ["reproduce", "--plan", _plan(tmp_path), "--meter", "fake", "--out", str(out), *args]


def test_serving_studies_run_against_the_launched_engine(tmp_path) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    proc = jb(*_reproduce(tmp_path, "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert "engine ready" in proc.stderr and "not run as planned" in proc.stderr
    j = json.loads(proc.stdout)
    e = j["engine"]
    assert e["pid"] == pids_of(pidfile)[0] and e["stopped_by"] == "SIGTERM"
    assert Path(e["log_file"]).parent == tmp_path / "report" / "engine-logs"
    serving, shaping = j["studies"]["serving"], j["studies"]["shaping"]
    assert serving["done"] == 2 and shaping["done"] == 1  # each arrival once, not per scheduler
    assert "comparison between schedulers is skipped" in serving["notes"][0]
    assert "runs against the launched engine" in shaping["notes"][0]
    with duckdb.connect(str(tmp_path / "report" / "results.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT name, status, config, summary FROM runs").fetchall()
    assert len(rows) == 4  # two arrivals, one shaping comparison (direct + shaped)
    for name, status, config, summary in rows:
        assert status == "done" and "/engine:custom/" in name
        assert json.loads(config)["scheduler"] == "engine:custom"
        stored = json.loads(summary)["engine"]
        assert stored["pid"] == e["pid"] and stored["stopped_by"] == "SIGTERM"  # after the stop
        assert stored["metrics"]["samples"]
    assert_nothing_left(pids_of(pidfile), port)


def test_an_engine_that_never_serves_fails_both_studies(tmp_path) -> None:
    script, pidfile = tmp_path / "slow.py", tmp_path / "pids"
    script.write_text(
        "import os, sys, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "print('still compiling kernels', flush=True)\n"
        "time.sleep(600)\n"
    )
    port = free_port()
    proc = jb(*_reproduce(tmp_path, "--launch", shlex.join([sys.executable, str(script)]),
                          "--url", f"http://127.0.0.1:{port}", "--ready-timeout-s", "2",
                          "--stop-grace-s", "2", "--json"))  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    j = json.loads(proc.stdout)
    for study in ("serving", "shaping"):
        assert "did not answer" in j["studies"][study]["error"]
        assert "still compiling kernels" in j["studies"][study]["error"]
    assert "engine" not in j
    assert_nothing_left(pids_of(pidfile), port)


def test_ctrl_c_during_the_serving_study_stops_the_engine(tmp_path) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    plan = _plan(tmp_path, arrivals=["fixed:100ms"], n=300)
    code, _, _ = interrupt_when_engine_runs(
        ["reproduce", "--plan", plan, "--meter", "fake", "--out", str(tmp_path / "report"),
         "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--json"],
        port, settle_s=2.0,  # inside the serving study (300 requests, 100 ms apart)
    )  # fmt: skip
    assert code != 0
    assert_nothing_left(pids_of(pidfile), port)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--url", "http://127.0.0.1:1"), "--url names where a launched engine answers"),
        (("--engine", "vllm", "--skip", "serving,shaping"), "drop --launch/--engine"),
        (("--engine", "vllm", "--launch", "x", "--url", "http://127.0.0.1:1"), "not both"),
    ],
)
def test_engine_flags_refused_where_they_cannot_apply(tmp_path, args, message) -> None:
    proc = jb(*_reproduce(tmp_path, *args))
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "report").exists()  # refused before anything ran
