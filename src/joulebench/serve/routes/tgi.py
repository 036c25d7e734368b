"""TGI routes: ``POST /`` (streaming chosen by ``stream`` in the body, as TGI's compat route),
``/generate``, ``/generate_stream`` and ``/info``. Errors are TGI's ``{"error", "error_type"}``.

As TGI does, a stop sequence stays in ``generated_text`` and streamed tokens carry their
``index`` (1-based, in generation order); ``details`` add joulebench's ``energy``/``queue_ms``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, StreamingResponse

from joulebench.serve.engine import Rejected, RequestHandle
from joulebench.serve.errors import ApiError, Route, tgi_body
from joulebench.serve.protocol import TGIError, TGIRequest
from joulebench.serve.request import FinishEvent, FinishReason, TokenEvent
from joulebench.serve.routes.common import (
    SSE,
    Generation,
    energy_headers,
    responses,
    sse,
    stream_headers,
    unauthorized,
)
from joulebench.serve.text import TextAssembler
from joulebench.serve.validate import MAX_STOP_SEQUENCES

_REASON = {"stop": "eos_token", "length": "length", "cancelled": "cancelled", "error": "error"}


def _version() -> str:
    try:
        return version("joulebench")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def router(gen: Generation, label: str, dependencies: Sequence[Depends]) -> APIRouter:
    engine = gen.engine
    tok = gen.tok
    api = APIRouter(route_class=Route, dependencies=list(dependencies), tags=["tgi"])

    def token(tid: int) -> dict[str, Any]:
        return {
            "id": tid,
            "text": tok.decode([tid]),
            "logprob": None,
            "special": tid in engine.eos_token_ids,
        }

    def details(handle: RequestHandle, final: FinishEvent, text: TextAssembler) -> dict[str, Any]:
        return {
            "finish_reason": "stop_sequence" if text.stopped else _REASON[str(final.reason)],
            "generated_tokens": len(handle.req.generated),
            "seed": handle.req.sampling.seed,
            "input_length": handle.req.prompt_len,
            "energy": final.energy,
            "queue_ms": handle.queue_ms,
        }

    async def start(body: TGIRequest) -> tuple[RequestHandle, TextAssembler]:
        p = body.parameters
        if (why := p.unsupported()) is not None:
            raise ApiError(400, why[1], param=f"parameters.{why[0]}")
        ids = await gen.tokenize(body.inputs)
        try:
            handle = gen.start(ids, p.max_new_tokens, p.sampling(), "tgi")
        except Rejected as exc:  # the engine speaks OpenAI's names; TGI calls it max_new_tokens
            if exc.param != "max_tokens":
                raise
            message = exc.message.replace("max_tokens", "max_new_tokens")
            raise Rejected(
                exc.status, message, exc.headers, param="parameters.max_new_tokens", code=exc.code
            ) from None
        return handle, TextAssembler(tok, p.stop, keep_stop=True)

    async def generate_once(request: Request, body: TGIRequest) -> Any:
        handle, text = await start(body)
        final = await gen.run_to_end(request, handle, text)
        headers = energy_headers(handle, final.energy)
        if final.reason is FinishReason.ERROR:
            return JSONResponse(
                tgi_body(500, f"generation failed: {final.error}", "generation"),
                500,
                headers=headers,
            )
        full = body.parameters.return_full_text
        payload: dict[str, Any] = {"generated_text": (body.inputs if full else "") + text.text}
        if body.parameters.details:
            d = details(handle, final, text)
            d["tokens"] = [token(t) for t in handle.req.generated]
            d["prefill"] = []
            payload["details"] = d
        return JSONResponse(payload, headers=headers)

    async def generate_stream(body: TGIRequest) -> Any:
        handle, text = await start(body)

        async def stream() -> AsyncIterator[str]:
            index = 0

            def event(tid: int | None, **rest: Any) -> str:
                nonlocal index
                index += 1
                return sse({"index": index, "token": None if tid is None else token(tid), **rest})

            try:
                pending: list[int] = []
                async for ev in handle.events():
                    if isinstance(ev, TokenEvent):
                        text.feed(ev.token_ids)
                        if text.stopped:
                            handle.cancel(FinishReason.STOP)
                        pending.extend(ev.token_ids)
                        while len(pending) > 1:  # hold one back: the last event carries details
                            yield event(
                                pending.pop(0), top_tokens=None, generated_text=None, details=None
                            )
                        continue
                    text.flush()
                    if ev.reason is FinishReason.ERROR:
                        yield sse(tgi_body(500, f"generation failed: {ev.error}", "generation"))
                        break
                    full = body.parameters.return_full_text
                    yield event(
                        pending.pop(0) if pending else None,
                        top_tokens=None,
                        generated_text=(body.inputs if full else "") + text.text,
                        details=details(handle, ev, text),
                    )
            finally:
                if not handle.req.finished:
                    handle.cancel()

        return StreamingResponse(stream(), media_type=SSE, headers=stream_headers(handle, label))

    @api.post("/", responses=responses(TGIError, streams=True, invalid=422))
    async def compat(request: Request, body: TGIRequest) -> Any:
        """TGI's main route: ``/generate_stream`` when ``stream`` is true, else ``/generate``."""
        if body.stream:
            return await generate_stream(body)
        return await generate_once(request, body)

    @api.post("/generate", responses=responses(TGIError, streams=False, invalid=422))
    async def generate(request: Request, body: TGIRequest) -> Any:
        return await generate_once(request, body)

    @api.post(
        "/generate_stream",
        responses=responses(TGIError, streams=False, invalid=422)
        | {
            200: {
                "description": "server-sent events",
                "content": {SSE: {"schema": {"type": "string"}}},
            }
        },
    )
    async def stream_route(body: TGIRequest) -> Any:
        return await generate_stream(body)

    @api.get("/info", responses=unauthorized(TGIError))
    async def info() -> dict[str, Any]:
        """TGI's ``Info`` (its router's fields), plus ``joulebench`` with the engine's own."""
        described = engine.describe()
        model = engine.model
        dtype = str(getattr(model, "dtype", "unknown"))
        device = getattr(getattr(model, "device", None), "type", "unknown")
        batch = getattr(engine.config, "max_batch_size", None)
        return {
            "model_id": engine.model_name,
            "model_sha": None,
            "model_dtype": dtype,
            "model_device_type": str(device),
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": engine.config.max_queue,
            "max_best_of": 1,
            "max_stop_sequences": MAX_STOP_SEQUENCES,
            "max_input_tokens": engine.context_length - 1,
            "max_input_length": engine.context_length - 1,
            "max_total_tokens": engine.context_length,
            "max_batch_size": batch,
            "max_client_batch_size": 1,
            "validation_workers": 1,
            "router": "joulebench",
            "version": _version(),
            "sha": None,
            "docker_label": None,
            "joulebench": described,
        }

    return api
