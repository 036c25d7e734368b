"""Arrival shaping on the embedded server: Poisson arrivals, shaped vs unshaped, same seed.

Goal (issue #6): ≥ 30 % less *net* energy per request (idle-subtracted accounting) at equal
offered load, with TTFT p99 within a stated bound: shaped TTFT p99 ≤ direct TTFT p99 + the
policy's delay bound + 100 ms. Both runs use the same server process, the same meter (on a
machine without sensors the estimator, so every figure is labelled "estimated"), the same idle
baseline and the same seeded trace; the server is warmed up first and the direct run goes first.

    .venv/bin/python benchmarks/shaping.py --rate 10 --n 80 --policy window:8,800ms \
        --out docs/results/shaping-cpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from joulebench.meters.registry import open_meter
from joulebench.shape.experiment import compare
from joulebench.shape.policies import parse_policy

PROMPTS = [
    "Explain in two sentences why batching requests saves energy on a GPU.",
    "Write a haiku about a data centre at night.",
    "What is the capital of France, and what is it known for?",
    "Summarise the idea of continuous batching for a new engineer.",
    "Give three tips to reduce the latency of a web service.",
    "Thank you for your help today!",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=float, default=10.0, help="Poisson rate, requests/s")
    ap.add_argument("--n", type=int, default=80, help="requests per run")
    ap.add_argument("--policy", default="window:8,800ms")
    ap.add_argument("--max-delay-ms", type=float, default=None)
    ap.add_argument("--output-length", type=int, default=32)
    ap.add_argument("--scheduler", default="continuous")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", default=None, help="measure a running server instead")
    ap.add_argument("--out", type=Path, default=None, help="write the full JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    policy = parse_policy(args.policy, max_delay_ms=args.max_delay_ms)
    meter = open_meter(args.meter)
    try:
        result = compare(
            args.url,
            policy,
            f"poisson:{args.rate:g}",
            PROMPTS,
            n=args.n,
            output_length=args.output_length,
            seed=args.seed,
            meter=meter,
            idle_s=args.idle_s,
            embedded={"model": args.model, "scheduler": args.scheduler}
            if args.url is None
            else None,
        )
    finally:
        meter.close()

    out = result.to_json()
    d_net = result.direct.per_request_j()["idle_subtracted"]
    s_net = result.shaped.per_request_j()["idle_subtracted"]
    d_ttft = result.direct.latency_ms("ttft_ms", "p99")
    s_ttft = result.shaped.latency_ms("ttft_ms", "p99")
    bound_ms = (policy.bound_s() or 0.0) * 1e3 + 100.0
    saving = None if not d_net or s_net is None else 1 - s_net / d_net
    ttft_ok = None if d_ttft is None or s_ttft is None else s_ttft <= d_ttft + bound_ms
    out["goal"] = {
        "net_saving": saving,
        "net_saving_goal": 0.30,
        "ttft_p99_bound_ms": None if d_ttft is None else d_ttft + bound_ms,
        "ttft_p99_within_bound": ttft_ok,
        "met": bool(saving is not None and saving >= 0.30 and ttft_ok),
    }
    print(f"energy method: {result.method}")
    for name, a, b, c in result.rows():
        fa = "—" if a is None else f"{a:.4g}"
        fb = "—" if b is None else f"{b:.4g}"
        fc = "" if c is None else f"{c * 100:+.1f} %"
        print(f"{name:45s} {fa:>12s} {fb:>12s} {fc:>10s}")
    print(json.dumps(out["goal"], indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
