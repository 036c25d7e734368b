"""The serving study's loop with a fake server and load generator: grouping, storage, resume."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from joulebench.analysis.records import read_store
from joulebench.load.metrics import OK, RequestRecord
from joulebench.load.runner import LoadResult
from joulebench.meters.fake import FakeMeter
from joulebench.reproduce.plan import ServingPlan
from joulebench.reproduce.serving import ServingSetup, run_serving
from joulebench.results.store import ResultStore


class Recorder:
    def __init__(self, fail_arrival: str | None = None) -> None:
        self.servers: list[tuple[str, str, str]] = []
        self.loads: list[dict[str, Any]] = []
        self.fail_arrival = fail_arrival

    @contextlib.contextmanager
    def server(self, model: str, precision: str, scheduler: str, **kw: Any) -> Iterator[str]:
        self.servers.append((model, precision, scheduler))
        yield f"http://fake/{scheduler}"

    def load(self, url: str, protocol: str, arrival: str, **kw: Any) -> LoadResult:
        self.loads.append({"url": url, "arrival": arrival, **kw})
        ok = arrival != self.fail_arrival
        recs = []
        for i in range(kw["n"]):
            r = RequestRecord(i, float(i), actual_send_s=float(i), end_s=i + 0.5)
            r.status = OK if ok else "failed"
            r.output_tokens = 4
            recs.append(r)
        energy = {
            "per_request_wh": {"paper_whole_window": 1e-4 * (1 + len(self.loads))},
            "method": "fake",
            "audits": [{"name": "load:window", "passed": False, "detail": "short"}],
        }
        cfg = {"arrival": {"kind": arrival.partition(":")[0], "spec": arrival}, "n": kw["n"]}
        return LoadResult(cfg, recs, 0.0, float(kw["n"]), None, energy)


def _plan() -> ServingPlan:
    return ServingPlan(
        model="tiny",
        schedulers=["sequential", "continuous"],
        arrivals=["sequential", "burst", "fixed:500ms"],
        n=3,
        idle_s=0.0,
        warmup_n=2,
    )


def _run_grid(db_path: Path, rec: Recorder) -> dict[str, Any]:
    with ResultStore(db_path) as db:
        setup = ServingSetup("p", db, FakeMeter(), prompts=["hi"], server_fn=rec.server)
        return run_serving(setup, _plan(), load_fn=rec.load)


def test_grid_is_stored_grouped_and_resumes(tmp_path: Path) -> None:
    rec = Recorder(fail_arrival="burst")
    db_path = tmp_path / "r.duckdb"
    counts = _run_grid(db_path, rec)
    assert counts["total"] == 6 and counts["done"] == 4 and counts["failed"] == 2
    assert [s[2] for s in rec.servers] == ["sequential", "continuous"]  # one server per scheduler
    warmups = [x for x in rec.loads if x.get("meter") is None]
    assert len(warmups) == 2 and all(x["n"] == 2 and x["arrival"] == "burst" for x in warmups)
    measured = [x for x in rec.loads if x.get("meter") is not None]
    assert len(measured) == 6
    with ResultStore(db_path, read_only=True) as db:
        contents = read_store(db)
    loads = contents.load_runs
    assert sorted(lr.label for lr in loads) == sorted(
        f"{a} · {s}"
        for s in ("sequential", "continuous")
        for a in ("sequential", "burst", "fixed:500ms")
    )
    cfg = loads[0].run.config
    assert cfg["model"] == "tiny" and cfg["precision"] == "fp32" and cfg["plan"] == "p"
    assert cfg["study"] == "serving"
    assert sorted(lr.run.status for lr in loads) == ["done"] * 4 + ["failed"] * 2
    assert sum(1 for a in contents.audits if not a["passed"]) == 6  # failures kept, not dropped
    assert contents.request_counts[loads[0].run.run_id]

    # resume: done runs are skipped; the failed ones are redone on their scheduler's server
    again = Recorder()
    counts = _run_grid(db_path, again)
    assert counts["skipped"] == 4 and counts["done"] == 2
    assert [s[2] for s in again.servers] == ["sequential", "continuous"]
    assert [x["arrival"] for x in again.loads if x.get("meter")] == ["burst", "burst"]
    third = Recorder()
    counts = _run_grid(db_path, third)
    assert counts["skipped"] == 6 and third.servers == [] and third.loads == []


def test_shaping_runs_are_stored_with_request_rows_and_timeline(tmp_path: Path) -> None:
    from joulebench.reproduce.plan import ShapingPlan
    from joulebench.reproduce.serving import run_shaping
    from joulebench.shape.experiment import Comparison, Trial, measure_run

    rec = Recorder()
    meter = FakeMeter()

    def fake_compare(trial: Trial, policy: str) -> Comparison:
        url = trial.url
        assert url is not None

        def one(label: str) -> Any:
            kw = {"protocol": trial.protocol, "prompts": trial.prompts, "n": trial.n}
            kw |= {"arrival": trial.arrival, "meter": trial.meter, "seed": trial.seed}
            return measure_run(label, url, url, load_fn=rec.load, load_kwargs=kw)

        return Comparison(one("direct"), one(policy), {"kind": policy})

    shaping = ShapingPlan(arrival="poisson:5", policies=["cadence:100ms"], n=3)
    db_path = tmp_path / "r.duckdb"
    with ResultStore(db_path) as db:
        setup = ServingSetup("p", db, meter, prompts=["hi"], server_fn=rec.server)
        counts = run_shaping(setup, shaping, _plan(), compare_fn=fake_compare)
    assert counts["done"] == 1 and len(counts["run_ids"]) == 2
    with ResultStore(db_path, read_only=True) as db:
        contents = read_store(db)
        n_rows = db.query("SELECT run_id, count(*) AS n FROM requests GROUP BY run_id")
    assert {r["run_id"]: r["n"] for r in n_rows} == dict.fromkeys(counts["run_ids"], 3)
    assert sorted(lr.shaped for lr in contents.load_runs) == [False, True]


class _Running:
    """Stands in for the engine's Popen: running until ``code`` is set."""

    pid = 4242
    code: int | None = None

    def poll(self) -> int | None:
        return self.code


