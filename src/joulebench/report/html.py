"""The self-contained HTML report: inline CSS, figures as base64 data URIs, no external requests."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from joulebench.analysis.paper import CITATION, PAPER_HARDWARE, TRENDS, Comparison
from joulebench.analysis.records import ACCOUNTINGS, StoreContents
from joulebench.report.plotting import FigureFile, MissingFigure, split_methods

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;
color:#1d232a;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d8dee4;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#ffe3e3}tr.fail td.verdict{color:#a40e26;font-weight:700}
tr.pass td.verdict{color:#1a7f37}.banner{background:#fff4ce;border:1px solid #d4a72c;
padding:.6rem .9rem;border-radius:6px;margin:1rem 0}.banner.bad{background:#ffe3e3;border-color:#cf222e}
figure{margin:1.2rem 0;border:1px solid #d8dee4;border-radius:6px;padding:.6rem}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:.85rem;color:#424a53;margin-top:.4rem}.method{font-weight:600}
.muted{color:#6e7781}code{background:#f0f3f6;padding:0 .2rem;border-radius:3px}
.note{font-size:.8rem;color:#424a53;margin:.2rem 0 1rem}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"


def _table(headers: Sequence[str], rows: Iterable[tuple[Sequence[str], str]]) -> str:
    """Rows are (pre-escaped cells, css class); a cell starting with ``<td`` is kept as is."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for cells, cls in rows:
        tds = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
        body.append(f'<tr class="{cls}">{tds}</tr>')
    if not body:
        return '<p class="muted">(none)</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: float | None, err: float | None = None, mark: str = "") -> str:
    text = fmt(value) + (f" ± {fmt(err, 2)}" if value is not None and err is not None else "")
    return f'<td class="num">{esc(text)}{mark if value is not None else ""}</td>'


def _figure(f: FigureFile) -> str:
    data = base64.b64encode(f.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="fig-{esc(f.key)}"><img src="data:image/png;base64,{data}" '
        f'alt="{esc(f.title)}"><figcaption><b>{esc(f.title)}.</b> {esc(f.caption)} '
        f'<span class="muted">Files: <code>{esc(f.png.name)}</code>, '
        f"<code>{esc(f.svg.name)}</code>.</span></figcaption></figure>"
    )


def _summary(c: StoreContents, figures: Sequence[FigureFile], audits_failed: int) -> str:
    kinds: dict[str, int] = {}
    for r in c.runs:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    done = sum(1 for x in c.cells if x.ok)
    failed = sum(1 for x in c.cells if x.status == "failed")
    methods = split_methods([r.method for r in c.runs] + [x.method for x in c.cells if x.ok])
    methods = tuple(m for m in methods if m != "unknown")
    items = [
        f"runs: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}",
        f"profile cells: {done} done, {failed} failed",
        f"audit checks: {len(c.audits) - audits_failed} passed, {audits_failed} failed",
        f"figures drawn: {len(figures)}",
        f"meter methods: {', '.join(methods) or 'none recorded'}",
    ]
    out = "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"
    if "estimated" in methods:
        out += (
            '<div class="banner"><b>ESTIMATED energy.</b> At least one number in this report '
            "comes from joulebench's sensorless estimator (no energy sensor was read): treat it "
            "as a model output, not a measurement. Every table row names its method.</div>"
        )
    if audits_failed:
        out += (
            f'<div class="banner bad"><b>{audits_failed} audit check(s) failed.</b> '
            'See <a href="#audits">Audits</a>: the numbers they concern are physically doubtful.</div>'
        )
    return out


def _flat(prefix: str, obj: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, v in enumerate(obj):
            _flat(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, json.dumps(obj, default=str) if not isinstance(obj, str) else obj))


def _environment(c: StoreContents) -> str:
    parts = []
    seen: set[str] = set()
    for r in c.runs:
        pairs: list[tuple[str, str]] = []
        _flat("", {"environment": r.environment, "meter": r.meter}, pairs)
        text = json.dumps(pairs)
        if not pairs or text in seen:
            continue
        seen.add(text)
        rows = [((esc(k), esc(v)), "") for k, v in pairs]
        parts.append(f"<h3>{esc(r.kind)} run <code>{esc(r.run_id)}</code></h3>")
        parts.append(_table(("field", "value"), rows))
    return "".join(parts) or '<p class="muted">No environment was recorded.</p>'


def _cells_table(c: StoreContents) -> str:
    rows = []
    for x in c.cells:
        pre, dec = x.phase("prefill"), x.phase("decode")
        per = x.per_token_j() if x.ok else {}
        e_pre = pre.energy_j if pre else None
        e_dec = dec.energy_j if dec else None
        rows.append(
            (
                (
                    f"<code>{esc(x.run_id)}</code><br><code>{esc(x.cell_key)}</code>",
                    esc(x.study), esc(x.model), esc(x.precision), esc(x.batch_size),
                    "yes" if x.bucketing else "no", esc(x.status),
                    _num(e_pre, pre.halfwidth(e_pre) if pre else None),
                    _num(e_dec, dec.halfwidth(e_dec) if dec else None),
                    _num(per.get("effective_input")), _num(per.get("computed_input")),
                    _num(per.get("output")), _num(x.padding_ratio),
                    f'<span class="method">{esc(x.method if x.ok else "—")}</span>',
                    esc(x.error or ""),
                ),
                "fail" if x.status == "failed" else "",
            )
        )  # fmt: skip
    headers = (
        "run / cell", "study", "model", "precision", "batch", "bucketing", "status",
        "prefill J (±95% CI)", "decode J (±95% CI)", "J/effective input token",
        "J/computed input token", "J/output token", "padding ratio", "method", "error",
    )  # fmt: skip
    return _table(headers, rows)


