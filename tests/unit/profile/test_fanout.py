"""Fan-out sweeps with the in-process ``local`` executor (the reference for ``ray``)."""

from __future__ import annotations

import json
import os
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from joulebench.errors import ConfigError, JoulebenchWarning, MissingExtra, UnknownName
from joulebench.meters.fake import FakeMeter
from joulebench.profile import fanout_worker
from joulebench.profile.fanout import LocalExecutor, RayExecutor, make_executor, run_sweep_fanout
from joulebench.profile.fanout_worker import CellTask, run_cell_task
from joulebench.profile.sweep import parse_sweep, run_sweep
from joulebench.results.store import ResultStore

CELL_TABLES = ("cells", "repeats", "audits")


@pytest.fixture(autouse=True)
def fresh_worker_cache() -> Iterator[None]:
    fanout_worker.clear_worker_cache()
    yield
    fanout_worker.clear_worker_cache()


def _sweep(model: Path, **extra: Any):
    cfg: dict[str, Any] = {
        "name": "fanout_test",
        "models": [str(model)],
        "precisions": ["fp32"],
        "batch_sizes": [1, 2],
        "prompts": ["quick"],
        "n": 2,
        "method": "direct",
        "warmup": 1,
        "min_window_s": 0.2,
        "min_repeats": 2,
        "max_repeats": 2,
        "idle_s": 0.2,
    }
    cfg.update(extra)
    return parse_sweep(cfg)


