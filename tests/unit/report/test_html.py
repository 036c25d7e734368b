"""The HTML report: self-contained, every section present, audits and failures never dropped."""

from __future__ import annotations

import re
from pathlib import Path

from joulebench.report.build import ReportResult, build_report
from joulebench.results.store import ResultStore


def test_report_is_self_contained(full_report: ReportResult) -> None:
    result = full_report
    page = result.index_html.read_text()
    imgs = re.findall(r'<img src="([^"]*)"', page)
    assert len(imgs) == len(result.figures) == 9
    assert all(src.startswith("data:image/png;base64,") and len(src) > 5000 for src in imgs)
    # no external resource of any kind
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert '<link rel="stylesheet"' not in page and "<script" not in page
    for f in result.figures:
        assert f.png.exists() and f.svg.exists()


def test_report_sections_and_method_labels(full_report: ReportResult) -> None:
    page = full_report.index_html.read_text()
    for section in (
        "summary",
        "missing",
        "figures",
        "paper",
        "cells",
        "loads",
        "audits",
        "environment",
    ):
        assert f'<section id="{section}">' in page
    assert "ESTIMATED energy" in page
    assert page.count('<span class="method">estimated</span>') >= 14 + 5
    # environment and meter parameters are shown
    assert "Test CPU 2-core" in page and "per_core_w" in page and "2.13.0" in page


def test_failing_audits_and_failed_cells_are_shown(full_report: ReportResult) -> None:
    page = full_report.index_html.read_text()
    fail_rows = re.findall(r'<tr class="fail">(.*?)</tr>', page)
    assert any("decode:energy_above_floor" in r and "FAIL" in r for r in fail_rows)
    assert "1 audit check(s) failed" in page
    assert "OutOfMemoryError: could not allocate KV cache" in page
    audits = page.split('<section id="audits">')[1]
    assert audits.index("FAIL") < audits.index(">pass<")  # failing first


def test_paper_side_by_side(full_report: ReportResult) -> None:
    page = full_report.index_html.read_text()
    paper = page.split('<section id="paper">')[1].split("</section>")[0]
    for value in ("0.12 Wh/request", "0.0096 Wh/request", "0.0011 Wh/request"):
        assert value in paper
    assert "different hardware" in paper and "H100" in paper
    assert "rises:" in paper  # the batching trend as observed in this store


def test_partial_store_lists_what_is_missing(load_only_store: Path, tmp_path: Path) -> None:
    result = build_report(load_only_store, tmp_path)
    page = result.index_html.read_text()
    missing = page.split('<section id="missing">')[1].split("</section>")[0]
    assert "no completed profile cells of the precision study" in missing
    assert "no shaped load run" in missing
    assert len(re.findall(r"<img ", page)) == 3  # arrival energy, latency, engine occupancy


def test_empty_store_still_writes_a_page(empty_store: Path, tmp_path: Path) -> None:
    page = build_report(empty_store, tmp_path).index_html.read_text()
    assert "No figure had data." in page and "not measured here" in page


def test_store_text_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    with ResultStore(path) as db:
        run = db.start_run("sweep", config={}, meter={"methods": {"cpu:0": "estimated"}})
        db.start_cell(run, "k1", {"model": "<b>m</b>", "precision": "fp32"}, study="precision")
        db.finish_cell(run, "k1", error="<script>alert(1)</script>")
        db.finish_run(run, status="failed")
    page = build_report(path, tmp_path / "o").index_html.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "status <b>failed</b>" in page


def test_p99_of_few_requests_is_marked(full_report: ReportResult) -> None:
    loads = full_report.index_html.read_text().split('<section id="loads">')[1]
    loads = loads.split("</section>")[0]
    assert "†</td>" in loads  # the fake-meter runs have far fewer than 100 requests
    assert "not an estimate of a 1-in-100 tail" in loads


HOSTILE = "<script>alert(1)</script>"
RICH = "[/] [bold]x"


def test_user_given_names_are_escaped_everywhere(tmp_path: Path) -> None:
    """Run, sweep, model and cell names, errors, environment fields and the title: all escaped."""
    path = tmp_path / "x.duckdb"
    with ResultStore(path) as db:
        run = db.start_run(
            "sweep",
            name=HOSTILE,
            run_id='sweep-"><img src=x onerror=alert(2)>',
            config={},
            environment={"cpu": {"model": RICH}, "note": "<i>it</i> & 'q'"},
            meter={"name": HOSTILE, "methods": {"cpu:0": "estimated"}},
        )
        db.start_cell(run, HOSTILE, {"model": RICH, "precision": HOSTILE}, study=RICH)
        db.finish_cell(run, HOSTILE, error=HOSTILE)
        db.add_audits(run, HOSTILE, [{"name": RICH, "passed": False, "detail": HOSTILE}])
        db.finish_run(run, status="failed")
    page = build_report(path, tmp_path / "o", title=HOSTILE).index_html.read_text()
    assert "<script" not in page and "<i>" not in page
    assert "<img " not in page  # the run id's would-be tag, and no figure had data
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6  # title ×2, cell, error …
    assert '"><img' not in page and "&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&lt;i&gt;it&lt;/i&gt; &amp; " in page
    # rich markup is not markup here: it is shown as typed, in the cells table and environment
    cells = page.split('<section id="cells">')[1].split("</section>")[0]
    assert f"<td>{RICH}</td>" in cells
    env = page.split('<section id="environment">')[1].split("</section>")[0]
    assert f"<td>environment.cpu.model</td><td>{RICH}</td>" in env
    audits = page.split('<section id="audits">')[1].split("</section>")[0]
    assert re.search(r'<tr class="fail">.*\[/\] \[bold\]x.*FAIL', audits)
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