def _engine(url: str, tmp_path: Path, proc: _Running) -> Any:
    from joulebench.load.engines.process import EngineProcess
    from joulebench.load.engines.session import EngineSession, LaunchOptions, plan

    launch = plan(LaunchOptions(launch="my-engine"), url=url, model=None, gpus=None,
                  log_dir=tmp_path)  # fmt: skip
    log = tmp_path / "engine.log"
    log.write_text("engine log line\n")
    return EngineSession(launch, EngineProcess(["my-engine"], url, log, popen=proc))  # type: ignore[arg-type]


def test_against_a_launched_engine_each_arrival_runs_once_and_says_why(tmp_path: Path) -> None:
    from joulebench.load.stub import StubConfig, stub_server

    rec, events = Recorder(), []
    with stub_server(StubConfig(metrics=True)) as url, ResultStore(tmp_path / "r.db") as db:
        engine = _engine(url, tmp_path, _Running())
        setup = ServingSetup(
            "p", db, FakeMeter(), prompts=["hi"], server_fn=rec.server, on_event=events.append,
            engine=engine,
        )  # fmt: skip
        counts = run_serving(setup, _plan(), load_fn=rec.load)
        contents = read_store(db)
    assert rec.servers == []  # no embedded server was started
    assert counts["total"] == 3 and counts["done"] == 3  # the arrivals, once
    assert {x["url"] for x in rec.loads} == {url}
    [note] = counts["notes"]
    assert "[sequential, continuous]" in note and "engine:custom" in note and "skipped" in note
    assert [e["note"] for e in events if e["event"] == "note"] == [note]
    runs = contents.load_runs
    assert sorted(lr.run.config["arrival"]["spec"] for lr in runs) == sorted(_plan().arrivals)
    for lr in runs:
        assert lr.scheduler == "engine:custom" and lr.run.config["target"] == "engine"
        assert lr.run.name.startswith("reproduce-p/serving/engine:custom/")
        e = lr.run.summary["engine"]
        assert e["preset"] == "custom" and e["pid"] == 4242 and e["metrics"]["samples"]


def test_an_engine_that_exits_stops_the_study_with_its_log(tmp_path: Path) -> None:
    import pytest

    from joulebench.load.engines.process import EngineNotReady
    from joulebench.load.stub import StubConfig, stub_server

    proc, rec = _Running(), Recorder()

    def load_then_die(url: str, protocol: str, arrival: str, **kw: Any) -> LoadResult:
        result = rec.load(url, protocol, arrival, **kw)
        if kw.get("meter") is not None:  # the first measured run: the engine dies after it
            proc.code = 3
        return result

    with stub_server(StubConfig()) as url, ResultStore(tmp_path / "r.db") as db:
        with pytest.raises(EngineNotReady, match=r"status 3 while in use(?s:.*)engine log line"):
            setup = ServingSetup(
                "p", db, FakeMeter(), prompts=["hi"], engine=_engine(url, tmp_path, proc)
            )
            run_serving(setup, _plan(), load_fn=load_then_die)
        assert len(db.runs("load")) == 1
    assert len([x for x in rec.loads if x.get("meter") is not None]) == 1
