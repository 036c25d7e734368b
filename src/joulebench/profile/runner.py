"""Profile one cell: direct and/or subtraction phases, normalizations, roofline, audits, storage.

``profile_cell`` returns the object ``joulebench profile --json`` prints; with a store it also
writes the run (unless the caller owns it), the cell, every repeat and every audit check.
"""

from __future__ import annotations

import logging
import math
import platform
import warnings
from collections.abc import Sequence
from typing import Any

from joulebench.analysis import audit
from joulebench.analysis.roofline import (
    BatchShape,
    HardwarePeak,
    ModelShape,
    calibrate_cpu,
    gpu_peak,
    roofline,
)
from joulebench.analysis.stats import StoppingRule, Summary
from joulebench.errors import ConfigError, JoulebenchError, JoulebenchWarning
from joulebench.meters.base import Meter, MeterInfo
from joulebench.meters.sync import SyncFn, default_sync
from joulebench.meters.window import IdleBaseline, measure_idle
from joulebench.profile.batching import Batch, make_batches, padding_ratio
from joulebench.profile.config import ProfileConfig
from joulebench.profile.ops import ModelOps
from joulebench.profile.phases import (
    Phase,
    PhaseMeasurement,
    measure_decode,
    measure_prefill,
    measure_repeated,
)

log = logging.getLogger(__name__)


def _div(a: float | None, b: float) -> float | None:
    return None if a is None or not b else a / b


def _encode(loaded: Any, prompts: Any) -> list[Any]:
    if hasattr(prompts, "encode"):
        return list(prompts.encode(loaded.tokenizer))
    return list(prompts)


def _eos_ids(loaded: Any) -> list[int] | None:
    gen = getattr(loaded.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if eos is None:
        return None
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def _precision_info(loaded: Any) -> tuple[str, str | None, dict[str, Any]]:
    p = loaded.precision
    if hasattr(p, "to_dict"):
        d = p.to_dict()
        return str(d.get("name")), d.get("compute_dtype"), d
    return str(p), None, {"name": str(p)}


def _hardware(device: Any, given: HardwarePeak | None) -> HardwarePeak | None:
    if given is not None:
        return given
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name)
        if peak is None:
            log.warning("GPU %r is not in the roofline table: no roofline", name)
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


def _section(m: PhaseMeasurement, tokens: int, kind: str) -> dict[str, Any]:
    e, net, lat = m.energy, m.net_energy, m.latency
    return {
        "method": m.method,
        "energy_j": None if e is None else e.mean,
        "energy_std_j": None if e is None else e.std,
        "energy_ci95_j": None if e is None else e.ci_halfwidth,
        "ci_halfwidth_rel": None if e is None else e.ci_halfwidth_rel,
        "net_energy_j": None if net is None else net.mean,
        "latency_s": lat.mean,
        "latency_std_s": lat.std,
        "energy_per_token_j": _div(None if e is None else e.mean, tokens),
        "net_energy_per_token_j": _div(None if net is None else net.mean, tokens),
        "per_token_basis": kind,
        "repeats": len(m.repeats),
        "converged": m.converged,
        "ops_per_window": [r.n_ops for r in m.repeats],
        "min_window_s": m.min_window_s,
        "warmups": {"n": len(m.warmups), "latency_s": [w.latency_s for w in m.warmups]},
        "domains": m.per_domain_mean(),
    }


def _subtracted(gen1: PhaseMeasurement, genn: PhaseMeasurement, tokens: int) -> dict[str, Any]:
    """decode = generate(N) − generate(1); CI half-widths combined in quadrature."""
    e1, en = gen1.energy, genn.energy
    n1, nn = gen1.net_energy, genn.net_energy
    energy = None if e1 is None or en is None else en.mean - e1.mean
    net = None if n1 is None or nn is None else nn.mean - n1.mean
    half = None
    if e1 and en and e1.ci_halfwidth is not None and en.ci_halfwidth is not None:
        half = math.hypot(e1.ci_halfwidth, en.ci_halfwidth)
    return {
        "method": "subtraction",
        "energy_j": energy,
        "energy_ci95_j": half,
        "ci_halfwidth_rel": None if half is None or not energy else half / abs(energy),
        "net_energy_j": net,
        "latency_s": genn.latency.mean - gen1.latency.mean,
        "energy_per_token_j": _div(energy, tokens),
        "net_energy_per_token_j": _div(net, tokens),
        "per_token_basis": "decode_output_token",
        "repeats": len(genn.repeats),
        "converged": gen1.converged and genn.converged,
    }


