"""``joulebench profile``: phase-aware measurement of one model × precision × batch cell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from joulebench.cli.common import console, err_console, handle_errors, print_json
from joulebench.cli.contention_options import (
    NO_CONTENTION_FLAGS,
    ContentionFlags,
    contention_flags,
)
from joulebench.cli.meter_options import AUTO_METER, IdleOpt, MeterChoice, meter_flags
from joulebench.validation import validation_message

if TYPE_CHECKING:
    from joulebench.profile.config import ProfileConfig
    from joulebench.results.cell import CellResult

ModelOpt = Annotated[
    str,
    typer.Option("--model", help="tiny, tiny:<arch>:<size>, shape:<Name>, path or hub id"),
]
PrecisionOpt = Annotated[str, typer.Option("--precision")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1)]
PromptsOpt = Annotated[str, typer.Option("--prompts", help="quick, paper or a file")]
NOpt = Annotated[int | None, typer.Option("--n", min=1, help="number of prompts")]
MethodOpt = Annotated[str, typer.Option("--method", help="direct, subtraction or both")]
OutputLengthOpt = Annotated[str, typer.Option("--output-length", help="natural, reference or N")]
BucketingOpt = Annotated[str, typer.Option("--bucketing", help="none, sorted or buckets:K")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="static cache + torch.compile decode")]
WarmupOpt = Annotated[
    int,
    typer.Option(
        "--warmup",
        min=0,
        help="warm-ups per measurement: a cap under --warmup-rule settled, the count under exact",
    ),
]
WarmupRuleOpt = Annotated[
    str,
    typer.Option(
        "--warmup-rule",
        help="settled: stop once two warm-ups in a row agree within 10 %; exact: all "
        "--warmup of them (the study's protocol: --warmup 5 --warmup-rule exact)",
    ),
]
MinWindowOpt = Annotated[
    float | None,
    typer.Option(
        "--min-window-s",
        help="shortest window (default: max(0.25 s, 10 × the meter's update period))",
    ),
]
CiTargetOpt = Annotated[float, typer.Option("--ci-target")]
MinRepeatsOpt = Annotated[int, typer.Option("--min-repeats")]
MaxRepeatsOpt = Annotated[int, typer.Option("--max-repeats")]
ConsistencyOpt = Annotated[
    float,
    typer.Option(
        "--consistency-tolerance",
        help="with --method both: largest relative gap between prefill + decode and a "
        "full generate before the result carries a warning",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device")]
SeedOpt = Annotated[int, typer.Option("--seed")]
CpuPeakOpt = Annotated[
    float | None,
    typer.Option("--cpu-peak-gflops", help="roofline: CPU peak instead of calibrating"),
]
CpuBandwidthOpt = Annotated[
    float | None, typer.Option("--cpu-bandwidth-gbs", help="roofline: CPU bandwidth GB/s")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
StoreOpt = Annotated[Path | None, typer.Option("--store", help="DuckDB results file")]


def _fmt(x: Any, unit: str = "", digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}{unit}"


def cpu_peak_from_flags(gflops: float | None, gbs: float | None) -> Any:
    from joulebench.analysis.roofline import given_peak
    from joulebench.errors import ConfigError

    if gflops is None and gbs is None:
        return None
    if gflops is None or gbs is None:
        raise ConfigError(
            "give both --cpu-peak-gflops and --cpu-bandwidth-gbs (or neither, to calibrate)"
        )
    return given_peak(gflops, gbs)


def print_audits(audits: Sequence[Mapping[str, Any]]) -> None:
    failing = [a for a in audits if not a["passed"]]
    for a in failing:
        console.print(f"[bold red]AUDIT FAILED[/] {a['name']}: {a['detail']}")
    if not failing:
        console.print(f"[green]all {len(audits)} audit checks passed[/]")


def _phase_table(r: CellResult, label: str) -> Table:
    """Energy, latency and repeats per phase and method, the headline rows first."""
    table = Table(
        title=f"per pass over the prompt set — energy [{label}]",
        caption="* headline figure; subtraction J: the study's generate(1) / generate(N) − "
        "generate(1) figure beside it",
    )
    for col in (
        "phase",
        "method",
        "energy J",
        "±95% rel",
        "net J",
        "latency s",
        "J/token",
        "repeats",
        "subtraction J",
    ):
        table.add_column(col)
    rows = [("prefill", r["prefill"]), ("decode", r["decode"])]
    if "subtraction" in r:
        rows += [("prefill", r["subtraction"]["prefill"]), ("decode", r["subtraction"]["decode"])]
    if "generate" in r:
        rows.append(("generate", r["generate"]))
    for i, (name, s) in enumerate(rows):
        rel = s.get("ci_halfwidth_rel")
        headline = i < 2  # the headline phases: the study's subtraction figure beside them
        table.add_row(
            name,
            s["method"] + ("*" if headline else ""),
            _fmt(s["energy_j"]),
            "—" if rel is None else f"{rel:.1%}",
            _fmt(s["net_energy_j"]),
            _fmt(s["latency_s"]),
            _fmt(s["energy_per_token_j"]),
            str(s["repeats"]),
            _fmt(s.get("subtraction_energy_j"))
            if headline and s["method"] != "subtraction"
            else "",
        )
    return table


def _print_checks(r: CellResult) -> None:
    """generate() overhead, phase consistency and roofline lines, when the result has them."""
    ov = r.get("generate_overhead")
    if ov:
        console.print(
            f"generate() overhead ({ov['method']}): {_fmt(ov['per_call_s'] * 1e3, ' ms', 3)} / "
            f"{_fmt(ov['per_call_j'], ' J', 3)} per call, "
            f"{_fmt((ov['per_step_s'] or 0.0) * 1e3, ' ms', 3)} / "
            f"{_fmt(ov['per_step_j'], ' J', 3)} per step"
        )
    if r.get("consistency_rel_err") is not None:
        c = r.get("consistency", {})
        console.print(
            f"consistency ({c.get('compared')}): {r['consistency_rel_err']:.1%} apart in energy, "
            f"{abs(c.get('latency_rel_err') or 0.0):.1%} in time"
        )
    rf = r.get("roofline", {})
    if "prefill" in rf:
        console.print(
            f"roofline ({rf['hardware']['name']}): prefill floor {_fmt(rf['prefill']['time_floor_s'], ' s')} "
            f"efficiency {_fmt(rf['prefill']['efficiency'], '', 3)}; decode floor "
            f"{_fmt(rf['decode']['time_floor_s'], ' s')} efficiency {_fmt(rf['decode']['efficiency'], '', 3)}"
        )


def print_profile(r: CellResult) -> None:
    methods = sorted(set(r["meter_methods"].values()))
    label = ", ".join(methods)
    if r.get("estimated"):
        console.print(
            f"[bold yellow]ENERGY IS ESTIMATED[/] (meter {r['meter']['name']}: {label}; no sensor)"
        )
    else:
        console.print(f"meter {r['meter']['name']} ({label})")
    t = r["tokens"]
    console.print(
        f"{escape(r['model'])} {r['precision'].get('name')} on {r['device']}: "
        f"{r['n_requests']} requests in "
        f"{r['n_batches']} batches; input tokens {t['input_effective']} effective / "
        f"{t['input_computed']} computed (padding {r['padding_ratio']:.1%}); output {t['output']}"
    )
    console.print(_phase_table(r, label))
    n = r["normalized"]
    console.print(
        f"per request {_fmt(n['per_request_j'], ' J')}, per effective input token "
        f"{_fmt(n['per_effective_input_token_j'], ' J')}, per computed input token "
        f"{_fmt(n['per_computed_input_token_j'], ' J')}, per output token {_fmt(n['per_output_token_j'], ' J')}"
        f" [{label}]"
    )
    lat = r["latency"]
    console.print(
        f"TTFT {_fmt(lat['ttft_s'], ' s')}, decode {_fmt(lat['decode_s_per_token'], ' s/token')}, "
        f"idle {_fmt(r['idle']['total_power_w'], ' W')}"
    )
    _print_checks(r)
    for w in r.get("warnings", []):
        console.print(f"[bold red]warning:[/] {w}")
    print_audits(r["audit"])


def profile_config(contention: ContentionFlags, **flags: Any) -> ProfileConfig:
    """The command's flags as a :class:`ProfileConfig`; a bad value names its flag."""
    from pydantic import ValidationError

    from joulebench.errors import ConfigError
    from joulebench.profile.config import ProfileConfig

    try:
        return ProfileConfig(**flags, **contention.settings())
    except ValidationError as exc:
        raise ConfigError(
            validation_message(
                exc,
                "invalid profile options",
                name=lambda p: "--" + p.replace(".", "-").replace("_", "-"),
            )
        ) from None


