"""Open a report in headless Chromium over the DevTools protocol: errors, images, screenshot.

Used by the browser test and ``scripts/screenshot_report.py``; needs a Chromium binary and the
``websocket-client`` package (``joulebench[test]``). The browser gets a fresh profile directory,
no network features (QUIC, sync, component updates, background networking) and no sandbox (CI
containers run as root); every request the page makes is recorded so a test can prove the report
fetches nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joulebench.errors import ConfigError, JoulebenchError
from joulebench.extras import require

log = logging.getLogger(__name__)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


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


class _Session:
    """One flattened DevTools session on a page target, over the browser websocket."""

    def __init__(self, ws: Any, timeout_s: float) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []
        self._next = 0

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False
    ) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if not browser and self.session_id:
            msg["sessionId"] = self.session_id
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise JoulebenchError(f"DevTools {method} failed: {reply['error']}")
                return dict(reply.get("result") or {})
            if "method" in reply:
                self.events.append(reply)
        raise JoulebenchError(f"DevTools {method} did not answer within {self.timeout_s} s")

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while time.monotonic() < deadline:
            ev = json.loads(self.ws.recv())
            if "method" in ev:
                self.events.append(ev)
                if ev["method"] == method:
                    return ev
        raise JoulebenchError(f"page did not fire {method} within {self.timeout_s} s")


def _start(chromium: str, profile: Path, timeout_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout_s
    assert proc.stderr is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line.strip())
        m = _LISTENING.search(line)
        if m:
            # keep draining stderr so a chatty browser never blocks on a full pipe
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    proc.wait()
    raise JoulebenchError("Chromium did not start its DevTools endpoint: " + " | ".join(seen[-5:]))


def _collect(events: list[dict[str, Any]], check: PageCheck) -> None:
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            check.console_errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            check.console_errors.append(str(p.get("exceptionDetails", {}).get("text", "exception")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            check.console_errors.append(
                f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
            )
        elif method == "Network.requestWillBeSent":
            url = str(p.get("request", {}).get("url", ""))
            if not url.startswith(("data:", "file:", "about:")):
                check.external_requests.append(url)
        elif method == "Network.loadingFailed":
            check.failed_requests.append(f"{p.get('errorText')} ({p.get('requestId')})")


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
    page = Path(html_path).resolve()
    if not page.is_file():
        raise ConfigError(f"no HTML file at {page}")
    binary = chromium or find_chromium()
    if binary is None:
        raise ConfigError("Chromium not found: install it (Debian: apt-get install -y chromium)")
    websocket = require("websocket", "test", "driving headless Chromium")
    check = PageCheck()
    with tempfile.TemporaryDirectory(prefix="joulebench-chromium-") as profile:
        proc, url = _start(binary, Path(profile), timeout_s)
        ws = None
        try:
            ws = websocket.create_connection(url, timeout=timeout_s, suppress_origin=True)
            s = _Session(ws, timeout_s)
            target = s.call("Target.createTarget", {"url": "about:blank"}, browser=True)
            attached = s.call(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                browser=True,
            )
            s.session_id = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                s.call(f"{domain}.enable")
            s.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            s.call("Page.navigate", {"url": page.as_uri()})
            s.wait_event("Page.loadEventFired")
            images = s.call(
                "Runtime.evaluate",
                {"expression": "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, "
                 "complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})))",
                 "returnByValue": True},
            )  # fmt: skip
            check.images = json.loads(images["result"]["value"])
            if screenshot:
                metrics = s.call("Page.getLayoutMetrics")
                size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
                full_h = min(int(size.get("height", height)), 16000)
                shot = s.call(
                    "Page.captureScreenshot",
                    {"format": "png", "captureBeyondViewport": True,
                     "clip": {"x": 0, "y": 0, "width": width, "height": full_h, "scale": 1}},
                )  # fmt: skip
                check.screenshot_png = base64.b64decode(shot["data"])
            _collect(s.events, check)
            try:
                s.call("Browser.close", browser=True)
            except Exception:  # the browser may drop the socket while closing
                log.debug("Browser.close did not answer", exc_info=True)
        finally:
            if ws is not None:
                ws.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return check
