"""One launched engine around one measured load: plan the launch, start it, watch it, record it.

:func:`plan` turns the command-line choices (``--launch CMD`` or ``--engine NAME``, ``--url``,
``--gpus``) into a :class:`LaunchPlan`; :func:`engine_session` starts the engine, waits until it
serves and yields an :class:`EngineSession`; :meth:`EngineSession.watching` brackets the load
(``/metrics`` scraped at 1 Hz, the energy endpoint read before and after);
:meth:`EngineSession.annotate` adds the ``engine`` section and the server-energy audit to the
load's JSON. One session can serve several loads (``shape-compare``, ``shape-sweep``, reproduce
plans): each is watched and annotated in turn, and once the engine has stopped
:meth:`EngineSession.stamp` brings each load's process fields (exit status) up to date.

``--gpus`` reaches the engine as ``CUDA_VISIBLE_DEVICES`` with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``,
so CUDA numbers the GPUs as ``nvidia-smi`` (and the meter) does; UUIDs pass unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from joulebench.errors import ConfigError
from joulebench.load.engines import process, scrape, server_energy
from joulebench.load.engines.presets import LaunchSpec, engine_command, preset
from joulebench.meters.gpus import parse_gpu_list

if TYPE_CHECKING:
    from joulebench.results.load_summary import LoadSummary

log = logging.getLogger(__name__)


class _Load(Protocol):
    """A finished load (:class:`~joulebench.load.runner.LoadResult`)."""

    records: Any

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Load)

DEFAULT_LOG_DIR = Path("joulebench-results") / "engine-logs"


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """What the user asked for (``None``/empty: nothing to launch)."""

    launch: str | None = None
    engine: str | None = None
    engine_args: str | None = None
    ready_path: str | None = None
    ready_timeout_s: float = 600.0
    stop_grace_s: float = 15.0
    log_dir: Path | None = None
    scrape_hz: float = 1.0

    @property
    def wanted(self) -> bool:
        return bool(self.launch or self.engine)


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """The command to run and where and how to watch it."""

    name: str  # the preset's name, or "custom"
    command: list[str] | str
    url: str
    env: dict[str, str]
    ready_paths: tuple[str, ...]
    version_paths: tuple[str, ...]
    metrics_path: str | None
    energy_path: str | None
    log_path: Path
    ready_timeout_s: float
    stop_grace_s: float
    scrape_hz: float


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def gpu_env(gpus: str | None) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` (and PCI order) for ``--gpus``; empty without it."""
    entries = parse_gpu_list(gpus)
    if not entries:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(entries), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def plan(
    opts: LaunchOptions,
    *,
    url: str | None,
    model: str | None,
    gpus: str | None,
    meter: str | None = None,
    fake_power_w: float | None = None,
    log_dir: Path | None = None,
) -> LaunchPlan:
    """The launch the options describe (raises :class:`ConfigError` on a contradiction)."""
    if opts.launch and opts.engine:
        raise ConfigError("pass either --launch CMD or --engine NAME, not both")
    if opts.engine_args and not opts.engine:
        raise ConfigError(
            "--engine-args adds to an --engine preset; with --launch write them in CMD"
        )
    if opts.ready_timeout_s <= 0:
        raise ConfigError(f"--ready-timeout-s must be positive, got {opts.ready_timeout_s}")
    n_gpus = len(parse_gpu_list(gpus) or [])
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    logs = opts.log_dir or log_dir or DEFAULT_LOG_DIR
    if opts.launch:
        if not url:
            raise ConfigError("--launch needs --url: where the launched engine will answer")
        ready = (opts.ready_path,) if opts.ready_path else process.READY_PATHS
        return LaunchPlan(
            "custom", opts.launch, url.rstrip("/"), gpu_env(gpus), ready, process.VERSION_PATHS,
            "/metrics", server_energy.ENERGY_PATH, logs / f"engine-{stamp}.log",
            opts.ready_timeout_s, opts.stop_grace_s, opts.scrape_hz,
        )  # fmt: skip
    assert opts.engine is not None
    p = preset(opts.engine)
    if url:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if port is None:
            raise ConfigError(f"--url {url} names no port: the engine is told where to listen")
    else:
        host, port = "127.0.0.1", free_port()
        url = f"http://{host}:{port}"
    spec = LaunchSpec(model or "", host, port, n_gpus, meter=meter, fake_power_w=fake_power_w)
    return LaunchPlan(
        p.name, engine_command(p.name, spec, opts.engine_args), url.rstrip("/"), gpu_env(gpus),
        (opts.ready_path,) if opts.ready_path else p.ready_paths, p.version_paths,
        p.metrics_path, server_energy.ENERGY_PATH if p.energy == "/energy_metrics" else None,
        logs / f"{p.name}-{stamp}.log", opts.ready_timeout_s, opts.stop_grace_s, opts.scrape_hz,
    )  # fmt: skip


