"""The worker side of a fan-out sweep: one cell measured in a worker process, rows returned.

A worker never opens the user's store (DuckDB has one writer): :func:`run_cell_task` measures
its cell with :func:`~joulebench.profile.runner.profile_cell` into an in-memory
:class:`ResultStore` under the sweep's ``run_id`` and ``cell_key`` and returns that cell's rows
(:meth:`ResultStore.export_cell`) for the driver to import. The worker opens its own meter from
the sweep's meter spec, so it measures its own node / GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` per
task; the NVML meter honours it), and every cell records that meter and a ``worker`` record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from joulebench.errors import JoulebenchError
from joulebench.meters.base import Meter
from joulebench.meters.host import HostMonitor
from joulebench.meters.window import IdleBaseline
from joulebench.profile.config import ProfileConfig
from joulebench.profile.phases import measure_idle_watched
from joulebench.profile.sweep import free_cuda, record_failed_cell
from joulebench.results.cell import CellResult
from joulebench.results.store import ResultStore

log = logging.getLogger(__name__)

#: What a cell (or its model load) may raise and still be a failed cell, not a crashed sweep.
CELL_ERRORS = (
    JoulebenchError,
    RuntimeError,
    ValueError,
    NotImplementedError,
    MemoryError,
    OSError,
    ImportError,
)


@dataclass(frozen=True, slots=True)
class CellTask:
    """Everything one worker needs for one cell: plain, picklable values only."""

    config: dict[str, Any]  # the cell's ProfileConfig as JSON
    run_id: str
    cell_key: str
    study: str
    meter_spec: str
    meter_options: dict[str, Any]
    idle_s: float
    hardware: Any = None  # a HardwarePeak (picklable) or None: the worker calibrates its CPU


@dataclass(slots=True)
class _WorkerCache:
    meter_key: tuple[Any, ...] | None = None
    meter: Meter | None = None
    model_key: tuple[Any, ...] | None = None
    loaded: Any = None
    idle: IdleBaseline | None = None
    load_error: str | None = None
    prompts: dict[tuple[Any, ...], Any] = field(default_factory=dict)


_CACHE = _WorkerCache()


def clear_worker_cache() -> None:
    """Close this process's cached meter and drop its cached model (the local executor's end)."""
    if _CACHE.meter is not None:
        _CACHE.meter.close()
    _CACHE.meter = _CACHE.meter_key = None
    _CACHE.loaded = _CACHE.idle = _CACHE.model_key = _CACHE.load_error = None
    _CACHE.prompts.clear()
    free_cuda()


def worker_info() -> dict[str, Any]:
    """Where a cell was measured: host, process and the GPUs this worker was given."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        info["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # informative only; never fail a cell over it
            info["ray_node_id"] = ray.get_runtime_context().get_node_id()
            info["ray_gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    return info


def _meter(task: CellTask) -> Meter:
    from joulebench.meters.registry import open_meter

    key = (
        task.meter_spec,
        json.dumps(task.meter_options, sort_keys=True, default=str),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    if _CACHE.meter_key != key:
        clear_worker_cache()  # a new meter: the idle baseline must be measured with it
        _CACHE.meter = open_meter(task.meter_spec, **task.meter_options)
        _CACHE.meter_key = key
    assert _CACHE.meter is not None
    return _CACHE.meter


def _model(task: CellTask, cfg: ProfileConfig, meter: Meter) -> tuple[Any, IdleBaseline]:
    """The cached (model, idle baseline), loading and measuring idle on a new key only."""
    from joulebench.workloads.models import load_model

    key = (cfg.model, cfg.precision, cfg.device, cfg.seed, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if _CACHE.model_key != key:
        _CACHE.loaded = _CACHE.idle = _CACHE.load_error = None
        _CACHE.prompts.clear()
        free_cuda()
        _CACHE.model_key = key
        try:
            _CACHE.loaded = load_model(cfg.model, cfg.precision, cfg.device, seed=cfg.seed)
            _CACHE.idle = measure_idle_watched(  # as run_sweep: other processes watched
                meter, task.idle_s, host=HostMonitor(), contention=cfg.contention_policy()
            )
        except CELL_ERRORS as exc:  # remembered: the next cells of this model fail fast
            _CACHE.loaded = None
            _CACHE.load_error = (
                f"loading {cfg.model} at {cfg.precision}: {type(exc).__name__}: {exc}"
            )
    if _CACHE.load_error is not None:
        raise _LoadFailed(_CACHE.load_error)
    assert _CACHE.idle is not None
    return _CACHE.loaded, _CACHE.idle


class _LoadFailed(Exception):
    """The worker's model load failed; the message is the cell's error."""


def run_cell_task(task: CellTask) -> dict[str, Any]:
    """Measure one cell in this (worker) process; return its rows and result summary.

    The worker keeps a per-process cache of the last meter (by spec, options and visible GPUs)
    and of the last model loaded (model, precision, device, seed) with its idle baseline, so
    consecutive cells of one model on one worker load it once and measure idle once. A failed
    load is cached too: the model's next cells on this worker fail at once with the same error.

    Returns ``{"cell_key", "status": "done"|"failed", "error", "result", "rows", "elapsed_s",
    "worker"}``: ``rows`` is :meth:`ResultStore.export_cell` of an in-memory store written by
    :func:`~joulebench.profile.runner.profile_cell` under the task's run_id and cell_key (a
    failed cell's rows hold its error). Warnings raised while measuring are logged here; the
    cell's result keeps them under ``warnings``.
    """
    from joulebench.profile.runner import profile_cell
    from joulebench.workloads.prompts import load_prompts

    t0 = time.monotonic()
    cfg = ProfileConfig.model_validate(task.config)
    run_id, key = task.run_id, task.cell_key
    where = worker_info()
    result: CellResult | None = None
    error: str | None = None
    with ResultStore(":memory:") as scratch:
        try:
            meter = _meter(task)
            loaded, idle = _model(task, cfg, meter)
            pkey = (cfg.prompts, cfg.n, cfg.seed)
            if pkey not in _CACHE.prompts:
                _CACHE.prompts[pkey] = load_prompts(
                    cfg.prompts, n=cfg.n, seed=cfg.seed, tokenizer=loaded.tokenizer
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = profile_cell(
                    loaded,
                    _CACHE.prompts[pkey],
                    cfg,
                    meter,
                    store=scratch,
                    run_id=run_id,
                    cell_key=key,
                    idle=idle,
                    hardware=task.hardware,
                    study=task.study,
                )
            for w in caught:
                log.info("cell %s: %s", key, w.message)
        except _LoadFailed as exc:
            error = str(exc)
        except CELL_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            log.warning("cell %s failed: %s", key, error)
            record_failed_cell(scratch, run_id, cfg, task.study, error)
        else:
            assert result is not None
            result["worker"] = where
            scratch.finish_cell(run_id, key, result=result)
        rows = scratch.export_cell(run_id, key)
    return {
        "cell_key": key,
        "status": "failed" if error else "done",
        "error": error,
        "result": result,
        "rows": rows,
        "elapsed_s": time.monotonic() - t0,
        "worker": where,
    }