def _counts(store: ResultStore, run_id: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for table in CELL_TABLES:
        rows = store.query(
            f"SELECT cell_key, count(*) AS n FROM {table} WHERE run_id = ? GROUP BY cell_key",
            [run_id],
        )
        out[table] = {r["cell_key"]: r["n"] for r in rows}
    return out


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_local_fanout_stores_what_run_sweep_stores(tiny_model_dir, tmp_path, monkeypatch):
    sweep = _sweep(tiny_model_dir)
    idles: list[float] = []
    real_idle = fanout_worker.measure_idle_watched
    monkeypatch.setattr(
        fanout_worker,
        "measure_idle_watched",
        lambda m, s, **kw: idles.append(s) or real_idle(m, s, **kw),
    )
    events: list[dict[str, Any]] = []
    with ResultStore(tmp_path / "fan.duckdb") as store:
        summary = run_sweep_fanout(
            sweep, store, "fake", {"fake_power_w": 50.0}, executor=LocalExecutor(),
            on_event=events.append,
        )  # fmt: skip
        fan = _counts(store, summary["run_id"])
        run = store.query("SELECT status, meter FROM runs")[0]
        cells = store.query("SELECT cell_key, status, study, result FROM cells")
    with ResultStore(tmp_path / "ref.duckdb") as store, warnings.catch_warnings():
        warnings.simplefilter("ignore", JoulebenchWarning)  # not what this test compares
        ref_summary = run_sweep(sweep, store, FakeMeter(50.0))
        ref = _counts(store, ref_summary["run_id"])

    assert summary["done"] == 2 and summary["failed"] == 0 and summary["skipped"] == 0
    assert summary.keys() == ref_summary.keys()
    assert [e["event"] for e in events] == ["start", "cell_start", "done", "cell_start", "done"]
    assert fan == ref  # same tables, same rows per cell, same cell keys
    assert set(fan["repeats"].values()) == {6}  # 1 warm-up + 2 repeats, prefill and decode
    assert idles == [0.2]  # one model load on the worker: idle measured once, not per cell
    meter = _json(run["meter"])
    assert run["status"] == "done"
    assert meter["spec"] == "fake" and meter["executor"] == "local"
    assert meter["options"] == {"fake_power_w": 50.0}
    for c in cells:
        result = _json(c["result"])
        assert c["status"] == "done" and c["study"] == "profile"
        assert result["meter_methods"] == {"gpu:0": "fake"}  # the worker's own meter
        assert result["worker"]["pid"] == os.getpid()


def test_failing_cells_and_a_crashed_task_are_recorded_and_the_sweep_goes_on(
    tiny_model_dir, tmp_path, monkeypatch
):
    import joulebench.workloads.models as models

    missing = tmp_path / "no-such-prompts.jsonl"
    sweep = _sweep(
        tiny_model_dir,
        name="failing",
        precisions=["fp8", "fp32"],  # fp8 needs a CUDA GPU: the load fails on CPU
        batch_sizes=[2],
        prompts=[str(missing), "quick"],
    )
    loads: list[str] = []
    real_load = models.load_model
    monkeypatch.setattr(
        models, "load_model", lambda m, p, *a, **k: loads.append(p) or real_load(m, p, *a, **k)
    )
    with ResultStore(tmp_path / "f.duckdb") as store:
        summary = run_sweep_fanout(sweep, store, "fake", {}, executor=LocalExecutor())
        rows = store.query("SELECT status, error, config FROM cells")
        run = store.query("SELECT status FROM runs")[0]
    assert (summary["done"], summary["failed"]) == (1, 3)
    assert loads == ["fp8", "fp32"]  # a failed load is remembered, not retried per cell
    by = {(_json(r["config"])["precision"], Path(_json(r["config"])["prompts"]).name): r
          for r in rows}  # fmt: skip
    assert by[("fp32", "quick")]["status"] == "done"
    for prompts in (missing.name, "quick"):
        fp8 = by[("fp8", prompts)]
        assert fp8["status"] == "failed" and "fp8 needs a CUDA GPU" in fp8["error"]
        assert fp8["error"].startswith("loading ")
    bad = by[("fp32", missing.name)]
    assert bad["status"] == "failed" and "no-such-prompts" in bad["error"]
    assert run["status"] == "done_with_failures"

    # a task that dies (what a Ray worker crash is) fails its cell; the next cell still runs
    two = _sweep(tiny_model_dir, name="crash")
    crash_key = two.cells()[0].cell_key()

    def crashing(task: CellTask) -> dict[str, Any]:
        if task.cell_key == crash_key:
            raise TypeError("worker died")
        return run_cell_task(task)

    with ResultStore(tmp_path / "c.duckdb") as store:
        summary = run_sweep_fanout(two, store, "fake", {}, executor=LocalExecutor(task_fn=crashing))
        status = {
            r["cell_key"]: (r["status"], r["error"]) for r in store.query("SELECT * FROM cells")
        }
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert status[crash_key] == ("failed", "task crashed: TypeError: worker died")


def test_resume_skips_done_cells_and_reimport_never_duplicates(tiny_model_dir, tmp_path):
    sweep = _sweep(tiny_model_dir, name="resume")
    first, second = (c.cell_key() for c in sweep.cells())

    def interrupted(task: CellTask) -> dict[str, Any]:
        if task.cell_key == second:
            raise KeyboardInterrupt
        return run_cell_task(task)

    db = tmp_path / "r.duckdb"
    with ResultStore(db) as store:
        with pytest.raises(KeyboardInterrupt):
            run_sweep_fanout(sweep, store, "fake", {}, executor=LocalExecutor(task_fn=interrupted))
        assert store.query("SELECT status FROM runs")[0]["status"] == "interrupted"
        assert store.cell_status(store.find_run("sweep", "resume"), first) == "done"
        assert store.cell_status(store.find_run("sweep", "resume"), second) is None

        events: list[dict[str, Any]] = []
        summary = run_sweep_fanout(
            sweep, store, "fake", {}, executor=LocalExecutor(), on_event=events.append
        )
        assert summary["resumed"] and (summary["skipped"], summary["done"]) == (1, 1)
        assert [e["cell_key"] for e in events if e["event"] == "skip"] == [first]
        run_id = summary["run_id"]
        before = _counts(store, run_id)
        for _ in range(2):  # a redone cell arriving again replaces its rows
            store.import_cell(store.export_cell(run_id, second))
        assert _counts(store, run_id) == before
        assert set(before["repeats"].values()) == {6} and len(before["cells"]) == 2
        runs = store.query("SELECT status FROM runs")
    assert [r["status"] for r in runs] == ["done"]


def test_registry_options_and_meter_spec_errors(tiny_model_dir, tmp_path, monkeypatch):
    with pytest.raises(UnknownName, match="unknown executor 'dask'; known: local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match=r"takes no option.*address"):
        make_executor("local", address="head:6379")
    assert make_executor(" Local ").name == "local"
    with ResultStore(tmp_path / "m.duckdb") as store:
        with pytest.raises(UnknownName, match="unknown meter 'bogus'"):
            run_sweep_fanout(
                _sweep(tiny_model_dir), store, "fake+bogus", {}, executor=LocalExecutor()
            )
        with pytest.raises(ConfigError, match="invalid meter options"):
            run_sweep_fanout(
                _sweep(tiny_model_dir), store, "fake", {"fake_power_w": -1.0},
                executor=LocalExecutor(),
            )  # fmt: skip
        assert store.query("SELECT * FROM runs") == []  # nothing started
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'joulebench\[ray\]'"):
        make_executor("ray")


class _Ref:
    """A hashable stand-in for an ObjectRef."""

    def __init__(self, kind: str, value: Any) -> None:
        self.kind, self.value = kind, value


class _FakeRay(types.SimpleNamespace):
    """Just enough of ``ray`` for RayExecutor: tasks run at submit; one cell's worker 'dies'."""

    def __init__(self, crash_key: str, gpus: float = 0.0) -> None:
        super().__init__(inits=[], shutdowns=0, cancelled=[], options_seen={})
        self._crash_key, self._gpus, self._up = crash_key, gpus, False

    def is_initialized(self) -> bool:
        return self._up

    def init(self, address=None, **kw):
        self.inits.append((address, kw))
        self._up = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self._up = False

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "GPU": self._gpus}

    def remote(self, fn):
        fake = self

        class _Remote:
            def options(self, **kw):
                fake.options_seen.update(kw)
                return self

            def remote(self, task):
                if task.cell_key == fake._crash_key:
                    return _Ref("crash", task)
                return _Ref("ok", fn(task))

        return _Remote()

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        kind, value = ref.kind, ref.value
        if kind == "crash":
            raise RuntimeError("The worker died unexpectedly while executing this task.\nmore")
        return value

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)


