"""Load time and memory of shape-only models in every precision the device supports.

Shape-only models are built on the meta device and materialized layer by layer directly in the
target precision, so the peak memory should stay close to the weights' own size. This records,
per (model, precision): load time, weight bytes (measured and predicted from the config), peak
allocated device memory and the time of a forced 8-token generation.

    .venv/bin/python benchmarks/shape_loading.py --device cuda \
        --models shape:Qwen2.5-0.5B-Instruct shape:Llama-3.1-8B-Instruct --out docs/results

(issue #3's proof on a GPU; ``--models tiny --device cpu`` is a quick smoke run.)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from joulebench.environment import library_versions
from joulebench.errors import JoulebenchError
from joulebench.meters.sync import torch_sync
from joulebench.workloads.models import load_model, load_tokenizer
from joulebench.workloads.precision import supported_precisions
from joulebench.workloads.shapes import resolve_shape, shape_dict, weight_bytes


def _config_for(source: str) -> Any:
    if source.lower().startswith("shape:"):
        return shape_dict(resolve_shape(source.split(":", 1)[1]))
    return None


def measure(source: str, precision: str, device: str) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    loaded = load_model(source, precision, device)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], device=device)
    torch_sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        loaded.model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    torch_sync()
    config = _config_for(source)
    row = {
        "model": loaded.name,
        "precision": precision,
        "device": device,
        "load_time_s": round(loaded.load_time_s, 3),
        "memory_bytes": loaded.memory_bytes,
        "predicted_weight_bytes": weight_bytes(config, precision) if config else None,
        "peak_allocated_bytes": peak,
        "generate_8_tokens_s": round(time.perf_counter() - t0, 4),
        "precision_knobs": loaded.precision.to_dict(),
    }
    del loaded
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["shape:Qwen2.5-0.5B-Instruct"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="*", help="Default: all supported here.")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()

    rows = []
    for source in args.models:
        load_tokenizer(source)  # fail early on a bad source
        precisions = args.precisions or supported_precisions(_config_for(source), args.device)
        for precision in precisions:
            try:
                row = measure(source, precision, args.device)
            except JoulebenchError as exc:
                row = {"model": source, "precision": precision, "error": str(exc)}
            print(json.dumps(row))
            rows.append(row)

    gpu = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    report = {"device": args.device, "hardware": gpu, "libraries": library_versions(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shape_loading.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Shape-only model loading on {gpu} ({args.device})",
        "",
        "| model | precision | load s | weights GiB | predicted GiB | peak GiB | gen 8 tok s |",
        "|---|---|---|---|---|---|---|",
    ]
    gib = 2**30
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['precision']} | error: {r['error']} |||||")
            continue
        pred = r["predicted_weight_bytes"]
        peak = r["peak_allocated_bytes"]
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['load_time_s']:.2f} | "
            f"{r['memory_bytes'] / gib:.2f} | {pred / gib if pred else float('nan'):.2f} | "
            f"{peak / gib if peak else float('nan'):.2f} | {r['generate_8_tokens_s']:.3f} |"
        )
    (args.out / "shape_loading.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
