"""A scriptable echo upstream for testing the gateway (shipped, like httpx's MockTransport).

:class:`EchoUpstream` is a plain ASGI app speaking just enough OpenAI and TGI to check a proxy:
it echoes the request's ``id``, streams ``chunks`` SSE events ``chunk_delay_s`` apart, answers
``status`` with an error body when asked, sleeps ``sleep_s`` before answering, and records what
it saw (arrival order, the ``x-gateway-*`` headers, concurrency, cancelled streams), so tests can
prove that nothing was lost, duplicated, reordered or left running. Every response carries an
``x-energy-j`` header, as joulebench's server does, to check that headers pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Message = MutableMapping[str, Any]


@dataclass(slots=True)
class Seen:
    path: str
    request_id: Any
    gateway_seq: int | None
    gateway_group: int | None
    t_s: float


@dataclass(slots=True)
class EchoUpstream:
    """ASGI echo server. Thread-safe records: tests read them from another thread."""

    seen: list[Seen] = field(default_factory=list)
    cancelled: list[Any] = field(default_factory=list)
    completed: list[Any] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (msg := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "GET" and path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
            return
        if path not in _POST_ROUTES:  # answered like a real server: 404, in OpenAI's shape
            await _json(send, 404, _openai_error(f"no route {scope['method']} {path}", "not_found"))
            return
        if scope["method"] != "POST":
            await _json(send, 405, _openai_error(f"use POST for {path}", "method_not_allowed"))
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        try:
            req = json.loads(b"".join(chunks) or b"{}")
            if not isinstance(req, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            await _json(send, 422, {"error": {"message": f"malformed JSON: {exc}"}})
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        rid = req.get("id")
        with self._lock:
            self.seen.append(
                Seen(
                    path,
                    rid,
                    _int(headers.get("x-gateway-seq")),
                    _int(headers.get("x-gateway-group")),
                    time.monotonic(),
                )
            )
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await self._answer(path, req, rid, send, gone)
        finally:
            watcher.cancel()
            with self._lock:
                self.active -= 1

    async def _answer(
        self,
        path: str,
        req: dict[str, Any],
        rid: Any,
        send: Callable[[Message], Awaitable[None]],
        gone: asyncio.Event,
    ) -> None:
        if req.get("sleep_s"):
            try:
                await asyncio.wait_for(gone.wait(), float(req["sleep_s"]))
                with self._lock:
                    self.cancelled.append(rid)
                return
            except asyncio.TimeoutError:
                pass
        status = int(req.get("status", 200))
        if status != 200:
            await _json(
                send,
                status,
                {"error": {"message": f"scripted failure for {rid}", "type": "scripted"}},
            )
            return
        stream = path == "/generate_stream" or bool(req.get("stream"))  # "/" streams on request
        n_chunks = int(req.get("chunks", 3))
        if not stream:
            await _json(
                send,
                200,
                {"id": rid, "text": f"echo {rid}", "usage": {"completion_tokens": n_chunks}},
            )
            with self._lock:
                self.completed.append(rid)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"x-energy-j", b"0.25"),
                    (b"x-energy-method", b"fake"),
                ],
            }
        )
        delay = float(req.get("chunk_delay_s", 0.0))
        for i in range(n_chunks):
            if gone.is_set():
                with self._lock:
                    self.cancelled.append(rid)
                return
            event = {"id": rid, "index": i, "token": {"text": f"t{i}"}}
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(event)}\n\n".encode(),
                    "more_body": True,
                }
            )
            if delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(gone.wait(), delay)
        if gone.is_set():
            with self._lock:
                self.cancelled.append(rid)
            return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        with self._lock:
            self.completed.append(rid)


_POST_ROUTES = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/", "/generate", "/generate_stream"}
)


def _openai_error(message: str, code: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


async def _json(
    send: Callable[[Message], Awaitable[None]], status: int, body: dict[str, Any]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"x-energy-j", b"0.5"),
                (b"x-energy-method", b"fake"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})
