"""Burst of N requests against the embedded server: continuous and dynamic vs sequential.

Usage: .venv/bin/python benchmarks/serving_vs_sequential.py [--n 64] [--max-tokens 32]
       [--model tiny] [--meter auto] [--json]

Reports requests/s and energy per request (sum of attributed response energies ÷ successful
requests, and busy-span energy ÷ requests), with the meter's method label, and the ratios
sequential / batched. The goal stated in issue #5 is ≥ 8× on CPU with the tiny model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from joulebench.meters.registry import open_meter
from joulebench.serve.launch import embedded_server


async def _burst(url: str, n: int, max_tokens: int) -> tuple[list[dict[str, Any]], float]:
    prompts = [f"Thank you very much for request number {i}. " * (1 + i % 4) for i in range(n)]
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()
        rs = await asyncio.gather(
            *[
                client.post("/v1/completions", json={"prompt": p, "max_tokens": max_tokens})
                for p in prompts
            ]
        )
        wall = time.perf_counter() - t0
    return [r.json() if r.status_code == 200 else {"error": r.status_code} for r in rs], wall


def run_one(model: Any, scheduler: str, n: int, max_tokens: int, meter_spec: str) -> dict[str, Any]:
    meter = open_meter(meter_spec)
    with embedded_server(
        model,
        scheduler=scheduler,
        meter=meter,
        max_queue=n + 1,
        max_batch_size=n,
        default_max_tokens=max_tokens,
    ) as url:
        asyncio.run(_burst(url, 2, 2))  # warm-up
        engine = embedded_server.last  # type: ignore[attr-defined]
        before = engine.ledger.busy_energy_j()
        results, wall = asyncio.run(_burst(url, n, max_tokens))
        busy = engine.ledger.busy_energy_j() - before
    ok = [r for r in results if "usage" in r]
    attributed = sum(r["usage"]["energy"]["energy_j"] for r in ok)
    tokens = sum(r["usage"]["completion_tokens"] for r in ok)
    return {
        "scheduler": scheduler,
        "ok": len(ok),
        "failed": n - len(ok),
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "output_tokens": tokens,
        "energy_per_request_j": attributed / max(1, len(ok)),
        "busy_energy_per_request_j": busy / max(1, len(ok)),
        "meter_method": ok[0]["usage"]["energy"]["meter_method"] if ok else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model: Any = args.model
    if model == "tiny-test":  # the serving tests' tiny model, when workloads is not installed
        sys.path.insert(0, "tests/unit/serve")
        from conftest import _build_tiny  # type: ignore[import-not-found]

        model = _build_tiny()
    rows = [
        run_one(model, s, args.n, args.max_tokens, args.meter)
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
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['scheduler']:>11}: {r['requests_per_s']:7.2f} req/s  "
                f"{r['energy_per_request_j']:8.3f} J/req ({r['meter_method']})  "
                f"×{r['speedup_vs_sequential']:.1f} rate, "
                f"×{r['energy_ratio_sequential_over_this'] or 0:.1f} energy  "
                f"ok={r['ok']} failed={r['failed']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
