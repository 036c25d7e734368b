"""``joulebench shape`` (the gateway), ``shape-compare`` (direct vs shaped) and ``shape-sweep``.

``joulebench load … --via-shape POLICY`` runs the same experiment as ``shape-compare`` through
:func:`run_comparison`, which this module exports for ``cli/load.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from joulebench.cli.common import console, err_console, handle_errors, print_json
from joulebench.cli.meter_options import CpuTdpOpt, IdleOpt, MeterOpt, open_cli_meter
from joulebench.errors import ConfigError
from joulebench.meters.base import Meter

DEFAULT_SWEEP = (
    "cadence:100ms",
    "cadence:250ms",
    "cadence:500ms",
    "window:4,200ms",
    "window:8,400ms",
)
#: Used when no --prompts file is given: short chat turns, so a CPU run stays quick.
BUILTIN_PROMPTS = (
    "Explain in two sentences why batching requests saves energy on a GPU.",
    "Write a haiku about a data centre at night.",
    "What is the capital of France, and what is it known for?",
    "Summarise the idea of continuous batching for a new engineer.",
    "Give three tips to reduce the latency of a web service.",
    "Thank you for your help today!",
)


def read_prompts(path: Path | None) -> list[str]:
    """Prompts from a file (one per line, or JSONL with ``prompt``/``text``); built-ins if None."""
    if path is None:
        return list(BUILTIN_PROMPTS)
    if not path.is_file():
        raise ConfigError(f"--prompts: no such file {path}")
    out: list[str] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                out.append(str(obj.get("prompt") or obj["text"]))
            except (ValueError, KeyError, AttributeError):
                raise ConfigError(
                    f"{path}:{i}: expected a JSON object with 'prompt' or 'text'"
                ) from None
        else:
            out.append(line)
    if not out:
        raise ConfigError(f"--prompts: {path} holds no prompt")
    return out


def _fmt(x: float | None, change: bool = False) -> str:
    if x is None:
        return "—"
    if change:
        return f"{x * 100:+.1f} %"
    return f"{x:.4g}"


def print_comparison(result: Any) -> None:
    """The side-by-side table of a :class:`~joulebench.shape.experiment.Comparison`."""
    method = result.method or "no meter"
    title = f"direct vs {result.shaped.label} — energy method: {method}"
    table = Table("metric", "direct", "shaped", "change", title=title)
    for name, a, b, c in result.rows():
        table.add_row(name, _fmt(a), _fmt(b), _fmt(c, change=True))
    console.print(table)
    for run in (result.direct, result.shaped):
        failed = (run.load.get("requests") or {}).get("failed")
        if failed:
            err_console.print(
                f"[yellow]{run.label}: {failed} request(s) failed (not averaged in)[/]"
            )
    if result.method and "estimated" in result.method:
        err_console.print("[yellow]energy is estimated (no sensor on this machine)[/]")


def run_comparison(
    url: str | None,
    policy: str,
    arrival: str,
    prompts: Sequence[str],
    *,
    meter: Meter | None,
    idle_s: float,
    as_json: bool,
    **kwargs: Any,
) -> Any:
    """Run :func:`joulebench.shape.experiment.compare` and print it (table or JSON)."""
    from joulebench.shape.experiment import compare

    result = compare(url, policy, arrival, prompts, meter=meter, idle_s=idle_s, **kwargs)
    if as_json:
        print_json(result.to_json())
    else:
        print_comparison(result)
    return result


@handle_errors
def shape(
    upstream: str = typer.Option(..., "--upstream", help="Base URL of the server to front."),
    policy: str = typer.Option(
        "passthrough", "--policy", help="passthrough, cadence:500ms or window:N,T (window:8,200ms)."
    ),
    max_delay_ms: float = typer.Option(
        None, "--max-delay-ms", help="Most delay any request may get."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8081, "--port", help="Port (0 picks a free one)."),
    max_queue: int = typer.Option(1024, "--max-queue", help="Held requests before 429."),
    upstream_timeout_s: float = typer.Option(600.0, "--upstream-timeout-s", help="Per request."),
) -> None:
    """Run the arrival-shaping gateway in front of an OpenAI/TGI server."""
    from joulebench.shape.gateway import Gateway
    from joulebench.shape.policies import parse_policy
    from joulebench.shape.runner import serve_forever

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0…65535, got {port}")
    if max_queue < 1:
        raise ConfigError(f"--max-queue must be ≥ 1, got {max_queue}")
    if upstream_timeout_s <= 0:
        raise ConfigError(f"--upstream-timeout-s must be positive, got {upstream_timeout_s}")
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http(s) URL, got {upstream!r}")
    pol = parse_policy(policy, max_delay_ms=max_delay_ms)
    gw = Gateway(upstream, pol, max_queue=max_queue, upstream_timeout_s=upstream_timeout_s)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding {host}: reachable from other machines")
    err_console.print(f"joulebench shape: http://{host}:{port} → {upstream} ({pol.describe()})")
    serve_forever(gw, host, port)


@handle_errors
def shape_compare(
    policy: str = typer.Option(..., "--policy", help="Policy to compare with direct sending."),
    url: str = typer.Option(None, "--url", help="Server URL (default: start the embedded server)."),
    arrival: str = typer.Option(
        "poisson:2", "--arrival", help="Arrival process (as joulebench load)."
    ),
    n: int = typer.Option(40, "--n", help="Requests per run."),
    protocol: str = typer.Option(
        "openai-chat", "--protocol", help="openai-chat, openai-completions, tgi."
    ),
    prompts: Path = typer.Option(None, "--prompts", help="Prompt file (lines or JSONL)."),
    output_length: int = typer.Option(16, "--output-length", help="max_tokens per request."),
    max_delay_ms: float = typer.Option(
        None, "--max-delay-ms", help="Most delay any request may get."
    ),
    seed: int = typer.Option(0, "--seed"),
    timeout_s: float = typer.Option(120.0, "--timeout-s"),
    model: str = typer.Option("tiny", "--model", help="Embedded server model."),
    scheduler: str = typer.Option("continuous", "--scheduler", help="Embedded server scheduler."),
    meter: MeterOpt = "auto",
    idle_s: IdleOpt = 2.0,
    cpu_tdp_w: CpuTdpOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Same seeded trace directly and through the gateway: energy and latency side by side."""
    m = open_cli_meter(meter, **({"cpu_tdp_w": cpu_tdp_w} if cpu_tdp_w is not None else {}))
    try:
        run_comparison(
            url, policy, arrival, read_prompts(prompts), meter=m, idle_s=idle_s, as_json=as_json,
            n=n, protocol=protocol, output_length=output_length, max_delay_ms=max_delay_ms,
            seed=seed, timeout_s=timeout_s,
            embedded={"model": model, "scheduler": scheduler} if url is None else None,
        )  # fmt: skip
    finally:
        m.close()


