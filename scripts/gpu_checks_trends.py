"""Read what ``scripts/gpu_checks.py`` stored and set it beside the study's trends.

Nothing is measured here: rows come from the results store (:func:`joulebench.analysis.records.
read_store`) and from ``joulebench profile --json`` objects; the study's claims come from
:mod:`joulebench.analysis.paper`. Each verdict says "agrees", "differs" or "not enough data".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from joulebench.analysis.paper import TRENDS, batch_observations
from joulebench.analysis.records import ACCOUNTINGS, ProfileCell, StoreContents, read_store
from joulebench.results.store import ResultStore

QUANTIZED = ("int8-bnb", "int4-fp4", "int4-nf4")


def _contents(store: Path) -> StoreContents | None:
    if not store.exists():
        return None
    with ResultStore(store, read_only=True) as db:
        return read_store(db)


def _claim(key: str) -> str:
    return next(t.claim for t in TRENDS if t.key == key)


def _cells(contents: StoreContents | None, run_name: str) -> list[ProfileCell]:
    """Completed cells of the sweep run named ``run_name``."""
    if contents is None:
        return []
    ids = {r.run_id for r in contents.runs if r.name == run_name}
    return [c for c in contents.cells if c.ok and c.run_id in ids]


def precision_trend(store: Path, run_name: str) -> dict[str, Any]:
    """Per model: decode J per output token by precision; does quantization cost more in decode?"""
    cells = _cells(_contents(store), run_name)
    by_model: dict[str, dict[str, dict[str, float | None]]] = {}
    for c in cells:
        by_model.setdefault(c.model, {})[c.precision] = c.per_token_j()
    costlier, compared = [], 0
    for model, prec in by_model.items():
        base = (prec.get("bf16") or {}).get("output")
        quant = {p: (prec.get(p) or {}).get("output") for p in QUANTIZED if p in prec}
        quant = {p: v for p, v in quant.items() if v is not None}
        if base is None or not quant:
            continue
        compared += 1
        costlier += [f"{model} {p} {v / base:.2f}× bf16" for p, v in quant.items() if v > base]
    if not compared:
        here, verdict = (
            "no model with both bf16 and a quantized precision measured",
            "not enough data",
        )
    else:
        n_models = len({s.split(" ")[0] for s in costlier})
        here = (f"decode J/output token above bf16 in {n_models}/{compared} models: "
                + ("; ".join(costlier) or "none"))  # fmt: skip
        verdict = "agrees" if n_models else "differs"
    return {"precision": {"claim": _claim("precision"), "here": here, "verdict": verdict,
                          "per_token_j": by_model}}  # fmt: skip


def study_trends(store: Path, run_name: str) -> dict[str, Any]:
    """The batching trends, from :func:`joulebench.analysis.paper.batch_observations`."""
    cells = _cells(_contents(store), run_name)
    obs = batch_observations(cells)
    out: dict[str, Any] = {}
    for key in ("batch_prefill", "batch_decode", "batch_output"):
        here = obs.get(key)
        if here is None:
            verdict = "not enough data"
        elif key == "batch_prefill":
            verdict = "agrees" if here.startswith("rises") else "differs"
        elif key == "batch_output":
            verdict = "agrees" if here.startswith("falls") else "differs"
        else:  # U-shape: the optimum lies strictly inside the measured batch sizes
            sizes = sorted({c.batch_size for c in cells if c.batch_size and not c.bucketing})
            best = int(here.split("b=")[1].split(" ")[0])
            verdict = "agrees" if sizes and sizes[0] < best < sizes[-1] else "differs"
        out[key] = {"claim": _claim(key), "here": here or "no batch study", "verdict": verdict}
    return out


def _num(d: Any, *path: str) -> float | None:
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return float(d) if isinstance(d, int | float) else None


def launch_gap_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Eager vs compiled decode per model, from ``profile --json`` objects."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        pair = {r["compile"]: r["result"] for r in results if r["model"] == model}
        eager, comp = pair.get(False), pair.get(True)
        e_j = _num(eager, "decode", "energy_per_token_j")
        c_j = _num(comp, "decode", "energy_per_token_j")
        e_s = _num(eager, "latency", "decode_s_per_token")
        c_s = _num(comp, "latency", "decode_s_per_token")
        ratio = None if not e_j or c_j is None else c_j / e_j
        t_ratio = None if not e_s or c_s is None else c_s / e_s
        if ratio is None:
            verdict = "missing eager or compiled measurement"
        else:
            verdict = (f"compiled decode uses {ratio:.2f}× the eager energy per token and "
                       f"{'—' if t_ratio is None else f'{t_ratio:.2f}×'} the time: "
                       + ("supports" if ratio < 0.9 else "does not support")
                       + " the study's claim that launch gaps dominate decode energy")  # fmt: skip
        rows.append({"model": model, "eager_j_per_token": e_j, "compiled_j_per_token": c_j,
                     "eager_s_per_token": e_s, "compiled_s_per_token": c_s,
                     "compile_vs_eager_energy": ratio, "compile_vs_eager_time": t_ratio,
                     "verdict": verdict})  # fmt: skip
    return rows


def serving_rows(store: Path, prefix: str) -> list[dict[str, Any]]:
    """Every load run whose name starts with ``prefix``: the four accountings side by side."""
    contents = _contents(store)
    if contents is None:
        return []
    failed_audits: dict[str, list[str]] = {}
    for a in contents.audits:
        if not a.get("passed"):
            failed_audits.setdefault(str(a.get("run_id")), []).append(str(a.get("check_name")))
    rows = []
    for lr in contents.load_runs:
        if not (lr.run.name or "").startswith(prefix):
            continue
        energy = (lr.run.summary or {}).get("energy") or {}
        rows.append({
            "run": lr.run.name, "arrival": lr.arrival, "scheduler": lr.scheduler,
            "ok": lr.requests_ok or 0, "failed": lr.requests_failed or 0,
            "method": lr.run.method,
            "per_request_wh": {a: lr.per_request_wh(a) for a in ACCOUNTINGS},
            "how": {a: (energy.get("accountings") or {}).get(a) for a in ACCOUNTINGS},
            "gross_j": energy.get("gross_j"), "net_j": energy.get("net_j"),
            "idle_power_w": energy.get("idle_power_w"),
            "attribution_sum_rel_err": energy.get("attribution_sum_rel_err"),
            "audits_failed": failed_audits.get(lr.run.run_id, []),
        })  # fmt: skip
    return rows
