"""Wall time of the same small CPU grid run by joulebench and by optimum-benchmark.

The grid: 3 precisions (fp32, bf16, fp16) × 3 batch sizes (1, 2, 4) on the tiny llama, copied to
a temp dir so both tools load the very same files (its tokenizer_config names the
library-neutral ``PreTrainedTokenizerFast``: transformers 4 does not know transformers 5's
tokenizer class). Both measure prefill and decode latency and energy with a fixed number of new
tokens; each runs the whole grid once, with its own repeat logic:

- joulebench: one ``joulebench sweep`` (one model load per precision, ``--min-window-s`` windows,
  ``--max-repeats`` at most, both methods), sensorless estimate or a real meter;
- optimum-benchmark: one ``Benchmark.launch`` per cell (a process per cell, its own model load),
  inference scenario with latency + energy (CodeCarbon), ``--ob-duration-s`` per measurement.

optimum-benchmark needs transformers < 5, so this script builds its own venv under the cache dir
(``$JOULEBENCH_CACHE`` or ``~/.cache/joulebench``; never in the repo) with the project's torch
(``torch==<this torch>``, CPU wheel, so no CUDA wheels are pulled), ``transformers<5`` and
``optimum-benchmark[codecarbon]``. If that venv cannot be built or optimum-benchmark cannot run
(offline, no wheel), the script prints exactly why and exits 2. Goal: joulebench ≥ 5× faster.

    .venv/bin/python benchmarks/vs_optimum_benchmark.py [--new-tokens 16] [--seq-len 64]
        [--min-window-s 0.5] [--max-repeats 5] [--ob-duration-s 2] [--ob-iterations 5]
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


def run_joulebench(model: Path, tmp: Path, args: argparse.Namespace) -> tuple[float, dict]:
    sweep = {
        "name": "vs_optimum",
        "models": [str(model)],
        "precisions": list(PRECISIONS),
        "batch_sizes": list(BATCH_SIZES),
        "prompts": ["quick"],
        "n": 4,
        "method": "both",
        "output_length": str(args.new_tokens),
        "warmup": args.warmup,
        "min_window_s": args.min_window_s,
        "max_repeats": args.max_repeats,
        "idle_s": 1.0,
    }
    path = tmp / "sweep.yaml"
    path.write_text(json.dumps(sweep))
    cmd = [sys.executable, "-m", "joulebench", "sweep", str(path), "--meter", args.meter,
           "--store", str(tmp / "jb.duckdb"), "--json"]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"joulebench sweep failed ({r.returncode}):\n{r.stderr[-3000:]}")
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    return wall, summary


def run_optimum(py: Path, model: Path, tmp: Path, args: argparse.Namespace) -> tuple[float, list]:
    payload = {
        "model": str(model),
        "dtypes": list(PRECISIONS.values()),
        "batch_sizes": list(BATCH_SIZES),
        "seq_len": args.seq_len,
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "iterations": args.ob_iterations,
        "duration_s": args.ob_duration_s,
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


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64, help="optimum-benchmark prompt length")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-window-s", type=float, default=0.5)
    parser.add_argument("--max-repeats", type=int, default=5)
    parser.add_argument("--ob-duration-s", type=int, default=2)
    parser.add_argument("--ob-iterations", type=int, default=5)
    parser.add_argument("--meter", default="auto")
    parser.add_argument("--venv", type=Path, default=None)
    args = parser.parse_args()

    venv = args.venv or cache_dir()
    py = ensure_venv(venv, torch.__version__.split("+")[0])
    with tempfile.TemporaryDirectory(prefix="jb-vs-ob-") as d:
        tmp = Path(d)
        model = prepare_model(tmp)
        print(f"grid: {list(PRECISIONS)} × batch {list(BATCH_SIZES)}, {args.new_tokens} new "
              f"tokens, tiny llama on CPU ({torch.get_num_threads()} threads)", flush=True)  # fmt: skip
        jb_wall, jb = run_joulebench(model, tmp, args)
        print(f"joulebench: {jb_wall:.1f} s for {jb['total']} cells ({jb['done']} done, "
              f"{jb['failed']} failed), {args.min_window_s} s windows, ≤ {args.max_repeats} "
              "repeats, direct + subtraction", flush=True)  # fmt: skip
        ob_wall, ob = run_optimum(py, model, tmp, args)
        print(f"optimum-benchmark: {ob_wall:.1f} s for {len(ob)} cells (latency + energy, "
              f"{args.ob_duration_s} s / ≥ {args.ob_iterations} iterations per measurement, a "
              "process and a model load per cell)")  # fmt: skip
        for c in ob:
            print(f"  {c['dtype']:9s} b={c['batch_size']}: {c['wall_s']:.1f} s")
    ratio = ob_wall / jb_wall
    print(f"wall-time ratio optimum-benchmark / joulebench: {ratio:.2f}×")
    print("goal joulebench ≥ 5× faster:", "met" if ratio >= 5 else "NOT met")


if __name__ == "__main__":
    main()
