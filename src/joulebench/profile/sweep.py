"""Resumable sweeps: a YAML grid of profile cells, one model load per model × precision.

The grid is models × precisions × prompt sets × batch sizes × bucketing × compile. Each cell is a
:class:`ProfileConfig`; its ``cell_key`` (a stable hash of that config) identifies it in the
store, and the sweep's run is found again by its name, so re-running a killed sweep skips
``done`` cells and redoes the one that was cut (``start_cell`` discards its partial rows). A cell
that fails (OOM, unsupported precision) is recorded as failed with its error; the sweep goes on.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, ValidationError
from typing_extensions import NotRequired, TypedDict

from joulebench.errors import ConfigError, JoulebenchError
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.host import HostMonitor
from joulebench.profile.batching import parse_bucketing
from joulebench.profile.config import MeasurementSettings, ProfileConfig
from joulebench.progress import Emit
from joulebench.validation import validation_message
from joulebench.yamlfile import read_yaml

if TYPE_CHECKING:
    from joulebench.analysis.roofline import HardwarePeak
    from joulebench.meters.window import IdleBaseline
    from joulebench.results.store import ResultStore
    from joulebench.workloads.models import LoadedModel

log = logging.getLogger(__name__)

#: Seconds assumed for loading one model in the dry-run estimate.
LOAD_ESTIMATE_S = 10.0
#: Update period assumed for the dry-run's longest automatic window (NVML's energy counter).
NVML_PERIOD_ESTIMATE_S = 0.1


def _bucketing(spec: str) -> str:
    """``spec`` as given, once :func:`parse_bucketing` reads it (a typo fails at load)."""
    try:
        parse_bucketing(spec)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return spec


#: One entry of a sweep's ``batch_sizes``; a bad one is reported with its index.
BatchSize = Annotated[int, Field(ge=1)]
#: One entry of a sweep's ``bucketing``: ``none``, ``sorted`` or ``buckets:K``.
BucketingSpec = Annotated[str, AfterValidator(_bucketing)]


class SweepConfig(MeasurementSettings):
    """A sweep file. Unknown keys are errors (a typo must not silently shrink the grid)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the sweep's name: resuming finds its run by it")
    study: str = Field(
        "profile", min_length=1, description="the label the sweep's cells are stored under"
    )
    models: list[str] = Field(min_length=1)
    precisions: list[str] = Field(default_factory=lambda: ["fp32"], min_length=1)
    batch_sizes: list[BatchSize] = Field(default_factory=lambda: [1], min_length=1)
    bucketing: list[BucketingSpec] = Field(default_factory=lambda: ["none"], min_length=1)
    compile: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    prompts: list[str] = Field(default_factory=lambda: ["quick"], min_length=1)
    idle_s: float = Field(2.0, ge=0)

    def cells(self) -> list[ProfileConfig]:
        """The grid, grouped by model × precision (the load order)."""
        out = []
        for model, precision in itertools.product(self.models, self.precisions):
            for prompts, bs, bucket, comp in itertools.product(
                self.prompts, self.batch_sizes, self.bucketing, self.compile
            ):
                out.append(
                    ProfileConfig(
                        model=model,
                        precision=precision,
                        batch_size=bs,
                        prompts=prompts,
                        bucketing=bucket,
                        compile=comp,
                        **self.measurement_settings(),
                    )
                )
        return out