def test_ray_executor_records_a_crashed_worker_and_checks_resources(
    tiny_model_dir, tmp_path, monkeypatch
):
    sweep = _sweep(tiny_model_dir, name="fake_ray")
    crash_key = sweep.cells()[1].cell_key()
    fake_ray = _FakeRay(crash_key)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ex = make_executor("ray", gpus_per_cell=0, cpus_per_cell=1)
    with ResultStore(tmp_path / "ray.duckdb") as store:
        summary = run_sweep_fanout(sweep, store, "fake", {}, executor=ex)
        cells = {r["cell_key"]: r for r in store.query("SELECT * FROM cells")}
        meter = _json(store.query("SELECT meter FROM runs")[0]["meter"])
    ex.close()
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert cells[crash_key]["status"] == "failed"
    assert cells[crash_key]["error"] == (
        "ray task failed: RuntimeError: The worker died unexpectedly while executing this task."
    )
    assert fake_ray.inits == [(None, {"include_dashboard": False, "log_to_driver": False})]
    assert fake_ray.shutdowns == 1  # it started the cluster, so it stops it
    assert fake_ray.options_seen["num_gpus"] == 0.0 and fake_ray.options_seen["max_retries"] == 0
    assert meter["executor"] == "ray" and meter["address"] == "local cluster"

    # a cell asking for a GPU the cluster does not have is refused before anything is submitted
    gpu = RayExecutor(gpus_per_cell=1)
    with (
        ResultStore(tmp_path / "gpu.duckdb") as store,
        pytest.raises(
            ConfigError, match=r"1 GPU\(s\) but the Ray cluster has 0: lower --gpus-per-cell"
        ),
    ):
        run_sweep_fanout(_sweep(tiny_model_dir, name="gpu"), store, "fake", {}, executor=gpu)
    with ResultStore(tmp_path / "gpu.duckdb") as store:
        assert store.query("SELECT * FROM runs") == []  # refused before the run started
    gpu.close()
    with pytest.raises(ConfigError, match="GPUs per cell must be ≥ 0"):
        RayExecutor(gpus_per_cell=-1)
    # a dead or malformed address fails at once (ray.init would retry it for minutes)
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1"):
        RayExecutor(address="127.0.0.1:1").start()
    with pytest.raises(ConfigError, match="is not host:port"):
        RayExecutor(address="ray://head-node").start()
    assert len(fake_ray.inits) == 2  # the two above; neither bad address reached ray.init


@pytest.mark.parametrize(
    ("spec", "options", "described", "caveat"),
    [
        ("rapl", {}, {"concurrent": False}, None),  # local: one cell at a time
        ("fake", {}, {"concurrent": True, "gpus_per_cell": 0}, None),
        ("estimate", {}, {"concurrent": True, "gpus_per_cell": 0}, None),  # process scope
        ("nvml", {}, {"concurrent": True, "gpus_per_cell": 1}, None),  # its own whole GPU
        ("nvml", {}, {"concurrent": True, "gpus_per_cell": 0.5}, "nvml"),  # a shared GPU
        ("nvml+rapl", {}, {"concurrent": True, "gpus_per_cell": 1}, "rapl"),  # one CPU package
        ("estimate", {"estimate_scope": "system"}, {"concurrent": True}, "estimate"),
    ],
)
def test_concurrent_cells_on_node_wide_meters_carry_a_caveat(spec, options, described, caveat):
    from joulebench.profile.fanout import concurrency_caveat

    got = concurrency_caveat(spec, options, described)
    if caveat is None:
        assert got is None
    else:
        assert got is not None and f"meter(s) {caveat} measure" in got


def test_which_meters_are_safe_to_share_comes_from_the_registry(monkeypatch):
    """fanout asks each backend's registry entry (``MeterSpec.reach``), it keeps no list."""
    import dataclasses

    from joulebench.meters import registry
    from joulebench.profile.fanout import concurrency_caveat

    concurrent = {"concurrent": True, "gpus_per_cell": 0}
    assert concurrency_caveat("rapl", {}, concurrent) is not None
    rapl = dataclasses.replace(registry.KNOWN_METERS["rapl"], reach=lambda o: "task")
    monkeypatch.setitem(registry.KNOWN_METERS, "rapl", rapl)
    assert concurrency_caveat("rapl", {}, concurrent) is None
    fake = dataclasses.replace(registry.KNOWN_METERS["fake"], reach=lambda o: "node")
    monkeypatch.setitem(registry.KNOWN_METERS, "fake", fake)
    assert "meter(s) fake measure" in (concurrency_caveat("fake", {}, concurrent) or "")
