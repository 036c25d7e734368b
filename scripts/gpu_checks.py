"""Run every GPU proof of joulebench's issues (#2–#7) end to end and write docs/results/.

    python scripts/gpu_checks.py --out docs/results/2026-11-21-h100      # on a CUDA GPU, ≤ 25 min
    python scripts/gpu_checks.py --only profiler --out DIR               # one step (or several)
    python scripts/gpu_checks.py --smoke --only meters,report --out DIR  # CPU: tiny models, seconds

Steps (each has a time limit, runs even if an earlier one failed, and writes ``DIR/<step>.json``):
meters, workloads, profiler, serving, shaping, report. ``DIR/summary.json`` and ``DIR/summary.md``
are rebuilt from every step JSON in DIR after each run, so steps run in separate invocations
(``--only``) into the same DIR add up. All steps share one results store (``DIR/results.duckdb``
unless ``--store``). Only joulebench's CLI, its benchmarks and its public API are used: this
script measures nothing itself. ``--smoke`` runs on the CPU with tiny models and the sensorless
estimator (labelled "estimated"); NVML-only checks are skipped with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the step modules beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))  # joulebench, uninstalled

from gpu_checks_proc import ROOT, Ctx, StepRecord, StepTimeout, child_env
from gpu_checks_steps import STEPS

#: The whole run's default budget: the sum of the step limits, under 25 minutes.
DEFAULT_BUDGET_S = 1500.0
CUDA_PROBE = (
    "import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'cuda': "
    "torch.version.cuda, 'available': ok, 'name': torch.cuda.get_device_name(0) if ok else None,"
    " 'capability': list(torch.cuda.get_device_capability(0)) if ok else None}))"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, help="results folder (default docs/results/<date>-<gpu>)")
    ap.add_argument("--store", type=Path, help="results store (default <out>/results.duckdb)")
    ap.add_argument("--only", help=f"comma-separated steps out of {','.join(STEPS)}")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, estimated energy")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="whole run's limit")
    ap.add_argument(
        "--limit", action="append", default=[], metavar="STEP=S", help="override a step's limit"
    )
    return ap.parse_args(argv)


def choose_steps(only: str | None) -> list[str]:
    if not only:
        return list(STEPS)
    names = [s.strip() for s in only.split(",") if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise SystemExit(f"--only: unknown step(s) {bad or only!r}; known: {', '.join(STEPS)}")
    return [s for s in STEPS if s in names]  # always in the issues' order


def step_limits(overrides: list[str], smoke: bool) -> dict[str, float]:
    limits = {name: float(spec[1]) for name, spec in STEPS.items()}
    if smoke:  # tiny models: every step should take seconds; the caps only catch hangs
        limits = dict.fromkeys(limits, 240.0)
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in STEPS or seconds <= 0:
            raise SystemExit(f"--limit {item!r}: use STEP=SECONDS with STEP in {', '.join(STEPS)}")
        limits[name] = seconds
    return limits


def _json_cmd(cmd: list[str]) -> dict[str, Any]:
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=child_env()
        )
        return json.loads(p.stdout)
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return {"error": f"{' '.join(cmd[:4])}: {exc}"}


def collect_header(smoke: bool) -> dict[str, Any]:
    """Date, GPU, driver, CUDA, library versions and meter availability (joulebench env)."""
    env = _json_cmd([sys.executable, "-m", "joulebench", "env", "--json"])
    cuda = _json_cmd([sys.executable, "-c", CUDA_PROBE])
    gpus = (env.get("gpus") or {}).get("devices") or []
    libs = env.get("libraries") or {}
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "smoke (CPU, tiny models)" if smoke else "gpu",
        "gpu": gpus[0]["name"] if gpus else cuda.get("name"),
        "gpus": gpus,
        "driver": gpus[0]["driver"] if gpus else None,
        "cuda": cuda.get("cuda"),
        "cuda_available": cuda.get("available"),
        "cuda_capability": cuda.get("capability"),
        "python": sys.version.split()[0],
        "libraries": {"joulebench": env.get("joulebench")}
        | {k: libs.get(k) for k in ("torch", "transformers", "bitsandbytes", "torchao", "nvidia-ml-py")},
        "meters_available": sorted(k for k, m in (env.get("meters") or {}).items() if m.get("available")),
        "cpu": (env.get("cpu") or {}).get("model"),
        "errors": [x["error"] for x in (env, cuda) if "error" in x],
    }  # fmt: skip


def default_out(header: dict[str, Any]) -> Path:
    gpu = header.get("gpu") or ("cpu-smoke" if header["mode"].startswith("smoke") else "nogpu")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower().replace("nvidia", "")).strip("-")
    return ROOT / "docs" / "results" / f"{header['date_utc'][:10]}-{slug}"


def status_of(rec: StepRecord, error: str | None, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if error is not None or any(c["passed"] is False for c in rec.checks):
        return "failed"
    if not any(c["passed"] for c in rec.checks):
        return "skipped"
    return "passed"


def run_step(ctx: Ctx, name: str, limit_s: float, budget_end: float) -> dict[str, Any]:
    fn, _, what = STEPS[name]
    rec = StepRecord(name)
    ctx.deadline = min(time.monotonic() + limit_s, budget_end)
    ctx.logs = []
    started, error, timed_out = time.monotonic(), None, False
    print(f"[gpu_checks] {name}: {what} (limit {ctx.left_s():.0f} s)", file=sys.stderr, flush=True)
    try:
        fn(ctx, rec)
    except StepTimeout as exc:
        error, timed_out = str(exc), True
    except Exception as exc:  # a step's failure is recorded; the next step still runs
        error = f"{type(exc).__name__}: {exc}"
        rec.notes.append(traceback.format_exc(limit=6))
    result = {
        "step": name,
        "what": what,
        "status": status_of(rec, error, timed_out),
        "error": error,
        "duration_s": round(time.monotonic() - started, 2),
        "limit_s": round(limit_s, 1),
        "mode": "smoke" if ctx.smoke else "gpu",
        "device": ctx.device,
        "meter_methods": sorted(m for m in rec.methods if m),
        "checks": rec.checks,
        "figures": rec.figures,
        "notes": rec.notes,
        "files": rec.files,
        "logs": ctx.logs,
    }
    ctx.path(f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"[gpu_checks] {name}: {result['status']} in {result['duration_s']} s"
          + (f" — {error}" if error else ""), file=sys.stderr, flush=True)  # fmt: skip
    return result


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "—" if x is None else str(x)


def _figures_md(step: dict[str, Any]) -> list[str]:
    f, out = step.get("figures") or {}, []
    if step["step"] == "serving" and f.get("runs"):
        accs = list(f["runs"][0]["per_request_wh"])
        out += ["", "| arrival · scheduler | ok/failed | " + " | ".join(f"{a} Wh/req" for a in accs)
                + " | audits failed |", "|---|---|" + "---|" * len(accs) + "---|"]  # fmt: skip
        for r in f["runs"]:
            vals = " | ".join(_fmt(r["per_request_wh"][a]) for a in accs)
            out.append(f"| {r['arrival']} · {r['scheduler']} | {r['ok']}/{r['failed']} | {vals} | "
                       f"{', '.join(r['audits_failed']) or 'none'} |")  # fmt: skip
        out.append("")
        out += [f"- {r['arrival']} · {r['scheduler']}, {a}: {r['how'][a]}" for r in f["runs"]
                for a in accs if r["per_request_wh"][a] is None]  # fmt: skip
    if step["step"] == "shaping" and f.get("table"):
        out += ["", "| metric | direct | shaped | change |", "|---|---|---|---|"]
        out += [f"| {t['metric']} | {_fmt(t['direct'])} | {_fmt(t['shaped'])} | {_fmt(t['change'])} |"
                for t in f["table"]]  # fmt: skip
    if step["step"] == "workloads" and f.get("rows"):
        out += ["", "| model | precision | load s | GiB | peak GiB |", "|---|---|---|---|---|"]
        for r in f["rows"]:
            gib = lambda b: None if not b else b / 2**30  # noqa: E731
            out.append(f"| {r.get('model')} | {r.get('precision')} | {_fmt(r.get('load_time_s'))} | "
                       f"{_fmt(gib(r.get('memory_bytes')))} | {_fmt(gib(r.get('peak_allocated_bytes')))} |")  # fmt: skip
    if step["step"] == "profiler":
        for row in f.get("launch_gap", []):
            out.append(f"- launch gap, {row['model']}: {row['verdict']}")
    for key in ("nvml_window", "measure", "goal"):
        if key in f:
            out.append(f"- {key}: `{json.dumps(f[key], default=str)[:600]}`")
    return out


def write_summary(out: Path, header: dict[str, Any]) -> dict[str, Any]:
    """summary.json + summary.md from every ``<step>.json`` present in ``out``."""
    steps = [json.loads(p.read_text()) for n in STEPS if (p := out / f"{n}.json").exists()]
    methods = sorted({m for s in steps for m in s.get("meter_methods", [])})
    summary = {"header": header, "meter_methods": methods, "steps": steps}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    h, libs = header, header["libraries"]
    lines = [
        f"# joulebench GPU checks — {h.get('gpu') or 'no GPU'} ({h['mode']})", "",
        f"- date (UTC): {h['date_utc']}", f"- GPU: {h.get('gpu') or '—'}; driver {_fmt(h.get('driver'))}; "
        f"CUDA {_fmt(h.get('cuda'))} (capability {_fmt(h.get('cuda_capability'))})",
        "- " + ", ".join(f"{k} {_fmt(v)}" for k, v in libs.items()) + f"; Python {h['python']}",
        f"- meter methods in these results: {', '.join(methods) or '—'}"
        + (" — ESTIMATED: no energy sensor was read" if "estimated" in methods else ""),
        f"- meters available: {', '.join(h['meters_available'])}", "",
        "| step | status | s | what |", "|---|---|---|---|",
    ]  # fmt: skip
    lines += [
        f"| {s['step']} | **{s['status']}** | {s['duration_s']} | {s['what']} |" for s in steps
    ]
    for s in steps:
        lines += ["", f"## {s['step']}: {s['status']}", ""]
        if s.get("error"):
            lines.append(f"Error: `{s['error']}`")
        mark = {True: "pass", False: "FAIL", None: "skipped"}
        lines += [f"- [{mark[c['passed']]}] {c['name']}: {c['detail']}" for c in s["checks"]]
        lines += _figures_md(s)
        lines += [f"- note: {n.splitlines()[0] if 'Traceback' in n else n}" for n in s["notes"]]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = choose_steps(args.only)
    limits = step_limits(args.limit, args.smoke)
    header = collect_header(args.smoke)
    if not args.smoke and not header.get("cuda_available"):
        print("gpu_checks: no CUDA GPU is visible here; run with --smoke for the CPU variant",
              file=sys.stderr)  # fmt: skip
        return 2
    out = (args.out or default_out(header)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = (args.store or out / "results.duckdb").resolve()
    ctx = Ctx(out=out, store=store, smoke=args.smoke)
    budget_end = time.monotonic() + args.budget_s
    results = [run_step(ctx, name, limits[name], budget_end) for name in steps]
    write_summary(out, header)
    print(f"[gpu_checks] wrote {out / 'summary.md'}", file=sys.stderr)
    return 0 if all(r["status"] in ("passed", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