@handle_errors
def shape_sweep(
    policies: list[str] = typer.Option(
        list(DEFAULT_SWEEP), "--policy", help="Repeat for each policy to sweep."
    ),
    url: str = typer.Option(None, "--url", help="Server URL (default: start the embedded server)."),
    arrival: str = typer.Option(
        "poisson:2", "--arrival", help="Arrival process (as joulebench load)."
    ),
    n: int = typer.Option(40, "--n", help="Requests per run."),
    protocol: str = typer.Option("openai-chat", "--protocol"),
    prompts: Path = typer.Option(None, "--prompts", help="Prompt file (lines or JSONL)."),
    output_length: int = typer.Option(16, "--output-length"),
    max_delay_ms: float = typer.Option(None, "--max-delay-ms"),
    seed: int = typer.Option(0, "--seed"),
    timeout_s: float = typer.Option(120.0, "--timeout-s"),
    accounting: str = typer.Option(
        "idle_subtracted", "--accounting", help="Energy accounting to rank by."
    ),
    latency: str = typer.Option("ttft_ms:p99", "--latency", help="ttft_ms:p99, e2e_ms:p99…"),
    model: str = typer.Option("tiny", "--model"),
    scheduler: str = typer.Option("continuous", "--scheduler"),
    meter: MeterOpt = "auto",
    idle_s: IdleOpt = 2.0,
    cpu_tdp_w: CpuTdpOpt = None,
    out: Path = typer.Option(None, "--out", help="Directory for sweep.json and pareto.png."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Energy-vs-latency Pareto table over shaping policies (direct sending included)."""
    from joulebench.shape.sweep import sweep

    m = open_cli_meter(meter, **({"cpu_tdp_w": cpu_tdp_w} if cpu_tdp_w is not None else {}))
    try:
        result = sweep(
            url, policies, arrival, read_prompts(prompts), n=n, protocol=protocol,
            output_length=output_length, max_delay_ms=max_delay_ms, seed=seed, meter=m,
            idle_s=idle_s, timeout_s=timeout_s,
            accounting=accounting, latency=latency,
            embedded={"model": model, "scheduler": scheduler} if url is None else None,
        )  # fmt: skip
    finally:
        m.close()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(result.to_json(), indent=2, default=str))
        result.figure(out / "pareto.png")
        err_console.print(f"wrote {out / 'sweep.json'} and {out / 'pareto.png'}")
    if as_json:
        print_json(result.to_json())
        return
    table = Table(
        "policy", f"J/request ({accounting})", latency, "added delay p99 ms", "mean batch", "failed", "Pareto",
        title=f"energy method: {result.method or 'no meter'}",
    )  # fmt: skip
    for p in result.points():
        table.add_row(
            p.label, _fmt(p.energy_j), _fmt(p.latency_ms), _fmt(p.added_delay_p99_ms),
            _fmt(p.mean_batch_size), str(p.failed), "★" if p.on_front else "",
        )  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("shape")(shape)
    app.command("shape-compare")(shape_compare)
    app.command("shape-sweep")(shape_sweep)
