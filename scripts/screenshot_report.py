#!/usr/bin/env python3
"""Screenshot a joulebench HTML report with headless Chromium (for the README).

    .venv/bin/python scripts/screenshot_report.py joulebench-report/index.html \
        --out docs/report-screenshot.png

Fails (exit 1) when the page logs console errors, requests anything external, or shows an image
with no natural size: a screenshot of a broken report is worse than none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.browser import BrowserError, open_page  # tests/support: not product code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the report's index.html")
    parser.add_argument("--out", type=Path, default=Path("docs/report-screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: found on PATH)")
    args = parser.parse_args(argv)
    try:
        check = open_page(args.html, chromium=args.chromium, width=args.width, screenshot=True)
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = (
        check.console_errors
        + check.external_requests
        + [f"image without natural size: {i.get('alt')}" for i in check.broken_images]
    )
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    if problems or check.screenshot_png is None:
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(check.screenshot_png)
    print(f"wrote {args.out} ({len(check.images)} images, no console errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
