"""Set what ``scripts/gpu_checks.py`` measured beside the study's trends and headlines.

Nothing is measured here: the rows come from the steps' JSON (``phases.json``, ``batching.json``,
``serving.json``), the claims from :mod:`joulebench.analysis.paper`. Each verdict says
"agrees", "differs" or "not enough data".
"""

from __future__ import annotations

from typing import Any

from joulebench.analysis import paper
from joulebench.analysis.records import ProfileCell

QUANTIZED = ("int8-bnb", "int4-fp4", "int4-nf4")
NO_DATA = "not enough data"


def _claim(key: str) -> str:
    return next(t.claim for t in paper.TRENDS if t.key == key)


def _rows(step: dict[str, Any] | None, key: str = "rows") -> list[dict[str, Any]]:
    rows = ((step or {}).get("figures") or {}).get(key) or []
    return [r for r in rows if "error" not in r]


def _decode_j_per_token(row: dict[str, Any]) -> float | None:
    return (row.get("normalized") or {}).get("per_output_token_j") or (row.get("decode") or {}).get(
        "energy_per_token_j"
    )


def precision_trend(phases: dict[str, Any] | None) -> dict[str, Any]:
    """Per model and batch: decode J/output token of each quantized precision vs bf16."""
    table: dict[str, dict[str, float | None]] = {}
    for r in _rows(phases):
        table.setdefault(f"{r['model']} b={r['batch_size']}", {})[r["precision"]] = (
            _decode_j_per_token(r)
        )
    costlier, compared = [], 0
    for group, prec in table.items():
        base = prec.get("bf16")
        quant = {p: v for p in QUANTIZED if (v := prec.get(p)) is not None}
        if not base or not quant:
            continue
        compared += 1
        costlier += [f"{group} {p} {v / base:.2f}× bf16" for p, v in quant.items() if v > base]
    if not compared:
        here, verdict = "no group with bf16 and a quantized precision measured", NO_DATA
    else:
        groups = len({" ".join(s.split(" ")[:2]) for s in costlier})
        here = f"decode J/output token above bf16 in {groups}/{compared} model·batch groups: " + (
            "; ".join(costlier) or "none"
        )
        verdict = "agrees" if groups else "differs"
    return {"key": "precision", "claim": _claim("precision"), "here": here, "verdict": verdict,
            "table": table}  # fmt: skip


def batch_trends(batching: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The three batching trends, through :func:`joulebench.analysis.paper.batch_observations`."""
    rows = _rows(batching)
    cells = [ProfileCell("gpu-checks", str(i), "batching", "done", r.get("config") or {}, r, None)
             for i, r in enumerate(rows)]  # fmt: skip
    obs = paper.batch_observations(cells)
    sizes = sorted({r["batch_size"] for r in rows})
    out = []
    for key in ("batch_prefill", "batch_decode", "batch_output"):
        here = obs.get(key)
        if here is None:
            verdict = NO_DATA
        elif key == "batch_prefill":
            verdict = "agrees" if here.startswith("rises") else "differs"
        elif key == "batch_output":
            verdict = "agrees" if here.startswith("falls") else "differs"
        else:  # U-shape: the optimum lies strictly inside the measured batch sizes
            best = int(here.split("b=")[1].split(" ")[0])
            verdict = "agrees" if sizes and sizes[0] < best < sizes[-1] else "differs"
        precisions = sorted({r["precision"] for r in rows} - {"fp32"})
        if here and precisions:  # the study's batching ran in fp32
            here += f" — {', '.join(precisions)} here, fp32 in the study"
        out.append({"key": key, "claim": _claim(key), "here": here or "no batch study",
                    "verdict": verdict})  # fmt: skip
    return out


def _serving_runs(serving: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {r["arrival"]: r for r in _rows(serving, "runs")}


def arrival_trend(serving: dict[str, Any] | None) -> dict[str, Any]:
    """Sequential vs fixed 500 ms per-request energy, whole window ÷ requests (the study's)."""
    runs = _serving_runs(serving)
    seq = (runs.get("sequential") or {}).get("per_request_wh", {}).get("paper_whole_window")
    fixed = (runs.get("fixed:500ms") or {}).get("per_request_wh", {}).get("paper_whole_window")
    if not seq or not fixed:
        here, verdict = "sequential or fixed 500 ms run missing", NO_DATA
    else:
        ratio = seq / fixed
        here = (f"sequential {seq:.3g} Wh/request vs fixed 500 ms {fixed:.3g}: {ratio:.3g}× "
                "(the study: ≈110×)")  # fmt: skip
        verdict = "agrees" if ratio >= 10 else "differs"
    return {"key": "arrival_shaping", "claim": _claim("arrival_shaping"), "here": here,
            "verdict": verdict}  # fmt: skip


def headlines(serving: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each study headline beside the matching run here (all four accountings)."""
    runs = _serving_runs(serving)
    spec = {
        "naive_sequential": "sequential",
        "tgi_burst": "burst",
        "tgi_fixed_500ms": "fixed:500ms",
    }
    out = []
    for h in paper.headlines():
        run = runs.get(spec.get(h.key, ""))
        floor = None if run is None else run.get("idle_x_interval_wh")
        out.append({
            "key": h.key, "label": h.label, "paper_wh": h.value,
            "here_wh": None if run is None else run["per_request_wh"],
            "here_method": None if run is None else run.get("method"),
            "idle_floor_wh": floor,
            "paper_below_idle_floor_here": None if floor is None else h.value < floor,
            "caveat": h.caveat,
        })  # fmt: skip
    return out


def launch_gap(phases: dict[str, Any] | None) -> dict[str, Any]:
    comp = [r for r in _rows(phases, "compile") if "compiled_vs_eager_energy" in r]
    if not comp:
        return {"key": "launch_gap", "claim": "idle gaps between kernel launches dominate decode "
                "energy (the study's explanation)", "here": "no compiled run", "verdict": NO_DATA}  # fmt: skip
    c = comp[0]
    ratio, same = c.get("compiled_vs_eager_energy"), c.get("tokens_identical")
    if ratio is None:
        here, verdict = "compiled or eager measurement missing", NO_DATA
    else:
        here = (f"{c['model']} {c['precision']} b=1: compiled decode {ratio:.2f}× eager J/token, "
                f"{c.get('compiled_vs_eager_time')}× time; tokens identical: {same}")  # fmt: skip
        verdict = "agrees" if ratio < 0.9 else "differs"
    return {"key": "launch_gap", "claim": "idle gaps between kernel launches dominate decode "
            "energy (the study's explanation)", "here": here, "verdict": verdict}  # fmt: skip


def all_trends(steps: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        precision_trend(steps.get("phases")),
        *batch_trends(steps.get("batching")),
        arrival_trend(steps.get("serving")),
        launch_gap(steps.get("phases")),
    ]
