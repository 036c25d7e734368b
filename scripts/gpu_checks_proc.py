"""Processes and records for ``scripts/gpu_checks.py``: run joulebench commands with time limits.

Each command runs in its own process group (so a time limit stops it and its children), with its
stderr in ``<out>/logs/<name>.log`` and its stdout in ``<out>/logs/<name>.stdout``. The embedded
server runs the same way on a free loopback port until ``/health`` answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class StepTimeout(Exception):
    """A command of the step ran past the step's time limit."""


@dataclass(slots=True)
class StepRecord:
    """What one step found: checks (passed True/False, or None = skipped with a reason)."""

    name: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    methods: set[str] = field(default_factory=set)

    def check(self, name: str, passed: bool | None, detail: str) -> None:
        self.checks.append({"name": name, "passed": passed, "detail": detail})


@dataclass(slots=True)
class Ctx:
    """Where a run writes and what it runs on (GPU, or the CPU smoke variant)."""

    out: Path
    store: Path
    smoke: bool
    deadline: float = 0.0  # monotonic time at which the current step must end
    logs: list[str] = field(default_factory=list)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    @property
    def meter(self) -> str:
        return "estimate" if self.smoke else "nvml"

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = str(ROOT / "src")  # joulebench importable even where it is not pip-installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    """Stop a process group this script started: ``sig``, then SIGTERM, then SIGKILL."""
    for s, wait_s in ((sig, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)


def run(ctx: Ctx, args: list[str], log: str, limit_s: float | None = None) -> tuple[int, str]:
    """Run a command (``jb`` = ``python -m joulebench``) in its own process group; (rc, stdout).

    stderr goes to ``logs/<log>.log``. The command gets ``limit_s`` or what is left of the step.
    """
    cmd = [sys.executable, "-m", "joulebench", *args[1:]] if args[0] == "jb" else args
    timeout = min(limit_s or 1e9, ctx.left_s())
    if timeout <= 1:
        raise StepTimeout(f"no time left for {log}")
    errpath = ctx.path("logs", f"{log}.log")
    ctx.logs.append(str(errpath.relative_to(ctx.out)))
    with errpath.open("w") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=child_env(),
            start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            out = proc.stdout.read() if proc.stdout else ""
            ctx.path("logs", f"{log}.stdout").write_text(out or "")
            raise StepTimeout(f"{log}: still running after {timeout:.0f} s, stopped") from None
    ctx.path("logs", f"{log}.stdout").write_text(out)
    return proc.returncode, out


def json_out(rc: int, out: str, what: str) -> dict[str, Any]:
    """The JSON object a ``--json`` command printed last (some print progress lines before it)."""
    decoder = json.JSONDecoder()
    starts = [0] + [i + 1 for i, ch in enumerate(out) if ch == "\n" and out[i + 1 : i + 2] == "{"]
    for start in reversed(starts):
        try:
            obj, end = decoder.raw_decode(out, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and not out[end:].strip():
            return obj
    raise RuntimeError(f"{what} exited {rc} without a JSON object on stdout (see logs/)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(ctx: Ctx, args: list[str], log: str) -> Iterator[str]:
    """``joulebench serve ARGS`` on a free loopback port until /health answers; stopped on exit."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "joulebench", "serve", *args, "--port", str(port)]
    errpath = ctx.path("logs", f"{log}.log")
    with errpath.open("w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=err,
            stderr=err,
            cwd=ROOT,
            env=child_env(),
            start_new_session=True,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode} (see {errpath})")
                if ctx.left_s() < 5:
                    raise StepTimeout("the server did not become healthy in time")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                        break
                time.sleep(1.0)
            yield url
        finally:
            _stop(proc)
