"""Profile one cell: batch the prompts, measure the direct and/or subtraction phases, store.

``profile_cell`` returns the object ``joulebench profile --json`` prints (assembled by
:mod:`joulebench.profile.result`); with a store it also writes the run (unless the caller owns
it), the cell, every repeat and every audit check.
"""

from __future__ import annotations

import logging
import platform
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joulebench.analysis.roofline import (
    HardwarePeak,
    ModelShape,
    calibrate_cpu,
    gpu_peak,
    roofline,
)
from joulebench.analysis.stats import StoppingRule
from joulebench.errors import ConfigError, JoulebenchError, JoulebenchWarning
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.gpus import model_devices, require_gpu_domain
from joulebench.meters.host import HostMonitor
from joulebench.meters.sync import SyncFn, default_sync
from joulebench.meters.window import IdleBaseline
from joulebench.profile.batching import Batch, make_batches, padding_ratio
from joulebench.profile.config import ProfileConfig
from joulebench.profile.ops import ForwardClock, ModelOps
from joulebench.profile.phases import (
    AUTO_WINDOW_FLOOR_S,
    AUTO_WINDOW_PERIODS,
    WARMUP_SETTLE_REL,
    Phase,
    PhaseMeasurement,
    RepeatedMeasurement,
    WindowSettings,
    auto_window_s,
    decode_measurement,
    measure_idle_watched,
    measure_interleaved,
    prefill_measurement,
)
from joulebench.profile.result import assemble, batch_shapes, repeat_rows
from joulebench.profile.tokens import Tokens
from joulebench.results.cell import CellHeader, CellResult, Roofline, Window

if TYPE_CHECKING:
    from joulebench.results.store import ResultStore
    from joulebench.workloads.models import LoadedModel
    from joulebench.workloads.output_length import OutputLength
    from joulebench.workloads.prompt_set import EncodedPrompt, PromptSet

log = logging.getLogger(__name__)


def _encode(
    loaded: LoadedModel, prompts: PromptSet | Sequence[EncodedPrompt]
) -> list[EncodedPrompt]:
    """The prompts as token ids: a prompt set encoded with the model's tokenizer."""
    from joulebench.workloads.prompt_set import PromptSet

    if isinstance(prompts, PromptSet):
        return prompts.encode(loaded.tokenizer)
    return list(prompts)  # encoded already