def parse_sweep(data: Any, source: str = "<sweep>") -> SweepConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep file must be a mapping of keys (name:, models:, …)")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            validation_message(
                exc,
                f"{source}: invalid sweep file",
                name=lambda p: f"key '{p}'",
                known_keys=lambda loc: list(SweepConfig.model_fields),
                one_per_line=True,
            )
        ) from None


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file; errors name the file and the bad key."""
    return parse_sweep(read_yaml(path, "sweep file"), str(path))


def check_sources(sweep: SweepConfig) -> dict[str, Any]:
    """Resolve what the sweep names, without loading weights; returns {model: tokenizer}.

    Every model source must resolve (``shape:<Name>`` to a bundled shape, ``tiny…``, a model
    directory or a hub id with a tokenizer), every precision must parse and every prompt set must
    be a known synthetic set, a ``hf:`` dataset or an existing file. Errors are ConfigErrors
    naming the bad entry (unknown names list the known ones), so ``--dry-run`` catches a typo
    before a GPU sweep starts.
    """
    from joulebench.workloads.models import load_tokenizer
    from joulebench.workloads.precision import parse_precision
    from joulebench.workloads.sources import parse_model_source
    from joulebench.workloads.synthetic import PROFILES

    # every model is classified (a bad source named) before any tokenizer is loaded
    sources = {model: parse_model_source(model) for model in sweep.models}
    for precision in sweep.precisions:
        parse_precision(precision)
    for spec in sweep.prompts:
        key = spec.strip().lower()
        if key in PROFILES or key.startswith("hf:"):
            continue
        if not key.endswith((".jsonl", ".parquet", ".csv")):
            raise ConfigError(
                f"prompt set '{spec}' is not understood; use {', '.join(PROFILES)}, a "
                ".jsonl/.parquet/.csv file or hf:<dataset>[:<split>]"
            )
        if not Path(spec).expanduser().is_file():
            raise ConfigError(f"prompt file {spec} does not exist")
    return {model: load_tokenizer(source) for model, source in sources.items()}


@dataclass(frozen=True, slots=True)
class DryRun:
    cells: list[ProfileConfig]
    groups: int
    estimate_min_s: float
    estimate_max_s: float


def dry_run(sweep: SweepConfig) -> DryRun:
    """The cells and a time estimate (min: every phase converges at min_repeats; max: the cap).

    Without ``min_window_s`` the window length depends on the meter (:func:`auto_window_s` of
    its update period), which a dry run does not open: 0.25 s (RAPL, the estimator) for the
    minimum, 1 s (NVML's ~100 ms counter) for the maximum.
    """
    from joulebench.profile.phases import AUTO_WINDOW_FLOOR_S, auto_window_s

    cells = sweep.cells()
    windows = {"direct": 2, "subtraction": 2, "both": 4}[sweep.method]
    groups = len(sweep.models) * len(sweep.precisions)
    fixed = groups * (LOAD_ESTIMATE_S + sweep.idle_s)
    given = sweep.min_window_s
    short_s = AUTO_WINDOW_FLOOR_S if given is None else given
    long_s = auto_window_s(NVML_PERIOD_ESTIMATE_S) if given is None else given
    lo = fixed + len(cells) * windows * sweep.min_repeats * short_s * 1.1
    hi = fixed + len(cells) * windows * sweep.max_repeats * long_s * 1.1
    return DryRun(cells, groups, lo, hi)


class SweepCounts(TypedDict):
    """A sweep run's cells: all of them, and how many were measured, skipped (already done on
    resume) and failed; the measuring body updates them as it goes."""

    total: int
    done: int
    skipped: int
    failed: int


class SweepSummary(SweepCounts):
    """What running (or resuming) a sweep returns: its run in the store and the counts.
    ``store``: the store's path, where a command adds it to its ``--json`` output."""

    run_id: str
    resumed: bool
    store: NotRequired[str]


