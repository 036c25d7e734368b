"""Wall time of the same small CPU grid run by joulebench and by optimum-benchmark, same work.

The grid: 3 precisions (fp32, bf16, fp16) × 3 batch sizes (1, 2, 4) on the tiny llama, copied to
a temp dir so both tools load the very same files (its tokenizer_config names the
library-neutral ``PreTrainedTokenizerFast``: transformers 4 does not know transformers 5's
tokenizer class).

What makes the comparison fair (the script prints it):

- the same workload per cell: one batch of ``batch_size`` prompts of exactly ``--seq-len`` random
  tokens (optimum-benchmark's input generator; joulebench gets the same shapes through its
  ``prompt_loader``, seeded, no padding, no chat template) and exactly ``--new-tokens`` new tokens
  (min = max) in both;
- the same measured quantities: prefill = generate(1 token), decode = generate(N) − prefill (the
  study's subtraction, which optimum-benchmark uses; joulebench ``--method subtraction``), energy
  and latency of each;
- the same measurement budget: optimum-benchmark measures each energy phase for ≥ ``duration``
  s and ≥ ``iterations`` calls (its defaults: 10 s, 10 calls, 10 warm-up runs, read from its
  ``InferenceConfig``); joulebench measures each phase in ``--jb-repeats`` windows of
  ``duration / repeats`` s (same total measured time; ≥ ``iterations`` calls checked after the
  run), after the same number of warm-ups; ``--jb-adaptive`` instead lets joulebench's stopping
  rule end a phase once its 95 % CI is within ``--ci-target``, capped at the same budget.
  optimum-benchmark also runs a separate latency pass of the same budget (per-token timing of
  full generates); joulebench takes latency from its energy windows;
- each tool as users run it: optimum-benchmark one ``Benchmark.launch`` per cell (a process and a
  model load per cell, CodeCarbon energy); joulebench one process, ``run_sweep`` once per batch
  size, one model load per precision (kept across the three sweeps), one idle baseline per model
  load, results into DuckDB, the sensorless estimator (no RAPL/NVML here).

optimum-benchmark needs transformers < 5, so this script builds its own venv under the cache dir
(``$JOULEBENCH_CACHE`` or ``~/.cache/joulebench``; never in the repo; ``--venv`` reuses one) with
the project's torch (``torch==<this torch>``, CPU wheel), ``transformers<5`` and
``optimum-benchmark[codecarbon]``. If that venv cannot be built or optimum-benchmark cannot run,
the script prints exactly why and exits 2. Goal: joulebench ≥ 5× faster.

    .venv/bin/python benchmarks/vs_optimum_benchmark.py [--venv DIR] [--new-tokens 16]
        [--seq-len 64] [--duration-s 10] [--iterations 10] [--warmup 10] [--jb-repeats 3]
        [--jb-adaptive] [--ci-target 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
BATCH_SIZES = (1, 2, 4)

# joulebench's side, run as its own process (imports and start-up are counted, as for ob).
JB_RUNNER = textwrap.dedent(
    """
    import json, random, sys, time, warnings
    t_start = time.perf_counter()
    from joulebench.errors import JoulebenchWarning
    from joulebench.meters.registry import open_meter
    from joulebench.profile.sweep import parse_sweep, run_sweep
    from joulebench.results.store import ResultStore
    from joulebench.workloads.models import load_model
    from joulebench.workloads.prompts import EncodedPrompt
    args = json.loads(sys.argv[1])
    t_imported = time.perf_counter()
    loads, cache = [], {}

    def loader(model, precision, device, seed=0):
        if precision not in cache:
            t0 = time.perf_counter()
            cache[precision] = load_model(model, precision, device, seed=seed)
            loads.append(time.perf_counter() - t0)
        return cache[precision]

    def prompt_loader(spec, n=None, seed=0, tokenizer=None):
        rng = random.Random(seed)  # same shapes as optimum-benchmark: random ids, no padding
        vocab = min(len(tokenizer), tokenizer.vocab_size) - 1
        return [EncodedPrompt(f"r{i}", [rng.randint(3, vocab) for _ in range(args["seq_len"])],
                              args["new_tokens"]) for i in range(n)]

    meter = open_meter(args["meter"])
    warnings.simplefilter("ignore", JoulebenchWarning)
    summaries, idles = [], {}  # idle baseline: once per loaded model, across the sweeps
    with ResultStore(args["store"]) as store:
        for bs in args["batch_sizes"]:
            cfg = parse_sweep({**args["sweep"], "name": f"vs_ob_b{bs}", "batch_sizes": [bs],
                               "n": bs})
            summaries.append(run_sweep(cfg, store, meter, loader=loader,
                                       prompt_loader=prompt_loader, idle_baselines=idles))
        reps = store.query(
            "SELECT warmup, phase, sum(duration_s) AS s, min(n_ops_total) AS min_ops FROM "
            "(SELECT cell_key, warmup, phase, method, sum(duration_s) AS duration_s, "
            "sum(n_ops) AS n_ops_total FROM repeats GROUP BY ALL) GROUP BY ALL")
        cells = store.query("SELECT status, result FROM cells")
    t_end = time.perf_counter()
    meter.close()
    print("JB_RESULT " + json.dumps({
        "imports_s": t_imported - t_start, "runner_s": t_end - t_start, "loads_s": loads,
        "summaries": summaries, "repeats": reps, "meter": meter.name,
        "cells": [json.loads(c["result"]) if isinstance(c["result"], str) else c["result"]
                  for c in cells if c["status"] == "done"]}, default=str))
    """
)

OB_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from optimum_benchmark import (Benchmark, BenchmarkConfig, InferenceConfig, ProcessConfig,
                                   PyTorchConfig)
    from optimum_benchmark.logging_utils import setup_logging
    setup_logging(level="ERROR")
    args = json.loads(sys.argv[1])
    out = []
    if __name__ == "__main__":
        for dtype in args["dtypes"]:
            for bs in args["batch_sizes"]:
                t0 = time.perf_counter()
                config = BenchmarkConfig(
                    name=f"tiny-{dtype}-b{bs}",
                    launcher=ProcessConfig(device_isolation=False),
                    scenario=InferenceConfig(
                        latency=True, energy=True, memory=False,
                        warmup_runs=args["warmup"], iterations=args["iterations"],
                        duration=args["duration_s"],
                        input_shapes={"batch_size": bs, "sequence_length": args["seq_len"]},
                        generate_kwargs={"max_new_tokens": args["new_tokens"],
                                         "min_new_tokens": args["new_tokens"]},
                    ),
                    backend=PyTorchConfig(model=args["model"], device="cpu", torch_dtype=dtype,
                                          task="text-generation", no_weights=False),
                )
                report = Benchmark.launch(config)
                d = report.to_dict()
                out.append({"dtype": dtype, "batch_size": bs, "wall_s": time.perf_counter() - t0,
                            "prefill": {k: d.get("prefill", {}).get(k) for k in ("latency", "energy")},
                            "decode": {k: d.get("decode", {}).get(k) for k in ("latency", "energy")}})
        print("OB_RESULT " + json.dumps(out, default=str))
    """
)


