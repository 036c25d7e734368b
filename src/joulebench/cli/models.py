"""``joulebench models``: the bundled shapes (and what this machine can run), tiny model builds."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from joulebench.cli.common import console, handle_errors, print_json
from joulebench.workloads.precision import supported_precisions
from joulebench.workloads.shapes import SHAPES, shape_dict, shape_info, weight_bytes
from joulebench.workloads.tiny import TINY_ARCHS, TINY_SIZES, make_tiny

models_app = typer.Typer(help="Bundled model shapes and tiny test models.", no_args_is_help=True)


def _default_device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _memory_bytes(device: str) -> int | None:
    """Total memory of ``device`` (RAM for the CPU), or None when it cannot be read."""
    if device.startswith("cuda"):
        try:
            import torch

            index = int(device.split(":")[1]) if ":" in device else 0
            return int(torch.cuda.get_device_properties(index).total_memory)
        except Exception:
            return None
    import psutil

    return int(psutil.virtual_memory().total)


@models_app.command("list")
@handle_errors
def list_models(
    device: str = typer.Option(None, "--device", help="Device to check precisions for."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the bundled shapes (use as shape:<Name>) and the precisions runnable here."""
    device = device or _default_device()
    memory = _memory_bytes(device)
    rows = []
    for name in SHAPES:
        config = shape_dict(name)
        row = shape_info(name).to_dict()
        row.update(source=f"shape:{name}", device=device, device_memory_bytes=memory)
        supported = supported_precisions(config, device)
        sizes = {p: weight_bytes(config, p) for p in supported}
        # Weights must leave room for activations and the KV cache: 90 % of the memory at most.
        fits = [p for p in supported if memory is None or sizes[p] <= 0.9 * memory]
        row["precisions"] = fits
        row["too_large"] = [p for p in supported if p not in fits]
        row["weight_bytes"] = sizes
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    # Narrow terminals must still show every precision: compact, and only that column wraps.
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"bundled shapes (use as shape:<Name>) · device {device}",
    )
    for header in ("shape", "params", "layers", "hidden", "heads/kv"):
        table.add_column(header, no_wrap=True)
    table.add_column("precisions that run here", min_width=13, ratio=1)
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['n_params'] / 1e9:.2f}B",
            str(r["num_layers"]),
            str(r["hidden_size"]),
            f"{r['num_attention_heads']}/{r['num_kv_heads']}",
            ", ".join(r["precisions"]) or "none",
        )
    console.print(table)
    if memory is not None:
        console.print(
            f"Precisions whose weights exceed 90 % of {memory / 2**30:.0f} GiB are left out."
        )
    console.print("Shapes have random weights: use forced output lengths (reference or N).")


@models_app.command("make-tiny")
@handle_errors
def make_tiny_cmd(
    out: Path = typer.Argument(..., help="New (or empty) directory to write the model into."),
    arch: str = typer.Option("llama", "--arch", help=f"One of {', '.join(TINY_ARCHS)}."),
    size: str = typer.Option("tiny", "--size", help=f"One of {', '.join(TINY_SIZES)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
) -> None:
    """Build a tiny real model (config, random weights, offline BPE tokenizer, chat template)."""
    path = make_tiny(out, arch=arch, size=size, seed=seed)
    console.print(f"wrote tiny {arch}/{size} model to {path} (load it by path)")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
