"""The shaping gateway: a reverse proxy (plain ASGI + httpx) that holds requests per a policy.

Routes mirror the servers it fronts (joulebench serve, vLLM, TGI, ``transformers serve``,
llama.cpp): OpenAI ``POST /v1/completions`` and ``/v1/chat/completions`` (SSE or not), TGI
``POST /``, ``/generate`` and ``/generate_stream`` go through the :class:`Shaper`; ``/health``
and ``/metrics`` are the gateway's own; every other request (``/v1/models/{id}``, ``/info``, a
wrong method, an unknown path) passes straight through, unshaped, so the upstream's 404 and 405
come back in its own shape.

The proxy is transparent: request bodies are forwarded byte for byte (the upstream validates
them and its status codes and error bodies come back unchanged), responses stream back chunk by
chunk with the upstream's headers (``x-energy-j`` and friends included) plus ``x-gateway-*``
headers saying how long the gateway held the request and in which release group. A client that
leaves while queued is dropped from the queue; one that leaves later has its upstream request
cancelled (the connection is closed, which servers treat as a disconnect). The gateway's own
failures use 429 (queue full, with Retry-After), 502 (upstream unreachable or broken) and 504
(upstream timed out before answering), in the upstream protocol's error shape: OpenAI's
``{"error": {"message", "type", "param", "code"}}`` (the kind in ``code``) on OpenAI routes,
TGI's ``{"error", "error_type"}`` on TGI routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from joulebench.exposition import CONTENT_TYPE, Exposition
from joulebench.serve.protocol import is_tgi, openai_body, tgi_body
from joulebench.shape.metrics import GatewayMetrics
from joulebench.shape.policies import Policy, ResponseEvent
from joulebench.shape.shaper import DEFAULT_MAX_QUEUE, QueueFull, Release, Shaper
from joulebench.shape.upstream import poll_upstream

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SHAPED_ROUTES = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/", "/generate", "/generate_stream"}
)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _error_body(path: str, status: int, kind: str, message: str) -> bytes:
    """Errors in the dialect of the route: TGI's flat form or OpenAI's nested one. A full queue
    is TGI's own ``overloaded`` (what TGI clients raise ``OverloadedError`` for)."""
    if is_tgi(path):
        return json.dumps(tgi_body(status, message, None if status == 429 else kind)).encode()
    return json.dumps(openai_body(status, message, code=kind)).encode()


