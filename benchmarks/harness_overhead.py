"""Overhead of the profiler's harness: profile's measured generate vs a bare loop of the same calls.

Same process, same model, same batches. Each repeat runs the bare loop (K full generates over
the prompt set, timed with perf_counter) and then one profiler window around the same generate
(``measure_repeated`` with the subtraction method's op: meter reads, device syncs, the
self-sizing inner loop), interleaved so that machine noise hits both alike. The figure is the
ratio of median seconds per op (the window's meter-to-meter duration ÷ ops in it). Goal ≤ 2 %.

    .venv/bin/python benchmarks/harness_overhead.py [--model tiny] [--meter auto] [--repeats 9]
        [--window-s 1.0] [--batch-size 2] [--n 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

from joulebench.analysis.stats import StoppingRule
from joulebench.meters.registry import open_meter
from joulebench.meters.sync import default_sync
from joulebench.profile.batching import make_batches
from joulebench.profile.ops import ModelOps
from joulebench.profile.phases import Phase, WindowSettings, measure_repeated
from joulebench.profile.runner import _eos_ids
from joulebench.workloads.models import load_model
from joulebench.workloads.output_length import OutputLength
from joulebench.workloads.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meter", default="auto")
    parser.add_argument("--prompts", default="quick")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--window-s", type=float, default=1.0)
    args = parser.parse_args()

    loaded = load_model(args.model, args.precision, args.device)
    prompts = load_prompts(args.prompts, n=args.n, tokenizer=loaded.tokenizer)
    device = next(loaded.model.parameters()).device
    batches = make_batches(
        list(prompts.encode(loaded.tokenizer)),
        batch_size=args.batch_size,
        pad_token_id=loaded.tokenizer.pad_token_id,
        output_length=OutputLength.parse("reference"),
        device=device,
    )
    ops = ModelOps(loaded.model, pad_token_id=loaded.tokenizer.pad_token_id,
                   eos_token_ids=_eos_ids(loaded))  # fmt: skip

    def generate_all() -> None:
        for b in batches:
            ops.generate(b, b.max_new_tokens, b.min_new_tokens)

    meter = open_meter(args.meter)
    sync = default_sync
    for _ in range(3):
        generate_all()  # warm-up
    sync()
    t0 = time.perf_counter()
    generate_all()
    sync()
    op_s = time.perf_counter() - t0
    k = max(1, round(args.window_s / op_s))
    bare, measured, ops_per_window = [], [], []
    try:
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                generate_all()
            sync()
            bare.append((time.perf_counter() - t0) / k)
            m = measure_repeated(
                generate_all,
                meter,
                WindowSettings(
                    rule=StoppingRule(ci_target=0.5, min_repeats=2, max_repeats=2),
                    min_window_s=args.window_s,
                    warmup=0,
                    sync=sync,
                    device=device,
                ),
                phase=Phase.GENERATE,
                method="subtraction",
            )
            for r in m.repeats:
                measured.append(r.duration_s / r.n_ops)
                ops_per_window.append(r.n_ops)
    finally:
        meter.close()
    b, w = statistics.median(bare), statistics.median(measured)
    overhead = w / b - 1
    spread = statistics.pstdev(bare) / b
    methods = ",".join(sorted({str(v) for v in meter.domains.values()}))
    print(
        f"model {loaded.name} {args.precision} on {device}, {len(batches)} batches of "
        f"{args.batch_size}; meter {meter.name} ({methods}); {args.repeats} interleaved repeats"
    )
    print(
        f"bare generate loop: {b * 1e3:.2f} ms per pass ({k} per run); profiler window: "
        f"{w * 1e3:.2f} ms per pass (median {statistics.median(ops_per_window):.0f} ops/window)"
    )
    print(
        f"harness overhead: {overhead * 100:+.2f} %  (bare run-to-run spread ±{spread * 100:.2f} %)"
    )
    print("goal ≤ 2 %:", "met" if overhead <= 0.02 else "NOT met", "(compare with the spread)")


if __name__ == "__main__":
    main()
