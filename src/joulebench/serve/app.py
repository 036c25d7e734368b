"""The FastAPI app: OpenAI and TGI endpoints, health, models and Prometheus metrics.

Every response carries its attributed energy: ``usage.energy`` (OpenAI) or ``details.energy``
(TGI), plus ``x-energy-j``, ``x-energy-method`` and ``x-queue-ms`` headers on non-streaming
responses. Streaming responses put the energy in the last event (the usage chunk when
``stream_options.include_usage`` is set, and the finishing chunk always), since HTTP trailers are
not reliably delivered; their ``x-energy-method`` header is sent up front. The label is one
string everywhere (header and ``energy.label``, streamed or not, OpenAI or TGI):
``timeline-token-work;meter=<meter method>`` (see :mod:`joulebench.serve.energy`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from joulebench.extras import require
from joulebench.serve.energy import energy_label
from joulebench.serve.engine import Rejected, RequestHandle, ServingEngine
from joulebench.serve.metrics import CONTENT_TYPE
from joulebench.serve.protocol import ChatCompletionRequest, CompletionRequest, TGIRequest
from joulebench.serve.request import FinishEvent, FinishReason, SamplingParams, TokenEvent
from joulebench.serve.text import TextAssembler

log = logging.getLogger(__name__)

fastapi = require("fastapi", "serve", "the embedded server")
from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402

_TGI_REASON = {"stop": "eos_token", "length": "length", "cancelled": "cancelled", "error": "error"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    body = {"error": {"message": message, "type": kind.get(status, "server_error"), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _energy_headers(handle: RequestHandle, energy: dict[str, Any] | None) -> dict[str, str]:
    headers = {"x-request-id": handle.id}
    if handle.queue_ms is not None:
        headers["x-queue-ms"] = f"{handle.queue_ms:.3f}"
    if energy is not None:
        headers["x-energy-j"] = repr(float(energy["energy_j"]))
        headers["x-energy-method"] = str(energy["label"])
    return headers


def _stream_headers(handle: RequestHandle, label: str) -> dict[str, str]:
    """Headers of a streamed response: the energy is not known yet (it comes in the last event),
    but its label is, and it is the same label a non-streamed response carries."""
    return {"x-request-id": handle.id, "cache-control": "no-cache", "x-energy-method": label}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, allow_nan=False)}\n\n"


def create_app(engine: ServingEngine, *, api_key: str | None = None) -> FastAPI:
    """Build the app over a started :class:`ServingEngine`."""
    app = FastAPI(title="joulebench serve", version="1")
    tok = engine.tokenizer
    label = energy_label(engine.meter_info.method_label)

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        given = (
            given[7:]
            if given.lower().startswith("bearer ")
            else request.headers.get("x-api-key", "")
        )
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise Rejected(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(Exception)
    async def _crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, f"{type(exc).__name__}: {exc}")

    guarded = [Depends(check_key)]

    # -- plumbing shared by the endpoints ----------------------------------------------------
    async def start(
        prompt_ids: list[int], max_tokens: int | None, sampling: SamplingParams, endpoint: str
    ) -> RequestHandle:
        return engine.submit(
            prompt_ids, max_tokens=max_tokens, sampling=sampling, endpoint=endpoint
        )

    async def run_to_end(
        request: Request, handle: RequestHandle, text: TextAssembler
    ) -> FinishEvent:
        """Collect a non-streaming request, cancelling it if the client goes away."""
        try:
            while handle.final is None:
                event = await handle.next_event(0.5)
                if event is None:
                    if await request.is_disconnected():
                        handle.cancel()
                    continue
                if isinstance(event, TokenEvent):
                    text.feed(event.token_ids)
                    if text.stopped:
                        handle.cancel(FinishReason.STOP)
        finally:
            if not handle.req.finished:
                handle.cancel()
        text.flush()
        assert handle.final is not None  # the loop above only ends after the finish event
        return handle.final

    def usage(handle: RequestHandle, energy: dict[str, Any] | None) -> dict[str, Any]:
        n_out = len(handle.req.generated)
        return {
            "prompt_tokens": handle.req.prompt_len,
            "completion_tokens": n_out,
            "total_tokens": handle.req.prompt_len + n_out,
            "energy": energy,
            "queue_ms": handle.queue_ms,
        }

    def finish_reason(final: FinishEvent, text: TextAssembler) -> str:
        return "stop" if text.stopped else str(final.reason)

    async def tokenize(prompt: str) -> list[int]:
        return await asyncio.to_thread(lambda: list(tok(prompt, add_special_tokens=True).input_ids))

    async def chat_ids(body: ChatCompletionRequest) -> list[int]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise Rejected(400, str(exc)) from None
        if not getattr(tok, "chat_template", None):
            raise Rejected(
                400, f"model '{engine.model_name}' has no chat template; use /v1/completions"
            )

        def render() -> list[int]:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(tok(text, add_special_tokens=False).input_ids)

        return await asyncio.to_thread(render)

    # -- OpenAI --------------------------------------------------------------------------------
    async def openai_endpoint(
        request: Request,
        body: CompletionRequest | ChatCompletionRequest,
        prompt_ids: list[int],
        max_tokens: int | None,
        chat: bool,
    ) -> Any:
        if (why := body.unsupported()) is not None:
            raise Rejected(400, why)
        endpoint = "chat" if chat else "completions"
        handle = await start(prompt_ids, max_tokens, body.sampling(), endpoint)
        text = TextAssembler(tok, body.stop_list())
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        rid = ("chatcmpl-" if chat else "cmpl-") + handle.id
        if not body.stream:
            final = await run_to_end(request, handle, text)
            if final.reason is FinishReason.ERROR:
                return _error(
                    500, f"generation failed: {final.error}", _energy_headers(handle, final.energy)
                )
            reason = finish_reason(final, text)
            choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text.text}
            else:
                choice["text"] = text.text
            payload = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": engine.model_name,
                "choices": [choice],
                "usage": usage(handle, final.energy),
            }
            return JSONResponse(payload, headers=_energy_headers(handle, final.energy))

        def chunk(delta: str | None, reason: str | None, **extra: Any) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
            if chat:
                c["delta"] = {} if delta is None else {"content": delta}
            else:
                c["text"] = delta or ""
            return {
                "id": rid,
                "object": obj + ".chunk" if chat else obj,
                "created": created,
                "model": engine.model_name,
                "choices": [c],
                **extra,
            }

        async def stream() -> AsyncIterator[str]:
            try:
                if chat:
                    first = chunk(None, None)
                    first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                    yield _sse(first)
                async for event in handle.events():
                    if isinstance(event, TokenEvent):
                        delta = text.feed(event.token_ids)
                        if text.stopped:
                            handle.cancel(FinishReason.STOP)
                        if delta:
                            yield _sse(chunk(delta, None))
                        continue
                    tail = text.flush()
                    if event.reason is FinishReason.ERROR:
                        yield _sse(
                            {
                                "error": {
                                    "message": f"generation failed: {event.error}",
                                    "type": "server_error",
                                    "code": 500,
                                }
                            }
                        )
                        break
                    yield _sse(chunk(tail or None, finish_reason(event, text), energy=event.energy))
                    if body.include_usage:
                        last = chunk(None, None, usage=usage(handle, event.energy))
                        last["choices"] = []
                        yield _sse(last)
                yield "data: [DONE]\n\n"
            finally:
                if not handle.req.finished:  # the client went away mid-stream: free the slot
                    handle.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers=_stream_headers(handle, label),
        )

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(request: Request, body: CompletionRequest) -> Any:
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            ids = [int(t) for t in prompt]  # type: ignore[arg-type]
        else:
            text = prompt if isinstance(prompt, str) else (prompt[0] if prompt else "")
            ids = await tokenize(str(text))
        return await openai_endpoint(request, body, ids, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
        ids = await chat_ids(body)
        return await openai_endpoint(request, body, ids, body.token_limit, chat=True)

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": engine.model_name, "object": "model", "created": 0, "owned_by": "joulebench"}
            ],
        }

    # -- TGI -----------------------------------------------------------------------------------
    def tgi_token(tid: int) -> dict[str, Any]:
        return {
            "id": tid,
            "text": tok.decode([tid]),
            "logprob": None,
            "special": tid in engine.eos_token_ids,
        }

    def tgi_details(
        handle: RequestHandle, final: FinishEvent, text: TextAssembler
    ) -> dict[str, Any]:
        reason = "stop_sequence" if text.stopped else _TGI_REASON[str(final.reason)]
        return {
            "finish_reason": reason,
            "generated_tokens": len(handle.req.generated),
            "seed": handle.req.sampling.seed,
            "energy": final.energy,
            "queue_ms": handle.queue_ms,
            "input_length": handle.req.prompt_len,
        }

    async def tgi_start(body: TGIRequest) -> tuple[RequestHandle, TextAssembler]:
        p = body.parameters
        if (why := p.unsupported()) is not None:
            raise Rejected(400, why)
        ids = await tokenize(body.inputs)
        return await start(ids, p.max_new_tokens, p.sampling(), "tgi"), TextAssembler(tok, p.stop)

    @app.post("/generate", dependencies=guarded)
    async def generate(request: Request, body: TGIRequest) -> Any:
        handle, text = await tgi_start(body)
        final = await run_to_end(request, handle, text)
        headers = _energy_headers(handle, final.energy)
        if final.reason is FinishReason.ERROR:
            return _error(500, f"generation failed: {final.error}", headers)
        out_text = (body.inputs + text.text) if body.parameters.return_full_text else text.text
        payload: dict[str, Any] = {"generated_text": out_text}
        if body.parameters.details:
            details = tgi_details(handle, final, text)
            details["tokens"] = [tgi_token(t) for t in handle.req.generated]
            details["prefill"] = []
            payload["details"] = details
        return JSONResponse(payload, headers=headers)

    @app.post("/generate_stream", dependencies=guarded)
    async def generate_stream(request: Request, body: TGIRequest) -> Any:
        handle, text = await tgi_start(body)

        async def stream() -> AsyncIterator[str]:
            try:
                pending: list[int] = []
                async for event in handle.events():
                    if isinstance(event, TokenEvent):
                        text.feed(event.token_ids)
                        if text.stopped:
                            handle.cancel(FinishReason.STOP)
                        pending.extend(event.token_ids)
                        while len(pending) > 1:  # hold one back: the last event carries details
                            yield _sse(
                                {
                                    "token": tgi_token(pending.pop(0)),
                                    "generated_text": None,
                                    "details": None,
                                }
                            )
                        continue
                    text.flush()
                    if event.reason is FinishReason.ERROR:
                        yield _sse(
                            {
                                "error": f"generation failed: {event.error}",
                                "error_type": "generation",
                            }
                        )
                        break
                    last = pending.pop(0) if pending else None
                    yield _sse(
                        {
                            "token": tgi_token(last) if last is not None else None,
                            "generated_text": text.text,
                            "details": tgi_details(handle, event, text),
                        }
                    )
            finally:
                if not handle.req.finished:
                    handle.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers=_stream_headers(handle, label),
        )

    # -- operations ------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if engine.started else "stopped", **engine.describe()}

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> PlainTextResponse:
        text = await asyncio.to_thread(engine.render_metrics)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return engine.describe()

    return app
