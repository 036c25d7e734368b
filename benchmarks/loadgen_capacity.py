"""Capacity of the load generator: the highest offered rate it can keep against a loopback server.

A rate *holds* when, at a constant (``fixed``) rate for ``--duration-s`` seconds, every request
succeeds, achieved/target ≥ 0.99 and the schedule lag p99 < 5 ms. The server is
``joulebench.load.stub`` in its own process (so it does not share the generator's GIL), answering
``--tokens`` streamed tokens per request without delay. Rates are climbed on a ladder, then the
gap between the last passing and first failing rung is bisected.

GuideLLM, when it can be installed (in its own venv under ``~/.cache/joulebench``, never the
project's) and run offline, is driven at the same rates (constant profile) and judged by the same
criteria from its JSON report (``request_dispatch_delay`` as lag). Otherwise the reason is printed.

    taskset -c 0,1 .venv/bin/python benchmarks/loadgen_capacity.py      # "2 cores"
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from joulebench.analysis.stats import quantile
from joulebench.load.runner import run_load

LADDER = (100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000)
MIN_RATIO = 0.99
MAX_LAG_P99_MS = 5.0
CACHE = Path(os.environ.get("JOULEBENCH_CACHE", Path.home() / ".cache" / "joulebench"))
GUIDELLM_VENV = CACHE / "guidellm-venv"


@contextlib.contextmanager
def stub_process(tokens: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "joulebench.load.stub", "--tokens", str(tokens)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"stub server did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def verdict(ratio: float | None, lag_p99_ms: float | None, failed: int) -> bool:
    return (
        failed == 0
        and ratio is not None
        and ratio >= MIN_RATIO
        and lag_p99_ms is not None
        and lag_p99_ms < MAX_LAG_P99_MS
    )


def joulebench_at(url: str, rate: float, duration_s: float, tokens: int) -> dict[str, Any]:
    n = max(200, int(rate * duration_s))
    result = run_load(
        url,
        "openai-completions",
        f"fixed:{1e6 / rate:.3f}us",
        ["hello there"],
        n=n,
        output_length=tokens,
        timeout_s=30.0,
    )
    j = result.to_json()
    ratio = j["achieved_over_target"]
    lag = j["schedule_lag_ms"]["p99"]
    return {
        "tool": "joulebench",
        "rate": rate,
        "n": n,
        "ok": j["requests"]["ok"],
        "failed": j["requests"]["failed"],
        "achieved_rps": j["achieved_rate_rps"],
        "ratio": ratio,
        "lag_p50_ms": j["schedule_lag_ms"]["p50"],
        "lag_p99_ms": lag,
        "passed": verdict(ratio, lag, j["requests"]["failed"]),
    }


def with_retries(measure: Any, repeats: int) -> Any:
    """A rung passes if any of ``repeats`` attempts passes (both tools get the same chances: on
    a shared machine, other processes' CPU bursts land in the lag tail)."""

    def run(rate: float) -> dict:
        row: dict = {}
        for attempt in range(1, repeats + 1):
            row = measure(rate)
            row["attempts"] = attempt
            if row["passed"]:
                break
        return row

    return run


def climb(measure: Any, ladder: list[float], bisect_steps: int) -> tuple[float | None, list[dict]]:
    rows: list[dict] = []
    best, first_fail = None, None
    fails = 0
    for rate in ladder:
        row = measure(rate)
        rows.append(row)
        print(_fmt(row), flush=True)
        if row["passed"]:
            best, fails = rate, 0
        else:
            first_fail = first_fail or rate
            fails += 1
            if fails >= 2:
                break
    if best is not None and first_fail is not None and first_fail > best:
        lo, hi = best, first_fail
        for _ in range(bisect_steps):
            mid = round((lo + hi) / 2, -1)
            if mid in (lo, hi):
                break
            row = measure(mid)
            rows.append(row)
            print(_fmt(row), flush=True)
            lo, hi = (mid, hi) if row["passed"] else (lo, mid)
        best = lo
    return best, rows


def _fmt(row: dict) -> str:
    def f(x: Any, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    return (
        f"  {row['tool']:<10} {row['rate']:>7.0f} req/s: achieved {f(row['achieved_rps'], '8.1f')}"
        f" ratio {f(row['ratio'], '.4f')} lag p50 {f(row['lag_p50_ms'], '.2f')} ms"
        f" p99 {f(row['lag_p99_ms'], '.2f')} ms failed {row['failed']}"
        f" -> {'PASS' if row['passed'] else 'fail'} (attempt {row.get('attempts', 1)})"
    )


# -- GuideLLM -----------------------------------------------------------------------------------
def guidellm_exe() -> tuple[Path | None, str]:
    exe = GUIDELLM_VENV / "bin" / "guidellm"
    if exe.exists():
        return exe, ""
    print(f"installing GuideLLM into {GUIDELLM_VENV} (own venv) …", flush=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(GUIDELLM_VENV)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [str(GUIDELLM_VENV / "bin" / "pip"), "install", "-q", "guidellm"],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return None, f"pip install guidellm failed: {exc} {err[-300:].decode(errors='replace')}"
    return (exe, "") if exe.exists() else (None, "guidellm installed but has no CLI entry point")


@functools.cache
def tokenizer_dir() -> str:
    from joulebench.workloads.tiny import tiny_model_path

    return str(tiny_model_path())


def guidellm_at(exe: Path, url: str, rate: float, duration_s: float, tokens: int) -> dict[str, Any]:
    n = max(200, int(rate * duration_s))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "g.json"
        cmd = [
            str(exe),
            "run",
            "--backend",
            f"kind=openai_http,target={url},model=stub",
            "--profile",
            f"kind=constant,rate={rate}",
            "--constraint",
            f"kind=max_requests,count={n}",
            "--data",
            f"kind=synthetic_text,prompt_tokens=8,output_tokens={tokens}",
            "--tokenizer",
            f"kind=hf_auto,model={tokenizer_dir()}",
            "--output",
            f"kind=json,path={out}",
            "--disable-console",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"guidellm exited {proc.returncode}: {proc.stderr[-400:]}")
        report = json.loads(out.read_text())
    bench = report["benchmarks"][0]
    reqs = bench["requests"]
    ok = reqs.get("successful") or []
    failed = len(reqs.get("errored") or []) + len(reqs.get("incomplete") or [])
    lags = [
        r["request_dispatch_delay"] * 1e3 for r in ok if r.get("request_dispatch_delay") is not None
    ]
    starts = sorted(r["request_start_time"] for r in ok if r.get("request_start_time"))
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else None
    ratio = achieved / rate if achieved else None
    lag99 = quantile(lags, 0.99)
    return {
        "tool": "guidellm",
        "rate": rate,
        "n": n,
        "ok": len(ok),
        "failed": failed,
        "achieved_rps": achieved,
        "ratio": ratio,
        "lag_p50_ms": quantile(lags, 0.50),
        "lag_p99_ms": lag99,
        "passed": verdict(ratio, lag99, failed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=2.0)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--bisect", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="attempts per rung (best counts)")
    ap.add_argument("--rates", type=str, default=None, help="comma-separated ladder")
    ap.add_argument("--no-guidellm", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write all rows here")
    args = ap.parse_args()
    ladder = [float(x) for x in args.rates.split(",")] if args.rates else list(LADDER)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"joulebench load-generator capacity on {platform.processor() or platform.machine()}, "
        f"{cores} usable cores, load average {os.getloadavg()[0]:.2f}; criteria: "
        f"ratio ≥ {MIN_RATIO}, lag p99 < {MAX_LAG_P99_MS} ms, no failures",
        flush=True,
    )
    summary: dict[str, Any] = {
        "cores": cores,
        "criteria": {"ratio": MIN_RATIO, "lag_p99_ms": MAX_LAG_P99_MS},
    }
    with stub_process(args.tokens) as url:
        time.sleep(0.2)
        best, rows = climb(
            with_retries(
                lambda r: joulebench_at(url, r, args.duration_s, args.tokens), args.repeats
            ),
            ladder,
            args.bisect,
        )
        summary["joulebench"] = {"capacity_rps": best, "rows": rows}
        print(f"joulebench capacity: {best} req/s", flush=True)
        if args.no_guidellm:
            summary["guidellm"] = {"skipped": "--no-guidellm"}
        else:
            exe, why = guidellm_exe()
            if exe is None:
                print(f"GuideLLM not compared: {why}")
                summary["guidellm"] = {"skipped": why}
            else:
                try:
                    g_best, g_rows = climb(
                        with_retries(
                            lambda r: guidellm_at(exe, url, r, args.duration_s, args.tokens),
                            args.repeats,
                        ),
                        [r for r in ladder if r <= max(best or ladder[0], ladder[0]) * 2],
                        args.bisect,
                    )
                    summary["guidellm"] = {"capacity_rps": g_best, "rows": g_rows}
                    print(f"GuideLLM capacity: {g_best} req/s", flush=True)
                    if best and g_best:
                        print(f"ratio joulebench / GuideLLM: {best / g_best:.2f}×")
                except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
                    print(f"GuideLLM not compared: {exc}")
                    summary["guidellm"] = {"skipped": str(exc)}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
