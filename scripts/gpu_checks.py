"""joulebench's GPU proof kit, sized to one 15-minute window on an NVIDIA H200.

    python scripts/prepare_gpu_wheels.py                  # here, once: the wheels the GPU lacks
    python scripts/gpu_checks.py --plan --json            # the exact device calls (≤ 2)
    python scripts/gpu_checks.py --call 1 --out DIR --pack "$OUT"   # what each call runs there
    python scripts/gpu_checks.py --unpack FILE.tar.gz...  # back here: docs/results/<date>-h200/
    python scripts/gpu_checks.py --smoke --out DIR        # the same steps on the CPU (CI)

Steps, ordered by what only a GPU can show, each a process with its own time limit that writes
``DIR/<step>.json`` even when it fails or times out: nvml, phases, batching, serving (see
``gpu_checks_steps.py``). ``DIR/summary.md`` (date, GPU, driver, CUDA, library versions, every
check, and each trend beside the study's) is rebuilt from every step JSON in DIR, so the two
calls' results add up. ``--smoke`` runs on the CPU with tiny models and the sensorless estimator
(labelled "estimated"); NVML-only checks are skipped with the reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the step modules beside this file
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))  # joulebench, uninstalled

from gpu_checks_plan import PlanError, build_plan, call_spec
from gpu_checks_proc import ROOT, child_env, run_step
from gpu_checks_steps import STEPS
from gpu_checks_trends import all_trends, headlines

#: Per step: limit on the GPU, limit in the smoke run (a cap that only catches hangs).
LIMITS_S: dict[str, tuple[float, float]] = {
    "nvml": (45, 40), "phases": (330, 150), "batching": (90, 90), "serving": (110, 120),
}  # fmt: skip
LIBRARIES = ("torch", "transformers", "accelerate", "bitsandbytes", "nvidia-ml-py", "pydantic",
             "fastapi", "uvicorn", "numpy")  # fmt: skip
CUDA_PROBE = (
    "import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'cuda': "
    "torch.version.cuda, 'available': ok, 'name': torch.cuda.get_device_name(0) if ok else None,"
    " 'capability': list(torch.cuda.get_device_capability(0)) if ok else None}))"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--plan", action="store_true", help="print the device calls and exit")
    ap.add_argument("--json", action="store_true", help="with --plan: as JSON")
    ap.add_argument("--wheels", type=Path, help="with --plan: wheel folders (default .gpu/wheels)")
    ap.add_argument("--call", type=int, help="run the steps of device call N (see --plan)")
    ap.add_argument("--pack", type=Path, help="after the run: results tarball + summary into DIR")
    ap.add_argument(
        "--unpack", type=Path, nargs="+", help="results tarballs to land in docs/results"
    )
    ap.add_argument("--into", type=Path, default=ROOT / "docs" / "results", help="with --unpack")
    ap.add_argument("--out", type=Path, help="results folder (default docs/results/<date>-<gpu>)")
    ap.add_argument("--only", help=f"comma-separated steps out of {','.join(STEPS)}")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, estimated energy")
    ap.add_argument("--limit", action="append", default=[], metavar="STEP=S",
                    help="override a step's limit")  # fmt: skip
    return ap.parse_args(argv)


def choose_steps(only: str | None, call: int | None) -> list[str]:
    if call is not None:
        return list(call_spec(call).steps)
    if not only:
        return list(STEPS)
    names = [s.strip() for s in only.split(",") if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise SystemExit(f"--only: unknown step(s) {bad or only!r}; known: {', '.join(STEPS)}")
    return [s for s in STEPS if s in names]  # always in the kit's order


def step_limits(overrides: list[str], smoke: bool) -> dict[str, float]:
    limits = {name: float(pair[1 if smoke else 0]) for name, pair in LIMITS_S.items()}
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
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env=child_env())  # fmt: skip
        return json.loads(p.stdout)
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return {"error": f"{' '.join(cmd[:4])}: {exc}"}


def collect_header(smoke: bool, call: int | None) -> dict[str, Any]:
    """Date, GPU, driver, CUDA, library versions and meter availability (joulebench env)."""
    from importlib import metadata

    env = _json_cmd([sys.executable, "-m", "joulebench", "env", "--json"])
    cuda = _json_cmd([sys.executable, "-c", CUDA_PROBE])
    gpus = (env.get("gpus") or {}).get("devices") or []
    libs: dict[str, str | None] = {"joulebench": env.get("joulebench")}
    for lib in LIBRARIES:
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = None
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "smoke (CPU, tiny models)" if smoke else "gpu", "call": call,
        "gpu": gpus[0]["name"] if gpus else cuda.get("name"), "gpus": gpus,
        "driver": gpus[0].get("driver") if gpus else None, "cuda": cuda.get("cuda"),
        "cuda_available": cuda.get("available"), "cuda_capability": cuda.get("capability"),
        "python": sys.version.split()[0], "libraries": libs,
        "meters_available": sorted(k for k, m in (env.get("meters") or {}).items() if m.get("available")),
        "cpu": (env.get("cpu") or {}).get("model"),
        "errors": [x["error"] for x in (env, cuda) if "error" in x],
    }  # fmt: skip


def gpu_slug(gpu: str | None, smoke: bool) -> str:
    if not gpu:
        return "cpu-smoke" if smoke else "nogpu"
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower().replace("nvidia", "")).strip("-").split("-")[0]


def default_out(header: dict[str, Any]) -> Path:
    slug = gpu_slug(header.get("gpu"), header["mode"].startswith("smoke"))
    return ROOT / "docs" / "results" / f"{header['date_utc'][:10]}-{slug}"


# -- summary ----------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "—" if x is None else str(x)


def _figures_md(step: dict[str, Any]) -> list[str]:
    f, out = step.get("figures") or {}, []
    rows = [r for r in f.get("rows") or [] if "error" not in r]
    if rows:
        out += ["", "| model | precision | b | prefill J | decode J/token | J/eff. in | J/comp. in "
                "| J/out | roofline p/d | consistency |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            n, eff = r.get("normalized") or {}, r.get("roofline_efficiency") or {}
            cons = (r.get("consistency") or {}).get("rel_err")
            out.append(f"| {r['model']} | {r['precision']} | {r['batch_size']} | {_fmt(r['prefill'].get('energy_j'))} "
                       f"| {_fmt(r['decode'].get('energy_per_token_j'))} | {_fmt(n.get('per_effective_input_token_j'))} "
                       f"| {_fmt(n.get('per_computed_input_token_j'))} | {_fmt(n.get('per_output_token_j'))} "
                       f"| {_fmt(eff.get('prefill'))} / {_fmt(eff.get('decode'))} | {_fmt(cons)} |")  # fmt: skip
    for w in f.get("windows") or []:
        out.append(f"- window {w.get('target_s')} s ({w['duration_s']:.3f} s): "
                   + ", ".join(f"{k} {v:.4g} J" for k, v in w["energy_j"].items()))  # fmt: skip
    if f.get("counter_update_period"):
        out.append(
            f"- counter update period: `{json.dumps(f['counter_update_period'], default=str)}`"
        )
    if f.get("runs"):
        out += ["", "| arrival | ok/failed | " + " | ".join(f"{a} Wh/req" for a in f["runs"][0]["per_request_wh"])
                + " | idle W | idle floor Wh/req |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in f["runs"]:
            req = r.get("requests") or {}
            vals = " | ".join(_fmt(v) for v in r["per_request_wh"].values())
            out.append(f"| {r['arrival']} | {req.get('ok')}/{req.get('failed')} | {vals} | "
                       f"{_fmt(r.get('idle_power_w'))} | {_fmt(r.get('idle_floor_wh_per_request'))} |")  # fmt: skip
    if (f.get("shaping") or {}).get("table"):
        out += ["", "| metric (Poisson) | direct | shaped | change |", "|---|---|---|---|"]
        out += [f"| {t['metric']} | {_fmt(t['direct'])} | {_fmt(t['shaped'])} | {_fmt(t['change'])} |"
                for t in f["shaping"]["table"]]  # fmt: skip
    return out


def _headers(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("header*.json"))]


def write_summary(out: Path) -> dict[str, Any]:
    """summary.json + summary.md from every ``<step>.json`` and ``header*.json`` in ``out``."""
    steps = {n: json.loads(p.read_text()) for n in STEPS if (p := out / f"{n}.json").exists()}
    heads = _headers(out) or [{"date_utc": "?", "mode": "?", "libraries": {}, "python": "?"}]
    methods = sorted({m for s in steps.values() for m in s.get("meter_methods", [])})
    trends, heads_cmp = all_trends(steps), headlines(steps.get("serving"))
    summary = {"headers": heads, "meter_methods": methods, "steps": list(steps.values()),
               "trends": trends, "headlines": heads_cmp}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    h = heads[0]
    lines = [f"# joulebench GPU checks — {h.get('gpu') or 'no GPU'} ({h['mode']})", ""]
    for hd in heads:
        lines += [
            f"- call {_fmt(hd.get('call'))}, date (UTC): {hd['date_utc']}; GPU: {hd.get('gpu') or '—'}; "
            f"driver {_fmt(hd.get('driver'))}; CUDA {_fmt(hd.get('cuda'))} (capability {_fmt(hd.get('cuda_capability'))})",
            "  - " + ", ".join(f"{k} {_fmt(v)}" for k, v in hd["libraries"].items()) + f"; Python {hd['python']}",
        ]  # fmt: skip
    lines += [
        f"- meter methods in these results: {', '.join(methods) or '—'}"
        + (" — ESTIMATED: no energy sensor was read" if "estimated" in methods else ""), "",
        "| step | status | s | what |", "|---|---|---|---|",
    ]  # fmt: skip
    lines += [
        f"| {s['step']} | **{s['status']}** | {s['duration_s']} | {s['what']} |"
        for s in steps.values()
    ]
    lines += ["", "## Trends beside the study's", "", "| trend | the study | here | verdict |",
              "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {t['key']} | {t['claim']} | {t['here']} | **{t['verdict']}** |" for t in trends]
    lines += ["", "| study headline | paper Wh/req | here Wh/req (whole window · idle-subtracted) | "
              "idle W × interval here | paper below it |", "|---|---|---|---|---|"]  # fmt: skip
    for c in heads_cmp:
        here = c["here_wh"] or {}
        lines.append(f"| {c['label']} | {c['paper_wh']:.3g} | {_fmt(here.get('paper_whole_window'))} · "
                     f"{_fmt(here.get('idle_subtracted'))} | {_fmt(c['idle_floor_wh'])} | "
                     f"{_fmt(c['paper_below_idle_floor_here'])} |")  # fmt: skip
    mark = {True: "pass", False: "FAIL", None: "skipped"}
    for s in steps.values():
        lines += ["", f"## {s['step']}: {s['status']}", ""]
        if s.get("error"):
            lines.append(f"Error: `{s['error']}`")
        lines += [f"- [{mark[c['passed']]}] {c['name']}: {c['detail']}" for c in s["checks"]]
        lines += _figures_md(s)
        lines += [
            f"- note: {n.strip().splitlines()[-1] if 'Traceback' in n else n}" for n in s["notes"]
        ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


# -- packing and landing ---------------------------------------------------------------------
def pack(out: Path, dest: Path, call: int | None) -> list[Path]:
    """``dest/gpu-results-call<N>.tar.gz`` (everything in ``out``) and ``summary-call<N>.md``."""
    tag = f"call{call}" if call is not None else "all"
    dest.mkdir(parents=True, exist_ok=True)
    tarball = dest / f"gpu-results-{tag}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(out).as_posix())
    summary = dest / f"summary-{tag}.md"
    if not (out / "summary.md").exists():
        return [tarball]
    shutil.copyfile(out / "summary.md", summary)
    return [tarball, summary]


def unpack(tarballs: list[Path], into: Path) -> Path:
    """Land results tarballs in ``into/<date>-<gpu>/`` and rebuild its summary."""
    target: Path | None = None
    for tb in tarballs:
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(tb) as tar:
            tar.extractall(tmp, filter="data")
            heads = _headers(Path(tmp))
            if not heads:
                raise SystemExit(f"{tb}: no header*.json inside; not a gpu_checks results tarball")
            h = heads[0]
            here = (
                into
                / f"{h['date_utc'][:10]}-{gpu_slug(h.get('gpu'), h['mode'].startswith('smoke'))}"
            )
            target = target or here
            shutil.copytree(tmp, target, dirs_exist_ok=True)
    if target is None:
        raise SystemExit("--unpack: no tarball given")
    for stale in ("summary.md", "summary.json"):
        (target / stale).unlink(missing_ok=True)
    write_summary(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plan:
        try:
            plan = build_plan(args.wheels.resolve() if args.wheels else None)
        except PlanError as exc:
            print(f"gpu_checks --plan: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            for c in plan["calls"]:
                print(f"call {c['call']} ({', '.join(c['steps'])}): limit {c['limit_s']} s, carry "
                      f"{c['carry']} = {c['carry_bytes'] / 2**20:.1f} MiB\n  {c['command']}")  # fmt: skip
        return 0
    if args.unpack:
        print(f"[gpu_checks] results in {unpack(args.unpack, args.into)}", file=sys.stderr)
        return 0
    steps = choose_steps(args.only, args.call)
    limits = step_limits(args.limit, args.smoke)
    header = collect_header(args.smoke, args.call)
    if not args.smoke and not header.get("cuda_available"):
        print("gpu_checks: no CUDA GPU is visible here; run with --smoke for the CPU variant",
              file=sys.stderr)  # fmt: skip
        return 2
    out = (args.out or default_out(header)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"header-call{args.call or 0}.json").write_text(json.dumps(header, indent=2) + "\n")
    results = []
    for name in steps:
        print(f"[gpu_checks] {name}: limit {limits[name]:.0f} s", file=sys.stderr, flush=True)
        r = run_step(out, name, STEPS[name][1], limits[name], args.smoke)
        print(f"[gpu_checks] {name}: {r['status']} in {r['duration_s']} s"
              + (f" — {r['error']}" if r.get("error") else ""), file=sys.stderr, flush=True)  # fmt: skip
        results.append(r)
        try:  # after every step: a call stopped at its limit still brings back what it did
            write_summary(out)
        except Exception:
            traceback.print_exc()
        if args.pack:
            files = pack(out, args.pack, args.call)
            print(f"[gpu_checks] packed {', '.join(map(str, files))}", file=sys.stderr)
    print(f"[gpu_checks] wrote {out / 'summary.md'}", file=sys.stderr)
    return 0 if all(r["status"] in ("passed", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