def cache_dir() -> Path:
    base = os.environ.get("JOULEBENCH_CACHE") or os.path.expanduser("~/.cache/joulebench")
    return Path(base) / "optimum-benchmark-venv"


def fail(why: str, detail: str = "") -> None:
    print(f"optimum-benchmark could not be run: {why}")
    if detail:
        print(textwrap.indent(detail.strip()[-3000:], "    "))
    sys.exit(2)


def ensure_venv(venv: Path, torch_version: str) -> Path:
    """The venv's python, with optimum-benchmark importable; built once, then reused."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import optimum_benchmark, transformers, torch; print(transformers.__version__, torch.__version__)"]  # fmt: skip
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"building the optimum-benchmark venv in {venv} (once) …", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "-q", f"torch=={torch_version}"],
        [str(py), "-m", "pip", "install", "-q", f"torch=={torch_version}", "transformers<5",
         "optimum-benchmark[codecarbon]"],
    ]  # fmt: skip
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"`{' '.join(cmd[-4:])}` exited {r.returncode}", r.stderr or r.stdout)
    r = subprocess.run(probe, capture_output=True, text=True)
    if r.returncode != 0:
        fail("optimum_benchmark does not import in its venv", r.stderr)
    return py


def prepare_model(dest: Path) -> Path:
    from joulebench.workloads.tiny import tiny_model_path

    src = tiny_model_path("llama", "tiny")
    model = dest / "tiny-llama"
    shutil.copytree(src, model)
    tc = model / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.write_text(json.dumps(cfg, indent=2))
    return model


def ob_defaults(py: Path) -> dict:
    """optimum-benchmark's own InferenceConfig defaults, read from its installed source."""
    code = ("import dataclasses, json; from optimum_benchmark import InferenceConfig as C; "
            "f = {x.name: x.default for x in dataclasses.fields(C)}; "
            "print(json.dumps({k: f[k] for k in ('duration', 'iterations', 'warmup_runs')}))")  # fmt: skip
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        fail("cannot read optimum-benchmark's InferenceConfig defaults", r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_joulebench(model: Path, tmp: Path, args: argparse.Namespace) -> tuple[float, dict]:
    window_s = args.duration_s / args.jb_repeats
    sweep = {
        "models": [str(model)],
        "precisions": list(PRECISIONS),
        "prompts": ["random"],  # a label: prompt_loader builds the random-token batch
        "method": "subtraction",
        "output_length": str(args.new_tokens),
        "warmup": args.warmup,
        "min_window_s": window_s,
        "min_repeats": 3 if args.jb_adaptive else args.jb_repeats,
        "max_repeats": args.jb_repeats,
        "ci_target": args.ci_target,
        "idle_s": args.idle_s,
    }
    payload = {"sweep": sweep, "batch_sizes": list(BATCH_SIZES), "seq_len": args.seq_len,
               "new_tokens": args.new_tokens, "meter": args.meter,
               "store": str(tmp / "jb.duckdb")}  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", JB_RUNNER, json.dumps(payload)],
                       capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - t0
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("JB_RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"joulebench failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall, json.loads(line.removeprefix("JB_RESULT "))


def run_optimum(py: Path, model: Path, tmp: Path, args: argparse.Namespace) -> tuple[float, list]:
    payload = {
        "model": str(model),
        "dtypes": list(PRECISIONS.values()),
        "batch_sizes": list(BATCH_SIZES),
        "seq_len": args.seq_len,
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "duration_s": args.duration_s,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    # its working dir: optimum-benchmark writes benchmark.log and *_codecarbon.json there
    r = subprocess.run([str(py), "-c", OB_RUNNER, json.dumps(payload)], capture_output=True,
                       text=True, env=env, cwd=tmp)  # fmt: skip
    wall = time.perf_counter() - t0
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("OB_RESULT ")), None)
    if r.returncode != 0 or line is None:
        fail(f"the optimum-benchmark grid exited {r.returncode}", r.stderr or r.stdout)
    return wall, json.loads(line.removeprefix("OB_RESULT "))  # type: ignore[union-attr]


def jb_breakdown(wall: float, jb: dict) -> dict[str, float]:
    """joulebench's wall time by phase (the rest: prepare, store writes, roofline, audits)."""
    warm = sum(r["s"] for r in jb["repeats"] if r["warmup"])
    windows = sum(r["s"] for r in jb["repeats"] if not r["warmup"])
    idle = sum(c["idle"]["duration_s"] for c in jb["cells"])  # per cell: its group's baseline
    groups = {(c["model"], c["precision"]["name"]) for c in jb["cells"]}
    idle = idle / max(1, len(jb["cells"])) * len(groups)
    parts = {
        "process start + imports": wall - jb["runner_s"] + jb["imports_s"],
        "model loads": sum(jb["loads_s"]),
        "idle baselines": idle,
        "warm-ups": warm,
        "measurement windows": windows,
    }
    parts["other (batching, store, roofline, audits)"] = wall - sum(parts.values())
    return parts


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64, help="prompt length in tokens")
    parser.add_argument("--duration-s", type=int, default=None,
                        help="measured seconds per phase (default: optimum-benchmark's)")  # fmt: skip
    parser.add_argument("--iterations", type=int, default=None,
                        help="min calls per ob measurement (default: ob's)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=None, help="default: ob's warmup_runs")
    parser.add_argument("--jb-repeats", type=int, default=3, help="joulebench windows per phase")
    parser.add_argument("--jb-adaptive", action="store_true",
                        help="joulebench stops a phase at --ci-target (≥ 3 windows)")  # fmt: skip
    parser.add_argument("--ci-target", type=float, default=0.02)
    parser.add_argument("--idle-s", type=float, default=1.0)
    parser.add_argument("--meter", default="auto")
    parser.add_argument("--venv", type=Path, default=None)
    args = parser.parse_args()

    venv = args.venv or cache_dir()
    py = ensure_venv(venv, torch.__version__.split("+")[0])
    defaults = ob_defaults(py)
    args.duration_s = defaults["duration"] if args.duration_s is None else args.duration_s
    args.iterations = defaults["iterations"] if args.iterations is None else args.iterations
    args.warmup = defaults["warmup_runs"] if args.warmup is None else args.warmup
    if not args.jb_adaptive:
        args.ci_target = 0.5  # fixed windows: the rule must not stop early (min = max repeats)
    with tempfile.TemporaryDirectory(prefix="jb-vs-ob-") as d:
        tmp = Path(d)
        model = prepare_model(tmp)
        print(f"grid: {list(PRECISIONS)} × batch {list(BATCH_SIZES)} on the tiny llama (one "
              f"copy for both), CPU, {torch.get_num_threads()} threads; per cell one batch of "
              f"batch-size prompts × {args.seq_len} random tokens, {args.new_tokens} new tokens "
              "(min = max)")  # fmt: skip
        print(f"optimum-benchmark defaults (its InferenceConfig): {defaults}; used: duration "
              f"{args.duration_s} s, ≥ {args.iterations} iterations, {args.warmup} warm-ups")  # fmt: skip
        jb_wall, jb = run_joulebench(model, tmp, args)
        n_cells = sum(s["total"] for s in jb["summaries"])
        done = sum(s["done"] for s in jb["summaries"])
        rule = (f"stopping rule: 95 % CI ≤ {args.ci_target:.0%}, 3–{args.jb_repeats} windows"
                if args.jb_adaptive else f"{args.jb_repeats} fixed windows")  # fmt: skip
        min_ops = min(r["min_ops"] for r in jb["repeats"] if not r["warmup"])
        print(f"joulebench: {jb_wall:.1f} s for {n_cells} cells ({done} done); method "
              f"subtraction (generate(1) and generate({args.new_tokens}) windows, energy and "
              f"latency from the same windows); per phase {args.warmup} warm-ups then "
              f"{rule} of ≥ {args.duration_s / args.jb_repeats:.2f} s (≥ {min_ops} calls per "
              f"phase); {len(jb['loads_s'])} model loads; idle baseline {args.idle_s} s per load; "
              f"meter {jb['meter']} (ESTIMATED where no sensor)", flush=True)  # fmt: skip
        for name, sec in jb_breakdown(jb_wall, jb).items():
            print(f"  {name:42s} {sec:7.1f} s ({sec / jb_wall:5.1%})")
        ob_wall, ob = run_optimum(py, model, tmp, args)
        print(f"optimum-benchmark: {ob_wall:.1f} s for {len(ob)} cells; per cell a process, a "
              f"model load, {args.warmup} warm-ups (+2 full generates), a latency pass (per-token "
              f"generate ≥ {args.duration_s} s), energy passes generate(1) and "
              f"generate({args.new_tokens}) ≥ {args.duration_s} s and ≥ {args.iterations} calls "
              "each (CodeCarbon)")  # fmt: skip
        for c in ob:
            print(f"  {c['dtype']:9s} b={c['batch_size']}: {c['wall_s']:.1f} s")
    ratio = ob_wall / jb_wall
    print(f"wall-time ratio optimum-benchmark / joulebench: {ratio:.2f}×")
    print("goal joulebench ≥ 5× faster:", "met" if ratio >= 5 else "NOT met")


if __name__ == "__main__":
    main()
