"""One engine session around several loads (shape-compare, shape-sweep, reproduce plans): each
load watched afresh, annotated, then stamped with the exit status once the engine has stopped;
and a load is not sent to an engine that has exited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from joulebench.load.engines.process import EngineNotReady, EngineProcess
from joulebench.load.engines.session import EngineSession, LaunchOptions, measured, plan
from joulebench.load.runner import run_load
from joulebench.load.stub import StubConfig, stub_server
from joulebench.meters.fake import FakeMeter


def _session(url: str, tmp_path: Path, popen: subprocess.Popen[bytes] | None) -> EngineSession:
    opts = LaunchOptions(launch="my-engine --port 1", scrape_hz=20.0)
    launch = plan(opts, url=url, model=None, gpus=None, log_dir=tmp_path)
    log = tmp_path / "engine.log"
    log.write_text("loading\nserving\n")
    return EngineSession(launch, EngineProcess(["my-engine"], url, log, popen=popen))


def test_each_load_is_watched_afresh_and_stamped_after_the_stop(tmp_path) -> None:
    with stub_server(StubConfig(tokens=4, token_delay_s=0.01, metrics=True)) as url:
        session = _session(url, tmp_path, None)
        loads = []
        for seed in (0, 1):
            result, j = measured(
                session,
                lambda seed=seed: run_load(url, "openai-chat", "burst", ["hi"], n=6,  # type: ignore[misc]
                                           output_length=4, seed=seed, meter=FakeMeter(40.0)),
            )  # fmt: skip
            assert j["requests"]["ok"] == 6 and result.records
            loads.append(j)
    first, second = (j["engine"] for j in loads)
    for e in (first, second):
        assert e["preset"] == "custom" and e["command"] == "my-engine"
        assert e["exit_code"] is None and e["stopped_by"] is None  # still running when annotated
        assert len(e["metrics"]["samples"]) >= 2 and "running" in e["metrics"]["samples"][0]
    assert first["metrics"]["samples"][-1]["t_s"] < second["metrics"]["samples"][0]["t_s"]
    session.engine.exit_code, session.engine.stopped_by = -15, "SIGTERM"  # what stop() records
    for j in loads:
        metrics = j["engine"]["metrics"]
        session.stamp(j)
        assert j["engine"]["exit_code"] == -15 and j["engine"]["stopped_by"] == "SIGTERM"
        assert j["engine"]["metrics"] is metrics  # the run's own part is kept
    assert session.describe()["stopped_by"] == "SIGTERM"


def test_without_an_engine_measured_is_the_plain_load() -> None:
    with stub_server(StubConfig(tokens=2)) as url:
        _, j = measured(
            None, lambda: run_load(url, "openai-chat", "burst", ["hi"], n=2, output_length=2)
        )
    assert j["requests"]["ok"] == 2 and "engine" not in j


def test_an_engine_that_exited_is_not_sent_more_work(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    dead.wait()
    session = _session("http://127.0.0.1:9", tmp_path, dead)
    with pytest.raises(EngineNotReady, match=r"exited with status 3 while in use(?s:.*)serving"):
        session.require_alive()
    assert session.describe()["died_during_run"]
