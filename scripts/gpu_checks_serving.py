"""Step 4 of ``scripts/gpu_checks.py``: the embedded server under the study's arrival patterns.

One ``joulebench serve`` (continuous batching; Llama-3.1-8B bf16 on the GPU, the tiny model in
``--smoke``) stays up for the whole step; ``joulebench load --url … --json`` drives it under
sequential, burst, fixed 50 ms and fixed 500 ms arrivals, each with the four accountings and its
audits, and ``joulebench shape-compare`` sends one seeded Poisson trace directly and through the
gateway. The idle-floor audit is checked here twice: the load's own
``energy_ge_idle_x_duration`` audit, and, for fixed intervals, whole-window energy per request ≥
idle power × interval × (n − 1)/n; the study's 1.1e-3 Wh at 500 ms (10,000 requests, so
(n − 1)/n ≈ 1) is set beside idle power × interval in the summary.
"""

from __future__ import annotations

from typing import Any

from gpu_checks_proc import Ctx, StepRecord, StepTimeout, json_out, run, server

LLAMA = "shape:Llama-3.1-8B-Instruct"
ACCOUNTINGS = ("paper_whole_window", "idle_subtracted", "steady_state", "attributed_mean")
#: (arrival, requests on the GPU, requests in the smoke run, fixed interval in s or None)
ARRIVALS = (
    ("sequential", 8, 2, None),
    ("burst", 16, 3, None),
    ("fixed:50ms", 16, 3, 0.05),
    ("fixed:500ms", 12, 2, 0.5),
)
IDLE_FLOOR_AUDIT = "load:energy_ge_idle_x_duration"


def _meter_args(ctx: Ctx) -> list[str]:
    """The load generator's meter. Smoke: the server is another process, which only the
    system-wide estimator sees (the server's own per-response figures use its process scope)."""
    return (
        ["--meter", "estimate", "--estimate-scope", "system"] if ctx.smoke else ["--meter", "nvml"]
    )


def load_row(arrival: str, interval_s: float | None, r: dict[str, Any]) -> dict[str, Any]:
    """The figures of one ``joulebench load --json`` object, with the idle-floor audit."""
    e = r.get("energy") or {}
    wh = e.get("per_request_wh") or {}
    audits = e.get("audits") or []
    idle_w = e.get("idle_power_w")
    n = int((r.get("requests") or {}).get("total") or 0)
    # n requests at a fixed interval span (n − 1) intervals: the window's idle energy alone,
    # shared by n, is at least idle × interval × (n − 1) / n per request
    per_gap_wh = None if idle_w is None or interval_s is None else idle_w * interval_s / 3600.0
    floor_wh = None if per_gap_wh is None or n < 1 else per_gap_wh * (n - 1) / n
    return {
        "arrival": arrival, "requests": r.get("requests"), "method": e.get("method"),
        "per_request_wh": {a: wh.get(a) for a in ACCOUNTINGS},
        "how": e.get("accountings") or {}, "gross_j": e.get("gross_j"), "net_j": e.get("net_j"),
        "idle_power_w": idle_w, "window_s": e.get("window_s"),
        "attribution_sum_rel_err": e.get("attribution_sum_rel_err"),
        "idle_floor_wh_per_request": floor_wh, "idle_x_interval_wh": per_gap_wh,
        "audits": {a.get("name"): a.get("passed") for a in audits},
        "audit_details": {a.get("name"): a.get("detail") for a in audits},
        "ttft_ms": r.get("ttft_ms"), "e2e_ms": r.get("e2e_ms"),
        "meter_methods": r.get("meter_methods"),
    }  # fmt: skip


