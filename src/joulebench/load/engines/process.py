"""Launch an inference engine as a child process, wait until it serves, stop it whatever happens.

The engine runs in its own session (so its own process group): a Ctrl-C in the terminal reaches
joulebench alone, and stopping the engine reaches every process it started (vLLM's workers,
TGI's shards) with one ``killpg``. Its stdout and stderr go to one log file kept with the run.

:func:`launched` is the way to use it: a context manager that starts the command, waits until the
URL answers, yields the :class:`EngineProcess`, and on exit — normal, exception or
``KeyboardInterrupt`` — sends SIGTERM to the group, then SIGKILL after a grace period, and checks
that no process of the group is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from joulebench.errors import JoulebenchError

log = logging.getLogger(__name__)

#: Paths tried, in order, to decide that an engine serves (any 2xx answer is ready).
READY_PATHS = ("/health", "/v1/models")
#: Paths tried, in order, for the engine's version (vLLM/trtllm ``/version``, TGI ``/info``).
VERSION_PATHS = ("/version", "/info")
LOG_TAIL_LINES = 30


class EngineNotReady(JoulebenchError):
    """The engine exited, or did not answer within the timeout; the message holds its last logs."""

    exit_code = 1


@dataclass(slots=True)
class EngineProcess:
    """A launched engine: its command, process, log file and what was learnt about it."""

    command: list[str]
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # the variables set for it (not inherited)
    popen: subprocess.Popen[bytes] | None = None
    started_s: float | None = None
    ready_s: float | None = None  # seconds from start until the URL answered
    ready_path: str | None = None
    version: dict[str, Any] | None = None
    exit_code: int | None = None
    stopped_by: str | None = None  # "SIGTERM", "SIGKILL", or None when it exited by itself
    died_s: float | None = None  # monotonic instant its exit was first seen while in use

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the engine's log ("" when it wrote nothing)."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        text = data[-64_000:].decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def to_dict(self) -> dict[str, Any]:
        """The run's ``engine`` section."""
        return {
            "command": shlex.join(self.command),
            "argv": list(self.command),
            "env": dict(self.env),
            "pid": self.pid,
            "url": self.url,
            "ready_s": self.ready_s,
            "ready_path": self.ready_path,
            "version": self.version,
            "exit_code": self.exit_code,
            "stopped_by": self.stopped_by,
            "died_during_run": self.stopped_by is None and self.exit_code is not None,
            "log_file": str(self.log_path),
        }


def start(
    command: Sequence[str] | str,
    url: str,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> EngineProcess:
    """Start ``command`` (a list, or a shell-like string split with :func:`shlex.split`) in a new
    session, output appended to ``log_path``; ``env`` is added to this process's environment."""
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if not argv:
        raise EngineNotReady("--launch: the engine command is empty")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(env or {})
    engine = EngineProcess(argv, url.rstrip("/"), log_path, env=extra)
    with log_path.open("ab") as out:
        out.write(f"# joulebench: {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            engine.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **extra},
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineNotReady(f"could not start the engine {argv[0]!r}: {exc}") from exc
    engine.started_s = time.monotonic()
    log.info("engine started (pid %d): %s", engine.pid, shlex.join(argv))
    return engine


def wait_ready(
    engine: EngineProcess,
    timeout_s: float,
    *,
    paths: Sequence[str] = READY_PATHS,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll ``paths`` until one answers 2xx; return the seconds since start.

    Raises :class:`EngineNotReady` (with the engine's last log lines) when the engine exits first
    or ``timeout_s`` passes.
    """
    assert engine.started_s is not None and engine.popen is not None
    deadline = engine.started_s + timeout_s
    with httpx.Client(base_url=engine.url, timeout=2.0, trust_env=False) as http:
        while True:
            code = engine.popen.poll()
            if code is not None:
                engine.exit_code = code
                raise EngineNotReady(
                    f"the engine exited with status {code} before {engine.url} answered "
                    f"({_describe_paths(paths)}); its last log lines ({engine.log_path}):\n"
                    f"{engine.tail()}"
                )
            for path in paths:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(path).is_success:
                        engine.ready_s = clock() - engine.started_s
                        engine.ready_path = path
                        return engine.ready_s
            if clock() >= deadline:
                raise EngineNotReady(
                    f"the engine did not answer at {engine.url} ({_describe_paths(paths)}) within "
                    f"{timeout_s:g} s (--ready-timeout-s); it was stopped. Its last log lines "
                    f"({engine.log_path}):\n{engine.tail()}"
                )
            sleep(poll_s)


def _describe_paths(paths: Sequence[str]) -> str:
    return " or ".join(paths)


def read_version(engine: EngineProcess, paths: Sequence[str] = VERSION_PATHS) -> None:
    """Set ``engine.version`` from the first of ``paths`` that answers JSON (``None`` if none)."""
    with httpx.Client(base_url=engine.url, timeout=5.0, trust_env=False) as http:
        for path in paths:
            try:
                r = http.get(path)
                body = r.json() if r.is_success else None
            except (httpx.HTTPError, ValueError):
                continue
            if isinstance(body, dict):
                keep = {k: v for k, v in body.items() if isinstance(v, (str, int, float, bool))}
                engine.version = {"path": path, **keep}
                return
            if isinstance(body, str):
                engine.version = {"path": path, "version": body}
                return


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` exists (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists, owned by someone else
        return True
    return True


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (Linux ``/proc``; elsewhere: exists)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(engine: EngineProcess, grace_s: float = 15.0) -> None:
    """SIGTERM to the engine's process group, SIGKILL after ``grace_s``; records the exit code.

    Safe to call twice, and on an engine that already exited (its group's leftovers are still
    killed: a dead launcher can leave workers behind).
    """
    popen = engine.popen
    if popen is None:
        return
    pgid = popen.pid  # start_new_session: the engine leads its own group
    if popen.poll() is None:
        engine.stopped_by = "SIGTERM"
        _signal_group(pgid, signal.SIGTERM)
        try:
            popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            engine.stopped_by = "SIGKILL"
            log.warning("engine %d ignored SIGTERM for %g s: SIGKILL", pgid, grace_s)
            _signal_group(pgid, signal.SIGKILL)
            popen.wait(10.0)
    engine.exit_code = popen.returncode
    # the leader is gone; its children (same group) must go too
    deadline = time.monotonic() + grace_s
    while group_alive(pgid) and time.monotonic() < deadline:
        _signal_group(pgid, signal.SIGTERM)
        time.sleep(0.1)
    if group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    log.info("engine %d stopped (exit %s, %s)", pgid, engine.exit_code, engine.stopped_by)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def check_alive(engine: EngineProcess, clock: Callable[[], float] = time.monotonic) -> bool:
    """False (and the exit recorded) when the engine has exited on its own."""
    if engine.popen is None:
        return False
    code = engine.popen.poll()
    if code is None:
        return True
    if engine.exit_code is None:
        engine.exit_code = code
        engine.died_s = clock()
    return False


@contextlib.contextmanager
def launched(
    command: Sequence[str] | str,
    url: str,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 600.0,
    ready_paths: Sequence[str] = READY_PATHS,
    version_paths: Sequence[str] = VERSION_PATHS,
    grace_s: float = 15.0,
) -> Iterator[EngineProcess]:
    """Start the engine, wait until it serves, yield it; stop it on any exit (see module doc)."""
    engine = start(command, url, log_path, env=env)
    try:
        wait_ready(engine, ready_timeout_s, paths=ready_paths)
        read_version(engine, version_paths)
        yield engine
    finally:
        check_alive(engine)
        stop(engine, grace_s)
