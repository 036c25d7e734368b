"""``joulebench load`` launching real engines end to end (``joulebench serve``, ``transformers
serve``), an engine that never serves, one that dies mid-load, and Ctrl-C during a launched run.
After each, nothing of the engine is left running or listening."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import duckdb
import pytest

from joulebench.load.engines.session import free_port
from joulebench.results.load_summary import validate_load_summary
from support.engines import assert_nothing_left, interrupt_when_engine_runs, jb, stub_engine

pytestmark = pytest.mark.integration


@pytest.fixture()
def prompts(tmp_path) -> str:
    f = tmp_path / "prompts.txt"
    f.write_text("how much energy does a prompt use\nsay hello\n")
    return str(f)


COMMON = ("--meter", "fake", "--fake-power-w", "50", "--hz", "50", "--json")


def test_joulebench_serve_as_engine(tmp_path, prompts) -> None:
    db = tmp_path / "r.duckdb"
    proc = jb(
        "load", "--engine", "joulebench", "--model", "tiny", "--prompts", prompts,
        "--n", "48", "--arrival", "burst", "--output-length", "128", "--idle-s", "0.3",
        "--ready-timeout-s", "240", "--store", str(db), *COMMON,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    assert j["requests"]["ok"] == 48
    validate_load_summary(j)  # the engine section and the run id are declared too
    e = j["engine"]
    assert e["preset"] == "joulebench" and "-m joulebench serve --model tiny" in e["command"]
    assert e["ready_s"] > 0 and e["ready_path"] == "/health"
    assert e["version"]["path"] == "/info" and e["version"]["router"] == "joulebench"
    assert e["stopped_by"] == "SIGTERM" and not e["died_during_run"]
    assert Path(e["log_file"]).parent == tmp_path / "engine-logs"
    assert "joulebench serve" in Path(e["log_file"]).read_text()
    # the idle baseline was measured after the engine was up (model loaded)
    assert j["config"]["idle_power_w"] == pytest.approx(50.0, rel=0.05)
    samples = e["metrics"]["samples"]
    assert len(samples) >= 2 and {"running", "waiting", "busy_s"} <= set(samples[-1])
    assert samples[-1]["busy_s"] > samples[0]["busy_s"]
    # the server's own energy (same kind of meter, 50 W) against ours: same scope, within 10 %
    # plus the counters' resolution. Both fake counters move every 100 ms, so the load must keep
    # the server busy for seconds in one stretch (a burst of long answers) for a narrow check:
    # 12 Poisson requests of 32 tokens give 0.9 s in 5 stretches, ±100 %, and ratios 0.8-1.2.
    se = e["server_energy"]
    assert se["scope"] == "busy-steps" and se["n"] == 48
    assert se["resolution"] < 0.25, se["resolution_why"]
    assert abs(se["ratio"] - 1.0) <= se["tolerance"] + se["resolution"]
    audit = next(a for a in j["energy"]["audits"] if a["name"] == "engine:server_energy_vs_meter")
    assert audit["passed"], audit
    with duckdb.connect(str(db), read_only=True) as con:
        status, summary = con.execute("SELECT status, summary FROM runs").fetchone()
        checks = con.execute(
            "SELECT passed FROM audits WHERE check_name = 'engine:server_energy_vs_meter'"
        ).fetchall()
    assert status == "done" and json.loads(summary)["engine"]["pid"] == e["pid"]
    assert checks == [(True,)]
    assert_nothing_left([e["pid"]], int(e["url"].rsplit(":", 1)[1]))
    # the report draws the engine's occupancy beside the meter's power for this run
    from joulebench.report.build import build_report

    report = build_report(db, tmp_path / "report")
    fig = next(f for f in report.figures if f.key == "engine_occupancy")
    assert fig.png.stat().st_size > 0 and "running" in fig.caption


def test_transformers_serve_as_engine(tmp_path, prompts, tiny_model_dir) -> None:
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists() and shutil.which("transformers") is None:
        pytest.skip("the `transformers` CLI is not installed (pip install 'transformers[serving]')")
    port = free_port()
    cmd = shlex.join([str(exe), "serve", str(tiny_model_dir), "--host", "127.0.0.1",
                      "--port", str(port), "--device", "cpu"])  # fmt: skip
    proc = jb(
        "load", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--model",
        str(tiny_model_dir), "--prompts", prompts, "--n", "3", "--arrival", "fixed:100ms",
        # natural:6 — transformers serve refuses ignore_eos (422), which a forced length sends
        "--output-length", "natural:6", "--idle-s", "0.2", "--ready-timeout-s", "240",
        "--engine-log-dir", str(tmp_path / "logs"), *COMMON,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    j = json.loads(proc.stdout)
    assert j["requests"]["ok"] == 3
    e = j["engine"]
    assert e["preset"] == "custom" and e["exit_code"] is not None
    assert e["ready_path"] in ("/health", "/v1/models")
    assert Path(e["log_file"]).parent == tmp_path / "logs"
    assert e["server_energy"] is None  # transformers serve reports no energy
    assert_nothing_left([e["pid"]], port)


def test_engine_never_ready_cli(tmp_path, prompts) -> None:
    script, pidfile = tmp_path / "slow.py", tmp_path / "pids"
    script.write_text(
        "import os, subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}')\n"
        "print('still compiling kernels', flush=True)\n"
        "time.sleep(600)\n"
    )
    port = free_port()
    t0 = time.monotonic()
    proc = jb(
        "load", "--launch", shlex.join([sys.executable, str(script)]), "--url",
        f"http://127.0.0.1:{port}", "--prompts", prompts, "--n", "2", "--ready-timeout-s", "3",
        "--stop-grace-s", "2", "--engine-log-dir", str(tmp_path / "logs"), *COMMON,
    )  # fmt: skip
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1, proc.stderr
    assert "did not answer" in proc.stderr and "still compiling kernels" in proc.stderr
    assert proc.stdout == ""
    assert_nothing_left([int(x) for x in pidfile.read_text().split()], port)


def test_engine_dies_mid_load_partial_run(tmp_path, prompts) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=1.5)
    db = tmp_path / "r.duckdb"
    proc = jb(
        "load", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--prompts", prompts,
        "--protocol", "openai-completions", "--n", "40", "--arrival", "fixed:100ms",
        "--output-length", "4", "--timeout-s", "10", "--ready-timeout-s", "60",
        "--store", str(db), *COMMON,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "incomplete run" in proc.stderr
    j = json.loads(proc.stdout)
    req = j["requests"]
    assert req["ok"] >= 1 and req["failed"] >= 1 and req["ok"] + req["failed"] == 40
    e = j["engine"]
    assert e["died_during_run"] and e["exit_code"] == 3 and e["stopped_by"] is None
    assert "engine crashing now" in Path(e["log_file"]).read_text()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status FROM runs").fetchone() == ("partial",)
        assert (
            con.execute("SELECT count(*) FROM requests WHERE status != 'ok'").fetchone()[0]
            == (req["failed"])
        )
    assert_nothing_left([int(x) for x in pidfile.read_text().split()], port)


def test_ctrl_c_during_a_launched_run(tmp_path, prompts) -> None:
    cmd, port, pidfile = stub_engine(tmp_path, lifetime_s=0)
    db = tmp_path / "r.duckdb"
    code, pid, err = interrupt_when_engine_runs(
        ["load", "--launch", cmd, "--url", f"http://127.0.0.1:{port}", "--prompts", prompts,
         "--n", "200", "--arrival", "fixed:100ms", "--output-length", "4", "--ready-timeout-s",
         "60", "--store", str(db), *COMMON],
        port, settle_s=1.5,  # inside the load (200 requests, 100 ms apart)
    )  # fmt: skip
    assert code != 0
    assert "interrupted: recorded as run" in err
    with duckdb.connect(str(db), read_only=True) as con:
        status, config = con.execute("SELECT status, config FROM runs").fetchone()
    assert status == "interrupted" and json.loads(config)["engine"]["pid"] == pid
    assert_nothing_left([int(x) for x in pidfile.read_text().split()], port)
    assert os.path.exists(json.loads(config)["engine"]["log_file"])
