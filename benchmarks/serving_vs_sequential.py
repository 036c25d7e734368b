"""Burst of N requests against the embedded server: continuous and dynamic vs sequential.

Usage: .venv/bin/python benchmarks/serving_vs_sequential.py [--n 64] [--max-tokens 32]
       [--model tiny] [--meter auto] [--repeats 5] [--bucketing cost|ratio] [--no-ceiling] [--json]

Reports requests/s and energy per request (sum of attributed response energies ÷ successful
requests, and busy-span energy ÷ requests), with the meter's method label, and the ratios
sequential / batched. The goal stated in issue #5 is ≥ 8× on CPU with the tiny model.

The server runs as users run it, apart from its clients: the burst is sent by a separate client
process (joulebench's load-generator transport), so the client's Python work does not compete
with the server for the interpreter lock. Beside the served ratios it prints the model's own
ceiling: the same N prompts through one padded ``generate`` vs N sequential ``generate`` calls,
no server, so what the server costs on top of the model is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from joulebench.meters.registry import open_meter
from joulebench.serve.launch import embedded_server


def _prompts(n: int) -> list[str]:
    return [f"Thank you very much for request number {i}. " * (1 + i % 4) for i in range(n)]


async def _burst_here(url: str, n: int, max_tokens: int) -> dict[str, Any]:
    """The client process's work: send ``n`` completions at once, time them, report as JSON."""
    from joulebench.load.pool import LoadClient

    async with LoadClient(url) as client:
        t0 = time.perf_counter()
        rs = await asyncio.gather(
            *[
                client.post("/v1/completions", json={"prompt": p, "max_tokens": max_tokens})
                for p in _prompts(n)
            ]
        )
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "results": [r.json() if r.status_code == 200 else {"error": r.status_code} for r in rs],
    }


