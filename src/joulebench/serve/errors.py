"""The server's one error handler: every failure in the shape of the route's protocol.

OpenAI routes (and the operational ones) answer ``{"error": {"message", "type", "param",
"code"}}`` with ``code`` a string or null; TGI routes (``/``, ``/generate``, ``/generate_stream``,
``/info``) answer TGI's ``{"error", "error_type"}``. Invalid bodies are 400 on OpenAI routes (as
OpenAI answers) and 422 with ``error_type: "validation"`` on TGI routes (as TGI answers), never
FastAPI's ``{"detail"}``, and never echo the body back. An unexpected exception becomes a 500
*response*: it is not re-raised, so uvicorn keeps the keep-alive connection open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response

from joulebench.serve.engine import Rejected
from joulebench.serve.protocol import is_tgi, openai_body, tgi_body
from joulebench.serve.validate import InvalidBody, param_name, parse_json
from joulebench.validation import problems

log = logging.getLogger(__name__)

#: An oversized body is read to its end (and dropped) up to this size at least, see BodyLimit.
DRAIN_MIN_BYTES = 64 * 2**20


class ApiError(HTTPException):
    """A :class:`Rejected` raised while FastAPI parses the body: there only an HTTPException is
    re-raised untouched, so the refusal travels inside one and is answered as itself."""

    def __init__(self, rejected: Rejected) -> None:
        super().__init__(rejected.status, rejected.message)
        self.rejected = rejected


def error_response(
    path: str,
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error in the dialect of ``path``. TGI answers invalid input with 422. Text from the
    request (a parameter name with a lone surrogate) is escaped, so the answer always encodes."""
    message = _printable(message)
    param = None if param is None else _printable(param)
    if is_tgi(path):
        if status == 400:
            status = 422
        where = f" ({param})" if param and param not in message else ""
        return JSONResponse(tgi_body(status, message + where), status_code=status, headers=headers)
    return JSONResponse(
        openai_body(status, message, param, code), status_code=status, headers=headers
    )


def _refused(path: str, exc: Rejected) -> JSONResponse:
    """A refused request's answer: its status, message, ``param``, ``code`` and headers."""
    return error_response(
        path, exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers
    )


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    found = problems(exc)
    if not found:
        return "invalid request body", None
    # in a union (prompt: str | list[int]) every branch reports; a broken constraint ("≥ 0") says
    # more than "should be a valid string", so it wins over a type mismatch
    first = ([p for p in found if not p.type_mismatch] or found)[0]
    param = param_name(first.loc)
    if param is None:  # the body itself: absent, or JSON but not an object
        if first.kind == "missing":
            return "the request has no body; send a JSON object", None
        return "the request body must be a JSON object", None
    if first.kind == "missing":
        return f"missing required parameter '{param}'", param
    return f"invalid '{param}': {first.msg}", param


def install(app: FastAPI) -> None:
    """Register the handlers on ``app`` (one place for every error the server answers)."""

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        return _refused(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(request.url.path, 400, message, param=param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return _refused(request.url.path, exc.rejected)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(
            request.url.path, exc.status_code, message, headers=dict(exc.headers or {})
        )


class StrictRequest(Request):
    """A request whose JSON body is parsed by :func:`parse_json` (finite, valid Unicode)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except InvalidBody as exc:
                raise ApiError(Rejected(400, exc.message, param=exc.param)) from None
        return self._json


def _as_json(scope: Any) -> Any:
    """Every body these routes take is JSON: one sent with another content type (``curl -d``
    sends ``application/x-www-form-urlencoded``) is parsed as JSON too, instead of being refused
    as "not a dictionary". Dropping the header does it (the app parses untyped bodies as JSON)."""
    headers = scope.get("headers") or []
    kind = next((v for k, v in headers if k == b"content-type"), None)
    if kind is None or b"json" in kind.split(b";")[0].lower():
        return scope
    return {**scope, "headers": [(k, v) for k, v in headers if k != b"content-type"]}


class Route(APIRoute):
    """Strict JSON, and a crash becomes a 500 response in the protocol's shape instead of an
    exception that reaches uvicorn (which would then drop the keep-alive connection)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                strict = StrictRequest(_as_json(request.scope), request.receive)
                return await handler(strict)
            except (HTTPException, RequestValidationError, Rejected):
                raise
            except Exception as exc:
                log.exception("request %s %s failed", request.method, request.url.path)
                return error_response(request.url.path, 500, f"{type(exc).__name__}: {exc}")

        return route


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 (in the route's shape) before
    the app sees it; the body is read here once and replayed, so nothing is echoed back.

    The rest of an oversized body is read and discarded (up to ``drain_bytes`` in all) before
    the 413 goes out: a client that writes its whole body before reading the answer (httpx's
    async client, hence the gateway and ``openai.AsyncOpenAI``) would otherwise see the
    connection reset instead of the 413. A body beyond ``drain_bytes`` is not read: the 413 is
    sent at once and the connection closed."""

    def __init__(self, app: Any, max_bytes: int, drain_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.drain_bytes = int(drain_bytes or max(4 * self.max_bytes, DRAIN_MIN_BYTES))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            drained = int(declared) <= self.drain_bytes and await self._drain(receive, 0)
            await self._too_large(scope, receive, send, drained=drained)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                more = msg.get("more_body", False)
                drained = not more or await self._drain(receive, size)
                await self._too_large(scope, receive, send, drained=drained)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Any, size: int) -> bool:
        """Read and drop the rest of the body; False if it passed ``drain_bytes`` or the client
        left first."""
        while size <= self.drain_bytes:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return False
            size += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return size <= self.drain_bytes
        return False

    async def _too_large(self, scope: Any, receive: Any, send: Any, *, drained: bool) -> None:
        mib = self.max_bytes / 2**20
        response = error_response(
            scope.get("path", ""),
            413,
            f"the request body is over this server's limit of {mib:g} MiB "
            "(joulebench serve --max-body-mib)",
            # a body left unread: the client may still be sending, so this connection ends here
            headers=None if drained else {"connection": "close"},
        )
        await response(scope, receive, send)


def document(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the server answers: FastAPI declares a 422
    ``HTTPValidationError`` on every route, but OpenAI routes answer invalid input with 400 (as
    declared by the route) and TGI routes with 422 in TGI's shape (as declared by the route)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                responses = op.get("responses", {})
                invalid = responses.get("422", {})
                ref = str(invalid.get("content", {}).get("application/json", {}).get("schema"))
                if "HTTPValidationError" in ref and not is_tgi(path):
                    del responses["422"]
        schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