def _loads_table(c: StoreContents) -> str:
    rows = []
    for lr in c.load_runs:
        s = lr.run.summary
        cells = [
            f"<code>{esc(lr.run.run_id)}</code>", esc(lr.arrival), esc(lr.scheduler),
            "yes" if lr.shaped else "no", esc(lr.run.status),
            _num(lr.requests_ok), _num(lr.requests_failed), _num(s.get("achieved_rate_rps")),
        ]  # fmt: skip
        cells += [_num(lr.per_request_wh(a)) for a in ACCOUNTINGS]
        few = (lr.requests_ok or 0) < 100  # a p99 of fewer than 100 values is about their max
        cells += [
            _num(lr.latency_ms(m, p), mark="†" if p == "p99" and few else "")
            for m in ("ttft_ms", "e2e_ms")
            for p in ("p50", "p99")
        ]
        cells.append(f'<span class="method">{esc(lr.run.method)}</span>')
        bad = lr.run.failed_audits
        cells.append(f"FAIL: {esc(', '.join(bad))}" if bad else "pass")
        rows.append((tuple(cells), "fail" if lr.run.status != "done" or bad else ""))
    headers = [
        "run", "arrival", "scheduler", "shaped", "status", "ok", "failed", "rate (req/s)",
    ]  # fmt: skip
    headers += [f"Wh/request: {a}" for a in ACCOUNTINGS]
    headers += ["TTFT p50 (ms)", "TTFT p99 (ms)", "E2E p50 (ms)", "E2E p99 (ms)", "method"]
    headers.append("audits")
    note = (
        '<p class="note">† p99 over fewer than 100 successful requests: it is close to the '
        "largest value seen, not an estimate of a 1-in-100 tail.</p>"
        if any((lr.requests_ok or 0) < 100 for lr in c.load_runs)
        else ""
    )
    return _table(headers, rows) + note


def _audits_table(c: StoreContents) -> str:
    rows = [
        (
            (
                f"<code>{esc(a['run_id'])}</code>", f"<code>{esc(a.get('cell_key') or '')}</code>",
                esc(a["check_name"]),
                f'<td class="verdict">{"pass" if a["passed"] else "FAIL"}</td>',
                esc(a.get("detail") or ""),
            ),
            "pass" if a["passed"] else "fail",
        )
        for a in c.audits
    ]  # fmt: skip
    return _table(("run", "cell", "check", "verdict", "detail"), rows)


def _paper_table(comparisons: Sequence[Comparison], observations: Mapping[str, str]) -> str:
    rows = []
    for cmp in comparisons:
        h = cmp.headline
        here = "<br>".join(f"{esc(a)}: {esc(fmt(v))} Wh" for a, v in cmp.here_wh.items())
        rows.append(
            (
                (
                    esc(h.label), f'<td class="num">{esc(fmt(h.value))} {esc(h.unit)}</td>',
                    esc(h.setting), here or '<span class="muted">not measured here</span>',
                    esc(cmp.here_method or "—"), esc(cmp.hardware_note), esc(h.caveat),
                ),
                "",
            )
        )  # fmt: skip
    table = _table(
        (
            "study figure",
            "study value",
            "study setting",
            "here",
            "method here",
            "hardware",
            "caveat",
        ),
        rows,
    )
    trend_rows = [
        ((esc(t.claim), esc(observations.get(t.key, "not measured here")), f"<code>{esc(t.figure)}</code>"), "")
        for t in TRENDS
    ]  # fmt: skip
    return (
        f"<p>Study hardware: {esc(PAPER_HARDWARE)}. Source: {esc(CITATION)}.</p>"
        + table
        + "<h3>Trends</h3>"
        + _table(("study finding", "this store", "figure"), trend_rows)
    )


def _missing(c: StoreContents, missing: Sequence[MissingFigure]) -> str:
    items = [f"figure <b>{esc(m.title)}</b>: {esc(m.reason)}" for m in missing]
    items += [
        f"failed cell <code>{esc(x.cell_key)}</code> ({esc(x.label)}): {esc(x.error or 'no error text')}"
        for x in c.cells
        if x.status == "failed"
    ]
    items += [
        f"{esc(r.kind)} run <code>{esc(r.run_id)}</code> status <b>{esc(r.status)}</b>"
        for r in c.runs
        if r.status != "done"
    ]
    if not items:
        return "<p>Nothing missing: every figure had data and every cell and run completed.</p>"
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def render_html(
    contents: StoreContents,
    figures: Sequence[FigureFile],
    missing: Sequence[MissingFigure],
    comparisons: Sequence[Comparison],
    observations: Mapping[str, str],
    *,
    title: str,
    subtitle: str,
) -> str:
    audits_failed = sum(1 for a in contents.audits if not a["passed"])
    figs = "".join(_figure(f) for f in figures) or '<p class="muted">No figure had data.</p>'
    sections = [
        ("summary", "Summary", _summary(contents, figures, audits_failed)),
        ("missing", "What is missing", _missing(contents, missing)),
        ("figures", "Figures", figs),
        ("paper", "Side by side with the study", _paper_table(comparisons, observations)),
        ("cells", "Profile cells", _cells_table(contents)),
        ("loads", "Load runs", _loads_table(contents)),
        ("audits", "Audits (failing first)", _audits_table(contents)),
        ("environment", "Environment and meters", _environment(contents)),
    ]
    nav = " · ".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{s}</section>' for k, t, s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p><nav>{nav}</nav>{body}'
        "</body></html>\n"
    )
