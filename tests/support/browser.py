"""Open a page in headless Chromium through Playwright: console errors, requests, images, screenshot.

Used by the report's browser test and ``scripts/screenshot_report.py``; not product code. It
drives the system's Chromium (Debian's ``/usr/bin/chromium``, installed by
``scripts/ensure_chromium.sh``), never a browser Playwright downloads, and needs the ``playwright``
package (``joulebench[test]``). Every request the page makes is recorded, so a test can prove
that a report fetches nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Beyond Playwright's own defaults (no sync, no component updates, no background networking):
#: no QUIC, no GPU, no /dev/shm (small in containers). CI containers run as root: no sandbox.
CHROMIUM_ARGS = ("--disable-quic", "--disable-gpu", "--disable-dev-shm-usage", "--no-sandbox")
LOCAL_SCHEMES = ("data:", "file:", "about:")
MAX_SCREENSHOT_HEIGHT = 16000
_IMAGES_JS = """Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
    naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))"""


class BrowserError(RuntimeError):
    """Chromium or Playwright is missing, or the page could not be loaded."""


def find_chromium() -> str | None:
    """Path of a Chromium binary, or ``None``."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(slots=True)
class PageCheck:
    """What a page did when loaded."""

    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot_png: bytes | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [i for i in self.images if not i.get("naturalWidth") or not i.get("naturalHeight")]


def open_page(
    html_path: str | Path,
    *,
    chromium: str | None = None,
    width: int = 1280,
    height: int = 900,
    screenshot: bool = False,
    timeout_s: float = 60.0,
) -> PageCheck:
    """Load ``html_path`` in headless Chromium and report console errors, images, requests."""
    page_path = Path(html_path).resolve()
    if not page_path.is_file():
        raise BrowserError(f"no HTML file at {page_path}")
    binary = chromium or find_chromium()
    if binary is None:
        raise BrowserError("Chromium not found: install it (Debian: apt-get install -y chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        raise BrowserError("needs playwright: pip install 'joulebench[test]'") from exc
    check = PageCheck()
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=binary, args=list(CHROMIUM_ARGS), timeout=timeout_s * 1000
            )
        except Error as exc:
            raise BrowserError(f"Chromium did not start: {exc}") from exc
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_s * 1000)
            page.on(
                "console",
                lambda m: check.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: check.console_errors.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith(LOCAL_SCHEMES)
                    else check.external_requests.append(r.url)
                ),
            )
            page.on(
                "requestfailed", lambda r: check.failed_requests.append(f"{r.failure} ({r.url})")
            )
            page.goto(page_path.as_uri(), wait_until="load")
            check.images = list(page.evaluate(_IMAGES_JS))
            if screenshot:
                full_h = int(page.evaluate("document.documentElement.scrollHeight"))
                page.set_viewport_size(
                    {"width": width, "height": min(full_h, MAX_SCREENSHOT_HEIGHT)}
                )
                check.screenshot_png = page.screenshot(type="png")
        except Error as exc:
            raise BrowserError(f"loading {page_path} failed: {exc}") from exc
        finally:
            browser.close()
    return check
