"""Arrival shaping on the embedded server: direct, fixed policies and ``slo:500ms``, same seed.

Default (issue #15): at each arrival pattern — Poisson 4, 10 and 30 req/s and a bursty gamma
trace (10 req/s, CV 3) — one shape-sweep on the same server and idle baseline: direct, the fixed
candidates below (gateway delay ≤ 400 ms each) and ``slo:500ms`` (one spec for every
rate, never tuned per rate). Goals: the adaptive policy's added TTFT p99 (its TTFT p99 minus
direct's) ≤ 500 ms at every rate; its net energy per request within 10 % of the best fixed
policy meeting the same budget; at 10 req/s ≥ 50 % below direct. Batch sizes (the server's mean,
the gateway's groups, the policy's predicted vs realised batch) explain the figures.

    .venv/bin/python benchmarks/shaping.py --out docs/results/shaping-slo-cpu.json \
        --store docs/results/shaping-slo-cpu.duckdb

The selection is one run per policy, and the lowest of several noisy figures is biased low (on
the 2-core VM two fixed policies that formed identical groups differed by 16 %). So after it,
``--confirm K`` (default 3) rounds re-run direct, the chosen best fixed policy and ``slo:500ms``
side by side, each round on a fresh seeded trace; the goals are judged on the paired per-round
ratios, with their 95 % intervals: met when the whole interval meets the goal, not met when none
of it does, otherwise inconclusive. ``--confirm 0`` judges the selection runs as before.

``--warm F``: before every run (direct, each fixed policy, the control and ``slo``) send F × n
unmeasured requests of the same arrival process the same way (through a gateway with the same
policy object for a shaped run), so the adaptive policy is measured as a long-running gateway
that has already learnt, not from a cold start; a 10-s run is otherwise largely its warm-up.
Default 0: every gateway starts cold, as before.

``--policy P`` runs the earlier single comparison instead (issue #6):

Goal: ≥ 30 % less *net* energy per request (idle-subtracted accounting) at equal
offered load, with TTFT p99 within a stated bound: shaped TTFT p99 ≤ direct TTFT p99 + the
policy's delay bound + 100 ms. Both runs use the same server process, the same meter (on a
machine without sensors the estimator, so every figure is labelled "estimated"), the same idle
baseline and the same seeded trace; the server is warmed up first and the direct run goes first.

    .venv/bin/python benchmarks/shaping.py --rate 10 --n 80 --policy window:8,800ms \
        --out docs/results/shaping-cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from joulebench.meters.registry import open_meter
from joulebench.meters.window import measure_idle
from joulebench.shape.experiment import Trial, _target, compare
from joulebench.shape.policies import parse_policy
from joulebench.shape.slo import summarize_decisions as summarize
from joulebench.shape.sweep import Sweep, sweep

ADAPTIVE = "slo:500ms"
BUDGET_MS = 500.0
#: What shape-sweep searches at each rate: fixed policies whose gateway delay is ≤ the budget.
#: (window:N,500ms were dropped: holding the full 500 ms leaves no room for the bigger batch's
#: prefill, so their added TTFT p99 always exceeded the budget on this machine.)
FIXED = ("cadence:250ms", "cadence:400ms", "window:4,400ms", "window:8,400ms")
#: The control: the same gateway holding nothing, so what the proxy alone adds (its hop and its
#: CPU, which a 2-core machine takes from the server) is measured apart from what holding adds.
#: Also a candidate for the best fixed policy (it holds 0 ms): at a rate where no hold pays,
#: not shaping is the policy to beat.
CONTROL = "passthrough"
#: (arrival, requests per run): about 8–15 s of traffic each.
ARRIVALS = (("poisson:4", 60), ("poisson:10", 100), ("poisson:30", 150), ("gamma:10,3", 100))

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
    ap.add_argument("--policy", default=None, help="one comparison (issue #6) instead")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply requests per run")
    ap.add_argument(
        "--arrivals", nargs="+", default=[a for a, _ in ARRIVALS],
        help="which of the default arrivals to run (the goals are judged only when all of them "
        "ran)",
    )  # fmt: skip
    ap.add_argument(
        "--warm", type=float, default=0.0,
        help="unmeasured requests before every run, as a share of its n (0: cold gateways)",
    )  # fmt: skip
    ap.add_argument("--max-delay-ms", type=float, default=None)
    ap.add_argument("--output-length", type=int, default=32)
    ap.add_argument("--scheduler", default="continuous")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", default=None, help="measure a running server instead")
    ap.add_argument("--out", type=Path, default=None, help="write the full JSON here")
    ap.add_argument("--store", type=Path, default=None, help="keep every run in this DuckDB")
    ap.add_argument(
        "--in-process", action="store_true",
        help="run the embedded server in this process (shares the GIL with gateway and client)",
    )  # fmt: skip
    ap.add_argument(
        "--confirm", type=int, default=3,
        help="rounds of direct / best fixed / slo side by side after the selection (0: none)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    known = dict(ARRIVALS)
    chosen = list(dict.fromkeys(args.arrivals))
    unknown = [a for a in chosen if a not in known]
    if unknown or not chosen:
        ap.error(f"--arrivals: unknown {unknown or chosen}; known: {', '.join(known)}")
    if args.warm < 0:
        ap.error(f"--warm must be ≥ 0, got {args.warm:g}")
    args.arrivals = [(a, known[a]) for a in chosen]
    logging.basicConfig(level=logging.WARNING)
    if args.policy is None:
        return adaptive_matrix(args)
    policy = parse_policy(args.policy, max_delay_ms=args.max_delay_ms)
    meter = open_meter(args.meter)
    try:
        trial = Trial(
            args.url,
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
        result = compare(trial, policy)
    finally:
        meter.close()

    out: dict[str, Any] = dict(result.to_json())  # the comparison, its goal added below
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
    return _finish(out, args.out)


def _finish(out: dict[str, Any], path: Path | None) -> int:
    print(json.dumps(out["goal"], indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {path}")
    return 0


def _added_p99(run: Any, direct: Any) -> float | None:
    a, b = run.latency_ms("ttft_ms", "p99"), direct.latency_ms("ttft_ms", "p99")
    return None if a is None or b is None else a - b


def _row(run: Any, direct: Any) -> dict[str, Any]:
    gw = run.gateway or {}
    out = {
        "policy": run.label,
        "net_j": run.per_request_j()["idle_subtracted"],
        "ttft_p99_ms": run.latency_ms("ttft_ms", "p99"),
        "added_ttft_p99_ms": _added_p99(run, direct),
        "gateway_delay_max_ms": run.added_delay_ms.get("max"),
        "server_mean_batch": run.server.get("mean_batch_size"),
        "mean_group": gw.get("mean_group_size"),
        "failed": (run.load.get("requests") or {}).get("failed"),
    }
    if gw.get("decisions"):
        out["slo"] = summarize(gw["decisions"]).to_dict()
        out["slo_model"] = gw["decisions"].get("model")  # cost basis, fits, target batch
    return out


def judge(result: Sweep) -> dict[str, Any]:
    """Direct, the best fixed policy within the budget, and the adaptive one, with the goals."""
    direct = result.runs[0]
    rows = [_row(r, direct) for r in result.runs]
    fixed = [
        r
        for r in rows[1:]
        if r["policy"] != ADAPTIVE
        and not r["failed"]
        and r["net_j"] is not None
        and r["net_j"] > 0
        and r["added_ttft_p99_ms"] is not None
        and r["added_ttft_p99_ms"] <= BUDGET_MS
    ]
    best = min(fixed, key=lambda r: r["net_j"], default=None)
    slo = next(r for r in rows if r["policy"] == ADAPTIVE)
    d_net, s_net = rows[0]["net_j"], slo["net_j"]
    within = slo["added_ttft_p99_ms"] is not None and slo["added_ttft_p99_ms"] <= BUDGET_MS
    vs_best = None if best is None or s_net is None else s_net / best["net_j"] - 1
    vs_direct = None if not d_net or s_net is None or d_net <= 0 else s_net / d_net - 1
    return {
        "rows": rows,
        "best_fixed": None if best is None else best["policy"],
        "slo_added_ttft_p99_within_budget": within,
        "slo_vs_best_fixed": vs_best,
        "slo_within_10pct_of_best_fixed": None if vs_best is None else vs_best <= 0.10,
        "slo_vs_direct": vs_direct,
    }


def _interval(xs: list[float]) -> dict[str, Any]:
    from joulebench.analysis.stats import summarize

    s = summarize(xs)
    half = s.ci_halfwidth
    return {
        "values": xs, "mean": s.mean,
        "ci95": None if half is None else [s.mean - half, s.mean + half],
    }  # fmt: skip


def _verdict(interval: dict[str, Any], goal_max: float) -> str:
    """``met`` when the whole 95 % interval is ≤ ``goal_max``, ``not met`` when all of it is
    above, else ``inconclusive`` (one round: judged on its value alone, said so)."""
    ci = interval["ci95"]
    if ci is None:
        return ("met" if interval["mean"] <= goal_max else "not met") + " (one round, no interval)"
    if ci[1] <= goal_max:
        return "met"
    return "not met" if ci[0] > goal_max else "inconclusive"


def _usable(row: dict[str, Any]) -> bool:
    return bool(row["net_j"] and row["net_j"] > 0 and not row["failed"])


def _control(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """What the gateway adds holding nothing (the passthrough control of each round: its own
    row, or the best fixed policy's when that is passthrough), and slo's TTFT p99 beyond it:
    the part of slo's added TTFT its holds account for. Rounds whose control lost requests or
    measured no energy are left out here, and counted."""
    pairs = [(r[0], r[2], next(x for x in r[1:] if x["policy"] == CONTROL)) for r in rounds]
    pairs = [(d, s, c) for d, s, c in pairs if _usable(c)]
    added = [c["added_ttft_p99_ms"] for _, _, c in pairs if c["added_ttft_p99_ms"] is not None]
    beyond = [
        s["ttft_p99_ms"] - c["ttft_p99_ms"]
        for _, s, c in pairs
        if s["ttft_p99_ms"] is not None and c["ttft_p99_ms"] is not None
    ]
    return {
        "usable": len(pairs),
        "passthrough_added_ttft_p99_ms": added,
        "passthrough_added_ttft_p99_max_ms": max(added, default=None),
        "slo_ttft_p99_beyond_passthrough_ms": beyond,
        "slo_ttft_p99_beyond_passthrough_max_ms": max(beyond, default=None),
        "passthrough_vs_direct": _interval([c["net_j"] / d["net_j"] - 1 for d, _, c in pairs])
        if pairs
        else None,
    }


def confirm(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Paired per-round ratios of the confirmation rounds (rows: direct, best fixed, slo and,
    unless it is the best fixed policy, the passthrough control)."""
    # judged on direct, best fixed and slo; a failed control leaves only the control's figures
    ok = [r for r in rounds if all(_usable(x) for x in r[:3])]
    if not ok:
        return {"rounds": len(rounds), "usable": 0, "within_10pct": "no usable round"}
    vs_best = _interval([r[2]["net_j"] / r[1]["net_j"] - 1 for r in ok])
    vs_direct = _interval([r[2]["net_j"] / r[0]["net_j"] - 1 for r in ok])
    best_vs_direct = _interval([r[1]["net_j"] / r[0]["net_j"] - 1 for r in ok])
    added = [r[2]["added_ttft_p99_ms"] for r in ok if r[2]["added_ttft_p99_ms"] is not None]
    best_added = [r[1]["added_ttft_p99_ms"] for r in ok if r[1]["added_ttft_p99_ms"] is not None]
    return {
        "rounds": len(rounds),
        "usable": len(ok),
        "rows": rounds,
        "slo_vs_best_fixed": vs_best,
        "within_10pct": _verdict(vs_best, 0.10),
        "slo_vs_direct": vs_direct,
        "at_least_50pct_below_direct": _verdict(vs_direct, -0.50),
        "best_fixed_vs_direct": best_vs_direct,
        "slo_added_ttft_p99_max_ms": max(added, default=float("nan")),
        "best_fixed_added_ttft_p99_max_ms": max(best_added, default=float("nan")),
        "slo_mean_group": _mean([r[2]["mean_group"] for r in ok]),
        "best_fixed_mean_group": _mean([r[1]["mean_group"] for r in ok]),
        "server_batch": {
            name: _mean([r[i]["server_mean_batch"] for r in ok])
            for i, name in enumerate(("direct", "best_fixed", "slo"))
        },
        "control": _control(ok),
    }


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _store(path: Path, result: Sweep, arrival: str) -> None:
    from joulebench.results.loads import store_load
    from joulebench.results.store import ResultStore

    with ResultStore(path) as db:
        for run in result.runs:
            via = None if run.label == "direct" else run.label
            store_load(
                db,
                run.load,
                name=f"shaping-slo/{arrival}/{run.label}",
                extra_config={
                    "via_shape": via,
                    "shape_policy": None if via is None else parse_policy(via).to_dict(),
                    "benchmark": "shaping.py",
                },
                meter_info=run.load.get("meter"),
                requests=run.requests,
                timeline=run.timeline,
                methods=run.load.get("meter_methods") or None,
            )


def adaptive_matrix(args: argparse.Namespace) -> int:
    meter = open_meter(args.meter)
    embedded = {"model": args.model, "scheduler": args.scheduler}
    report: dict[str, Any] = {
        "budget_ms": BUDGET_MS, "adaptive": ADAPTIVE, "fixed": FIXED,
        "cpus": os.cpu_count(), "loadavg_1min_before": os.getloadavg()[0], "warm": args.warm,
    }  # fmt: skip
    report["server"] = "url" if args.url else ("in-process" if args.in_process else "process")
    try:
        with _server(args, embedded, meter) as url:
            # one idle baseline, loaded and quiet, for every run
            idle_w = measure_idle(meter, args.idle_s).total_power_w if args.idle_s > 0 else None
            report["idle_power_w"] = idle_w
            for arrival, n in args.arrivals:
                n = max(8, round(n * args.scale))
                trial = Trial(
                    url, arrival, PROMPTS, n, output_length=args.output_length, seed=args.seed,
                    meter=meter, idle_power_w=idle_w, idle_s=0.0, warmup_n=4,
                    warm_n=round(args.warm * n),
                )  # fmt: skip
                result = sweep(trial, [*FIXED, CONTROL, ADAPTIVE])
                report.setdefault("energy_method", result.method)
                verdict = judge(result)
                # other processes slow the server down: say how busy the machine was
                if args.store is not None:
                    _store(args.store, result, arrival)
                if args.confirm > 0 and verdict["best_fixed"] is not None:
                    rounds = []
                    best = verdict["best_fixed"]
                    for k in range(args.confirm):
                        again = sweep(
                            dataclasses.replace(trial, seed=args.seed + 1 + k),
                            [best, ADAPTIVE] + ([] if best == CONTROL else [CONTROL]),
                        )
                        rounds.append([_row(r, again.runs[0]) for r in again.runs])
                        if args.store is not None:
                            _store(args.store, again, f"{arrival}/confirm{k + 1}")
                    verdict["confirmation"] = confirm(rounds)
                report[arrival] = {"n": n, "loadavg_1min_after": os.getloadavg()[0], **verdict}
                _print(arrival, n, verdict)
                if args.out is not None:  # a run cut short still leaves what it measured
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(report, indent=2, default=str))
    finally:
        meter.close()
    print(f"energy method: {report.get('energy_method')}")
    if len(args.arrivals) < len(ARRIVALS):
        ran = ", ".join(a for a, _ in args.arrivals)
        print(f"goals not judged: they hold over every default arrival, and only {ran} ran")
        report["goal"] = None
        return _finish(report, args.out)
    per = [report[a] for a, _ in ARRIVALS]
    at10 = report["poisson:10"]["slo_vs_direct"]
    confirmed = [v.get("confirmation") for v in per]
    if all(c and c.get("usable") for c in confirmed):
        report["goal_confirmed"] = {
            "added_ttft_p99_within_budget_every_round": all(
                c["slo_added_ttft_p99_max_ms"] <= BUDGET_MS for c in confirmed
            ),
            "within_10pct_of_best_fixed": {
                a: c["within_10pct"] for (a, _), c in zip(ARRIVALS, confirmed, strict=True)
            },
            "at_10rps_vs_direct": report["poisson:10"]["confirmation"]["slo_vs_direct"],
            "at_10rps_at_least_50pct_below_direct": report["poisson:10"]["confirmation"][
                "at_least_50pct_below_direct"
            ],
        }
    report["goal"] = {
        "added_ttft_p99_within_budget_everywhere": all(
            v["slo_added_ttft_p99_within_budget"] for v in per
        ),
        "within_10pct_of_best_fixed_everywhere": all(
            v["slo_within_10pct_of_best_fixed"] for v in per
        ),
        "at_10rps_vs_direct": at10,
        "at_10rps_at_least_50pct_below_direct": at10 is not None and at10 <= -0.5,
    }
    return _finish(report, args.out)


