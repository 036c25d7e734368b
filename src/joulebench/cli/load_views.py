"""How one load test is printed (``joulebench load`` without ``--json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from joulebench.cli.common import console
from joulebench.cli.shape_views import fmt_value

if TYPE_CHECKING:
    from joulebench.results.load_summary import LoadSummary

ACCOUNTING_TITLES = {
    "paper_whole_window": "whole window ÷ successful (study)",
    "idle_subtracted": "idle-subtracted",
    "steady_state": "steady-state window",
    "attributed_mean": "per-request attribution (mean)",
}


def print_table(j: LoadSummary) -> None:
    req = j["requests"]
    console.print(
        f"[bold]{req['ok']}[/] ok, [bold red]{req['failed']}[/] not ok "
        f"({req.get('truncated', 0)} truncated, {req['timed_out']} timed out, "
        f"{req.get('errored', 0)} failed) in {j['duration_s']:.2f} s; "
        f"sent at {fmt_value(j['achieved_rate_rps'])} req/s (target "
        f"{fmt_value(j['target_rate_rps'])}), completed {fmt_value(j['throughput_rps'])} req/s"
    )
    for err, count in req["errors"].items():
        console.print(f"  [red]{count}×[/] {escape(err)}")
    lat = Table("latency (ms, successful only)", "p50", "p90", "p99", title="Latency")
    for key in ("schedule_lag_ms", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queue_ms"):
        s = j[key]
        lat.add_row(
            key.removesuffix("_ms"), fmt_value(s["p50"]), fmt_value(s["p90"]), fmt_value(s["p99"])
        )
    console.print(lat)
    e = j["energy"]
    if e.get("gross_j") is None:
        console.print(f"energy: {e.get('note')}")
        return
    table = Table("accounting", "Wh / request", "J / request", "how", title="Energy per request")
    for key, title in ACCOUNTING_TITLES.items():
        below = key == "idle_subtracted" and e.get("net_at_or_below_idle")
        table.add_row(
            title,
            "≤ idle" if below else fmt_value(e["per_request_wh"][key]),
            "≤ idle" if below else fmt_value(e["per_request_j"][key]),
            escape(str(e["accountings"][key])),
        )
    console.print(table)
    spread = e.get("attributed_spread_j")
    if spread and spread["n"]:
        console.print(
            f"attributed J / request over {spread['n']} successful: p50 {fmt_value(spread['p50'])}, "
            f"p90 {fmt_value(spread['p90'])}, p99 {fmt_value(spread['p99'])}"
        )
    console.print(
        f"gross {e['gross_j']:.4g} J, net {fmt_value(e['net_j'])} J over {e['window_s']:.3g} s "
        f"(method: {e['method']}); attribution sum error {e['attribution_sum_rel_err']:.2%}"
    )
    console.print(
        f"load attribution: {e['attribution_method']} (idle gaps spread, sums to gross); "
        f"busy (≥1 request in flight): {fmt_value(e.get('busy_j'))} J"
    )
    if e.get("server_reported"):
        sr = e["server_reported"]
        console.print(
            f"server-reported: {sr['sum_j']:.4g} J over {sr['n']} responses, mean "
            f"{sr['mean_j']:.4g} J (method: {', '.join(sr['methods'])}); "
            f"{_pct(sr.get('over_busy'))} of busy, {_pct(sr.get('over_gross'))} of gross "
            "(the server charges its busy steps only)"
        )
    for a in e.get("audits", []):
        if not a["passed"]:
            console.print(f"[bold red]audit failed[/] {a['name']}: {a['detail']}")
    if j.get("estimated"):
        console.print(
            "[bold yellow]ESTIMATED:[/] no energy sensor was read; these figures come "
            "from a model of CPU time and RAM, not from a measurement."
        )


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"