def step_serving(ctx: Ctx, rec: StepRecord) -> None:
    model, precision = ("tiny", "fp32") if ctx.smoke else (LLAMA, "bf16")
    output = "4" if ctx.smoke else "32"
    args = ["--model", model, "--precision", precision, "--device", ctx.device, "--scheduler",
            "continuous", "--max-batch-size", "16", "--idle-s", "0", "--meter", ctx.meter]  # fmt: skip
    rows: list[dict[str, Any]] = []
    with server(ctx, args, "serving-server") as url:
        for arrival, n_gpu, n_smoke, interval_s in ARRIVALS:
            tag = arrival.replace(":", "-")
            cmd = ["jb", "load", "--url", url, "--arrival", arrival, "--n", str(n_smoke if ctx.smoke else n_gpu),
                   "--prompts", "quick", "--output-length", output, "--idle-s", "0.3" if ctx.smoke else "2",
                   "--timeout-s", "120", "--json", *_meter_args(ctx)]  # fmt: skip
            try:
                rc, out = run(ctx, cmd, f"serving-load-{tag}", ctx.left_s() - 30)
                row = load_row(arrival, interval_s, json_out(rc, out, "joulebench load"))
            except (StepTimeout, RuntimeError) as exc:
                rec.check(f"load {arrival}", False, str(exc))
                continue
            rows.append(row)
            rec.figure("runs", rows)
            _check_run(rec, row)
        _shaping(ctx, rec, url)


def _check_run(rec: StepRecord, row: dict[str, Any]) -> None:
    req = row["requests"] or {}
    rec.methods.update((row.get("meter_methods") or {}).values())
    have = [a for a, v in row["per_request_wh"].items() if v is not None or row["how"].get(a)]
    rec.check(f"load {row['arrival']}", bool(req.get("ok")) and not req.get("failed") and len(have) == 4,
              f"{req.get('ok')} ok / {req.get('failed')} failed; accountings with a value or a "
              f"reason: {len(have)}/4")  # fmt: skip
    audit = row["audits"].get(IDLE_FLOOR_AUDIT)
    rec.check(f"idle floor {row['arrival']}", audit,
              row["audit_details"].get(IDLE_FLOOR_AUDIT) or "no idle-floor audit in the result")  # fmt: skip
    whole, floor = row["per_request_wh"]["paper_whole_window"], row["idle_floor_wh_per_request"]
    if floor is not None:
        rec.check(f"whole-window ≥ idle × interval {row['arrival']}", whole is not None and whole >= floor,
                  f"{whole} Wh/request vs idle floor {floor:.3g} Wh ({row['idle_power_w']:.3g} W × interval × (n − 1)/n)")  # fmt: skip


def _shaping(ctx: Ctx, rec: StepRecord, url: str) -> None:
    meter = ["--meter", "fake"] if ctx.smoke else ["--meter", "nvml"]  # shape-compare has no scope
    if ctx.smoke:
        rec.notes.append("smoke: shape-compare uses the fake meter (constant power): plumbing only")
    cmd = ["jb", "shape-compare", "--url", url, "--policy", "window:8,400ms",
           "--arrival", "poisson:8" if ctx.smoke else "poisson:4", "--n", "4" if ctx.smoke else "16",
           "--output-length", "4" if ctx.smoke else "32", "--idle-s", "0.3" if ctx.smoke else "2",
           "--json", *meter]  # fmt: skip
    try:
        rc, out = run(ctx, cmd, "serving-shape-compare", ctx.left_s() - 8)
        s = json_out(rc, out, "joulebench shape-compare")
    except (StepTimeout, RuntimeError) as exc:
        rec.check("shaped vs direct Poisson", False, str(exc))
        return
    rec.methods.update(m for m in str(s.get("energy_method") or "").split("+") if m)
    rec.figure("shaping", {"policy": s.get("policy"), "table": s.get("table"),
                           "energy_method": s.get("energy_method")})  # fmt: skip
    oks = {
        k: ((s.get(k) or {}).get("ok"), (s.get(k) or {}).get("failed"))
        for k in ("direct", "shaped")
    }
    rec.check("shaped vs direct Poisson", rc == 0 and all(ok and not f for ok, f in oks.values()),
              f"direct {oks['direct'][0]} ok / {oks['direct'][1]} failed, shaped {oks['shaped'][0]} ok"
              f" / {oks['shaped'][1]} failed (rc {rc})")  # fmt: skip
