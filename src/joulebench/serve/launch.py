"""Start the embedded server (its :class:`ServerSettings`): in a background thread for tests and
the load generator (:func:`embedded_server`), or in the foreground for ``joulebench serve``
(:func:`serve_forever`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from joulebench.errors import ConfigError, at_least, positive
from joulebench.extras import require
from joulebench.meters.base import Meter
from joulebench.serve.engine import EngineConfig, ServingEngine
from joulebench.serve.validate import DEFAULT_MAX_BODY_MIB

log = logging.getLogger(__name__)

_ENGINE_KEYS = {f.name for f in dataclasses.fields(EngineConfig)}


def build_engine(
    model: Any = "tiny",
    precision: str = "fp32",
    scheduler: str = "continuous",
    *,
    meter: Meter | None = None,
    device: str = "cpu",
    seed: int = 0,
    **kwargs: Any,
) -> ServingEngine:
    """Load ``model`` (a source for ``load_model`` or an already loaded model) and build the engine.

    ``kwargs`` are :class:`EngineConfig` fields (``max_queue``, ``max_batch_size``,
    ``default_max_tokens``, ``max_tokens_limit``, ``idle_s``, ``timeline_hz``) and, for the rest,
    scheduler options (``window_s``, ``num_blocks``, ``max_batch_tokens``, ``page_size``…).
    """
    if isinstance(model, str):
        from joulebench.workloads.models import load_model

        loaded = load_model(model, precision, device, seed=seed)
    else:
        loaded = model
    if meter is None:
        from joulebench.meters.registry import open_meter

        meter = open_meter("auto")
    engine_kwargs = {k: v for k, v in kwargs.items() if k in _ENGINE_KEYS}
    scheduler_options = {k: v for k, v in kwargs.items() if k not in _ENGINE_KEYS}
    if scheduler in ("dynamic", "continuous"):
        scheduler_options.setdefault("seed", seed)
    return ServingEngine(
        loaded.model,
        loaded.tokenizer,
        model_name=loaded.name,
        context_length=loaded.context_length,
        scheduler=scheduler,
        meter=meter,
        config=EngineConfig(**engine_kwargs),
        scheduler_options=scheduler_options,
    )


def check_server_limits(
    *, port: int, max_queue: int, max_batch_size: int, max_body_mib: float
) -> None:
    """Refuse a port, queue, batch or body limit the server cannot use (``joulebench serve``)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0…65535, got {port}")
    if max_queue < 1 or max_batch_size < 1:
        raise ConfigError("--max-queue and --max-batch-size must be ≥ 1")
    positive(max_body_mib, "--max-body-mib")


def dynamic_options(
    scheduler: str,
    *,
    window_ms: float | None = None,
    bucketing: str | None = None,
    bucket_ratio: float | None = None,
) -> dict[str, Any]:
    """The dynamic scheduler's options that were given, checked, as scheduler options
    (``window_s``, ``bucket_ratio``, ``bucketing``); refused for another scheduler."""
    options: dict[str, Any] = {}
    if window_ms is not None:
        at_least(window_ms, 0, "--window-ms")
        options["window_s"] = window_ms / 1e3
    if bucket_ratio is not None:
        at_least(bucket_ratio, 1, "--bucket-ratio")
        options["bucket_ratio"] = bucket_ratio
    if bucketing is not None:
        from joulebench.serve.schedulers.dynamic import BUCKETINGS

        if bucketing not in BUCKETINGS:
            raise ConfigError(
                f"--bucketing must be one of {', '.join(BUCKETINGS)}, got {bucketing!r}"
            )
        options["bucketing"] = bucketing
    if options and scheduler != "dynamic":
        raise ConfigError(
            "--window-ms, --bucketing and --bucket-ratio only apply to --scheduler dynamic "
            f"(got --scheduler {scheduler})"
        )
    return options


