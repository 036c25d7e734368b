"""Run a gateway: in the foreground (the CLI) or on a background thread (experiments, tests).

The background form binds its socket before returning, so the yielded URL is ready to use and a
port of 0 picks a free one.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from joulebench.errors import ConfigError
from joulebench.extras import require
from joulebench.shape.gateway import Gateway
from joulebench.shape.policies import Policy, parse_policy
from joulebench.shape.shaper import DEFAULT_MAX_QUEUE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningGateway:
    url: str
    gateway: Gateway


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a daemon thread; yield its base URL."""
    uvicorn = require("uvicorn", "serve", "the shaping gateway")
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="joulebench-gateway", daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the gateway server thread exited during startup")
            thread.join(0.01)
        yield _url(host, bound_port)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def run_gateway(
    upstream: str,
    policy: Policy | str,
    *,
    max_delay_ms: float | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    host: str = "127.0.0.1",
    port: int = 0,
    upstream_timeout_s: float = 600.0,
) -> Iterator[RunningGateway]:
    """Start a gateway in front of ``upstream`` on a background thread; yield its URL."""
    pol = parse_policy(policy, max_delay_ms=max_delay_ms) if isinstance(policy, str) else policy
    gateway = Gateway(upstream, pol, max_queue=max_queue, upstream_timeout_s=upstream_timeout_s)
    with serve_in_thread(gateway, host, port) as url:
        log.info("gateway %s → %s with policy %s", url, upstream, pol.describe())
        yield RunningGateway(url, gateway)


def serve_forever(gateway: Gateway, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Run ``gateway`` in the foreground until interrupted (the ``joulebench shape`` command)."""
    uvicorn = require("uvicorn", "serve", "the shaping gateway")
    sock = _bind(host, port)
    config = uvicorn.Config(gateway, log_level="warning", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
