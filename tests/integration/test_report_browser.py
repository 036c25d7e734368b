"""The HTML report in headless Chromium: no console errors, no external request, every image drawn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from joulebench.report.build import build_report
from support.browser import open_page  # tests/support: on sys.path through tests/conftest.py

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium; "
        "`make test` installs it via scripts/ensure_chromium.sh when run as root)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs playwright (pip install 'joulebench[test]'), which drives the system Chromium",
    ),
]


def _fill_store(path: Path) -> Path:
    """The report tests' store filler, loaded by file path (``conftest`` names collide)."""
    source = Path(__file__).resolve().parents[1] / "unit" / "report" / "conftest.py"
    spec = importlib.util.spec_from_file_location("joulebench_report_fixture", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_store(path)


def test_report_loads_cleanly_in_chromium(tmp_path: Path) -> None:
    store = _fill_store(tmp_path / "s.duckdb")
    report = build_report(store, tmp_path / "report")
    check = open_page(report.index_html, chromium=str(CHROMIUM), screenshot=True, timeout_s=90)
    assert check.console_errors == []
    assert check.external_requests == [] and check.failed_requests == []
    assert len(check.images) == len(report.figures) == 9  # as test_html.py counts
    assert check.broken_images == []
    assert all(i["naturalWidth"] > 300 and i["complete"] for i in check.images)
    assert check.screenshot_png is not None and check.screenshot_png[:4] == b"\x89PNG"


def test_a_broken_image_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img alt="bad" src="data:image/png;base64,AAAA"><script>console.error("boom")</script>'
        '<img alt="far" src="http://127.0.0.1:9/x.png">'
        "</body></html>"
    )
    check = open_page(page, chromium=str(CHROMIUM), timeout_s=90)
    assert [i["alt"] for i in check.broken_images] == ["bad", "far"]
    assert any("boom" in e for e in check.console_errors)
    assert check.external_requests == ["http://127.0.0.1:9/x.png"]
    assert len(check.failed_requests) == 1 and "127.0.0.1:9" in check.failed_requests[0]