def _phase_audits(
    m: PhaseMeasurement, idle_w: float | None, floor_s: float | None, update_period_s: float
) -> list[audit.AuditCheck]:
    scope = f"{m.phase}/{m.method}"
    e: Summary | None = m.energy
    op_window_s = sum(r.duration_s / r.n_ops for r in m.repeats) / len(m.repeats)
    ops = sum(r.n_ops for r in m.repeats) / len(m.repeats)
    resolution_j = (idle_w or 0.0) * update_period_s / ops  # one counter tick per window, per op
    checks = [
        audit.energy_above_idle(
            None if e is None else e.mean,
            idle_w,
            op_window_s,
            scope=scope,
            resolution_j=resolution_j,
        ),
        audit.energy_above_floor(None if e is None else e.mean, idle_w, floor_s, scope=scope),
        audit.window_long_enough(m.shortest_window_s, update_period_s, scope=scope),
    ]
    per_domain = [d["energy_j"] for d in m.per_domain_mean() if d["energy_j"] is not None]
    if e is not None and per_domain:
        checks.append(
            audit.attribution_sum(per_domain, e.mean, rel_tol=1e-6, scope=f"{scope}:domains")
        )
    return checks


def profile_cell(
    loaded: Any,
    prompts: Any,
    config: ProfileConfig,
    meter: Meter,
    *,
    store: Any = None,
    run_id: str | None = None,
    cell_key: str | None = None,
    idle: IdleBaseline | None = None,
    idle_s: float = 2.0,
    hardware: HardwarePeak | None = None,
    sync: SyncFn = default_sync,
    output_length: Any = None,
) -> dict[str, Any]:
    """Measure one cell and return the ``profile --json`` object.

    ``prompts`` is a PromptSet (encoded with the model's tokenizer) or encoded prompts.
    ``idle``: a baseline measured beforehand; otherwise ``idle_s`` seconds are measured now, with
    the model loaded. With ``store`` and no ``run_id`` a ``profile`` run is created and finished
    here; with ``run_id`` (a sweep) only the cell, its repeats and audits are written.
    ``output_length``: an object with ``max_new_tokens(ep)``, ``min_new_tokens(ep)`` and
    ``to_dict()``; by default ``OutputLength.parse(config.output_length)``.
    """
    if output_length is None:
        from joulebench.workloads.output_length import OutputLength

        output_length = OutputLength.parse(config.output_length)

    if getattr(loaded, "shape_only", False) and getattr(loaded, "device", "cpu") == "cpu":
        log.info("shape-only model on CPU: energy is real, outputs are random-weight tokens")
    tok = loaded.tokenizer
    pad = getattr(tok, "pad_token_id", None)
    if pad is None:
        raise ConfigError(
            f"the tokenizer of {loaded.name} has no pad token; left padding needs one"
        )
    encoded = _encode(loaded, prompts)
    device = next(loaded.model.parameters()).device
    batches: list[Batch] = make_batches(
        encoded,
        batch_size=config.batch_size,
        pad_token_id=pad,
        output_length=output_length,
        bucketing=config.bucketing,
        device=device,
    )
    info = MeterInfo.of(meter)
    cell_key = cell_key or config.cell_key()
    owns_run = store is not None and run_id is None
    if owns_run:
        run_id = store.start_run(
            "profile",
            config=config.model_dump(mode="json"),
            environment=environment(),
            meter=info.to_dict(),
        )
    if store is not None:
        store.start_cell(run_id, cell_key, config.model_dump(mode="json"), study="profile")
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
    except Exception as exc:
        if store is not None:
            store.finish_cell(run_id, cell_key, error=f"{type(exc).__name__}: {exc}")
            if owns_run:
                store.finish_run(run_id, status="failed")
        raise
    result["cell_key"] = cell_key
    if store is not None:
        repeats = result.pop("_repeats")
        store.add_repeats(run_id, cell_key, repeats)
        store.add_audits(run_id, cell_key, result["audit"])
        store.finish_cell(run_id, cell_key, result=result)
        if owns_run:
            store.finish_run(run_id, summary={"cell_key": cell_key})
        result["run_id"] = run_id
    else:
        result.pop("_repeats")
    return result


