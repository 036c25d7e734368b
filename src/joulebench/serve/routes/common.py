"""Plumbing shared by the protocol routers: submission, collection, energy headers, SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from joulebench.serve.engine import RequestHandle, ServingEngine
from joulebench.serve.request import FinishEvent, FinishReason, SamplingParams, TokenEvent
from joulebench.serve.text import TextAssembler

SSE = "text/event-stream"
UNAUTHORIZED = "missing or wrong API key (a server started with --api-key)"


def unauthorized(error_model: type) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a guarded route that takes no body: its 401."""
    return {401: {"model": error_model, "description": UNAUTHORIZED}}


def energy_headers(handle: RequestHandle, energy: dict[str, Any] | None) -> dict[str, str]:
    headers = {"x-request-id": handle.id}
    if handle.queue_ms is not None:
        headers["x-queue-ms"] = f"{handle.queue_ms:.3f}"
    if energy is not None:
        headers["x-energy-j"] = repr(float(energy["energy_j"]))
        headers["x-energy-method"] = str(energy["label"])
    return headers


def stream_headers(handle: RequestHandle, label: str) -> dict[str, str]:
    """Headers of a streamed response: the energy is not known yet (it comes in the last event),
    but its label is, and it is the same label a non-streamed response carries."""
    return {"x-request-id": handle.id, "cache-control": "no-cache", "x-energy-method": label}


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, allow_nan=False)}\n\n"


def responses(
    error_model: type, *, streams: bool, invalid: int = 400
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a generation route: its errors (invalid input is ``invalid``:
    400 for OpenAI, 422 for TGI) and, if it streams, SSE."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": error_model, "description": why}
        for code, why in (
            (invalid, "invalid request (the parameter is named)"),
            (401, UNAUTHORIZED),
            (404, "unknown model or route"),
            (413, "request body over the limit"),
            (429, "queue full (Retry-After)"),
            (500, "generation failed"),
        )
    }
    if streams:
        out[200] = {
            "description": "JSON, or server-sent events when 'stream' is true",
            "content": {"application/json": {}, SSE: {"schema": {"type": "string"}}},
        }
    return out


def feed(handle: RequestHandle, text: TextAssembler, event: TokenEvent) -> str:
    """Add a token event's text; a stop sequence seen ends the request. The text it added."""
    delta = text.feed(event.token_ids)
    if text.stopped:
        handle.cancel(FinishReason.STOP)
    return delta


class StreamFormat(Protocol):
    """How one protocol writes a streamed response: the SSE lines of each part."""

    def opening(self) -> list[str]:
        """Lines before the first token."""

    def tokens(self, token_ids: Sequence[int], delta: str) -> list[str]:
        """Lines for a token event (``delta``: the text it added)."""

    def finish(self, event: FinishEvent, tail: str) -> list[str]:
        """Lines for the finish event (``tail``: the text held back until now)."""

    def error_body(self, message: str) -> dict[str, Any]:
        """The error object sent when generation failed (the stream ends after it)."""

    def closing(self) -> list[str]:
        """Lines after the finish (or error) event."""


async def stream_events(
    handle: RequestHandle, text: TextAssembler, fmt: StreamFormat
) -> AsyncIterator[str]:
    """The SSE lines of a streamed request in the protocol's ``fmt``; a request still running
    when the stream ends (the client went away mid-stream) is cancelled, freeing its slot."""
    try:
        for line in fmt.opening():
            yield line
        async for event in handle.events():
            if isinstance(event, TokenEvent):
                for line in fmt.tokens(event.token_ids, feed(handle, text, event)):
                    yield line
                continue
            tail = text.flush()
            if event.reason is FinishReason.ERROR:
                yield sse(fmt.error_body(f"generation failed: {event.error}"))
                break
            for line in fmt.finish(event, tail):
                yield line
        for line in fmt.closing():
            yield line
    finally:
        if not handle.req.finished:
            handle.cancel()


class Generation:
    """What every generation route needs from the engine."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine
        self.tok = engine.tokenizer

    async def tokenize(self, prompt: str) -> list[int]:
        return await asyncio.to_thread(
            lambda: list(self.tok(prompt, add_special_tokens=True).input_ids)
        )

    @staticmethod
    def respond(
        handle: RequestHandle,
        final: FinishEvent,
        error_body: Callable[[str], dict[str, Any]],
        payload: Callable[[], dict[str, Any]],
    ) -> JSONResponse:
        """The response of a collected request, with its energy headers: ``payload()``, or a 500
        with the protocol's error object when generation failed."""
        headers = energy_headers(handle, final.energy)
        if final.reason is FinishReason.ERROR:
            message = f"generation failed: {final.error}"
            return JSONResponse(error_body(message), 500, headers=headers)
        return JSONResponse(payload(), headers=headers)

    @staticmethod
    def stream(
        handle: RequestHandle, text: TextAssembler, fmt: StreamFormat, label: str
    ) -> StreamingResponse:
        """The server-sent events of a streamed request, written in the protocol's ``fmt``."""
        return StreamingResponse(
            stream_events(handle, text, fmt), media_type=SSE, headers=stream_headers(handle, label)
        )

    def start(
        self, prompt_ids: list[int], max_tokens: int | None, sampling: SamplingParams, endpoint: str
    ) -> RequestHandle:
        return self.engine.submit(
            prompt_ids, max_tokens=max_tokens, sampling=sampling, endpoint=endpoint
        )

    @staticmethod
    async def run_to_end(
        request: Request, handle: RequestHandle, text: TextAssembler
    ) -> FinishEvent:
        """Collect a non-streaming request, cancelling it as soon as the client goes away.

        A watcher waits on the connection itself: tokens arriving all the time must not keep
        the check from running (they did, when the check ran only between events)."""

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            handle.cancel()

        watcher = asyncio.create_task(watch())
        try:
            async for event in handle.events():
                if isinstance(event, TokenEvent):
                    feed(handle, text, event)
        finally:
            watcher.cancel()
            if not handle.req.finished:
                handle.cancel()
        text.flush()
        if handle.final is None:  # pragma: no cover - the loop only ends after the finish event
            raise RuntimeError(f"request {handle.id} ended without a finish event")
        return handle.final
