"""The six steps of ``scripts/gpu_checks.py``: each drives joulebench's public CLI/API only.

Every step fills a :class:`StepRecord` (checks, figures, notes, files) as it goes, so a step that
fails or runs out of time still leaves what it measured. Nothing here measures energy itself:
``joulebench measure/sweep/profile/reproduce/report``, ``benchmarks/shape_loading.py`` and
``benchmarks/shaping.py`` do, and these functions read their JSON, the results store and
:mod:`joulebench.analysis.paper`'s trends.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from gpu_checks_proc import ROOT, Ctx, StepRecord, StepTimeout, json_out, run, server
from gpu_checks_trends import launch_gap_rows, precision_trend, serving_rows, study_trends

LLAMA, QWEN05 = "shape:Llama-3.1-8B-Instruct", "shape:Qwen2.5-0.5B-Instruct"
PRECISION_MODELS = [QWEN05] + [
    f"shape:Qwen2.5-{s}-Instruct" for s in ("1.5B", "3B", "7B")
] + [LLAMA]  # fmt: skip
ARRIVALS = ["sequential", "burst", "fixed:50ms", "fixed:300ms", "fixed:500ms", "uniform:50ms,300ms"]
# A matrix-multiply loop for `joulebench measure`: argv = seconds, device, matrix size.
MATMUL = (
    "import sys, time, torch\n"
    "s, dev, n = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n"
    "dt = torch.bfloat16 if dev.startswith('cuda') else torch.float32\n"
    "a = torch.randn(n, n, device=dev, dtype=dt); b = torch.randn(n, n, device=dev, dtype=dt)\n"
    "end, k = time.monotonic() + s, 0\n"
    "while time.monotonic() < end:\n"
    "    for _ in range(10): c = a @ b\n"
    "    torch.cuda.synchronize() if dev.startswith('cuda') else None; k += 10\n"
    "print(f'{k} matmuls of {n}x{n}', file=sys.stderr)\n"
)


def _write_yaml(ctx: Ctx, name: str, data: dict[str, Any]) -> Path:
    path = ctx.path(*name.split("/"))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- 1. meters (#2) ----------------------------------------------------------------------------
def step_meters(ctx: Ctx, rec: StepRecord) -> None:
    from joulebench.meters import nvml
    from joulebench.meters.window import EnergyWindow

    seconds, size = (2.0, 256) if ctx.smoke else (20.0, 8192)
    cmd = ["jb", "measure", "--meter", ctx.meter, "--idle-s", "1" if ctx.smoke else "5", "--json",
           "--store", str(ctx.store), "--name", "gpu-checks/meters", "--",
           sys.executable, "-c", MATMUL, str(seconds), ctx.device, str(size)]  # fmt: skip
    probe = nvml.probe()
    if not probe.available:
        rec.check("nvml_counter_vs_polled", False if not ctx.smoke else None,
                  f"NVML unavailable here ({probe.reason}): skipped"
                  + ("" if ctx.smoke else " — a GPU run needs it"))  # fmt: skip
        rc, out = run(ctx, cmd, "meters-measure", 60 + seconds * 3)
    else:
        counter, polled = nvml.NvmlMeter(mode="counter"), nvml.NvmlMeter(mode="polled")
        try:
            with EnergyWindow(counter) as wc, EnergyWindow(polled) as wp:
                rc, out = run(ctx, cmd, "meters-measure", 60 + seconds * 3)
        finally:
            counter.close()
            polled.close()
        c_j, p_j = wc.result.energy_j, wp.result.energy_j
        rel = None if not c_j or p_j is None else abs(p_j - c_j) / c_j
        rec.figures["nvml_window"] = {"counter_j": c_j, "polled_j": p_j, "rel_diff": rel,
                                      "duration_s": wc.result.duration_s}  # fmt: skip
        rec.methods.update({"counter", "polled"})
        rec.check("nvml_counter_vs_polled", rel is not None and rel <= 0.05,
                  f"counter {c_j} J vs polled {p_j} J over the same window: "
                  f"{'—' if rel is None else f'{rel:.2%}'} apart (≤ 5 %)")  # fmt: skip
    m = json_out(rc, out, "joulebench measure")
    methods = {d["name"]: d["method"] for d in m["domains"]}
    rec.methods.update(methods.values())
    rec.figures["measure"] = {k: m.get(k) for k in ("duration_s", "energy_j", "net_energy_j",
                              "idle_power_w", "average_power_w", "run_id")} | {"domains": methods}  # fmt: skip
    rec.check("measure_exit_0", rc == 0 and m.get("exit_code") == 0, f"joulebench measure rc {rc}")
    rec.check("idle_power_recorded", m.get("idle_power_w") is not None,
              f"idle power {m.get('idle_power_w')} W over {(m.get('idle') or {}).get('duration_s')} s")  # fmt: skip
    want = "estimated" if ctx.smoke else "counter"
    rec.check("gpu_counter_method" if not ctx.smoke else "estimated_label",
              want in methods.values(), f"domain methods {methods} (want {want})")  # fmt: skip
    if probe.available and rec.figures["nvml_window"]["counter_j"] and m.get("energy_j"):
        outer = rec.figures["nvml_window"]["counter_j"]
        rec.check("measure_inside_outer_window", m["energy_j"] <= outer * 1.01,
                  f"measure {m['energy_j']:.1f} J ≤ enclosing counter window {outer:.1f} J")  # fmt: skip


# -- 2. workloads (#3) -------------------------------------------------------------------------
def step_workloads(ctx: Ctx, rec: StepRecord) -> None:
    models = ["tiny"] if ctx.smoke else [QWEN05, LLAMA]
    cmd = [sys.executable, "benchmarks/shape_loading.py", "--device", ctx.device,
           "--models", *models, "--out", str(ctx.path("workloads", "x").parent)]  # fmt: skip
    if ctx.smoke:
        cmd += ["--precisions", "fp32", "bf16"]
    rows: list[dict[str, Any]] = []
    try:
        rc, _ = run(ctx, cmd, "workloads-shape-loading")
    finally:  # the benchmark prints one JSON line per (model, precision): keep partial results
        text = ctx.path("logs", "workloads-shape-loading.stdout")
        for line in text.read_text().splitlines() if text.exists() else []:
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
        rec.figures["rows"] = rows
    rec.files += ["workloads/shape_loading.json", "workloads/shape_loading.md"]
    rec.check("benchmark_exit_0", rc == 0, f"shape_loading.py rc {rc}, {len(rows)} rows")
    for r in rows:
        label = f"{r.get('model')} {r.get('precision')}"
        if "error" in r:
            rec.check(f"load {label}", False, r["error"])
            continue
        pred, mem = r.get("predicted_weight_bytes"), r.get("memory_bytes") or 0
        ok = pred is None or abs(mem - pred) <= 0.1 * pred
        rec.check(f"load {label}", ok, f"{r['load_time_s']} s, {mem / 2**30:.2f} GiB"
                  + (f" (predicted {pred / 2**30:.2f} GiB, ±10 %)" if pred else ""))  # fmt: skip


# -- 3. profiler (#4) --------------------------------------------------------------------------
TRIM = {"n": 2, "output_length": "32", "warmup": 1, "min_window_s": 0.5, "ci_target": 0.05,
        "min_repeats": 2, "max_repeats": 3, "idle_s": 3.0}  # fmt: skip
SMOKE_TRIM = TRIM | {"prompts": ["quick"], "n": 2, "output_length": "8", "min_window_s": 0.2,
                     "idle_s": 0.5, "device": "cpu", "warmup": 1, "max_repeats": 2}  # fmt: skip


def _sweep(ctx: Ctx, rec: StepRecord, example: str, update: dict[str, Any], limit_s: float) -> None:
    data = yaml.safe_load((ROOT / "examples" / example).read_text())
    data.update(TRIM if not ctx.smoke else SMOKE_TRIM)
    data.update(update)
    path = _write_yaml(ctx, f"profiler/{example}", data)
    rec.files.append(f"profiler/{example}")
    try:
        rc, out = run(ctx, ["jb", "sweep", str(path), "--store", str(ctx.store), "--meter",
                            ctx.meter, "--json"], f"profiler-{data['name']}", limit_s)  # fmt: skip
        s = json_out(rc, out, "joulebench sweep")
    except (StepTimeout, RuntimeError) as exc:  # the store keeps finished cells; the rest runs
        rec.check(f"sweep {data['name']}", False, str(exc))
        return
    rec.figures[data["name"]] = {k: s.get(k) for k in ("run_id", "done", "skipped", "failed")}
    rec.check(f"sweep {data['name']}", rc == 0 and not s.get("failed"),
              f"{s.get('done')} done, {s.get('skipped')} resumed, {s.get('failed')} failed")  # fmt: skip


def step_profiler(ctx: Ctx, rec: StepRecord) -> None:
    small, total_s = ["tiny", "tiny:qwen2:tiny"], ctx.left_s()
    _sweep(ctx, rec, "precision_sweep.yaml", {
        "name": "gpu-checks-precision", "models": small if ctx.smoke else PRECISION_MODELS,
        **({"precisions": ["fp32", "bf16", "int8-bnb"]} if ctx.smoke else {})}, 0.45 * total_s)  # fmt: skip
    _sweep(ctx, rec, "batch_sweep.yaml", {
        "name": "gpu-checks-batch", "models": small[:1] if ctx.smoke else [LLAMA], "n": 8,
        "batch_sizes": [1, 2, 4, 8], "bucketing": ["none"]}, 0.2 * total_s)  # fmt: skip
    gap: list[dict[str, Any]] = []
    cells = [(m, c) for m in (small[:1] if ctx.smoke else [LLAMA, QWEN05]) for c in (False, True)]
    for i, (model, compiled) in enumerate(cells):
        tag = f"{model.split(':')[-1]}-{'compile' if compiled else 'eager'}"
        cmd = ["jb", "profile", "--model", model, "--precision", "fp32" if ctx.smoke else "bf16",
               "--device", ctx.device, "--prompts", "quick" if ctx.smoke else "paper",
               "--n", "2", "--method", "direct", "--output-length", "8" if ctx.smoke else "64",
               "--warmup", "2", "--min-window-s", "0.5", "--min-repeats", "2",
               "--max-repeats", "3", "--idle-s", "1", "--meter", ctx.meter, "--json",
               "--store", str(ctx.store)] + (["--compile"] if compiled else [])  # fmt: skip
        try:
            rc, out = run(ctx, cmd, f"profiler-gap-{tag}", ctx.left_s() / (len(cells) - i))
            r = json_out(rc, out, "joulebench profile")
        except (StepTimeout, RuntimeError) as exc:
            rec.check(f"launch-gap {tag}", False, str(exc))
            continue
        rec.methods.update(r.get("meter_methods", {}).values())
        gap.append({"model": model, "compile": compiled, "result": r})
    rec.figures["launch_gap"] = launch_gap_rows(gap)
    for row in rec.figures["launch_gap"]:
        rec.check(f"launch-gap {row['model']}", row["compile_vs_eager_energy"] is not None,
                  row["verdict"])  # fmt: skip
    trends = study_trends(ctx.store, "gpu-checks-batch") | precision_trend(
        ctx.store, "gpu-checks-precision"
    )
    rec.figures["study_trends"] = trends
    for key, t in trends.items():
        rec.notes.append(f"{key}: study — {t['claim']} | here — {t['here']} ({t['verdict']})")


# -- 4. serving (#5) ---------------------------------------------------------------------------
def _plan(ctx: Ctx, name: str, schedulers: list[str], arrivals: list[str], n: int) -> Path:
    serving: dict[str, Any] = {
        "model": "tiny" if ctx.smoke else LLAMA, "precision": "fp32" if ctx.smoke else "bf16",
        "schedulers": schedulers, "arrivals": arrivals, "n": n,
        "prompts": "quick" if ctx.smoke else "paper", "output_length": 8 if ctx.smoke else 64,
        "idle_s": 0.5 if ctx.smoke else 5.0, "warmup_n": 1 if ctx.smoke else 4,
        "timeout_s": 60 if ctx.smoke else 180, "max_batch_size": 16,
    }  # fmt: skip
    return _write_yaml(ctx, f"serving/{name}.yaml", {"name": name, "device": ctx.device,
                                                     "serving": serving})  # fmt: skip


def step_serving(ctx: Ctx, rec: StepRecord) -> None:
    n = 4 if ctx.smoke else 16
    plans = [("gpu-checks-serving", ["continuous"], ARRIVALS, n, 0.7),
             ("gpu-checks-naive", ["sequential"], ["sequential"], max(2, n // 2), 1.0)]  # fmt: skip
    for name, scheds, arrivals, k, share in plans:
        plan = _plan(ctx, name, scheds, arrivals, k)
        rec.files.append(f"serving/{name}.yaml")
        cmd = ["jb", "reproduce", "--plan", str(plan), "--store", str(ctx.store), "--meter",
               ctx.meter, "--out", str(ctx.path("serving", name, "x").parent), "--json"]  # fmt: skip
        try:
            rc, out = run(ctx, cmd, f"serving-{name}", ctx.left_s() * share)
        except StepTimeout as exc:
            rec.check(f"reproduce {name}", False, str(exc))
            continue
        r = json_out(rc, out, "joulebench reproduce")
        st = r.get("studies", {}).get("serving", {})
        rec.check(f"reproduce {name}", rc == 0 and not st.get("failed"),
                  f"{st.get('done')} runs done, {st.get('skipped')} resumed, {st.get('failed')} failed")  # fmt: skip
    rows = serving_rows(ctx.store, "reproduce-gpu-checks-")
    rec.figures["runs"] = rows
    for r in rows:
        rec.methods.add(r["method"])
        # each accounting has a value, or (steady state of sparse arrivals) a stated reason
        have = [a for a, v in r["per_request_wh"].items() if v is not None or r["how"].get(a)]
        err = r["attribution_sum_rel_err"]
        rec.check(f"{r['arrival']} · {r['scheduler']}",
                  r["ok"] > 0 and not r["failed"] and len(have) == 4
                  and err is not None and err <= 0.01,
                  f"{r['ok']} ok / {r['failed']} failed; accountings {len(have)}/4; attribution "
                  f"sum error {r['attribution_sum_rel_err']}; audits failed: "
                  f"{', '.join(r['audits_failed']) or 'none'}")  # fmt: skip


# -- 5. shaping (#6) ---------------------------------------------------------------------------
def step_shaping(ctx: Ctx, rec: StepRecord) -> None:
    meter = "fake" if ctx.smoke else ctx.meter  # the server runs in another process: see note
    model, precision = ("tiny", "fp32") if ctx.smoke else (LLAMA, "bf16")
    if ctx.smoke:
        rec.notes.append("smoke: meter fake (constant power) — the server is another process, "
                         "which the process-scoped estimator would not see; plumbing only")  # fmt: skip
    args = ["--model", model, "--precision", precision, "--device", ctx.device, "--scheduler",
            "continuous", "--meter", meter, "--idle-s", "0", "--max-batch-size", "16"]  # fmt: skip
    with server(ctx, args, "shaping-server") as url:
        out_json = ctx.path("shaping", "shaping.json")
        cmd = [sys.executable, "benchmarks/shaping.py", "--url", url, "--meter", meter,
               "--rate", "4", "--n", "8" if ctx.smoke else "32", "--policy", "window:8,400ms",
               "--output-length", "8" if ctx.smoke else "32", "--idle-s", "0.5" if ctx.smoke else "5",
               "--out", str(out_json)]  # fmt: skip
        rc, _ = run(ctx, cmd, "shaping-benchmark")
    rec.files.append("shaping/shaping.json")
    s = json_out(rc, out_json.read_text() if out_json.exists() else "", "benchmarks/shaping.py")
    rec.methods.update(m for m in (s.get("energy_method") or "").split("+") if m)
    rec.figures["table"] = s.get("table")
    rec.figures["goal"] = s.get("goal")
    rec.check("benchmark_exit_0", rc == 0, f"shaping.py rc {rc}")
    for run_ in ("direct", "shaped"):
        req = (s.get(run_) or {}).get("load", {}).get("requests", {})
        rec.check(f"{run_}_requests_ok", bool(req.get("ok")) and not req.get("failed"),
                  f"{req.get('ok')} ok, {req.get('failed')} failed")  # fmt: skip
    g = s.get("goal") or {}
    rec.notes.append(f"net saving {g.get('net_saving')} (goal ≥ 0.30), TTFT p99 within bound: "
                     f"{g.get('ttft_p99_within_bound')} — reported, not a pass/fail check")  # fmt: skip


# -- 6. report (#7) ----------------------------------------------------------------------------
def step_report(ctx: Ctx, rec: StepRecord) -> None:
    if not ctx.store.exists():
        raise RuntimeError(f"no results store at {ctx.store}: run the other steps first")
    rc, out = run(ctx, ["jb", "report", str(ctx.store), "--out", str(ctx.path("report", "x").parent),
                        "--title", f"joulebench GPU checks ({ctx.out.name})", "--json"], "report")  # fmt: skip
    r = json_out(rc, out, "joulebench report")
    figs = r.get("figures", [])
    rec.figures["figures"] = [f["key"] for f in figs]
    rec.figures["missing"] = [f"{m['key']}: {m['reason']}" for m in r.get("missing", [])]
    for f in figs:
        rec.methods.update(f.get("methods", []))
    index = Path(r.get("index_html", ""))
    rec.files.append("report/index.html")
    rec.check("index_html", rc == 0 and index.is_file(), f"{index} written (rc {rc})")
    rec.check(
        "figures", bool(figs), f"{len(figs)} figures, {len(rec.figures['missing'])} not drawn"
    )


STEPS = {
    "meters": (step_meters, 90, "#2 NVML counter vs polled around a matmul loop; idle power"),
    "workloads": (step_workloads, 240, "#3 shape-only model load time and memory per precision"),
    "profiler": (step_profiler, 540, "#4 precision/batch sweeps, launch gap, study trends"),
    "serving": (step_serving, 240, "#5 embedded server under the study's arrivals, 4 accountings"),
    "shaping": (step_shaping, 180, "#6 shaped vs unshaped (benchmarks/shaping.py)"),
    "report": (step_report, 60, "#7 joulebench report over the store"),
}
