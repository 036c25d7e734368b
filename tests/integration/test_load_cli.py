from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest

from joulebench.load.stub import StubConfig, stub_server

pytestmark = pytest.mark.integration


def jb(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "joulebench", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture()
def prompts(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("how much energy does a prompt use\nsay hello\n")
    return str(f)


def test_cli_json_store_and_failures(tmp_path, prompts):
    db = tmp_path / "r.duckdb"
    with stub_server(StubConfig(tokens=5, failure_rate=0.25, seed=2)) as url:
        proc = jb(
            "load",
            "--url",
            url,
            "--protocol",
            "openai-completions",
            "--arrival",
            "poisson:200",
            "--n",
            "30",
            "--prompts",
            prompts,
            "--output-length",
            "5",
            "--meter",
            "fake",
            "--fake-power-w",
            "40",
            "--idle-s",
            "0.1",
            "--hz",
            "50",
            "--json",
            "--store",
            str(db),
        )
    # requests were lost: the exit status says so, and the run is stored partial
    assert proc.returncode == 1, proc.stderr
    assert "incomplete run" in proc.stderr and "--max-failed-rate" in proc.stderr
    j = json.loads(proc.stdout)
    assert j["requests"]["ok"] + j["requests"]["failed"] == 30
    assert j["requests"]["failed"] > 0
    assert j["meter_methods"] == {"gpu:0": "fake"}
    assert j["energy"]["per_request_wh"]["paper_whole_window"] > 0
    assert j["energy"]["attribution_sum_rel_err"] < 0.01
    con = duckdb.connect(str(db), read_only=True)
    n_rows, n_ok = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM requests"
    ).fetchone()
    assert n_rows == 30 and n_ok == j["requests"]["ok"]
    assert con.execute("SELECT count(*) FROM timelines").fetchone()[0] > 2
    kind, status, summary = con.execute("SELECT kind, status, summary FROM runs").fetchone()
    assert kind == "load" and json.loads(summary)["requests"]["ok"] == n_ok
    # status says the run lost requests; audit verdicts are in the summary and the audits table
    assert status == "partial"
    stored = json.loads(summary)
    assert stored["audits"] == j["audits"] and stored["config"]["scheduler"] == "external server"
    n_audits = con.execute("SELECT count(*) FROM audits").fetchone()[0]
    assert n_audits == j["audits"]["passed"] + len(j["audits"]["failed"]) > 0


def test_cli_table_says_estimated_with_the_estimator(prompts):
    with stub_server(StubConfig(tokens=3)) as url:
        proc = jb(
            "load",
            "--url",
            url,
            "--arrival",
            "fixed:5ms",
            "--n",
            "10",
            "--prompts",
            prompts,
            "--output-length",
            "3",
            "--meter",
            "estimate",
        )
    assert proc.returncode == 0, proc.stderr
    assert "ESTIMATED" in proc.stdout
    assert "whole window" in proc.stdout and "idle-subtracted" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arrival", "zipf:3"], "known: burst, fixed, gamma, poisson, sequential, trace"),
        (["--protocol", "grpc"], "known: openai-chat"),
        (["--arrival", "fixed:5 minutes"], "write a number with a unit"),
        (["--arrival", "fixed:0"], "must be positive"),
        (["--output-length", "reference"], "no reference answer lengths"),
    ],
)
def test_cli_bad_input_exits_2_with_a_reason(prompts, args, message):
    proc = jb(
        "load",
        "--url",
        "http://127.0.0.1:9",
        "--n",
        "2",
        "--prompts",
        prompts,
        "--meter",
        "fake",
        *args,
    )
    assert proc.returncode == 2
    assert message in " ".join(proc.stderr.split())


def test_cli_trace_replay(tmp_path, prompts):
    trace = tmp_path / "arrivals.csv"
    trace.write_text("t_s\n0\n0.01\n0.02\n0.05\n")
    with stub_server(StubConfig(tokens=2)) as url:
        proc = jb(
            "load",
            "--url",
            url,
            "--arrival",
            f"trace:{trace}",
            "--n",
            "4",
            "--prompts",
            prompts,
            "--output-length",
            "2",
            "--meter",
            "fake",
            "--json",
        )
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    assert j["requests"]["ok"] == 4
    assert j["target_rate_rps"] == pytest.approx(60.0)


def _stub_load(url: str, prompts: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return jb(
        "load", "--url", url, "--protocol", "openai-chat", "--arrival", "fixed:10ms",
        "--n", "60", "--prompts", prompts, "--output-length", "4", "--meter", "fake",
        "--hz", "50", "--json", *extra,
    )  # fmt: skip


def test_most_requests_failing_exits_1_and_is_stored_partial(tmp_path, prompts):
    db = tmp_path / "r.duckdb"
    with stub_server(StubConfig(tokens=4, failure_rate=50 / 60, seed=1)) as url:
        proc = _stub_load(url, prompts, "--store", str(db))
        allowed = _stub_load(url, prompts, "--max-failed-rate", "0.95")
    assert proc.returncode == 1 and "failed or were truncated" in proc.stderr
    j = json.loads(proc.stdout)
    assert 0 < j["requests"]["ok"] < 60 and j["requests"]["errored"] == j["requests"]["failed"]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "partial"
    assert allowed.returncode == 0, allowed.stderr  # the user allowed that many losses


def test_truncated_streams_are_counted_and_fail_the_run(prompts):
    with stub_server(StubConfig(tokens=4, truncate_rate=0.5, truncate_after=1, seed=3)) as url:
        proc = _stub_load(url, prompts)
    assert proc.returncode == 1
    j = json.loads(proc.stdout)
    assert j["requests"]["truncated"] > 0
    assert j["requests"]["ok"] + j["requests"]["truncated"] == 60
    assert any("[DONE] without a finish_reason" in e for e in j["requests"]["errors"])
    assert j["energy"]["successful_requests"] == j["requests"]["ok"]


def test_a_locked_store_fails_before_any_request_is_sent(tmp_path, prompts):
    from joulebench.load.stub import StubServer

    db = tmp_path / "r.duckdb"
    stub = StubServer(StubConfig(tokens=4))
    holder = duckdb.connect(str(db))  # another process holds the store
    try:
        with stub_server(server=stub) as url:
            proc = _stub_load(url, prompts, "--store", str(db))
    finally:
        holder.close()
    assert proc.returncode == 2 and "cannot open the results store" in proc.stderr
    assert proc.stdout == "" and stub.stats.requests == 0  # nothing sent, nothing thrown away