def _burst(url: str, n: int, max_tokens: int) -> tuple[list[dict[str, Any]], float]:
    """Run the burst from a separate client process (see the module docstring)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--client", url, "--n", str(n), "--max-tokens", str(max_tokens)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the client process failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return out["results"], out["wall_s"]


def model_ceiling(model: Any, n: int, max_tokens: int) -> dict[str, float]:
    """The model's own batching ratio, no server: one left-padded ``generate`` over the ``n``
    prompts vs ``n`` sequential ``generate`` calls (greedy, exactly ``max_tokens`` new tokens)."""
    import torch

    from joulebench.workloads.models import load_model

    loaded = load_model(model, "fp32", "cpu")
    lm, tok = loaded.model, loaded.tokenizer
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kw = {"max_new_tokens": max_tokens, "min_new_tokens": max_tokens, "do_sample": False,
          "pad_token_id": pad}  # fmt: skip
    prompts = _prompts(n)
    with torch.inference_mode():
        lm.generate(**tok(prompts[:2], return_tensors="pt", padding=True), **kw)  # warm-up
        t0 = time.perf_counter()
        for p in prompts:
            lm.generate(**tok([p], return_tensors="pt"), **kw)
        seq_s = time.perf_counter() - t0
        batch = tok(prompts, return_tensors="pt", padding=True)
        t0 = time.perf_counter()
        lm.generate(**batch, **kw)
        batch_s = time.perf_counter() - t0
    return {"sequential_s": seq_s, "batched_s": batch_s, "ratio": seq_s / batch_s}


def run_one(
    model: Any,
    scheduler: str,
    n: int,
    max_tokens: int,
    meter_spec: str,
    repeats: int = 5,
    **scheduler_options: Any,
) -> dict[str, Any]:
    """``repeats`` bursts on one server; the medians are reported, with their min–max."""
    meter = open_meter(meter_spec)
    bursts = []
    with embedded_server(
        model,
        scheduler=scheduler,
        meter=meter,
        max_queue=n + 1,
        max_batch_size=n,
        default_max_tokens=max_tokens,
        **scheduler_options,
    ) as url:
        _burst(url, 2, 2)  # warm-up
        engine = embedded_server.last  # type: ignore[attr-defined]
        for _ in range(repeats):
            before = engine.ledger.busy_energy_j()
            results, wall = _burst(url, n, max_tokens)
            busy = engine.ledger.busy_energy_j() - before
            ok = [r for r in results if "usage" in r]
            attributed = sum(r["usage"]["energy"]["energy_j"] for r in ok)
            bursts.append({
                "ok": len(ok),
                "failed": n - len(ok),
                "wall_s": wall,
                "requests_per_s": len(ok) / wall,
                "output_tokens": sum(r["usage"]["completion_tokens"] for r in ok),
                "energy_per_request_j": attributed / max(1, len(ok)),
                "busy_energy_per_request_j": busy / max(1, len(ok)),
                "meter_method": ok[0]["usage"]["energy"]["meter_method"] if ok else None,
            })  # fmt: skip

    def med(key: str) -> float:
        return float(statistics.median(b[key] for b in bursts))

    def span(key: str) -> list[float]:
        return [min(b[key] for b in bursts), max(b[key] for b in bursts)]

    return {
        "scheduler": scheduler,
        "repeats": repeats,
        "ok": sum(b["ok"] for b in bursts),
        "failed": sum(b["failed"] for b in bursts),
        "requests_per_s": med("requests_per_s"),
        "requests_per_s_range": span("requests_per_s"),
        "energy_per_request_j": med("energy_per_request_j"),
        "energy_per_request_j_range": span("energy_per_request_j"),
        "busy_energy_per_request_j": med("busy_energy_per_request_j"),
        "meter_method": bursts[0]["meter_method"],
        "bursts": bursts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=5, help="bursts per scheduler (medians)")
    ap.add_argument("--bucketing", choices=("cost", "ratio"), default="cost",
                    help="dynamic scheduler: how it cuts collected requests into batches")  # fmt: skip
    ap.add_argument("--no-ceiling", action="store_true", help="skip the model-only ratio")
    ap.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the client process
    args = ap.parse_args(argv)
    if args.client:
        print(json.dumps(asyncio.run(_burst_here(args.client, args.n, args.max_tokens))))
        return 0
    model = args.model

    def options(scheduler: str) -> dict[str, Any]:
        return {"bucketing": args.bucketing} if scheduler == "dynamic" else {}

    rows = [
        run_one(model, s, args.n, args.max_tokens, args.meter, args.repeats, **options(s))
        for s in ("sequential", "dynamic", "continuous")
    ]
    seq = rows[0]
    for r in rows:
        r["speedup_vs_sequential"] = r["requests_per_s"] / seq["requests_per_s"]
        r["energy_ratio_sequential_over_this"] = (
            seq["energy_per_request_j"] / r["energy_per_request_j"]
            if r["energy_per_request_j"]
            else None
        )
    ceiling = None
    if not args.no_ceiling:
        ceiling = model_ceiling(model, args.n, args.max_tokens)
    if args.json:
        print(json.dumps({"rows": rows, "model_ceiling": ceiling}, indent=2))
    else:
        print(f"burst of {args.n} × {args.max_tokens} tokens, {args.repeats} bursts per scheduler: "
              "medians [min–max]")  # fmt: skip
        for r in rows:
            lo, hi = r["requests_per_s_range"]
            elo, ehi = r["energy_per_request_j_range"]
            print(
                f"{r['scheduler']:>11}: {r['requests_per_s']:7.2f} req/s [{lo:.0f}–{hi:.0f}]  "
                f"{r['energy_per_request_j']:8.3f} J/req [{elo:.3f}–{ehi:.3f}] "
                f"({r['meter_method']})  "
                f"×{r['speedup_vs_sequential']:.1f} rate, "
                f"×{r['energy_ratio_sequential_over_this'] or 0:.1f} energy  "
                f"ok={r['ok']} failed={r['failed']}"
            )
        if ceiling:
            print(
                f"model ceiling (no server, one padded generate vs {args.n} sequential): "
                f"{ceiling['sequential_s']:.3f} s / {ceiling['batched_s']:.3f} s = "
                f"×{ceiling['ratio']:.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