@contextlib.contextmanager
def _server(args: argparse.Namespace, embedded: dict[str, Any], meter: Any) -> Iterator[str]:
    """The server under test: ``--url``; else ``joulebench serve`` in a process of its own (a
    child: the estimator's process scope counts it), started and stopped like any engine; or,
    with ``--in-process``, the embedded server on a thread here. In-process the gateway, the
    load generator and the server share one interpreter lock: on 2 cores at 30 req/s the
    gateway's relaying then slowed the server into a backlog whatever the policy (every gateway
    run had 2-3x direct's batch and 0.4-1.1 s more TTFT p99), a cost no deployment pays."""
    if args.url or args.in_process:
        with _target(args.url, None if args.url else embedded, meter) as url:
            yield url
        return
    from joulebench.load.engines.session import LaunchOptions, engine_session, plan

    options = LaunchOptions(
        engine="joulebench", engine_args=f"--scheduler {args.scheduler}", ready_timeout_s=300
    )
    launch = plan(options, url=None, model=args.model, gpus=None, meter=args.meter)
    with engine_session(launch) as session:
        yield session.plan.url


def _print(arrival: str, n: int, verdict: dict[str, Any]) -> None:
    def f(x: Any, spec: str = ".4g") -> str:
        return "—" if x is None else format(x, spec)

    print(f"\n{arrival}  (n={n}; best fixed within budget: {verdict['best_fixed']})")
    print(f"{'policy':18s} {'net J/req':>10s} {'TTFT p99':>9s} {'added':>7s} {'hold max':>9s} "
          f"{'srv batch':>9s} {'group':>6s} {'failed':>6s}")  # fmt: skip
    for r in verdict["rows"]:
        print(
            f"{r['policy']:18s} {f(r['net_j']):>10s} {f(r['ttft_p99_ms'], '.0f'):>9s} "
            f"{f(r['added_ttft_p99_ms'], '.0f'):>7s} {f(r['gateway_delay_max_ms'], '.0f'):>9s} "
            f"{f(r['server_mean_batch'], '.2f'):>9s} {f(r['mean_group'], '.2f'):>6s} "
            f"{f(r['failed'], 'd'):>6s}"
        )
        if "slo" in r:
            s = r["slo"]
            m = r.get("slo_model") or {}
            print(
                f"{'':18s} slo: batch predicted {f(s['mean_predicted_batch'], '.2f')} vs "
                f"realised {f(s['mean_realised_batch'], '.2f')}; {s['decisions']}; cost basis "
                f"{m.get('basis')} ({m.get('responses_with_energy')} responses with energy), "
                f"target batch {m.get('target_batch')}"
            )
    print(
        f"slo vs best fixed: {f(verdict['slo_vs_best_fixed'], '+.1%')}, "
        f"vs direct: {f(verdict['slo_vs_direct'], '+.1%')}"
    )
    c = verdict.get("confirmation")
    if c and c.get("usable"):

        def iv(x: dict[str, Any]) -> str:
            ci = x["ci95"]
            span = "" if ci is None else f" [{ci[0]:+.1%}, {ci[1]:+.1%}]"
            return f"{x['mean']:+.1%}{span}"

        print(
            f"confirmed over {c['usable']} paired rounds: slo vs {verdict['best_fixed']} "
            f"{iv(c['slo_vs_best_fixed'])} ({c['within_10pct']}); slo vs direct "
            f"{iv(c['slo_vs_direct'])}; best fixed vs direct {iv(c['best_fixed_vs_direct'])}; "
            f"slo added TTFT p99 ≤ {c['slo_added_ttft_p99_max_ms']:.0f} ms; groups slo "
            f"{f(c['slo_mean_group'], '.2f')} vs fixed {f(c['best_fixed_mean_group'], '.2f')}"
        )
        k = c["control"]
        pt = k["passthrough_vs_direct"]
        print(
            f"control ({CONTROL}, no hold, {k['usable']} rounds): net J/request vs direct "
            f"{'—' if pt is None else iv(pt)}; added TTFT p99 ≤ "
            f"{f(k['passthrough_added_ttft_p99_max_ms'], '.0f')} ms; slo's TTFT p99 beyond it ≤ "
            f"{f(k['slo_ttft_p99_beyond_passthrough_max_ms'], '.0f')} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
