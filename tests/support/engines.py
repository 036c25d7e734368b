"""Launched-engine test helpers: run the CLI, a stub engine to launch, and the check that nothing
of an engine is left running or listening afterwards."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from joulebench.load.engines.process import group_alive, pid_running
from joulebench.load.engines.session import free_port

#: An engine that serves (joulebench's loopback stub, /metrics in vLLM's format), writes its
#: pids, and, with a positive lifetime, dies that long after it started serving (exit 3).
STUB_ENGINE = """
import os, subprocess, sys, time
port, lifetime, pidfile = sys.argv[1], float(sys.argv[2]), sys.argv[3]
stub = subprocess.Popen([sys.executable, "-m", "joulebench.load.stub", "--port", port,
                         "--tokens", "4", "--token-delay-s", "0.02", "--metrics"],
                        stdout=subprocess.PIPE)
open(pidfile, "w").write(f"{os.getpid()} {stub.pid}")
print("stub at", stub.stdout.readline().decode().strip(), flush=True)
if lifetime <= 0:
    sys.exit(stub.wait())
time.sleep(lifetime)
print("engine crashing now", flush=True)
stub.kill()
sys.exit(3)
"""


def jb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m joulebench ARGS``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "joulebench", *args], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def assert_nothing_left(pids: list[int], port: int) -> None:
    """None of ``pids`` runs (the first one's process group included) and ``port`` is closed."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(pid_running(p) for p in pids):
        time.sleep(0.05)
    assert [p for p in pids if pid_running(p)] == []
    assert not any(group_alive(p) for p in pids[:1])
    assert not listening(port)


def stub_engine(tmp_path: Path, lifetime_s: float) -> tuple[str, int, Path]:
    """(the ``--launch`` command, its port, the file its pids are written to)."""
    script, pidfile = tmp_path / "engine.py", tmp_path / "pids"
    script.write_text(STUB_ENGINE)
    port = free_port()
    cmd = shlex.join([sys.executable, str(script), str(port), str(lifetime_s), str(pidfile)])
    return cmd, port, pidfile


def pids_of(pidfile: Path) -> list[int]:
    return [int(x) for x in pidfile.read_text().split()]


def interrupt_when_engine_runs(args: list[str], port: int, settle_s: float) -> tuple[int, int, str]:
    """Run ``joulebench ARGS``, wait for its "engine ready … (pid N)" line, let it work
    ``settle_s`` seconds more (the engine must still serve), then send SIGINT (Ctrl-C); returns
    (its exit status, the engine's pid, the rest of its stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "joulebench", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line, deadline = "", time.monotonic() + 60
        assert proc.stderr is not None
        while "engine ready" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "joulebench exited before the engine was ready"
        pid = int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]
        time.sleep(settle_s)
        assert pid_running(pid) and listening(port)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, pid, err
