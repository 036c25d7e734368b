"""TGI routes: ``POST /`` (streaming chosen by ``stream`` in the body, as TGI's compat route),
``/generate``, ``/generate_stream`` and ``/info``. Errors are TGI's ``{"error", "error_type"}``.

As TGI does, a stop sequence stays in ``generated_text`` and streamed tokens carry their
``index`` (1-based, in generation order); ``details`` add joulebench's ``energy``/``queue_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends

from joulebench.serve.engine import Rejected, RequestHandle
from joulebench.serve.errors import Route, tgi_body
from joulebench.serve.protocol import TGIError, TGIRequest
from joulebench.serve.request import FinishEvent
from joulebench.serve.routes.common import SSE, Generation, responses, sse, unauthorized
from joulebench.serve.text import TextAssembler
from joulebench.serve.validate import MAX_STOP_SEQUENCES

_REASON = {"stop": "eos_token", "length": "length", "cancelled": "cancelled", "error": "error"}


def _version() -> str:
    try:
        return version("joulebench")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def _error_body(message: str) -> dict[str, Any]:
    return tgi_body(500, message, "generation")


class TGIRoutes:
    """What the TGI routes do, over one engine."""

    def __init__(self, gen: Generation, label: str) -> None:
        self.gen, self.label = gen, label
        self.engine, self.tok = gen.engine, gen.tok

    def token(self, tid: int) -> dict[str, Any]:
        return {
            "id": tid,
            "text": self.tok.decode([tid]),
            "logprob": None,
            "special": tid in self.engine.eos_token_ids,
        }

    @staticmethod
    def details(handle: RequestHandle, final: FinishEvent, text: TextAssembler) -> dict[str, Any]:
        return {
            "finish_reason": "stop_sequence" if text.stopped else _REASON[str(final.reason)],
            "generated_tokens": len(handle.req.generated),
            "seed": handle.req.sampling.seed,
            "input_length": handle.req.prompt_len,
            "energy": final.energy,
            "queue_ms": handle.queue_ms,
        }

    async def start(self, body: TGIRequest) -> tuple[RequestHandle, TextAssembler]:
        p = body.parameters
        if (why := p.unsupported()) is not None:
            raise Rejected(400, why[1], param=f"parameters.{why[0]}")
        ids = await self.gen.tokenize(body.inputs)
        try:
            handle = self.gen.start(ids, p.max_new_tokens, p.sampling(), "tgi")
        except Rejected as exc:  # the engine speaks OpenAI's names; TGI calls it max_new_tokens
            if exc.param != "max_tokens":
                raise
            message = exc.message.replace("max_tokens", "max_new_tokens")
            raise Rejected(
                exc.status, message, exc.headers, param="parameters.max_new_tokens", code=exc.code
            ) from None
        return handle, TextAssembler(self.tok, p.stop, keep_stop=True)

    async def generate_once(self, request: Request, body: TGIRequest) -> Any:
        handle, text = await self.start(body)
        final = await self.gen.run_to_end(request, handle, text)

        def payload() -> dict[str, Any]:
            full = body.parameters.return_full_text
            out: dict[str, Any] = {"generated_text": (body.inputs if full else "") + text.text}
            if body.parameters.details:
                d = self.details(handle, final, text)
                d["tokens"] = [self.token(t) for t in handle.req.generated]
                d["prefill"] = []
                out["details"] = d
            return out

        return self.gen.respond(handle, final, _error_body, payload)

    async def generate_stream(self, body: TGIRequest) -> Any:
        handle, text = await self.start(body)
        fmt = TGIStream(self, body, handle, text)
        return self.gen.stream(handle, text, fmt, self.label)


class TGIStream:
    """The events of one streamed TGI response (:class:`~.common.StreamFormat`): one per token,
    numbered from 1, the last one held back to carry ``generated_text`` and ``details``."""

    def __init__(
        self, routes: TGIRoutes, body: TGIRequest, handle: RequestHandle, text: TextAssembler
    ) -> None:
        self.routes, self.body, self.handle, self.text = routes, body, handle, text
        self.index = 0
        self.pending: list[int] = []

    def event(self, tid: int | None, **rest: Any) -> str:
        self.index += 1
        token = None if tid is None else self.routes.token(tid)
        return sse({"index": self.index, "token": token, **rest})

    def opening(self) -> list[str]:
        return []

    def tokens(self, token_ids: Sequence[int], delta: str) -> list[str]:
        self.pending.extend(token_ids)
        lines = []
        while len(self.pending) > 1:  # hold one back: the last event carries details
            tid = self.pending.pop(0)
            lines.append(self.event(tid, top_tokens=None, generated_text=None, details=None))
        return lines

    def finish(self, event: FinishEvent, tail: str) -> list[str]:
        full = self.body.parameters.return_full_text
        last = self.event(
            self.pending.pop(0) if self.pending else None,
            top_tokens=None,
            generated_text=(self.body.inputs if full else "") + self.text.text,
            details=self.routes.details(self.handle, event, self.text),
        )
        return [last]

    def error_body(self, message: str) -> dict[str, Any]:
        return _error_body(message)

    def closing(self) -> list[str]:
        return []


def describe(routes: TGIRoutes) -> dict[str, Any]:
    """The ``/info`` object: TGI's router fields, then the engine's own under ``joulebench``."""
    engine = routes.engine
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


def router(gen: Generation, label: str, dependencies: Sequence[Depends]) -> APIRouter:
    api = APIRouter(route_class=Route, dependencies=list(dependencies), tags=["tgi"])
    routes = TGIRoutes(gen, label)

    @api.post("/", responses=responses(TGIError, streams=True, invalid=422))
    async def compat(request: Request, body: TGIRequest) -> Any:
        """TGI's main route: ``/generate_stream`` when ``stream`` is true, else ``/generate``."""
        if body.stream:
            return await routes.generate_stream(body)
        return await routes.generate_once(request, body)

    @api.post("/generate", responses=responses(TGIError, streams=False, invalid=422))
    async def generate(request: Request, body: TGIRequest) -> Any:
        return await routes.generate_once(request, body)

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
        return await routes.generate_stream(body)

    @api.get("/info", responses=unauthorized(TGIError))
    async def info() -> dict[str, Any]:
        """TGI's ``Info`` (its router's fields), plus ``joulebench`` with the engine's own."""
        return describe(routes)

    return api