def run_sweep(
    sweep: SweepConfig,
    store: ResultStore,
    meter: Meter,
    *,
    loader: Callable[..., Any] | None = None,
    prompt_loader: Callable[..., Any] | None = None,
    on_event: Emit | None = None,
    idle_s: float | None = None,
    hardware: HardwarePeak | None = None,
    idle_baselines: dict[tuple[str, str], IdleBaseline] | None = None,
) -> SweepSummary:
    """Run (or resume) a sweep into ``store``; returns counts and the run id.

    ``idle_baselines``: a dict the idle baseline of each (model, precision) load is kept in and
    reused from; a caller running several sweeps over the same cached models (a ``loader`` that
    keeps them loaded) passes one dict so the baseline is measured once per loaded model.

    ``on_event`` receives ``{"event": "start"|"skip"|"cell_start"|"done"|"failed", ...}`` (the
    CLI draws its progress bar from them). ``loader``/``prompt_loader`` default to
    :func:`joulebench.workloads.models.load_model` / :func:`joulebench.workloads.prompts.load_prompts`.
    """
    from joulebench.workloads.models import load_model
    from joulebench.workloads.prompts import load_prompts

    load = loader or load_model
    load_set = prompt_loader or load_prompts

    def body(run_id: str, counts: SweepCounts, emit: Emit) -> None:
        _SweepRun(
            sweep=sweep,
            store=store,
            meter=meter,
            run_id=run_id,
            counts=counts,
            emit=emit,
            load=load,
            load_set=load_set,
            idle_s=sweep.idle_s if idle_s is None else idle_s,
            hardware=hardware,
            idles={} if idle_baselines is None else idle_baselines,
        ).run()

    return drive_sweep_run(sweep, store, MeterInfo.of(meter).to_dict(), body, on_event)


def drive_sweep_run(
    sweep: SweepConfig,
    store: ResultStore,
    meter_info: dict[str, Any],
    body: Callable[[str, SweepCounts, Emit], None],
    on_event: Emit | None = None,
) -> SweepSummary:
    """Find the sweep's run by name (resume) or start it, run ``body``, finish the run.

    ``body(run_id, counts, emit)`` measures the cells and updates ``counts`` (done, skipped,
    failed). Shared by :func:`run_sweep` and :func:`joulebench.profile.fanout.run_sweep_fanout`:
    the same ``start`` event, the same run statuses (``running`` again on resume, ``interrupted``
    on Ctrl-C — the interrupt goes on to the caller —, ``done`` or ``done_with_failures``).
    ``meter_info`` is what the run stores about the meter (a new run only).
    """
    from joulebench.profile.runner import environment

    emit = on_event or (lambda e: None)
    cells = sweep.cells()
    run_id = store.find_run("sweep", sweep.name)
    resumed = run_id is not None
    if run_id is None:
        run_id = store.start_run(
            "sweep",
            config=sweep.model_dump(mode="json"),
            environment=environment(),
            meter=meter_info,
            name=sweep.name,
        )
    counts: SweepCounts = {"total": len(cells), "done": 0, "skipped": 0, "failed": 0}
    emit({"event": "start", "run_id": run_id, "total": len(cells), "resumed": resumed})
    if resumed:
        store.set_run_status(run_id, "running")
    try:
        body(run_id, counts, emit)
    except KeyboardInterrupt:
        # Ctrl-C: the run says so (a cell cut in the middle stays unfinished and is redone on
        # resume); the interrupt goes on to the caller
        store.finish_run(run_id, status="interrupted", summary=counts)
        raise
    status = "done" if counts["failed"] == 0 else "done_with_failures"
    store.finish_run(run_id, status=status, summary=counts)
    return {"run_id": run_id, "resumed": resumed, **counts}


def skip_done(
    store: ResultStore,
    run_id: str,
    cells: list[ProfileConfig],
    counts: SweepCounts,
    emit: Emit,
) -> list[ProfileConfig]:
    """The cells still to measure; ``done`` ones are counted as skipped with a ``skip`` event."""
    todo = []
    for c in cells:
        if store.cell_status(run_id, c.cell_key()) == "done":
            counts["skipped"] += 1
            emit({"event": "skip", "cell": c, "cell_key": c.cell_key()})
        else:
            todo.append(c)
    return todo


def record_failed_cell(
    store: ResultStore, run_id: str, cell: ProfileConfig, study: str, error: str
) -> None:
    """Store ``cell`` as failed with ``error``, unless profile_cell already recorded it (it does
    once it got as far as ``start_cell``)."""
    key = cell.cell_key()
    if store.cell_status(run_id, key) != "failed":
        store.start_cell(run_id, key, cell.model_dump(mode="json"), study=study)
        store.finish_cell(run_id, key, error=error)


