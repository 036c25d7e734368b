"""Sweeps that fan out: one task per cell on an executor (this process, or a Ray cluster).

DuckDB has one writer, so workers never open the user's store. Each task measures its cell into
an in-memory store under the sweep's ``run_id`` and ``cell_key`` and returns that cell's rows
(:meth:`ResultStore.export_cell`); the driver imports them (:meth:`ResultStore.import_cell`,
which replaces the cell's earlier rows) as each task finishes, so a killed driver keeps every
finished cell and the same command resumes, skipping them.

Meter honesty: every worker opens its own meter from the sweep's meter spec and measures its own
node / GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` per task; the NVML meter honours it). The run
stores that spec and its options, not one meter's description; every cell keeps the meter info
and ``meter_methods`` of the worker that measured it, and a ``worker`` record (host, pid, GPUs).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from joulebench.errors import ConfigError, StoreError, UnknownName, at_least, positive
from joulebench.extras import require
from joulebench.meters import registry as meter_registry
from joulebench.profile.config import ProfileConfig
from joulebench.profile.fanout_worker import CellTask, clear_worker_cache, run_cell_task
from joulebench.profile.sweep import (
    SweepConfig,
    SweepCounts,
    SweepSummary,
    drive_sweep_run,
    record_failed_cell,
    skip_done,
)
from joulebench.progress import Emit
from joulebench.results.store import ResultStore

log = logging.getLogger(__name__)

OnStart = Callable[[CellTask], None]


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """A finished task: the worker's payload, or why the task itself crashed."""

    task: CellTask
    payload: dict[str, Any] | None
    error: str | None = None


# -- executors -------------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs cell tasks, yielding outcomes as they finish (any order).

    ``start()`` connects and checks resources before the sweep's run is created (errors stop
    there); ``run(tasks, on_start)`` calls ``on_start(task)`` when a task starts or is submitted;
    ``describe()`` is stored with the run; ``close()`` releases what ``start`` took.
    """

    name: str

    def start(self) -> None: ...
    def run(
        self, tasks: Sequence[CellTask], on_start: OnStart
    ) -> Generator[TaskOutcome, None, None]: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class LocalExecutor:
    """The reference executor: every task in this process, one after another."""

    name = "local"

    def __init__(self, *, task_fn: Callable[[CellTask], dict[str, Any]] = run_cell_task) -> None:
        self._task_fn = task_fn

    def start(self) -> None:
        return None

    def run(
        self, tasks: Sequence[CellTask], on_start: OnStart
    ) -> Generator[TaskOutcome, None, None]:
        for t in tasks:
            on_start(t)
            try:
                payload = self._task_fn(t)
            except Exception as exc:  # what a crashed remote task is: a failed cell
                log.warning("task for cell %s crashed", t.cell_key, exc_info=True)
                yield TaskOutcome(t, None, f"task crashed: {type(exc).__name__}: {exc}")
            else:
                yield TaskOutcome(t, payload, None)

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "concurrent": False}

    def close(self) -> None:
        clear_worker_cache()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with what to fix, when a Ray address is malformed or nothing listens there."""
    target = address.strip().removeprefix("ray://")
    if target in ("auto", "local"):
        return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r} is not host:port (e.g. head-node:6379 or ray://head:10001)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it there "
            "(ray start --head) or fix --ray-address / RAY_ADDRESS"
        ) from None