def _measure(
    loaded: Any,
    batches: Sequence[Batch],
    config: ProfileConfig,
    meter: Meter,
    info: MeterInfo,
    idle: IdleBaseline | None,
    idle_s: float,
    hardware: HardwarePeak | None,
    sync: SyncFn,
    device: Any,
    output_length: Any,
    pad: int,
) -> dict[str, Any]:
    ops = ModelOps(
        loaded.model, pad_token_id=pad, eos_token_ids=_eos_ids(loaded), compile=config.compile
    )
    rule = StoppingRule(config.ci_target, config.min_repeats, config.max_repeats)
    if idle is None:
        idle = measure_idle(meter, idle_s, sync=sync)
    idle_w = idle.total_power_w
    common: dict[str, Any] = dict(
        rule=rule,
        min_window_s=config.min_window_s,
        warmup=config.warmup,
        idle=idle,
        sync=sync,
        device=device,
    )
    n_req = sum(b.size for b in batches)
    eff = sum(b.effective_tokens for b in batches)
    computed = sum(b.computed_tokens for b in batches)
    direct = config.method in ("direct", "both")
    subtraction = config.method in ("subtraction", "both")
    measured: dict[str, PhaseMeasurement] = {}

    # Output lengths and decode steps: known for forced lengths, observed once for natural ones.
    states = [ops.prepare_decode(b) for b in batches]
    decode_tokens = sum(sum(s.output_counts) for s in states)
    output_tokens = decode_tokens + n_req
    steps = [s.steps for s in states]
    if direct:
        measured["prefill"] = measure_prefill(ops, batches, meter, **common)
        measured["decode"] = measure_decode(ops, states, meter, **common)
    del states
    if subtraction:

        def gen1() -> None:
            for b in batches:
                ops.generate(b, 1)

        def genn() -> None:
            for b in batches:
                ops.generate(b, b.max_new_tokens, b.min_new_tokens)

        measured["generate_1"] = measure_repeated(
            gen1, meter, phase=Phase.PREFILL, method="subtraction", **common
        )
        measured["generate_n"] = measure_repeated(
            genn, meter, phase=Phase.GENERATE, method="subtraction", **common
        )

    out: dict[str, Any] = {
        "model": loaded.name,
        "precision": _precision_info(loaded)[2],
        "device": str(device),
        "config": config.model_dump(mode="json"),
        "method": config.method,
        "n_requests": n_req,
        "n_batches": len(batches),
        "tokens": {
            "input_effective": eff,
            "input_computed": computed,
            "output": output_tokens,
            "decode_output": decode_tokens,
        },
        "padding_ratio": padding_ratio(batches),
        "output_length": output_length.to_dict(),
        "meter": info.to_dict(),
        "meter_methods": dict(info.methods),
        "estimated": info.is_estimated,
        "idle": idle.to_dict(),
        "warnings": [],
    }
    if direct:
        out["prefill"] = _section(measured["prefill"], eff, "effective_input_token")
        out["decode"] = _section(measured["decode"], decode_tokens, "decode_output_token")
    if subtraction:
        sub_prefill = _section(measured["generate_1"], eff, "effective_input_token")
        sub_prefill["method"] = "subtraction"
        sub_decode = _subtracted(measured["generate_1"], measured["generate_n"], decode_tokens)
        out["generate"] = _section(measured["generate_n"], output_tokens, "output_token")
        if direct:
            out["subtraction"] = {"prefill": sub_prefill, "decode": sub_decode}
        else:
            out["prefill"], out["decode"] = sub_prefill, sub_decode
    for name in ("prefill", "decode"):
        sec = out[name]
        sec["per_request_j"] = _div(sec["energy_j"], n_req)
    out["prefill"]["energy_per_effective_input_token_j"] = _div(out["prefill"]["energy_j"], eff)
    out["prefill"]["energy_per_computed_input_token_j"] = _div(out["prefill"]["energy_j"], computed)
    out["decode"]["energy_per_output_token_j"] = _div(out["decode"]["energy_j"], decode_tokens)
    total = None
    if out["prefill"]["energy_j"] is not None and out["decode"]["energy_j"] is not None:
        total = out["prefill"]["energy_j"] + out["decode"]["energy_j"]
    out["normalized"] = {
        "per_request_j": _div(total, n_req),
        "per_effective_input_token_j": _div(out["prefill"]["energy_j"], eff),
        "per_computed_input_token_j": _div(out["prefill"]["energy_j"], computed),
        "per_output_token_j": _div(total, output_tokens),
    }
    pre_lat, dec_lat = out["prefill"]["latency_s"], out["decode"]["latency_s"]
    out["latency"] = {
        "ttft_s": pre_lat / len(batches),
        "decode_s_per_token": _div(dec_lat, sum(steps)) if sum(steps) else None,
        "total_s": pre_lat + dec_lat,
        "timer": "cuda_events" if getattr(device, "type", "") == "cuda" else "perf_counter+sync",
    }

    # Roofline.
    floors: dict[str, float | None] = {"prefill": None, "decode": None}
    try:
        peak = _hardware(device, hardware)
        if peak is not None:
            name, compute, _ = _precision_info(loaded)
            shape = ModelShape.from_config(loaded.model.config)
            shapes = [BatchShape(b.size, b.padded_length, s) for b, s in zip(batches, steps, strict=True)]
            out["roofline"] = roofline(
                shape,
                shapes,
                name,
                peak,
                compute=compute,
                measured_s={"prefill": pre_lat, "decode": dec_lat},
            )
            floors = {p: out["roofline"][p]["time_floor_s"] for p in floors}
        else:
            out["roofline"] = {"available": False, "reason": "hardware not in the roofline table"}
    except JoulebenchError as exc:
        out["roofline"] = {"available": False, "reason": str(exc)}

    # Audits.
    checks: list[audit.AuditCheck] = []
    for key, m in measured.items():
        phase_floor = floors.get("prefill") if key in ("prefill", "generate_1") else floors.get(key)
        if key == "generate_n" and floors["prefill"] is not None and floors["decode"] is not None:
            phase_floor = floors["prefill"] + floors["decode"]
        checks.extend(_phase_audits(m, idle_w, phase_floor, info.update_period_s))
    if direct and subtraction:
        chk, rel = audit.phase_consistency(
            out["prefill"]["energy_j"],
            out["decode"]["energy_j"],
            out["generate"]["energy_j"],
            tolerance=config.consistency_tolerance,
        )
        checks.append(chk)
        out["consistency_rel_err"] = rel
        if not chk.passed:
            msg = f"phase consistency: {chk.detail}"
            out["warnings"].append(msg)
            warnings.warn(msg, JoulebenchWarning, stacklevel=3)
    out["audit"] = [c.to_dict() for c in checks]
    out["audit_passed"] = all(c.passed for c in checks)
    rows = []
    for key, m in measured.items():
        tok = {
            "prefill": {"input_effective": eff, "input_computed": computed},
            "decode": {"decode_output": decode_tokens},
            "generate_1": {"input_effective": eff, "output": n_req},
            "generate_n": {"input_effective": eff, "output": output_tokens},
        }[key]
        rows.extend(r.to_row(tok) for r in [*m.warmups, *m.repeats])
    out["_repeats"] = rows
    return out