def free_cuda() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(slots=True)
class _SweepRun:
    """One pass over a sweep's cells, one model load per (model, precision) group; it updates
    ``counts`` and emits the events of :func:`run_sweep`."""

    sweep: SweepConfig
    store: ResultStore
    meter: Meter
    run_id: str
    counts: SweepCounts
    emit: Emit
    load: Callable[..., Any]
    load_set: Callable[..., Any]
    idle_s: float
    hardware: HardwarePeak | None
    idles: dict[tuple[str, str], IdleBaseline]

    def run(self) -> None:
        groups: dict[tuple[str, str], list[ProfileConfig]] = {}
        for c in self.sweep.cells():
            groups.setdefault((c.model, c.precision), []).append(c)
        for (model, precision), group in groups.items():
            todo = skip_done(self.store, self.run_id, group, self.counts, self.emit)
            if not todo:
                continue
            loaded = self._load_group(model, precision, todo)
            if loaded is None:
                continue
            self._measure_group(loaded, self.idles[(model, precision)], todo)
            del loaded
            free_cuda()

    def _load_group(self, model: str, precision: str, todo: list[ProfileConfig]) -> Any:
        """The group's loaded model, its idle baseline measured; ``None`` (every cell of the
        group recorded as failed) if either fails."""
        from joulebench.profile.phases import measure_idle_watched

        try:
            loaded = self.load(model, precision, self.sweep.device, seed=self.sweep.seed)
            # once per loaded model (never per cell); at least two meter update periods
            if (model, precision) not in self.idles:
                self.idles[(model, precision)] = measure_idle_watched(
                    self.meter,
                    self.idle_s,
                    host=HostMonitor(),
                    contention=self.sweep.contention_policy(),
                )
        except (JoulebenchError, RuntimeError, ValueError, OSError, ImportError) as exc:
            error = f"loading {model} at {precision}: {type(exc).__name__}: {exc}"
            log.warning("%s", error)
            for c in todo:
                self._fail(c, error)
            return None
        return loaded

    def _measure_group(
        self, loaded: LoadedModel, idle: IdleBaseline, todo: list[ProfileConfig]
    ) -> None:
        """Measure the group's cells on one loaded model; a prompt set is loaded once."""
        prompt_cache: dict[str, Any] = {}
        for c in todo:
            self._measure_cell(loaded, idle, c, prompt_cache)

    def _measure_cell(
        self,
        loaded: LoadedModel,
        idle: IdleBaseline,
        c: ProfileConfig,
        prompt_cache: dict[str, Any],
    ) -> None:
        """One cell, stored and reported by a ``done`` or ``failed`` event."""
        from joulebench.profile.runner import profile_cell

        key = c.cell_key()
        self.emit({"event": "cell_start", "cell": c, "cell_key": key})
        t0 = time.monotonic()
        try:
            if c.prompts not in prompt_cache:
                prompt_cache[c.prompts] = self.load_set(
                    c.prompts, n=c.n, seed=c.seed, tokenizer=loaded.tokenizer
                )
            result = profile_cell(
                loaded,
                prompt_cache[c.prompts],
                c,
                self.meter,
                store=self.store,
                run_id=self.run_id,
                cell_key=key,
                idle=idle,
                hardware=self.hardware,
                study=self.sweep.study,
            )
        except (JoulebenchError, RuntimeError, ValueError, NotImplementedError, MemoryError) as exc:
            log.warning("cell %s failed: %s", key, exc)
            self._fail(c, f"{type(exc).__name__}: {exc}")
            free_cuda()
            return
        self.counts["done"] += 1
        elapsed_s = time.monotonic() - t0
        self.emit(
            {"event": "done", "cell": c, "cell_key": key, "result": result, "elapsed_s": elapsed_s}
        )

    def _fail(self, c: ProfileConfig, error: str) -> None:
        """Record ``c`` as failed with ``error``, count it and say so in a ``failed`` event."""
        record_failed_cell(self.store, self.run_id, c, self.sweep.study, error)
        self.counts["failed"] += 1
        self.emit({"event": "failed", "cell": c, "cell_key": c.cell_key(), "error": error})