def _ray_error(exc: BaseException) -> str:
    """A one-line message for a failed Ray task (the remote cause, not its whole traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"ray task failed: {type(cause).__name__}: {cause}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"ray task failed: {type(exc).__name__}: {first}"


class RayExecutor:
    """One ``@ray.remote`` task per cell, each asking for ``gpus_per_cell`` / ``cpus_per_cell``.

    ``address``: a cluster to join (``host:6379`` or ``ray://host:10001``); None joins the
    cluster named by ``RAY_ADDRESS`` or starts a local one. ``init_options`` go to ``ray.init``
    (e.g. ``num_cpus`` for a local cluster). A task killed with its worker (OOM, segfault) is
    retried ``max_retries`` times, then recorded as a failed cell. Ray is initialised on the
    first run and shut down by :meth:`close` only when this executor started it.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        gpus_per_cell: float = 0.0,
        cpus_per_cell: float = 1.0,
        max_retries: int = 0,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        at_least(gpus_per_cell, 0, "GPUs per cell")
        positive(cpus_per_cell, "CPUs per cell")
        at_least(max_retries, 0, "max_retries")
        self._ray = require("ray", "ray", "sweeps on a Ray cluster")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus_per_cell = float(gpus_per_cell)
        self.cpus_per_cell = float(cpus_per_cell)
        self.max_retries = int(max_retries)
        self._init_options = {"include_dashboard": False, "log_to_driver": False}
        self._init_options.update(init_options or {})
        self._owns = False

    def start(self) -> None:
        """Start or join the cluster and check it has the resources one cell asks for."""
        ray = self._ray
        if not ray.is_initialized():
            where = self.address or "a new local cluster"
            options = dict(self._init_options)
            if self.address is not None:  # joining: the cluster's own settings apply
                options.pop("include_dashboard", None)
                check_reachable(self.address)  # ray.init retries a dead address for minutes
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"cannot start or join the Ray cluster at {where}: {exc}; check "
                    "--ray-address / RAY_ADDRESS (a head node's host:6379 or ray://host:10001)"
                ) from exc
            self._owns = True
        have = ray.cluster_resources()
        for resource, need in (("GPU", self.gpus_per_cell), ("CPU", self.cpus_per_cell)):
            if need > float(have.get(resource, 0.0)):
                raise ConfigError(
                    f"each cell asks for {need:g} {resource}(s) but the Ray cluster has "
                    f"{float(have.get(resource, 0.0)):g}: lower --{resource.lower()}s-per-cell "
                    "or add nodes"
                )

    def run(
        self, tasks: Sequence[CellTask], on_start: OnStart
    ) -> Generator[TaskOutcome, None, None]:
        ray = self._ray
        self.start()
        remote = ray.remote(run_cell_task).options(
            num_gpus=self.gpus_per_cell,
            num_cpus=self.cpus_per_cell,
            max_retries=self.max_retries,
            name="joulebench-cell",
        )
        by_ref: dict[Any, CellTask] = {}
        for t in tasks:
            by_ref[remote.remote(t)] = t
            on_start(t)  # submitted: Ray starts it when a worker with the resources is free
        pending = list(by_ref)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        payload = ray.get(ref)
                    except Exception as exc:  # RayTaskError, WorkerCrashedError, ObjectLostError…
                        log.warning("ray task for cell %s failed: %s", by_ref[ref].cell_key, exc)
                        yield TaskOutcome(by_ref[ref], None, _ray_error(exc))
                    else:
                        yield TaskOutcome(by_ref[ref], payload, None)
        finally:  # Ctrl-C or an error in the driver: do not leave cells running on the cluster
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "concurrent": True,
            "address": self.address or "local cluster",
            "gpus_per_cell": self.gpus_per_cell,
            "cpus_per_cell": self.cpus_per_cell,
        }

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


EXECUTORS: dict[str, type[LocalExecutor] | type[RayExecutor]] = {
    "local": LocalExecutor,
    "ray": RayExecutor,
}


