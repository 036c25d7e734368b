"""Plumbing shared by the protocol routers: submission, collection, energy headers, SSE."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request

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


class Generation:
    """What every generation route needs from the engine."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine
        self.tok = engine.tokenizer

    async def tokenize(self, prompt: str) -> list[int]:
        return await asyncio.to_thread(
            lambda: list(self.tok(prompt, add_special_tokens=True).input_ids)
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
                    text.feed(event.token_ids)
                    if text.stopped:
                        handle.cancel(FinishReason.STOP)
        finally:
            watcher.cancel()
            if not handle.req.finished:
                handle.cancel()
        text.flush()
        if handle.final is None:  # pragma: no cover - the loop only ends after the finish event
            raise RuntimeError(f"request {handle.id} ended without a finish event")
        return handle.final