@dataclass(slots=True)
class EngineSession:
    """A running engine and what was recorded while the load ran."""

    plan: LaunchPlan
    engine: process.EngineProcess
    scraper: scrape.MetricsScraper | None = None
    energy_reads: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Scrape ``/metrics`` and read the energy endpoint around one load (each load afresh)."""
        self.scraper, self.energy_reads = None, []
        if self.plan.energy_path:
            self._read_energy()
        if self.plan.metrics_path:
            self.scraper = scrape.MetricsScraper(
                self.plan.url, self.plan.metrics_path, hz=self.plan.scrape_hz
            ).start()
        try:
            yield
        finally:
            if self.scraper is not None:
                self.scraper.stop()
            if self.plan.energy_path:
                self._read_energy()
            process.check_alive(self.engine)

    def _read_energy(self) -> None:
        read = server_energy.read_energy_endpoint(self.plan.url, self.plan.energy_path or "")
        if read is not None:
            self.energy_reads.append(read)

    def describe(self) -> dict[str, Any]:
        """The process's part of the ``engine`` section as it stands now (exit status, how it
        was stopped: final once the session has ended)."""
        return {"preset": self.plan.name, **self.engine.to_dict()}

    def annotate(
        self, j: LoadSummary | dict[str, Any], records: Sequence[Any], timeline: Any
    ) -> None:
        """Add ``j["engine"]`` (the process, what :meth:`watching` saw of the last load) and the
        server-energy audit. Called while the engine still runs, its exit status is not known
        yet: :meth:`stamp` the JSON again after the session."""
        from joulebench.load.runner import audit_verdicts

        section = self.describe()
        section["metrics"] = self.scraper.to_dict() if self.scraper is not None else None
        endpoint = None
        if len(self.energy_reads) == 2:
            endpoint = (self.energy_reads[0], self.energy_reads[1])
        section["energy_endpoint"] = (
            [{k: r[k] for k in ("t_s", "energy_j", "raw")} for r in self.energy_reads]
            if self.energy_reads
            else None
        )
        scrapes = self.scraper.samples if self.scraper is not None else []
        meter = j.get("meter") or {}
        found = server_energy.check(
            records, timeline or [], j.get("energy") or {}, scrapes=scrapes, endpoint=endpoint,
            update_period_s=float(meter.get("update_period_s") or 0.0),
        )  # fmt: skip
        section["server_energy"] = found[1] if found else None
        if found:
            energy = j.setdefault("energy", {})
            energy.setdefault("audits", []).append(found[0].to_dict())
            j["audits"] = audit_verdicts(energy["audits"])
        j["engine"] = section

    def stamp(self, j: dict[str, Any]) -> None:
        """Bring the process fields of ``j["engine"]`` up to date (the rest is kept)."""
        j["engine"] = {**(j.get("engine") or {}), **self.describe()}

    def require_alive(self) -> None:
        """Raise :class:`~joulebench.load.engines.process.EngineNotReady`, with the engine's last
        log lines, when it has exited (before the next of several loads is sent to it)."""
        if process.check_alive(self.engine):
            return
        raise process.EngineNotReady(
            f"the engine at {self.plan.url} exited with status {self.engine.exit_code} while "
            f"in use; its last log lines ({self.engine.log_path}):\n{self.engine.tail()}"
        )


def measured(session: EngineSession | None, run: Callable[[], R]) -> tuple[R, dict[str, Any]]:
    """``run()`` (one load, returning a :class:`~joulebench.load.runner.LoadResult`) and its
    JSON; with a launched engine, watched and annotated (:meth:`EngineSession.annotate`)."""
    with session.watching() if session is not None else contextlib.nullcontext():
        result = run()
    j = result.to_json()
    if session is not None:
        session.annotate(j, result.records, getattr(result, "timeline", None))
    return result, j


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM to joulebench raises ``SystemExit(143)`` inside, so the engine is still stopped
    (only in the main thread, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def engine_session(launch: LaunchPlan) -> Iterator[EngineSession]:
    """Start the engine, wait until it serves, yield the session; the engine is stopped on any
    exit (normal, error, Ctrl-C, SIGTERM), its process group included."""
    with (
        _terminate_as_exit(),
        process.launched(
            launch.command,
            launch.url,
            launch.log_path,
            env=launch.env,
            ready_timeout_s=launch.ready_timeout_s,
            ready_paths=launch.ready_paths,
            version_paths=launch.version_paths,
            grace_s=launch.stop_grace_s,
        ) as engine,
    ):
        log.info("engine ready at %s after %.1f s", launch.url, engine.ready_s or 0.0)
        yield EngineSession(launch, engine)