def make_executor(name: str, **options: Any) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``) built with ``options``."""
    factory = EXECUTORS.get(name.strip().lower())
    if factory is None:
        raise UnknownName("executor", name, list(EXECUTORS))
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"executor '{factory.name}' takes no option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    return factory(**options)


# -- the driver ------------------------------------------------------------------------------------


def check_meter_spec(spec: str, options: dict[str, Any]) -> None:
    """Validate a meter spec and its options without opening a meter (workers open it)."""
    meter_registry.meter_configs(spec, **options)


def concurrency_caveat(
    meter_spec: str, options: dict[str, Any], described: dict[str, Any]
) -> str | None:
    """Why concurrent cells could count each other's energy with this meter, or None.

    Cells of a Ray sweep may run at the same time on one node. Which meters see only the
    task's own share is each backend's registry entry (``MeterSpec.reach``), asked through
    :func:`joulebench.meters.registry.shared_meters`.
    """
    if not described.get("concurrent"):
        return None
    whole_gpus = float(described.get("gpus_per_cell", 0)) >= 1
    shared = meter_registry.shared_meters(meter_spec, options, whole_gpus=whole_gpus)
    if not shared:
        return None
    return (
        f"cells may run at the same time on one node and the meter(s) {', '.join(shared)} "
        "measure node-wide or shared domains, so concurrent cells count each other's energy: "
        "give each cell a whole node (--cpus-per-cell = its cores) or whole GPUs with --meter nvml"
    )


def run_sweep_fanout(
    sweep: SweepConfig,
    store: ResultStore,
    meter_spec: str = "auto",
    meter_options: dict[str, Any] | None = None,
    *,
    executor: Executor,
    on_event: Emit | None = None,
    idle_s: float | None = None,
    hardware: Any = None,
) -> SweepSummary:
    """Run (or resume) ``sweep`` as one task per cell on ``executor``, gathering into ``store``.

    Returns what :func:`~joulebench.profile.sweep.run_sweep` returns (run_id, resumed, total,
    done, skipped, failed) and emits the same events. The run is found by the sweep's name
    (resume: ``done`` cells are skipped); a failing cell, a failed model load or a crashed task
    is recorded as a failed cell and the sweep goes on; Ctrl-C marks the run ``interrupted``.
    Each finished task's rows are imported at once. ``meter_spec`` / ``meter_options`` are what
    every worker opens its own meter with (``open_meter``); the executor is not closed here.
    """
    options = {k: v for k, v in (meter_options or {}).items() if v is not None}
    check_meter_spec(meter_spec, options)
    executor.start()
    idle_span = sweep.idle_s if idle_s is None else idle_s
    meter_info = {
        "name": meter_spec,
        "spec": meter_spec,
        "options": options,
        "opened_in": "each worker: every cell's result holds the meter that measured it",
        **executor.describe(),
    }
    caveat = concurrency_caveat(meter_spec, options, meter_info)
    if caveat:
        meter_info["caveat"] = caveat
        log.warning("%s", caveat)

    def body(run_id: str, counts: SweepCounts, emit: Emit) -> None:
        todo = {c.cell_key(): c for c in skip_done(store, run_id, sweep.cells(), counts, emit)}
        template = CellTask({}, run_id, "", sweep.study, meter_spec, options, idle_span, hardware)
        tasks = [
            replace(template, config=c.model_dump(mode="json"), cell_key=k) for k, c in todo.items()
        ]

        def started(t: CellTask) -> None:
            emit({"event": "cell_start", "cell": todo[t.cell_key], "cell_key": t.cell_key})

        with contextlib.closing(executor.run(tasks, started)) as outcomes:
            for outcome in outcomes:  # imported as each task finishes
                cell = todo[outcome.task.cell_key]
                _gather(store, run_id, sweep.study, outcome, cell, counts, emit)

    return drive_sweep_run(sweep, store, meter_info, body, on_event)


def _gather(
    store: ResultStore,
    run_id: str,
    study: str,
    outcome: TaskOutcome,
    cell: ProfileConfig,
    counts: SweepCounts,
    emit: Emit,
) -> None:
    """Import one finished task's rows (or record why it died) and emit done / failed."""
    key, payload = outcome.task.cell_key, outcome.payload
    if payload is not None:
        got = [(r["run_id"], r["cell_key"]) for r in payload["rows"].get("cells", [])]
        if got != [(run_id, key)]:
            raise StoreError(f"the task for cell {key} of run {run_id} returned rows of {got}")
        store.import_cell(payload["rows"])
        error = payload["error"]
    else:  # the task itself died: no rows came back
        error = outcome.error or "task failed"
        record_failed_cell(store, run_id, cell, study, error)
    if payload is not None and error is None:
        counts["done"] += 1
        result, elapsed_s = payload["result"], payload["elapsed_s"]
        emit({"event": "done", "cell": cell, "cell_key": key, "result": result,
              "elapsed_s": elapsed_s})  # fmt: skip
    else:
        counts["failed"] += 1
        emit({"event": "failed", "cell": cell, "cell_key": key, "error": error})
