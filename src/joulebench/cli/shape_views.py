"""How a shaped-vs-direct comparison is run from the CLI and printed (``shape-compare`` and
``load --via-shape`` both use it: no command module imports another)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from joulebench.cli.common import console, err_console, print_json


def fmt_value(x: float | None, change: bool = False, net: bool = False) -> str:
    if x is None:
        return "—"
    if change:
        return f"{x * 100:+.1f} %"
    if net and x <= 0:  # idle-subtracted energy at or under the baseline: nothing measured above it
        return f"{x:.4g} (≤ idle)"
    return f"{x:.4g}"


def print_comparison(result: Any) -> None:
    """The side-by-side table of a :class:`~joulebench.shape.experiment.Comparison`."""
    method = result.method or "no meter"
    title = f"direct vs {result.shaped.label} — energy method: {method}"
    table = Table("metric", "direct", "shaped", "change", title=title)
    for name, a, b, c in result.rows():
        net = name.endswith("(net)")
        table.add_row(name, fmt_value(a, net=net), fmt_value(b, net=net), fmt_value(c, change=True))
    console.print(table)
    for run in (result.direct, result.shaped):
        failed = (run.load.get("requests") or {}).get("failed")
        if failed:
            err_console.print(
                f"[yellow]{run.label}: {failed} request(s) failed (not averaged in)[/]"
            )
    if result.method and "estimated" in result.method:
        err_console.print("[yellow]energy is estimated (no sensor on this machine)[/]")
    print_decisions(result.shaped.gateway)


def print_decisions(gateway: dict[str, Any] | None) -> None:
    """One line on an adaptive policy's releases (``slo``); nothing for fixed policies."""
    from joulebench.shape.slo import summarize_decisions

    if not gateway or not gateway.get("decisions"):
        return
    s = summarize_decisions(gateway["decisions"])
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
    console.print(
        f"{s.releases} releases, mean group {fmt_value(s.mean_group_size)}, "
        f"mean delay {fmt_value(s.mean_delay_ms)} ms (max {fmt_value(s.max_delay_ms)}), "
        f"batch predicted {fmt_value(s.mean_predicted_batch)} vs realised "
        f"{fmt_value(s.mean_realised_batch)}; by reason: {reasons}",
        markup=False,
    )


def show_comparison(result: Any, as_json: bool) -> None:
    """A comparison as JSON or as the side-by-side table."""
    if as_json:
        print_json(result.to_json())
    else:
        print_comparison(result)