async def _send_simple(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client left before sending it."""
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _race(work: asyncio.Task[Any], disconnect: asyncio.Task[None]) -> bool:
    """Wait for ``work``; if the client disconnects first, cancel it and return False."""
    await asyncio.wait({work, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    if work.done():
        return True
    work.cancel()
    # wait for the cancellation to land; its outcome does not matter, the client is gone
    await asyncio.gather(work, return_exceptions=True)
    return False


#: The upstream's own energy for one response, in a streamed body (the last match wins):
#: joulebench serve's ``usage.energy.energy_j`` (J), TGI's ``details.energy_mj`` (mJ).
_BODY_ENERGY = re.compile(rb'"energy_(j|mj)"\s*:\s*(-?[0-9][0-9.eE+-]*)')


class _Outcome:
    """What one shaped request's response did (fed back to the policy): wraps ``send``.

    Besides status and timing it keeps the energy the upstream reported for the response, when
    it reports one: the ``x-energy-j`` header (non-streamed joulebench serve) or, in a body, the
    last ``"energy_j"`` / ``"energy_mj"`` field (the final usage chunk of a stream). Only the
    bytes of a chunk are searched, never parsed or changed.
    """

    __slots__ = ("clock", "complete", "energy_j", "first_byte_s", "send", "status")

    def __init__(self, send: Send, clock: Callable[[], float]) -> None:
        self.send, self.clock = send, clock
        self.status: int | None = None
        self.first_byte_s: float | None = None
        self.complete = False
        self.energy_j: float | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            for k, v in message.get("headers") or ():
                if k.lower() == b"x-energy-j":
                    self.energy_j = _finite(v)
        elif message["type"] == "http.response.body":
            body = message.get("body") or b""
            if self.first_byte_s is None and body:
                self.first_byte_s = self.clock()
            if b'"energy_' in body:
                for unit, value in _BODY_ENERGY.findall(body):
                    j = _finite(value)
                    if j is not None:
                        self.energy_j = j / 1000.0 if unit == b"mj" else j
            if not message.get("more_body", False):
                self.complete = True
        await self.send(message)


def _finite(raw: bytes) -> float | None:
    try:
        x = float(raw)
    except ValueError:
        return None
    return x if math.isfinite(x) and x >= 0 else None


def _upstream_failure(exc: httpx.HTTPError) -> tuple[str, int, str, str]:
    """A request that got no response from the upstream: its ``upstream_errors`` key, HTTP
    status, error kind, and what happened (the message after ``upstream URL``)."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        reason = str(exc) or type(exc).__name__
        return "unreachable", 502, "upstream_unreachable", f"unreachable: {reason}"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", 504, "upstream_timeout", f"timed out: {type(exc).__name__}"
    return "protocol", 502, "upstream_error", f"failed: {exc!r}"


class Gateway:
    """ASGI application. ``upstream`` is the base URL of the server (``http://host:port``)."""

    def __init__(
        self,
        upstream: str,
        policy: Policy,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        upstream_timeout_s: float = 600.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.policy = policy
        self.metrics = GatewayMetrics(policy=policy.describe(), upstream=self.upstream)
        self.exposition = Exposition(
            lambda: [*self.metrics.families(), *self.policy.metric_families()]
        )
        self.shaper = Shaper(policy, max_queue=max_queue, metrics=self.metrics)
        self._timeout = httpx.Timeout(upstream_timeout_s, connect=connect_timeout_s, pool=None)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._monitor: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                transport=self._transport,
                trust_env=False,
            )
        return self._client

    async def startup(self) -> None:
        self.shaper.start()
        _ = self.client
        interval_s = self.policy.metrics_interval_s
        if interval_s is not None:  # an adaptive policy reads the upstream's load
            self._monitor = asyncio.create_task(
                poll_upstream(
                    self.client,
                    self.upstream,
                    self.policy.observe_upstream,
                    interval_s=interval_s,
                    clock=self.shaper.clock,
                )
            )

    async def shutdown(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        self.shaper.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            await self._health(send)
        elif path == "/metrics" and method == "GET":
            text = self.exposition.render()
            await _send_simple(send, 200, text.encode(), content_type=CONTENT_TYPE)
        else:  # the upstream answers wrong methods and unknown paths, in its own shape
            shaped = path in SHAPED_ROUTES and method == "POST"
            await self._proxy(scope, receive, send, shaped=shaped)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, send: Send) -> None:
        body = {
            "status": "ok",
            "policy": self.policy.to_dict(),
            "upstream": self.upstream,
            "queue_length": self.shaper.queue_length,
            "max_queue": self.shaper.max_queue,
        }
        await _send_simple(send, 200, json.dumps(body).encode(), content_type="application/json")

    async def _fail(
        self, send: Send, path: str, status: int, kind: str, message: str, **headers: str
    ) -> None:
        self.metrics.responses_by_status[status] += 1
        await _send_simple(
            send,
            status,
            _error_body(path, status, kind, message),
            content_type="application/json",
            headers={k.replace("_", "-"): v for k, v in headers.items()},
        )

    # -- the proxy ---------------------------------------------------------------------------
    def _upstream_request(
        self, scope: Scope, body: bytes, release: Release | None
    ) -> httpx.Request:
        url = self.upstream + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        if release is not None:
            headers += list(release.headers().items())
        return self.client.build_request(scope["method"], url, headers=headers, content=body)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, *, shaped: bool) -> None:
        path = scope["path"]
        body = await _read_body(receive)
        if body is None:
            return
        disconnect = asyncio.create_task(_wait_disconnect(receive))
        try:
            release: Release | None = None
            if shaped:
                try:
                    admit = asyncio.create_task(self.shaper.admit())
                    if not await _race(admit, disconnect):
                        return  # left while queued: removed from the queue, nothing sent upstream
                    release = admit.result()
                except QueueFull as exc:
                    await self._fail(
                        send, path, 429, "queue_full", str(exc), retry_after=exc.retry_after_header
                    )
                    return
            self.metrics.in_flight += 1
            outcome = _Outcome(send, self.shaper.clock)
            broke = True  # an exception out of the exchange: no answer the policy can trust
            try:
                await self._exchange(scope, body, release, outcome, disconnect)
                broke = False
            finally:
                self.metrics.in_flight -= 1
                if release is not None:
                    self.policy.observe_response(
                        ResponseEvent(
                            release.group,
                            release.released_s,
                            outcome.first_byte_s,
                            self.shaper.clock(),
                            None if broke else outcome.status,
                            outcome.complete and not broke,
                            energy_j=None if broke else outcome.energy_j,
                        )
                    )
        finally:
            disconnect.cancel()

    async def _exchange(
        self,
        scope: Scope,
        body: bytes,
        release: Release | None,
        send: Send,
        disconnect: asyncio.Task[None],
    ) -> None:
        path = scope["path"]
        request = self._upstream_request(scope, body, release)
        opening = asyncio.create_task(self.client.send(request, stream=True))
        try:
            if not await _race(opening, disconnect):
                self.metrics.client_disconnects += 1
                return
            response = opening.result()
        except httpx.HTTPError as exc:
            counted, status, kind, what = _upstream_failure(exc)
            self.metrics.upstream_errors[counted] += 1
            await self._fail(send, path, status, kind, f"upstream {self.upstream} {what}")
            return
        try:
            await self._relay(response, release, send, disconnect)
        finally:
            await response.aclose()

    async def _relay(
        self,
        response: httpx.Response,
        release: Release | None,
        send: Send,
        disconnect: asyncio.Task[None],
    ) -> None:
        """Pass status, headers and every body chunk on as they come."""
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.multi_items()
            if k.lower() not in HOP_BY_HOP or k.lower() == "content-length"
        ]
        if release is not None:
            headers += [(k.encode(), v.encode()) for k, v in release.headers().items()]
        self.metrics.responses_by_status[response.status_code] += 1

        async def pump() -> None:
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        relay = asyncio.create_task(pump())
        if not await _race(relay, disconnect):
            self.metrics.client_disconnects += 1
            log.debug("client left mid-response; upstream request cancelled")
            return
        try:
            relay.result()
        except httpx.HTTPError as exc:
            # headers are already sent: the only honest signal left is an incomplete body
            kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "broken_stream"
            self.metrics.upstream_errors[kind] += 1
            log.warning("upstream %s broke mid-response: %r", self.upstream, exc)
            raise
        except OSError:  # the client vanished while we were writing
            self.metrics.client_disconnects += 1
