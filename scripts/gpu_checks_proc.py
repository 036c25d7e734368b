"""Processes and records for ``scripts/gpu_checks.py``: steps and commands under time limits.

Each step runs as its own process (``python scripts/gpu_checks_steps.py STEP``) in its own
process group with a timeout, so a slow step cannot starve the next one. The step rewrites
``<out>/<step>.json`` after every check, so what it measured survives a crash or a kill; when
the limit stops it, the parent marks that JSON ``timeout``. Commands a step runs
(joulebench's CLI, the embedded server) get the same treatment, with their stderr in
``<out>/logs/<name>.log``.
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
STEPS_SCRIPT = Path(__file__).resolve().parent / "gpu_checks_steps.py"


class StepTimeout(Exception):
    """A command of the step ran past the step's time limit."""


@dataclass(slots=True)
class StepRecord:
    """What one step found, saved to ``path`` at every change.

    A check's ``passed`` is True/False, or None: skipped, with the reason in ``detail``.
    """

    name: str
    path: Path | None = None
    what: str = ""
    mode: str = "gpu"
    status: str = "running"
    error: str | None = None
    limit_s: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    methods: set[str] = field(default_factory=set)
    logs: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def check(self, name: str, passed: bool | None, detail: str) -> None:
        self.checks.append({"name": name, "passed": passed, "detail": detail})
        self.save()

    def figure(self, key: str, value: Any) -> None:
        self.figures[key] = value
        self.save()

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.name, "what": self.what, "status": self.status, "error": self.error,
            "duration_s": round(time.monotonic() - self.started, 2), "limit_s": self.limit_s,
            "mode": self.mode, "meter_methods": sorted(m for m in self.methods if m),
            "checks": self.checks, "figures": self.figures, "notes": self.notes,
            "logs": self.logs,
        }  # fmt: skip

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        tmp.replace(self.path)  # atomic: a kill never leaves half a file

    def finish(self, error: str | None = None) -> None:
        self.error = error
        if error is not None or any(c["passed"] is False for c in self.checks):
            self.status = "failed"
        elif not any(c["passed"] for c in self.checks):
            self.status = "skipped"
        else:
            self.status = "passed"
        self.save()


@dataclass(slots=True)
class Ctx:
    """Where a step writes and what it runs on (GPU, or the CPU smoke variant)."""

    out: Path
    smoke: bool
    deadline: float = 0.0  # monotonic time at which the step must end
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
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    src = str(ROOT / "src")  # joulebench importable where it is not pip-installed
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts if src in parts else [src, *parts])
    return env


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    """Stop a process group this script started: ``sig``, then SIGTERM, then SIGKILL."""
    for s, wait_s in ((sig, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
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


def run_step(out: Path, name: str, what: str, limit_s: float, smoke: bool) -> dict[str, Any]:
    """Run step ``name`` in its own process under ``limit_s``; its JSON, marked on timeout."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(STEPS_SCRIPT), name, "--out", str(out), "--limit-s", str(limit_s)]
    cmd += ["--smoke"] if smoke else []
    log = out / "logs" / f"step-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    error: str | None = None
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, text=True, cwd=ROOT,
                                env=child_env(), start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc, error = -1, f"still running after its {limit_s:.0f} s limit, stopped"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):  # died before its first save
        result = StepRecord(name, what=what, mode="smoke" if smoke else "gpu").to_dict()
    result["duration_s"] = round(time.monotonic() - started, 2)
    result["limit_s"] = limit_s
    result["logs"] = [str(log.relative_to(out)), *result.get("logs", [])]
    if error is not None:
        result["status"], result["error"] = "timeout", error
    elif result.get("status") == "running":  # the process died without finishing its record
        result["status"] = "failed"
        result["error"] = result.get("error") or f"the step process exited {rc} (see its log)"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


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
    ctx.logs.append(str(errpath.relative_to(ctx.out)))
    with errpath.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, cwd=ROOT, env=child_env(),
                                start_new_session=True, text=True)  # fmt: skip
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
                time.sleep(0.5)
            yield url
        finally:
            _stop(proc)
