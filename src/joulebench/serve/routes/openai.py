"""OpenAI routes: ``/v1/completions``, ``/v1/chat/completions`` (SSE with ``stream``),
``/v1/models`` and ``/v1/models/{id}``. Errors are OpenAI's (see :mod:`joulebench.serve.errors`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, StreamingResponse

from joulebench.serve.engine import Rejected, RequestHandle
from joulebench.serve.errors import ApiError, Route, openai_body
from joulebench.serve.protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
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

Body = CompletionRequest | ChatCompletionRequest


def router(gen: Generation, label: str, dependencies: Sequence[Depends]) -> APIRouter:
    engine = gen.engine
    tok = gen.tok
    api = APIRouter(route_class=Route, dependencies=list(dependencies), tags=["openai"])

    def model_card() -> dict[str, Any]:
        return {"id": engine.model_name, "object": "model", "created": 0, "owned_by": "joulebench"}

    def check_model(name: str | None) -> None:
        if name is not None and name != engine.model_name:
            raise ApiError(
                404,
                f"the model '{name}' does not exist; this server serves '{engine.model_name}'",
                param="model",
                code="model_not_found",
            )

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

    async def chat_ids(body: ChatCompletionRequest) -> list[int]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if not getattr(tok, "chat_template", None):
            raise Rejected(
                400, f"model '{engine.model_name}' has no chat template; use /v1/completions"
            )

        def render() -> list[int]:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(tok(text, add_special_tokens=False).input_ids)

        return await asyncio.to_thread(render)

    async def generate(
        request: Request, body: Body, prompt_ids: list[int], max_tokens: int | None, chat: bool
    ) -> Any:
        endpoint = "chat" if chat else "completions"
        handle = gen.start(prompt_ids, max_tokens, body.sampling(), endpoint)
        text = TextAssembler(tok, body.stop_list())
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        rid = ("chatcmpl-" if chat else "cmpl-") + handle.id
        if not body.stream:
            final = await gen.run_to_end(request, handle, text)
            headers = energy_headers(handle, final.energy)
            if final.reason is FinishReason.ERROR:
                return JSONResponse(
                    openai_body(500, f"generation failed: {final.error}"), 500, headers=headers
                )
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": finish_reason(final, text),
                "logprobs": None,
            }
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
            return JSONResponse(payload, headers=headers)

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
                    yield sse(first)
                async for event in handle.events():
                    if isinstance(event, TokenEvent):
                        delta = text.feed(event.token_ids)
                        if text.stopped:
                            handle.cancel(FinishReason.STOP)
                        if delta:
                            yield sse(chunk(delta, None))
                        continue
                    tail = text.flush()
                    if event.reason is FinishReason.ERROR:
                        yield sse(openai_body(500, f"generation failed: {event.error}"))
                        break
                    yield sse(chunk(tail or None, finish_reason(event, text), energy=event.energy))
                    if body.include_usage:
                        last = chunk(None, None, usage=usage(handle, event.energy))
                        last["choices"] = []
                        yield sse(last)
                yield "data: [DONE]\n\n"
            finally:
                if not handle.req.finished:  # the client went away mid-stream: free the slot
                    handle.cancel()

        return StreamingResponse(stream(), media_type=SSE, headers=stream_headers(handle, label))

    def refuse_unsupported(body: Body) -> None:
        check_model(body.model)
        if (why := body.unsupported()) is not None:
            raise ApiError(400, why[1], param=why[0])

    @api.post("/v1/completions", responses=responses(OpenAIError, streams=True))
    async def completions(request: Request, body: CompletionRequest) -> Any:
        refuse_unsupported(body)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            ids = [int(t) for t in prompt]  # type: ignore[arg-type]
        else:
            text = prompt if isinstance(prompt, str) else prompt[0]
            ids = await gen.tokenize(str(text))
        return await generate(request, body, ids, body.max_tokens, chat=False)

    @api.post("/v1/chat/completions", responses=responses(OpenAIError, streams=True))
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
        refuse_unsupported(body)
        ids = await chat_ids(body)
        return await generate(request, body, ids, body.token_limit, chat=True)

    @api.get("/v1/models", responses=unauthorized(OpenAIError))
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @api.get(
        "/v1/models/{model_id:path}",
        responses={**unauthorized(OpenAIError), 404: {"model": OpenAIError}},
    )
    async def model(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return model_card()

    return api