def _eos_ids(loaded: LoadedModel) -> list[int] | None:
    gen = getattr(loaded.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if eos is None:
        return None
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def _precision_record(loaded: LoadedModel) -> dict[str, Any]:
    p = loaded.precision
    return dict(p.to_dict()) if hasattr(p, "to_dict") else {"name": str(p)}


def _hardware(device: Any, given: HardwarePeak | None) -> HardwarePeak | None:
    if given is not None:
        return given
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        memory_gb = torch.cuda.get_device_properties(device).total_memory / 1e9
        peak = gpu_peak(name, memory_gb)
        if peak is None:
            log.warning(
                "GPU %r (%.0f GB) is not in the roofline table: no roofline", name, memory_gb
            )
        return peak
    return calibrate_cpu()


def environment() -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def profile_cell(
    loaded: LoadedModel,
    prompts: PromptSet | Sequence[EncodedPrompt],
    config: ProfileConfig,
    meter: Meter,
    *,
    store: ResultStore | None = None,
    run_id: str | None = None,
    cell_key: str | None = None,
    idle: IdleBaseline | None = None,
    idle_s: float = 2.0,
    hardware: HardwarePeak | None = None,
    sync: SyncFn = default_sync,
    output_length: OutputLength | None = None,
    study: str = "profile",
) -> CellResult:
    """Measure one cell and return the ``profile --json`` object.

    ``prompts`` is a PromptSet (encoded with the model's tokenizer) or encoded prompts.
    ``idle``: a baseline measured beforehand; otherwise ``idle_s`` seconds are measured now, with
    the model loaded. With ``store`` and no ``run_id`` a ``profile`` run is created and finished
    here; with ``run_id`` (a sweep) only the cell, its repeats and audits are written.
    ``output_length``: an object with ``max_new_tokens(ep)``, ``min_new_tokens(ep)`` and
    ``to_dict()``; by default ``OutputLength.parse(config.output_length)``.
    ``study``: the label the cell is stored under (a sweep passes its file's ``study:``).
    """
    if output_length is None:
        from joulebench.workloads.output_length import OutputLength

        output_length = OutputLength.parse(config.output_length)

    if getattr(loaded, "shape_only", False) and getattr(loaded, "device", "cpu") == "cpu":
        log.info("shape-only model on CPU: energy is real, outputs are random-weight tokens")
    pad = _pad_token(loaded)
    device = next(loaded.model.parameters()).device
    meter = require_gpu_domain(meter, model_devices(loaded.model))  # a GPU run measures its GPUs
    batches: list[Batch] = make_batches(
        _encode(loaded, prompts),
        batch_size=config.batch_size,
        pad_token_id=pad,
        output_length=output_length,
        bucketing=config.bucketing,
        device=device,
    )
    info = MeterInfo.of(meter)
    cell = _CellRecord(store, run_id, cell_key or config.cell_key())
    cell.start(config, info, study)
    try:
        result = _measure(
            loaded,
            batches,
            config,
            meter,
            info,
            idle,
            idle_s,
            hardware,
            sync,
            device,
            output_length,
            pad,
        )
    except BaseException as exc:  # Ctrl-C too: never leave the cell and run marked running
        cell.fail(exc)
        raise
    return cell.finish(*result)


def _pad_token(loaded: LoadedModel) -> int:
    """The tokenizer's pad token (left padding needs one)."""
    pad = getattr(loaded.tokenizer, "pad_token_id", None)
    if pad is None:
        raise ConfigError(
            f"the tokenizer of {loaded.name} has no pad token; left padding needs one"
        )
    return int(pad)


class _CellRecord:
    """A cell's rows in the store (nothing without one): its run, created and finished here
    unless the caller owns it (``run_id`` given), the cell, its repeats and audits."""

    def __init__(self, store: ResultStore | None, run_id: str | None, cell_key: str) -> None:
        self.store, self.cell_key = store, cell_key
        self.owns_run = store is not None and run_id is None
        self.run_id = run_id or ""  # an owned run's id once start() has created it

    def start(self, config: ProfileConfig, info: MeterInfo, study: str) -> None:
        if self.store is None:
            return
        if self.owns_run:
            self.run_id = self.store.start_run(
                "profile",
                config=config.model_dump(mode="json"),
                environment=environment(),
                meter=info.to_dict(),
            )
        self.store.start_cell(
            self.run_id, self.cell_key, config.model_dump(mode="json"), study=study
        )

    def fail(self, exc: BaseException) -> None:
        """Mark the cell (and an owned run) failed, or interrupted by Ctrl-C."""
        if self.store is None:
            return
        status = "failed" if isinstance(exc, Exception) else "interrupted"
        error = f"{type(exc).__name__}: {exc}"
        self.store.finish_cell(self.run_id, self.cell_key, error=error, status=status)
        if self.owns_run:
            self.store.finish_run(self.run_id, status=status)

    def finish(self, result: CellResult, repeats: list[dict[str, Any]]) -> CellResult:
        """Store the measured cell and its repeat rows; the result with its ``cell_key`` (and
        ``run_id``)."""
        result["cell_key"] = self.cell_key
        if self.store is None:
            return result
        self.store.add_repeats(self.run_id, self.cell_key, repeats)
        self.store.add_audits(self.run_id, self.cell_key, result["audit"])
        self.store.finish_cell(self.run_id, self.cell_key, result=result)
        if self.owns_run:
            self.store.finish_run(self.run_id, summary={"cell_key": self.cell_key})
        result["run_id"] = self.run_id
        return result


def profile_configured(
    config: ProfileConfig,
    meter: Meter,
    *,
    store_path: Path | None = None,
    idle_s: float = 2.0,
    hardware: HardwarePeak | None = None,
) -> CellResult:
    """Load the config's model and prompt set and measure the cell (:func:`profile_cell`), as a
    ``profile`` run in the DuckDB file ``store_path`` when one is given."""
    from joulebench.results.store import ResultStore
    from joulebench.workloads.models import load_model
    from joulebench.workloads.prompts import load_prompts

    loaded = load_model(config.model, config.precision, config.device, seed=config.seed)
    prompt_set = load_prompts(
        config.prompts, n=config.n, seed=config.seed, tokenizer=loaded.tokenizer
    )
    db = ResultStore(store_path) if store_path is not None else None
    try:
        return profile_cell(
            loaded, prompt_set, config, meter, store=db, idle_s=idle_s, hardware=hardware
        )
    finally:
        if db is not None:
            db.close()


def window_setting(min_window_s: float | None, update_period_s: float) -> tuple[float, str]:
    """The window length a cell uses and how it was chosen (stored in the result)."""
    if min_window_s is not None:
        return float(min_window_s), f"given: --min-window-s {min_window_s:g}"
    s = auto_window_s(update_period_s)
    return s, (
        f"auto: max({AUTO_WINDOW_FLOOR_S:g} s, {AUTO_WINDOW_PERIODS} × the meter's update "
        f"period {update_period_s:g} s) = {s:g} s"
    )


def _clocked(
    ops: ModelOps, clocks: dict[str, ForwardClock], key: str, op: Callable[[], object]
) -> Callable[[], None]:
    """``op`` with the ModelOps clock switched to ``clocks[key]`` while it runs."""

    def run() -> None:
        ops.clock = clocks[key]
        op()

    return run


def _window_settings(
    config: ProfileConfig,
    meter: Meter,
    info: MeterInfo,
    idle: IdleBaseline | None,
    idle_s: float,
    sync: SyncFn,
    device: Any,
) -> tuple[WindowSettings, IdleBaseline, str]:
    """The settings every measurement of the cell shares (with its idle baseline, measured now
    when none is given) and the rule that chose its window length."""
    host = HostMonitor(gpu_meter=meter)  # other processes during every window
    contention = config.contention_policy()
    if idle is None:
        idle = measure_idle_watched(meter, idle_s, host=host, contention=contention, sync=sync)
    window_s, window_rule = window_setting(config.min_window_s, info.update_period_s)
    settings = WindowSettings(
        rule=StoppingRule(config.ci_target, config.min_repeats, config.max_repeats),
        min_window_s=window_s,
        warmup=config.warmup,
        warmup_settle=WARMUP_SETTLE_REL if config.warmup_rule == "settled" else None,
        idle=idle,
        sync=sync,
        device=device,
        host=host,
        contention=contention,
    )
    return settings, idle, window_rule


def _token_counts(batches: Sequence[Batch], states: Sequence[Any]) -> Tokens:
    """Requests, input tokens and output tokens of the prepared decode states."""
    return Tokens(
        n_requests=sum(b.size for b in batches),
        n_batches=len(batches),
        input_effective=sum(b.effective_tokens for b in batches),
        input_computed=sum(b.computed_tokens for b in batches),
        decode_output=sum(sum(s.output_counts) for s in states),
        decode_steps=sum(s.steps for s in states),
    )


def _measurements(
    ops: ModelOps,
    batches: Sequence[Batch],
    states: Sequence[Any],
    meter: Meter,
    method: str,
    settings: WindowSettings,
) -> dict[str, RepeatedMeasurement]:
    """The measurements ``method`` asks for: direct prefill and decode, subtraction's
    generate(1) and generate(N), or all four."""
    todo: dict[str, RepeatedMeasurement] = {}
    if method in ("direct", "both"):
        todo["prefill"] = prefill_measurement(ops, batches, meter, settings)
        todo["decode"] = decode_measurement(ops, states, meter, settings)
    if method in ("subtraction", "both"):

        def gen1() -> None:
            for b in batches:
                ops.generate(b, 1)

        def genn() -> None:
            for b in batches:
                ops.generate(b, b.max_new_tokens, b.min_new_tokens)

        todo["generate_1"] = RepeatedMeasurement(
            gen1, meter, settings, phase=Phase.PREFILL, method="subtraction"
        )
        todo["generate_n"] = RepeatedMeasurement(
            genn, meter, settings, phase=Phase.GENERATE, method="subtraction"
        )
    return todo


def _measure_clocked(
    ops: ModelOps, todo: dict[str, RepeatedMeasurement]
) -> tuple[dict[str, PhaseMeasurement], dict[str, ForwardClock]]:
    """Run the measurements interleaved, every op's ModelOps calls on its own clock: the time
    generate() spends outside the forward is compared op by op (generate_overhead), so the
    clocks must not mix."""
    clocks: dict[str, ForwardClock] = {k: ForwardClock() for k in todo}
    for key, m in todo.items():
        m.op = _clocked(ops, clocks, key, m.op)
    return dict(measure_interleaved(todo)), clocks


def _roofline_for(
    loaded: LoadedModel,
    batches: Sequence[Batch],
    steps: list[int],
    device: Any,
    hardware: HardwarePeak | None,
) -> Callable[[dict[str, float]], Roofline]:
    """The cell's roofline for measured times (unavailable, with the reason, when the hardware
    or the model is not known to it)."""

    def roofline_for(measured_s: dict[str, float]) -> Roofline:
        try:
            peak = _hardware(device, hardware)
            if peak is None:
                return {"available": False, "reason": "hardware not in the roofline table"}
            return roofline(  # the parsed precision, knobs (compute dtype) included
                ModelShape.from_config(loaded.model.config),
                batch_shapes(batches, steps),
                loaded.precision,
                peak,
                measured_s=measured_s,
            )
        except JoulebenchError as exc:
            return {"available": False, "reason": str(exc)}

    return roofline_for


def _header(
    loaded: LoadedModel,
    batches: Sequence[Batch],
    config: ProfileConfig,
    info: MeterInfo,
    idle: IdleBaseline,
    device: Any,
    output_length: OutputLength,
    window: Window,
) -> CellHeader:
    """The result's fields that describe the cell, before its measured sections."""
    return {
        "model": loaded.name,
        "precision": _precision_record(loaded),
        "device": str(device),
        "config": config.model_dump(mode="json"),
        "padding_ratio": padding_ratio(batches),
        "output_length": output_length.to_dict(),
        "meter": info.to_dict(),
        "meter_methods": dict(info.methods),
        "estimated": info.is_estimated,
        "idle": idle.to_dict(),
        "window": window,
    }


def _measure(
    loaded: LoadedModel,
    batches: Sequence[Batch],
    config: ProfileConfig,
    meter: Meter,
    info: MeterInfo,
    idle: IdleBaseline | None,
    idle_s: float,
    hardware: HardwarePeak | None,
    sync: SyncFn,
    device: Any,
    output_length: OutputLength,
    pad: int,
) -> tuple[CellResult, list[dict[str, Any]]]:
    """The cell's result and the rows of every warm-up and repeat it measured."""
    ops = ModelOps(
        loaded.model, pad_token_id=pad, eos_token_ids=_eos_ids(loaded), compile=config.compile
    )
    settings, idle, window_rule = _window_settings(config, meter, info, idle, idle_s, sync, device)
    # Output lengths and decode steps: known for forced lengths, observed once for natural ones.
    states = [ops.prepare_decode(b) for b in batches]
    steps = [s.steps for s in states]
    tokens = _token_counts(batches, states)
    todo = _measurements(ops, batches, states, meter, config.method, settings)
    measured, clocks = _measure_clocked(ops, todo)
    del states
    per_op = len(batches)  # one measurement op runs every batch: ModelOps calls per op
    window: Window = {"min_window_s": settings.min_window_s, "rule": window_rule}
    out, _ = assemble(
        measured,
        tokens,
        method=config.method,
        consistency_tolerance=config.consistency_tolerance,
        compiled=config.compile,
        device=device,
        roofline_for=_roofline_for(loaded, batches, steps, device, hardware),
        idle_w=idle.total_power_w,
        update_period_s=info.update_period_s,
        header=_header(loaded, batches, config, info, idle, device, output_length, window),
        quiet_cores=config.quiet_cores,
        clocks={k: c.to_dict(per_op) for k, c in clocks.items()},
    )
    for msg in out["warnings"]:
        warnings.warn(msg, JoulebenchWarning, stacklevel=4)
    return out, repeat_rows(measured, tokens)
