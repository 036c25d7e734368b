"""The steps of ``scripts/gpu_checks.py``, each run as its own process under a time limit.

    python scripts/gpu_checks_steps.py STEP --out DIR --limit-s S [--smoke]

Steps: ``nvml`` (the meter itself: counter vs polled vs instantaneous power), ``phases``
(precision × batch, prefill/decode, roofline, eager vs compiled decode), ``batching`` (J per
effective / computed input token and per output token vs batch) and ``serving``
(:mod:`gpu_checks_serving`). A step writes ``DIR/<step>.json`` after every check (see
:class:`gpu_checks_proc.StepRecord`). ``phases`` and ``batching`` run each model in a child
process (``unit``) with its own share of the step's time, streaming one JSON line per measured
cell, so a slow precision costs only its own unit. Nothing here measures energy by itself: the
figures come from joulebench's meters (:func:`joulebench.meters.registry.open_meter`,
:class:`joulebench.meters.nvml.NvmlMeter`) and profiler (:func:`joulebench.profile.runner.
profile_cell`).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_checks_proc import Ctx, StepRecord, StepTimeout, run

LLAMA, QWEN05 = "shape:Llama-3.1-8B-Instruct", "shape:Qwen2.5-0.5B-Instruct"
GPU_PRECISIONS = ("bf16", "int8-bnb", "int4-nf4", "int4-fp4", "fp16", "fp32")  # most telling first
SMOKE_PRECISIONS = ("fp32", "bf16")
MATMUL_WINDOWS_S = (0.1, 0.5, 1.0, 5.0)
IDLE_WINDOW_S = 3.0
BATCHES = (1, 2, 4, 8, 16, 32)


# -- shared: meters, idle, cells -------------------------------------------------------------
def open_meter(ctx: Ctx) -> Any:
    from joulebench.meters.registry import open_meter as _open

    return _open(ctx.meter)


def sync(device: str) -> None:
    from joulebench.meters.sync import torch_sync

    torch_sync() if device.startswith("cuda") else None


def profile_row(loaded: Any, meter: Any, idle: Any, hw: Any, *, batch: int, n: int,
                output: int, method: str, smoke: bool, compile: bool = False) -> dict[str, Any]:  # fmt: skip
    """One profiled cell (``joulebench.profile.runner.profile_cell``) and its compact row."""
    from joulebench.errors import JoulebenchWarning
    from joulebench.profile.config import ProfileConfig
    from joulebench.profile.runner import profile_cell
    from joulebench.workloads.prompts import load_prompts

    config = ProfileConfig(
        model=loaded.source, precision=loaded.precision.name, batch_size=batch, prompts="quick",
        n=n, method=method, output_length=str(output), warmup=1,
        min_window_s=0.1 if smoke else 0.3, ci_target=0.05, min_repeats=2, max_repeats=3,
        device=loaded.device, compile=compile,
    )  # type: ignore[arg-type]  # fmt: skip
    prompts = load_prompts("quick", n=n, seed=0, tokenizer=loaded.tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JoulebenchWarning)  # kept in the result's warnings
        r = profile_cell(loaded, prompts, config, meter, idle=idle, hardware=hw)
    roof = r.get("roofline") or {}
    cons = r.get("consistency") or {}

    def phase(name: str) -> dict[str, Any]:
        p = r.get(name) or {}
        return {k: p.get(k) for k in ("energy_j", "net_energy_j", "energy_per_token_j",
                                      "net_energy_per_token_j", "latency_s", "repeats")}  # fmt: skip

    return {
        "model": loaded.name, "precision": loaded.precision.name, "batch_size": batch, "n": n,
        "output_tokens_forced": output, "compile": compile, "tokens": r.get("tokens"),
        "padding_ratio": r.get("padding_ratio"), "prefill": phase("prefill"),
        "decode": phase("decode"), "normalized": r.get("normalized"),
        "consistency": {k: cons.get(k) for k in ("rel_err", "passed", "tolerance")} if cons else None,
        "roofline_efficiency": {ph: (roof.get(ph) or {}).get("efficiency") for ph in ("prefill", "decode")},
        "roofline_hardware": (roof.get("hardware") or {}).get("name"),
        "latency": r.get("latency"), "meter_methods": r.get("meter_methods"),
        "audits_failed": [a["name"] for a in r.get("audit", []) if a.get("passed") is False],
        "warnings": r.get("warnings"), "load_time_s": loaded.load_time_s,
        "memory_bytes": loaded.memory_bytes, "config": r.get("config"),
    }  # fmt: skip


# -- 1. NVML ---------------------------------------------------------------------------------
class AveragedPower:
    """``nvmlDeviceGetPowerUsage`` (the driver's averaged power) sampled at 20 Hz and integrated
    (trapezoid), beside the meters: NvmlMeter integrates the instantaneous field where it can."""

    def __init__(self, pynvml: Any, handles: list[Any]) -> None:
        self._nv, self._handles, self.energy_j = pynvml, handles, 0.0
        self._stop, self._last = threading.Event(), self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[float, float]:
        watts = sum(self._nv.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0
        return time.monotonic(), watts

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            now = self._sample()
            self.energy_j += (now[0] - self._last[0]) * (now[1] + self._last[1]) / 2
            self._last = now

    def read(self) -> float:
        return self.energy_j

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def _matmul_loop(device: str, seconds: float) -> tuple[float, int]:
    """bf16 (GPU) / fp32 (CPU) matrix products for ``seconds``, synchronized; (duration, count)."""
    import torch

    n = 8192 if device.startswith("cuda") else 256
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync(device)
    start, k = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for _ in range(4):
            a @ b
        sync(device)
        k += 4
    return time.monotonic() - start, k


def _total(meter: Any) -> Callable[[], float]:
    """Energy of every measured domain of ``meter``, summed (J since it opened)."""
    return lambda: float(sum(meter.read().energy_j.values()))


def _matmul(device: str, seconds: float) -> Callable[[], tuple[float, int]]:
    return lambda: _matmul_loop(device, seconds)


def _window(meters: dict[str, Callable[[], float]], device: str, work: Callable[[], Any]) -> dict[str, Any]:  # fmt: skip
    sync(device)
    before = {k: f() for k, f in meters.items()}
    t0 = time.monotonic()
    info = work()
    sync(device)
    dur = time.monotonic() - t0
    after = {k: f() for k, f in meters.items()}
    energy = {k: after[k] - before[k] for k in meters}
    return {"duration_s": dur, "energy_j": energy, "power_w": {k: e / dur for k, e in energy.items()},
            "work": info}  # fmt: skip


def step_nvml(ctx: Ctx, rec: StepRecord) -> None:
    from joulebench.meters import nvml

    probe = nvml.probe()
    rec.figure("probe", {"available": probe.available, "reason": probe.reason})
    if not probe.available:
        rec.check(
            "nvml_available", None if ctx.smoke else False, f"NVML unavailable: {probe.reason}"
        )
        meter = open_meter(ctx)  # smoke: the same windows through the estimator, plumbing only
        try:
            total = _total(meter)
            windows = [_window({"estimate": total}, ctx.device, _matmul(ctx.device, s))
                       | {"target_s": s} for s in MATMUL_WINDOWS_S[:2]]  # fmt: skip
        finally:
            meter.close()
        rec.methods.update(str(m) for m in meter.domains.values())
        rec.figure("windows", windows)
        rec.check("windows_measured", all(w["energy_j"]["estimate"] > 0 for w in windows),
                  f"{len(windows)} matmul windows through the {ctx.meter} meter")  # fmt: skip
        return
    from joulebench.errors import MeterUnavailable

    try:
        counter = nvml.NvmlMeter(mode="counter")
    except MeterUnavailable as exc:
        counter = None
        rec.check("counter_supported", False, f"the energy counter does not work here: {exc}")
    polled = nvml.NvmlMeter(mode="polled")
    averaged = AveragedPower(polled.pynvml, list(polled.handles.values()))
    try:
        meters: dict[str, Callable[[], float]] = {
            "polled": _total(polled),
            "averaged": averaged.read,
        }
        if counter is not None:
            meters["counter"] = _total(counter)
            rec.methods.update(str(m) for m in counter.domains.values())
            rec.figure("counter_update_period", counter.parameters().get("update_period"))
        rec.methods.update(str(m) for m in polled.domains.values())
        rec.figure("polled_methods", {d: str(m) for d, m in polled.domains.items()})
        rec.figure("devices", polled.parameters().get("devices"))
        # the counter must move at all on this (virtualised) driver before anything else
        first = _window(meters, ctx.device, _matmul(ctx.device, 1.0))
        if counter is not None:
            moved = first["energy_j"]["counter"] > 0
            rec.check("counter_supported", moved, f"counter rose {first['energy_j']['counter']:.1f} J "
                      f"over {first['duration_s']:.2f} s of matmul (polled {first['energy_j']['polled']:.1f} J)")  # fmt: skip
        idle = _window(meters, ctx.device, lambda: time.sleep(IDLE_WINDOW_S))
        rec.figure("idle", idle)
        rec.check("idle_power", idle["power_w"]["polled"] > 0,
                  "idle power " + ", ".join(f"{k} {v:.1f} W" for k, v in idle["power_w"].items()))  # fmt: skip
        windows = []
        for s in MATMUL_WINDOWS_S:
            if ctx.left_s() < s + 5:
                rec.check(f"window_{s}s", None, f"skipped: {ctx.left_s():.0f} s left in the step")
                continue
            w = _window(meters, ctx.device, _matmul(ctx.device, s)) | {"target_s": s}
            windows.append(w)
            rec.figure("windows", windows)
            if counter is not None and w["energy_j"].get("counter", 0) > 0:
                c = w["energy_j"]["counter"]
                rel = {k: w["energy_j"][k] / c - 1 for k in ("polled", "averaged")}
                w["rel_to_counter"] = rel
                # each window edge is uncertain by one counter update: 5 % + 2 periods / duration
                tol = 0.05 + 2 * counter.update_period_s / w["duration_s"]
                rec.check(f"window_{s}s_polled_vs_counter", abs(rel["polled"]) <= tol,
                          f"counter {c:.1f} J; polled {rel['polled']:+.1%}, averaged {rel['averaged']:+.1%} "
                          f"over {w['duration_s']:.3f} s (tolerance ±{tol:.0%}: 5 % + 2 update periods)")  # fmt: skip
    finally:
        averaged.close()
        polled.close()
        if counter is not None:
            counter.close()


# -- 2. phases and 3. batching (units in child processes) -------------------------------------
def unit_main(args: argparse.Namespace) -> int:
    """A child of ``phases``/``batching``: load each precision once, one JSON line per cell."""
    import torch

    from joulebench.analysis.roofline import calibrate_cpu
    from joulebench.profile.phases import measure_idle_watched
    from joulebench.profile.sweep import free_cuda
    from joulebench.workloads.models import load_model

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    hw = calibrate_cpu() if smoke else None
    meter = open_meter(Ctx(out=args.out, smoke=smoke))
    out = Path(args.rows)
    try:
        for precision in args.precisions.split(","):

            def emit(row: dict[str, Any]) -> None:
                with out.open("a") as f:
                    f.write(json.dumps(row, default=str) + "\n")

            try:
                loaded = load_model(args.model, precision, device, seed=0)
            except Exception as exc:
                emit(
                    {
                        "model": args.model,
                        "precision": precision,
                        "error": f"load: {type(exc).__name__}: {exc}",
                    }
                )
                continue
            try:
                idle = measure_idle_watched(meter, 0.3 if smoke else 1.0)
                if args.compile:
                    for row in compile_rows(loaded, meter, idle, hw, smoke):
                        emit(row)  # the token check first: it survives a slow compiled cell
                    continue
                for b in (int(x) for x in args.batches.split(",")):
                    n = max(b, args.min_n)
                    try:
                        emit(profile_row(loaded, meter, idle, hw, batch=b, n=n, output=args.output,
                                         method=args.method, smoke=smoke))  # fmt: skip
                    except Exception as exc:
                        emit({"model": loaded.name, "precision": precision, "batch_size": b,
                              "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            finally:
                del loaded
                free_cuda()
                torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    finally:
        meter.close()
    return 0


def compile_rows(
    loaded: Any, meter: Any, idle: Any, hw: Any, smoke: bool
) -> Iterator[dict[str, Any]]:
    """Eager vs compiled decode on one batch: token-identical output (yielded first), then the
    same row with the energy of each."""
    from joulebench.profile.batching import make_batches
    from joulebench.profile.ops import ModelOps
    from joulebench.workloads.output_length import OutputLength
    from joulebench.workloads.prompts import load_prompts

    output = 8 if smoke else 32
    prompts = load_prompts("quick", n=1, seed=0, tokenizer=loaded.tokenizer)
    tok = loaded.tokenizer
    device = next(loaded.model.parameters()).device
    batch = make_batches(list(prompts.encode(tok)), batch_size=1, pad_token_id=tok.pad_token_id,
                         output_length=OutputLength.parse(str(output)), bucketing="none", device=device)[0]  # fmt: skip
    tokens = {}
    for compiled in (False, True):
        ops = ModelOps(
            loaded.model, pad_token_id=tok.pad_token_id, eos_token_ids=None, compile=compiled
        )
        t0 = time.monotonic()
        tokens[compiled] = ops.decode(ops.prepare_decode(batch)).tolist()[0]
        if compiled:
            first_compiled_s = time.monotonic() - t0
    same = tokens[False] == tokens[True]
    diverge = next(
        (i for i, (a, b) in enumerate(zip(tokens[False], tokens[True], strict=True)) if a != b),
        None,
    )
    head = {"model": loaded.name, "precision": loaded.precision.name, "kind": "compile",
            "tokens_identical": same, "first_divergence": diverge, "tokens_compared": len(tokens[False]),
            "first_compiled_decode_s": first_compiled_s}  # fmt: skip
    yield head
    rows = {c: profile_row(loaded, meter, idle, hw, batch=1, n=1, output=output, method="direct",
                           smoke=smoke, compile=c) for c in (False, True)}  # fmt: skip
    e = [rows[c]["decode"]["energy_per_token_j"] for c in (False, True)]
    t = [(rows[c]["latency"] or {}).get("decode_s_per_token") for c in (False, True)]
    yield head | {"eager_j_per_token": e[0], "compiled_j_per_token": e[1],
            "eager_s_per_token": t[0], "compiled_s_per_token": t[1],
            "compiled_vs_eager_energy": None if not e[0] or e[1] is None else e[1] / e[0],
            "compiled_vs_eager_time": None if not t[0] or t[1] is None else t[1] / t[0],
            "eager": rows[False], "compiled": rows[True]}  # fmt: skip


def run_unit(
    ctx: Ctx, rec: StepRecord, tag: str, limit_s: float, **opts: Any
) -> list[dict[str, Any]]:
    """Run one unit under ``limit_s``; the rows it streamed (also when it timed out)."""
    rows_path = ctx.path(rec.name, f"{tag}.jsonl")
    rows_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "unit", "--out", str(ctx.out),
           "--rows", str(rows_path)] + (["--smoke"] if ctx.smoke else [])  # fmt: skip
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    try:
        rc, _ = run(ctx, cmd, f"{rec.name}-{tag}", limit_s)
        if rc != 0:
            rec.check(f"{tag}_exit", False, f"unit exited {rc} (see logs/{rec.name}-{tag}.log)")
    except StepTimeout as exc:
        rec.check(f"{tag}_time", False, str(exc))
    text = rows_path.read_text() if rows_path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _row_checks(rec: StepRecord, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        label = f"{r.get('model')} {r.get('precision')} b={r.get('batch_size')}"
        if "error" in r:
            rec.check(label, False, r["error"])
            continue
        rec.methods.update((r.get("meter_methods") or {}).values())
        eff = {k: v for k, v in (r.get("roofline_efficiency") or {}).items() if v is not None}
        rec.check(f"{label} roofline ≤ 1", bool(eff) and all(v <= 1.0 for v in eff.values()),
                  "efficiency " + (", ".join(f"{k} {v:.3f}" for k, v in eff.items()) or "not computed"))  # fmt: skip
        cons = r.get("consistency")
        if cons:
            rec.check(f"{label} phase consistency", bool(cons.get("passed")),
                      f"prefill + decode vs generate: {cons.get('rel_err', 0):.1%} (tolerance {cons.get('tolerance')})")  # fmt: skip


def step_phases(ctx: Ctx, rec: StepRecord) -> None:
    # (tag, model, precisions, batch sizes, share of the time before the compile unit)
    units = [("qwen", "tiny:qwen2:tiny", ("bf16",), "1", 0.3),
             ("llama", "tiny", SMOKE_PRECISIONS, "1,2", 1.0)] if ctx.smoke else [
             ("llama", LLAMA, GPU_PRECISIONS, "1,8", 0.75),
             ("qwen", QWEN05, GPU_PRECISIONS, "1,8", 1.0)]  # fmt: skip
    compile_s = 35.0 if ctx.smoke else 75.0  # kept for the launch-gap unit
    all_rows: list[dict[str, Any]] = []
    for tag, model, precisions, batches, share in units:
        all_rows += run_unit(ctx, rec, tag, (ctx.left_s() - compile_s) * share, model=model,
                             precisions=",".join(precisions), batches=batches, min_n=1,
                             method="both", output=4 if ctx.smoke else 16)  # fmt: skip
        rec.figure("rows", all_rows)
    _row_checks(rec, all_rows)
    comp = run_unit(ctx, rec, "compile", ctx.left_s() - 2, model="tiny" if ctx.smoke else QWEN05,
                    precisions="fp32" if ctx.smoke else "bf16", compile=True, batches="1", min_n=1,
                    method="direct", output=8)  # fmt: skip
    rec.figure("compile", comp)
    for c in comp:
        if "error" in c:
            rec.check("compile", False, c["error"])
            continue
        if "compiled_vs_eager_energy" not in c:
            rec.check("compile tokens identical", bool(c["tokens_identical"]),
                      f"{c['tokens_compared']} greedy tokens, first divergence at {c['first_divergence']}")  # fmt: skip
            continue
        ratio = c["compiled_vs_eager_energy"]
        rec.check("compile vs eager measured", ratio is not None,
                  f"compiled decode {ratio if ratio is None else f'{ratio:.2f}'}× eager J/token, "
                  f"{c['compiled_vs_eager_time']}× time (first compiled decode {c['first_compiled_decode_s']:.1f} s)")  # fmt: skip


def step_batching(ctx: Ctx, rec: StepRecord) -> None:
    batches = BATCHES[:2] if ctx.smoke else BATCHES
    rows = run_unit(ctx, rec, "llama", ctx.left_s() - 2, model="tiny" if ctx.smoke else LLAMA,
                    precisions="fp32" if ctx.smoke else "bf16", batches=",".join(map(str, batches)),
                    min_n=2 if ctx.smoke else 4, method="direct", output=4 if ctx.smoke else 16)  # fmt: skip
    rec.figure("rows", rows)
    _row_checks(rec, rows)
    done = sorted(r["batch_size"] for r in rows if "error" not in r)
    rec.check("batch sizes measured", done == list(batches), f"{done} of {list(batches)}")


def _serving(ctx: Ctx, rec: StepRecord) -> None:
    from gpu_checks_serving import step_serving

    step_serving(ctx, rec)


STEPS: dict[str, tuple[Callable[[Ctx, StepRecord], None], str]] = {
    "nvml": (step_nvml, "NVML counter vs polled vs averaged power over bf16 matmul windows; idle"),
    "phases": (step_phases, "prefill/decode by precision × batch, roofline, eager vs compiled"),
    "batching": (
        step_batching,
        "Llama-3.1-8B J per effective/computed input and output token vs b",
    ),
    "serving": (_serving, "embedded continuous server under the study's arrivals; shaped Poisson"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=[*STEPS, "unit"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit-s", type=float, default=600.0)
    ap.add_argument("--smoke", action="store_true")
    for opt in ("rows", "model", "precisions", "batches", "method"):  # unit options
        ap.add_argument(f"--{opt}")
    ap.add_argument("--min-n", type=int, default=1)
    ap.add_argument("--output", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    if args.step == "unit":
        return unit_main(args)
    fn, what = STEPS[args.step]
    ctx = Ctx(out=args.out, smoke=args.smoke, deadline=time.monotonic() + args.limit_s - 3)
    rec = StepRecord(args.step, path=args.out / f"{args.step}.json", what=what,
                     mode="smoke" if args.smoke else "gpu", limit_s=args.limit_s)  # fmt: skip
    rec.logs = ctx.logs
    rec.save()
    try:
        fn(ctx, rec)
    except StepTimeout as exc:
        rec.status = "timeout"
        rec.error = str(exc)
        rec.save()
        return 1
    except Exception as exc:  # recorded; the next step still runs
        rec.notes.append(traceback.format_exc(limit=8))
        rec.finish(f"{type(exc).__name__}: {exc}")
        return 1
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