@handle_errors
@meter_flags
@contention_flags
def profile(
    model: ModelOpt,
    precision: PrecisionOpt = "fp32",
    batch_size: BatchSizeOpt = 1,
    prompts: PromptsOpt = "quick",
    n: NOpt = None,
    method: MethodOpt = "both",
    output_length: OutputLengthOpt = "reference",
    bucketing: BucketingOpt = "none",
    compile: CompileOpt = False,
    warmup: WarmupOpt = 5,
    warmup_rule: WarmupRuleOpt = "settled",
    min_window_s: MinWindowOpt = None,
    ci_target: CiTargetOpt = 0.02,
    min_repeats: MinRepeatsOpt = 3,
    max_repeats: MaxRepeatsOpt = 10,
    consistency_tolerance: ConsistencyOpt = 0.05,
    device: DeviceOpt = "cpu",
    seed: SeedOpt = 0,
    cpu_peak_gflops: CpuPeakOpt = None,
    cpu_bandwidth_gbs: CpuBandwidthOpt = None,
    json_out: JsonOpt = False,
    store: StoreOpt = None,
    meter: MeterChoice = AUTO_METER,
    idle_s: IdleOpt = 2.0,
    contention: ContentionFlags = NO_CONTENTION_FLAGS,
) -> None:
    """Measure prefill and decode energy of one cell (direct and/or subtraction)."""
    import warnings

    from joulebench.errors import JoulebenchWarning
    from joulebench.profile.runner import profile_configured
    from joulebench.results.store import ResultStore, check_writable

    config = profile_config(
        contention,
        model=model, precision=precision, batch_size=batch_size, prompts=prompts, n=n,
        method=method, output_length=output_length, bucketing=bucketing, compile=compile,
        warmup=warmup, warmup_rule=warmup_rule, min_window_s=min_window_s, ci_target=ci_target,
        min_repeats=min_repeats, max_repeats=max_repeats,
        consistency_tolerance=consistency_tolerance, device=device, seed=seed,
    )  # fmt: skip
    hardware = cpu_peak_from_flags(cpu_peak_gflops, cpu_bandwidth_gbs)
    if store is not None:
        check_writable(store)
        ResultStore(store).close()  # schema and lock problems surface before the model loads
    m = meter.open()  # a wrong --meter fails before a model is loaded
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", JoulebenchWarning
            )  # recorded in the result, shown below
            result = profile_configured(
                config, m, store_path=store, idle_s=idle_s, hardware=hardware
            )
    finally:
        m.close()
    if json_out:
        print_json(result)
        failing = [a for a in result["audit"] if not a["passed"]]
        for a in failing:
            err_console.print(f"[bold red]AUDIT FAILED[/] {a['name']}: {a['detail']}")
    else:
        print_profile(result)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
