"""OpenAI routes: ``/v1/completions``, ``/v1/chat/completions`` (SSE with ``stream``),
``/v1/models`` and ``/v1/models/{id}``. Errors are OpenAI's (see :mod:`joulebench.serve.errors`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends

from joulebench.serve.engine import Rejected, RequestHandle
from joulebench.serve.errors import Route, openai_body
from joulebench.serve.protocol import ChatCompletionRequest, CompletionRequest, OpenAIError
from joulebench.serve.request import FinishEvent
from joulebench.serve.routes.common import Generation, responses, sse, unauthorized
from joulebench.serve.text import TextAssembler

Body = CompletionRequest | ChatCompletionRequest


def _error_body(message: str) -> dict[str, Any]:
    return openai_body(500, message)


def usage(handle: RequestHandle, energy: dict[str, Any] | None) -> dict[str, Any]:
    """The response's ``usage``: token counts, and joulebench's ``energy`` and ``queue_ms``."""
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


class Completion:
    """One completion's response objects: the whole one, or its stream of chunks."""

    def __init__(
        self, handle: RequestHandle, text: TextAssembler, model: str, *, chat: bool, usage: bool
    ) -> None:
        self.handle, self.text, self.model, self.chat = handle, text, model, chat
        self.include_usage = usage
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.id = ("chatcmpl-" if chat else "cmpl-") + handle.id

    def whole(self, final: FinishEvent) -> dict[str, Any]:
        """The non-streamed response object."""
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": finish_reason(final, self.text),
            "logprobs": None,
        }
        if self.chat:
            choice["message"] = {"role": "assistant", "content": self.text.text}
        else:
            choice["text"] = self.text.text
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(self.handle, final.energy),
        }

    def chunk(self, delta: str | None, reason: str | None, **extra: Any) -> dict[str, Any]:
        c: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
        if self.chat:
            c["delta"] = {} if delta is None else {"content": delta}
        else:
            c["text"] = delta or ""
        return {
            "id": self.id,
            "object": self.object + ".chunk" if self.chat else self.object,
            "created": self.created,
            "model": self.model,
            "choices": [c],
            **extra,
        }

    # the stream's parts (joulebench.serve.routes.common.StreamFormat)

    def opening(self) -> list[str]:
        if not self.chat:
            return []
        first = self.chunk(None, None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return [sse(first)]

    def tokens(self, token_ids: Sequence[int], delta: str) -> list[str]:
        return [sse(self.chunk(delta, None))] if delta else []

    def finish(self, event: FinishEvent, tail: str) -> list[str]:
        reason = finish_reason(event, self.text)
        lines = [sse(self.chunk(tail or None, reason, energy=event.energy))]
        if self.include_usage:
            last = self.chunk(None, None, usage=usage(self.handle, event.energy))
            last["choices"] = []
            lines.append(sse(last))
        return lines

    def error_body(self, message: str) -> dict[str, Any]:
        return _error_body(message)

    def closing(self) -> list[str]:
        return ["data: [DONE]\n\n"]


class OpenAIRoutes:
    """What the OpenAI routes do, over one engine."""

    def __init__(self, gen: Generation, label: str) -> None:
        self.gen, self.label = gen, label
        self.engine, self.tok = gen.engine, gen.tok

    def model_card(self) -> dict[str, Any]:
        name = self.engine.model_name
        return {"id": name, "object": "model", "created": 0, "owned_by": "joulebench"}

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.engine.model_name:
            raise Rejected(
                404,
                f"the model '{name}' does not exist; this server serves '{self.engine.model_name}'",
                param="model",
                code="model_not_found",
            )

    def refuse_unsupported(self, body: Body) -> None:
        self.check_model(body.model)
        if (why := body.unsupported()) is not None:
            raise Rejected(400, why[1], param=why[0])

    async def prompt_ids(self, body: CompletionRequest) -> list[int]:
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            return [int(t) for t in prompt]  # type: ignore[arg-type]
        text = prompt if isinstance(prompt, str) else prompt[0]
        return await self.gen.tokenize(str(text))

    async def chat_ids(self, body: ChatCompletionRequest) -> list[int]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise Rejected(400, str(exc), param="messages") from None
        tok = self.tok
        if not getattr(tok, "chat_template", None):
            raise Rejected(
                400, f"model '{self.engine.model_name}' has no chat template; use /v1/completions"
            )

        def render() -> list[int]:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(tok(text, add_special_tokens=False).input_ids)

        return await asyncio.to_thread(render)

    async def generate(
        self,
        request: Request,
        body: Body,
        prompt_ids: list[int],
        max_tokens: int | None,
        chat: bool,
    ) -> Any:
        endpoint = "chat" if chat else "completions"
        handle = self.gen.start(prompt_ids, max_tokens, body.sampling(), endpoint)
        text = TextAssembler(self.tok, body.stop_list())
        out = Completion(handle, text, self.engine.model_name, chat=chat, usage=body.include_usage)
        if body.stream:
            return self.gen.stream(handle, text, out, self.label)
        final = await self.gen.run_to_end(request, handle, text)
        return self.gen.respond(handle, final, _error_body, lambda: out.whole(final))


def router(gen: Generation, label: str, dependencies: Sequence[Depends]) -> APIRouter:
    api = APIRouter(route_class=Route, dependencies=list(dependencies), tags=["openai"])
    routes = OpenAIRoutes(gen, label)

    @api.post("/v1/completions", responses=responses(OpenAIError, streams=True))
    async def completions(request: Request, body: CompletionRequest) -> Any:
        routes.refuse_unsupported(body)
        ids = await routes.prompt_ids(body)
        return await routes.generate(request, body, ids, body.max_tokens, chat=False)

    @api.post("/v1/chat/completions", responses=responses(OpenAIError, streams=True))
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
        routes.refuse_unsupported(body)
        ids = await routes.chat_ids(body)
        return await routes.generate(request, body, ids, body.token_limit, chat=True)

    @api.get("/v1/models", responses=unauthorized(OpenAIError))
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [routes.model_card()]}

    @api.get(
        "/v1/models/{model_id:path}",
        responses={**unauthorized(OpenAIError), 404: {"model": OpenAIError}},
    )
    async def model(model_id: str) -> dict[str, Any]:
        routes.check_model(model_id)
        return routes.model_card()

    return api