def require_server_extra() -> None:
    """Fail, naming the ``serve`` extra, before a model is loaded if the server cannot run."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "serve", "the embedded server")


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSettings:
    """How to run the embedded server: the engine to build (``model``, ``precision``,
    ``scheduler``, ``meter``, and ``engine_options``: the rest of :func:`build_engine`'s keywords)
    and how it listens (``host``, ``port``: 0 picks a free one; ``api_key``: required as a
    bearer token when set; bodies over ``max_body_mib`` get 413). Both entry points run it:
    :func:`embedded_server` on a background thread, :func:`serve_forever` in the foreground."""

    model: Any
    precision: str
    scheduler: str
    meter: Meter | None = None
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    max_body_mib: float = DEFAULT_MAX_BODY_MIB
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        positive(self.max_body_mib, "max_body_mib")

    @contextlib.contextmanager
    def serving(self) -> Iterator[tuple[ServingEngine, Any]]:
        """Build and start the engine; yield it and a uvicorn server for its app, not yet
        running; stop the engine on exit. The one path by which both entry points run. A
        missing ``serve`` extra is said before the model loads."""
        uvicorn = require("uvicorn", "serve", "the embedded server")
        from joulebench.serve.app import create_app

        engine = build_engine(
            self.model, self.precision, self.scheduler, meter=self.meter, **self.engine_options
        )
        engine.start()
        try:
            max_body_bytes = int(self.max_body_mib * 2**20)
            app = create_app(engine, api_key=self.api_key, max_body_bytes=max_body_bytes)
            config = uvicorn.Config(
                app,
                host=self.host,
                port=self.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
            yield engine, uvicorn.Server(config)
        finally:
            engine.stop()


_SETTINGS_KEYS = {f.name for f in dataclasses.fields(ServerSettings)} - {"engine_options"}


@contextlib.contextmanager
def embedded_server(
    model: Any = "tiny",
    precision: str = "fp32",
    scheduler: str = "continuous",
    *,
    startup_timeout_s: float = 120.0,
    **kwargs: Any,
) -> Iterator[str]:
    """Run the server on a background thread and yield its base URL (``http://host:port``).

    ``kwargs`` are :class:`ServerSettings` fields by name (``meter``, ``host``, ``port``,
    ``api_key``, ``max_body_mib``) and, for the rest, its ``engine_options``
    (:func:`build_engine`'s keywords). Waits until ``/health`` answers; shuts down cleanly on
    exit. The engine is reachable as ``embedded_server.last`` only for introspection in tests;
    do not rely on it elsewhere.
    """
    own = {k: kwargs.pop(k) for k in _SETTINGS_KEYS & kwargs.keys()}
    settings = ServerSettings(model, precision, scheduler, engine_options=kwargs, **own)
    with settings.serving() as (engine, server):
        thread = threading.Thread(target=server.run, name="joulebench-serve", daemon=True)
        try:
            thread.start()
            url = _wait_started(server, thread, settings.host, settings.port, startup_timeout_s)
            key = settings.api_key
            headers = {"authorization": f"Bearer {key}"} if key else {}
            httpx.get(f"{url}/health", headers=headers, timeout=10.0).raise_for_status()
            embedded_server.last = engine  # type: ignore[attr-defined]
            yield url
        finally:
            server.should_exit = True
            thread.join(15.0)


def _wait_started(
    server: Any, thread: threading.Thread, host: str, port: int, timeout_s: float
) -> str:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(f"the server could not start on {host}:{port} (port in use?)")
        if time.monotonic() > deadline:
            raise ConfigError(f"the server did not start within {timeout_s:.0f} s")
        time.sleep(0.01)
    return f"http://{host}:{server.servers[0].sockets[0].getsockname()[1]}"


def serve_forever(settings: ServerSettings) -> None:
    """Run the server in the foreground until interrupted (``joulebench serve``): the same
    engine and app as :func:`embedded_server`, on the calling thread."""
    with settings.serving() as (_engine, server):
        server.run()
