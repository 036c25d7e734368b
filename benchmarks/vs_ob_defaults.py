"""``vs_optimum_benchmark.py --mode defaults``: each tool at its own defaults, side by side.

The grid of issue #10 part 5: fp32/bf16 × batch 1/4 on the tiny llama, 32 new tokens (min = max),
CPU. What each tool runs is what a user gets without options:

- optimum-benchmark: one ``Benchmark.launch`` per cell (a process and a model load per cell) with
  ``InferenceConfig(input_shapes={"batch_size": b}, generate_kwargs={max/min_new_tokens: 32})``
  and ``sequence_length`` = ``--seq-len`` (64; optimum-benchmark has no default for it and
  refuses to run without one; joulebench's ``quick`` prompts are 40–160 tokens, ~80 on average),
  everything else its defaults (read from its installed source and printed: duration 10 s,
  10 iterations, 10 warm-ups, latency on, energy off). It reports per-iteration latencies and no
  confidence interval.
- joulebench: ``joulebench sweep grid.yaml`` (the CLI, a process of its own) where the file names
  only the model, the two precisions, the two batch sizes and ``output_length: 32``: every
  measurement setting is its default (method ``both``, prompt set ``quick``, its warm-up rule,
  its window rule, 3–10 windows, 2 % CI target, idle baseline). Its achieved 95 % CI per cell
  and measurement is read back from the store it wrote, with where its time went (the store's
  warm-up and window rows).

``--with-previous-defaults`` adds a third run: ``joulebench sweep`` at the settings that were its
defaults before issue #10 part 5 (5 warm-ups exactly, windows of ≥ 1 s), in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
BATCH_SIZES = (1, 4)
NEW_TOKENS = 32
#: joulebench's settings before issue #10 part 5 (``--with-previous-defaults``).
PREVIOUS_DEFAULTS = {"warmup": 5, "warmup_rule": "exact", "min_window_s": 1.0}
#: The measurements of a ``method: both`` cell: (result section, label).
MEASURED = (
    (("prefill",), "prefill"),
    (("decode",), "decode"),
    (("subtraction", "prefill"), "gen(1)"),
    (("generate",), "gen(N)"),
)


def run_jb_cli(model: Path, tmp: Path, name: str, settings: dict) -> tuple[float, dict]:
    """``joulebench sweep`` on the grid in its own process; wall time and what it stored."""
    grid = {
        "name": name,
        "models": [str(model)],
        "precisions": list(PRECISIONS),
        "batch_sizes": list(BATCH_SIZES),
        "output_length": str(NEW_TOKENS),
        **settings,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(grid, indent=2))  # JSON is YAML
    store = tmp / f"{name}.duckdb"
    cmd = [sys.executable, "-m", "joulebench", "sweep", str(path), "--store", str(store), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"joulebench sweep exited {r.returncode}:\n{r.stderr[-3000:]}")
    return wall, {"grid": grid, "summary": json.loads(r.stdout), **read_store(store)}


def read_store(path: Path) -> dict:
    from joulebench.results.store import ResultStore

    with ResultStore(path) as store:
        cells = store.query("SELECT status, result FROM cells ORDER BY started_at")
        rows = store.query(
            "SELECT warmup, phase, method, count(*) AS n, sum(duration_s) AS s FROM repeats "
            "GROUP BY ALL ORDER BY warmup DESC, phase, method"
        )
    results = [json.loads(c["result"]) if isinstance(c["result"], str) else c["result"]
               for c in cells if c["status"] == "done"]  # fmt: skip
    return {"cells": results, "rows": [dict(r) for r in rows], "n_cells": len(cells)}


def _section(res: dict, keys: tuple[str, ...]) -> dict:
    for k in keys:
        res = res.get(k) or {}
    return res


def print_jb(label: str, wall: float, jb: dict) -> bool:
    """Per cell: each measurement's achieved CI, windows, warm-ups; then the time breakdown.
    Returns True when every measurement of every cell reached its CI target."""
    cells = jb["cells"]
    print(f"joulebench sweep [{label}]: {wall:.1f} s for {len(cells)}/{jb['n_cells']} cells done "
          f"(settings given: {json.dumps({k: v for k, v in jb['grid'].items() if k != 'models'})})")  # fmt: skip
    if not cells:
        return False
    first = cells[0]
    w = first.get("window") or {}
    print(f"  window: {w.get('rule', 'not recorded (before #10 part 5)')}; CI target "
          f"{first['config']['ci_target']:.0%}, {first['config']['min_repeats']}–"
          f"{first['config']['max_repeats']} windows; meter {first['meter']['name']} "
          f"({'ESTIMATED' if first['estimated'] else 'measured'})")  # fmt: skip
    print(
        "  achieved 95 % CI half-width of the per-op energy / mean (windows, warm-ups ran/cap "
        "and why they stopped); decode by subtraction = gen(N) − gen(1), CIs in quadrature"
    )
    all_ok = True
    for res in cells:
        cfg = res["config"]
        parts = []
        for keys, name in MEASURED:
            sec = _section(res, keys)
            ci = sec.get("ci_halfwidth_rel")
            wu = sec.get("warmups") or {}
            stop = wu.get("stopped", "count")
            parts.append(f"{name} {'n/a' if ci is None else f'{ci:5.1%}'} "
                         f"({sec.get('repeats')}w, {wu.get('n')}/{wu.get('cap', wu.get('n'))}"
                         f" {stop})")  # fmt: skip
        sub = _section(res, ("subtraction", "decode")).get("ci_halfwidth_rel")
        cons = res.get("consistency_rel_err")
        failed = [a["name"] for a in res["audit"] if not a["passed"]]
        reached = not any(n.endswith("precision_reached") for n in failed)
        all_ok &= reached
        print(f"  {cfg['precision']:4s} b={cfg['batch_size']}: " + "; ".join(parts)
              + f"; decode(sub) {'n/a' if sub is None else f'{sub:5.1%}'}; consistency "
              f"{'n/a' if cons is None else f'{cons:+.1%}'}; "
              + ("every CI target reached" if reached else "CI target NOT reached")
              + (f"; failed audits: {', '.join(failed)}" if failed else ""))  # fmt: skip
    warm = sum(r["s"] for r in jb["rows"] if r["warmup"])
    windows = sum(r["s"] for r in jb["rows"] if not r["warmup"])
    print(f"  where the {wall:.1f} s went (the store's rows): warm-ups {warm:.1f} s, windows "
          f"{windows:.1f} s, the rest (process start, imports, model loads, idle baselines, "
          f"batching, store, roofline, audits) {wall - warm - windows:.1f} s")  # fmt: skip
    for r in jb["rows"]:
        kind = "warm-ups" if r["warmup"] else "windows "
        print(f"    {kind} {r['phase']:8s} {r['method']:11s} {r['n']:3d} × → {r['s']:6.1f} s")
    return all_ok


def print_ob(wall: float, ob: list) -> None:
    from joulebench.analysis.stats import summarize

    sc = ob[0]["scenario"] if ob else {}
    print(f"optimum-benchmark at its defaults: {wall:.1f} s for {len(ob)} cells; scenario "
          f"{json.dumps(sc, default=str)} (batch size per cell); per cell a process and a model "
          "load; latency only (energy is off by default), no confidence interval reported")  # fmt: skip
    for c in ob:
        bits = []
        for phase in ("prefill", "decode"):
            lat = (c.get(phase) or {}).get("latency") or {}
            vals = lat.get("values") or []
            if len(vals) >= 2:
                s = summarize(vals)
                rel = s.ci_halfwidth_rel
                bits.append(f"{phase} {s.mean * 1e3:.2f} ms (n={s.n}; 95 % CI of its latencies, "
                            f"computed here: ±{rel:.1%})")  # fmt: skip
        print(f"  {c['dtype']:9s} b={c['batch_size']}: {c['wall_s']:5.1f} s; " + "; ".join(bits))


def run_defaults(
    py: Path,
    model: Path,
    tmp: Path,
    args: argparse.Namespace,
    run_optimum: Callable[..., tuple[float, list]],
) -> tuple[float, float]:
    """Both tools at their defaults on the same grid, one after the other in this session."""
    args.new_tokens = NEW_TOKENS
    print(f"grid: {list(PRECISIONS)} × batch {list(BATCH_SIZES)}, {NEW_TOKENS} new tokens "
          "(min = max), the tiny llama (one copy for both), CPU. Work per call differs by "
          f"default: optimum-benchmark one batch of b × {args.seq_len} random tokens (the one "
          "shape it has no default for), joulebench its default prompt set 'quick' (32 prompts "
          "of 40–160 tokens, in batches of b)")  # fmt: skip
    ob_wall, ob = run_optimum(py, model, tmp, args, PRECISIONS, BATCH_SIZES, at_defaults=True)
    print_ob(ob_wall, ob)
    jb_wall, jb = run_jb_cli(model, tmp, "vs_ob_defaults", {})
    reached = print_jb("defaults", jb_wall, jb)
    print(f"ratio optimum-benchmark / joulebench (defaults): {ob_wall:.1f} s / {jb_wall:.1f} s "
          f"= {ob_wall / jb_wall:.2f}×; joulebench "
          + ("faster" if jb_wall < ob_wall else "NOT faster")
          + ("; every joulebench CI target reached" if reached else
             "; NOT every joulebench CI target reached"), flush=True)  # fmt: skip
    if args.with_previous_defaults:
        prev_wall, prev = run_jb_cli(model, tmp, "vs_ob_previous", PREVIOUS_DEFAULTS)
        print_jb("previous defaults", prev_wall, prev)
        print(f"ratio optimum-benchmark / joulebench (previous defaults): {ob_wall:.1f} s / "
              f"{prev_wall:.1f} s = {ob_wall / prev_wall:.2f}×", flush=True)  # fmt: skip
    args.comparable = reached
    return ob_wall, jb_wall
