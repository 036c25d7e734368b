"""A minimal but real loopback LLM server for load-generator tests and capacity benchmarks.

It speaks HTTP/1.1 (keep-alive, chunked SSE) over raw asyncio streams, fast enough that the load
generator, not the server, is what a capacity benchmark measures. Endpoints: OpenAI
``/v1/chat/completions`` and ``/v1/completions`` (streaming with ``stream_options.include_usage``,
or plain JSON), TGI ``/generate_stream`` and ``/generate``, ``/v1/models`` and ``/health``.

It generates ``min(max_tokens, tokens)`` words, ``token_delay_s`` apart, fails a seeded fraction
``failure_rate`` of generation requests with HTTP 500, and, when ``energy_per_token_j`` is set,
reports a *fake* per-response energy in an ``x-energy-j`` header and a ``usage.energy`` field.
``max_concurrency`` bounds requests in generation; the others wait and their queue time is sent
in an ``x-queue-time`` header (ms, as TGI does). With ``metrics`` it serves ``/metrics`` in
vLLM's format (requests generating, requests waiting for a slot), so launched-engine tests can
scrape it.

>>> with stub_server(StubConfig(tokens=8)) as url:
...     ...  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from joulebench.errors import at_least

log = logging.getLogger(__name__)

_TGI_REASON = {"length": "length", "stop": "eos_token"}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


@dataclass(slots=True)
class StubConfig:
    tokens: int = 16  # tokens generated when max_tokens allows
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    failure_rate: float = 0.0
    energy_per_token_j: float | None = None
    max_concurrency: int | None = None
    model: str = "stub"
    seed: int = 0
    # streams cut short like llama.cpp's server under overlapping streams: after
    # ``truncate_after`` tokens, ``[DONE]`` without a finish_reason (TGI: no final event)
    truncate_rate: float = 0.0
    truncate_after: int = 1
    # the model's EOS after this many tokens (finish_reason "stop"), unless the request asks
    # ``ignore_eos`` (vLLM's extension)
    eos_after: int | None = None
    metrics: bool = False  # serve /metrics (vLLM's running / waiting gauges)

    def __post_init__(self) -> None:
        at_least(self.tokens, 0, "tokens", error=ValueError)
        for name in ("failure_rate", "truncate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.truncate_after < 0 or (self.eos_after is not None and self.eos_after < 1):
            raise ValueError("truncate_after must be ≥ 0 and eos_after ≥ 1")
        if self.token_delay_s < 0 or self.first_token_delay_s < 0:
            raise ValueError("delays must be ≥ 0")
        if self.max_concurrency is not None:
            at_least(self.max_concurrency, 1, "max_concurrency", error=ValueError)


@dataclass(slots=True)
class StubStats:
    requests: int = 0
    failed: int = 0
    truncated: int = 0
    tokens: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    running: int = 0  # requests generating now
    waiting: int = 0  # requests waiting for a slot (max_concurrency)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one generation request gets back, streamed or not."""

    path: str
    n: int  # tokens generated
    prompt_tokens: int
    energy: float | None  # the fake per-response energy (J), if the stub reports one
    headers: dict[str, str]
    reason: str = "length"

    def usage(self) -> dict:
        usage: dict = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.n,
            "total_tokens": self.prompt_tokens + self.n,
        }
        if self.energy is not None:
            usage["energy"] = {"energy_j": self.energy, "method": "fake"}
        return usage


def _response(
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(obj: object) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


class StubServer:
    """The server itself; run it with :func:`stub_server` or :meth:`serve`."""

    def __init__(self, config: StubConfig | None = None) -> None:
        self.config = config or StubConfig()
        self.stats = StubStats()
        self._rng = random.Random(self.config.seed)
        self._slots: asyncio.Semaphore | None = None
        self.port = 0
        self._conns: set[asyncio.Task[None]] = set()

    # -- HTTP plumbing -------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots is None and self.config.max_concurrency:
            self._slots = asyncio.Semaphore(self.config.max_concurrency)
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, path, _ = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(_response(400, b'{"error":"bad request line"}'))
                    return
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k:
                        headers[k.strip().lower()] = v.strip()
                body = b""
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    body = await reader.readexactly(length)
                await self.route(method, path.split("?", 1)[0], body, writer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._conns.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()

    async def route(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter) -> None:
        self.stats.paths[path] = self.stats.paths.get(path, 0) + 1
        if method == "GET" and path == "/health":
            w.write(_response(200, b'{"status":"ok"}'))
        elif method == "GET" and path == "/v1/models":
            data = {"object": "list", "data": [{"id": self.config.model, "object": "model"}]}
            w.write(_response(200, json.dumps(data).encode()))
        elif method == "GET" and path == "/metrics" and self.config.metrics:
            w.write(_response(200, self._metrics_text().encode(), content_type="text/plain"))
        elif method == "POST" and path in (
            "/v1/chat/completions",
            "/v1/completions",
            "/generate",
            "/generate_stream",
        ):
            try:
                payload = json.loads(body or b"{}")
                if not isinstance(payload, dict):
                    raise ValueError("body must be a JSON object")
            except ValueError as exc:
                w.write(_response(422, json.dumps({"error": f"malformed JSON: {exc}"}).encode()))
                return
            await self.generate(path, payload, w)
        else:
            w.write(_response(404, json.dumps({"error": f"no route {method} {path}"}).encode()))

    def _metrics_text(self) -> str:
        model = f'model_name="{self.config.model}"'
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{{{model}}} {self.stats.running}\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{model}}} {self.stats.waiting}\n"
        )

    # -- generation ----------------------------------------------------------------------------
    def _max_tokens(self, path: str, p: dict) -> int:
        if path.startswith("/generate"):
            value = (p.get("parameters") or {}).get("max_new_tokens", self.config.tokens)
        else:
            value = p.get("max_completion_tokens", p.get("max_tokens", self.config.tokens))
        return max(0, min(int(value), self.config.tokens))

    async def generate(self, path: str, p: dict, w: asyncio.StreamWriter) -> None:
        cfg = self.config
        self.stats.requests += 1
        if cfg.failure_rate and self._rng.random() < cfg.failure_rate:
            self.stats.failed += 1
            w.write(_response(500, b'{"error":"injected failure","error_type":"stub"}'))
            return
        try:
            n = self._max_tokens(path, p)
        except (TypeError, ValueError):
            w.write(_response(400, b'{"error":"max_tokens must be an integer"}'))
            return
        reason = "length"
        if cfg.eos_after is not None and cfg.eos_after < n and not p.get("ignore_eos"):
            n, reason = cfg.eos_after, "stop"
        cut = cfg.truncate_rate and self._rng.random() < cfg.truncate_rate
        if cut:
            self.stats.truncated += 1
        prompt = p.get("prompt") or p.get("inputs") or json.dumps(p.get("messages", ""))
        prompt_tokens = max(1, len(str(prompt).split()))
        t_arrive = time.monotonic()
        slots = self._slots
        if slots is not None:
            self.stats.waiting += 1
            try:
                await slots.acquire()
            finally:
                self.stats.waiting -= 1
        self.stats.running += 1
        try:
            queue_ms = (time.monotonic() - t_arrive) * 1e3
            headers = {"x-queue-time": f"{queue_ms:.3f}"}
            energy = None
            if cfg.energy_per_token_j is not None:
                energy = cfg.energy_per_token_j * (n + prompt_tokens)
                headers["x-energy-j"] = f"{energy:.6f}"
                headers["x-energy-method"] = "fake"
            stream = bool(p.get("stream")) or path == "/generate_stream"
            self.stats.tokens += n
            answer = _Answer(path, n, prompt_tokens, energy, headers, reason)
            if stream:
                cut_at = min(n, cfg.truncate_after) if cut else None
                await self._stream(answer, p, w, cut_at)
            else:
                await self._plain(answer, w)
        finally:
            self.stats.running -= 1
            if slots is not None:
                slots.release()

    async def _stream(
        self, answer: _Answer, p: dict, w: asyncio.StreamWriter, cut_at: int | None = None
    ) -> None:
        cfg, path, n, reason = self.config, answer.path, answer.n, answer.reason
        head = [
            "HTTP/1.1 200 OK",
            "content-type: text/event-stream",
            "cache-control: no-cache",
            "transfer-encoding: chunked",
        ] + [f"{k}: {v}" for k, v in answer.headers.items()]
        w.write(("\r\n".join(head) + "\r\n\r\n").encode())
        chat = path == "/v1/chat/completions"
        tgi = path.startswith("/generate")
        base = {
            "id": "stub",
            "model": cfg.model,
            "created": 0,
            "object": "chat.completion.chunk" if chat else "text_completion",
        }
        if cfg.first_token_delay_s:
            await w.drain()
            await asyncio.sleep(cfg.first_token_delay_s)
        for i in range(n if cut_at is None else cut_at):
            if i and cfg.token_delay_s:
                await w.drain()
                await asyncio.sleep(cfg.token_delay_s)
            word = f" tok{i}"
            last = i == n - 1 and cut_at is None
            fin = reason if last else None
            if tgi:
                event: dict = {
                    "index": i,
                    "token": {"id": i, "text": word, "logprob": 0.0, "special": False},
                    "generated_text": None,
                    "details": None,
                }
                if last:
                    event["generated_text"] = "".join(f" tok{j}" for j in range(n))
                    event["details"] = {"finish_reason": _TGI_REASON[reason], "generated_tokens": n}
            elif chat:
                event = {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word},
                            "finish_reason": fin,
                        }
                    ],
                }
            else:
                event = {
                    **base,
                    "choices": [{"index": 0, "text": word, "finish_reason": fin}],
                }
            w.write(_sse(event))
        if not tgi:
            opts = p.get("stream_options") or {}
            if opts.get("include_usage") and cut_at is None:
                w.write(_sse({**base, "choices": [], "usage": answer.usage()}))
            w.write(_chunk(b"data: [DONE]\n\n"))
        w.write(b"0\r\n\r\n")

    async def _plain(self, answer: _Answer, w: asyncio.StreamWriter) -> None:
        cfg, path, n, reason = self.config, answer.path, answer.n, answer.reason
        delay = cfg.first_token_delay_s + cfg.token_delay_s * max(0, n - 1)
        if delay:
            await asyncio.sleep(delay)
        text = "".join(f" tok{i}" for i in range(n))
        if path == "/generate":
            obj: dict = {
                "generated_text": text,
                "details": {"finish_reason": _TGI_REASON[reason], "generated_tokens": n},
            }
        elif path == "/v1/chat/completions":
            obj = {
                "id": "stub",
                "object": "chat.completion",
                "model": cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": reason,
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": answer.usage(),
            }
        else:
            obj = {
                "id": "stub",
                "object": "text_completion",
                "model": cfg.model,
                "choices": [{"index": 0, "text": text, "finish_reason": reason}],
                "usage": answer.usage(),
            }
        w.write(_response(200, json.dumps(obj).encode(), answer.headers))

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ready: threading.Event | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        server = await asyncio.start_server(self.handle, host, port, backlog=4096)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            try:
                if stop is None:
                    await server.serve_forever()
                else:
                    await stop.wait()
            finally:
                server.close()
                conns = list(self._conns)
                for task in conns:
                    task.cancel()
                await asyncio.gather(*conns, return_exceptions=True)


@contextlib.contextmanager
def stub_server(
    config: StubConfig | None = None, *, host: str = "127.0.0.1", server: StubServer | None = None
) -> Iterator[str]:
    """Start a :class:`StubServer` on a free port in a background thread; yield its base URL.

    ``server``: a stub made by the caller (to read its ``stats`` afterwards); ``config`` unused.
    """
    server = server if server is not None else StubServer(config)
    ready = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        stop = asyncio.Event()
        holder["stop"] = stop
        try:
            loop.run_until_complete(server.serve(host, 0, ready, stop))
        except Exception as exc:  # surfaced to the caller below
            holder["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="joulebench-stub", daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in holder:
        raise RuntimeError(f"stub server failed to start: {holder.get('error')}")
    try:
        yield f"http://{host}:{server.port}"
    finally:
        loop = holder["loop"]
        stop = holder["stop"]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)


def main(argv: list[str] | None = None) -> None:
    """``python -m joulebench.load.stub --port 0``: serve in the foreground, print the URL."""
    ap = argparse.ArgumentParser(description="joulebench loopback stub LLM server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--token-delay-s", type=float, default=0.0)
    ap.add_argument("--failure-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", action="store_true", help="serve /metrics (vLLM's gauges)")
    args = ap.parse_args(argv)
    server = StubServer(
        StubConfig(
            tokens=args.tokens,
            token_delay_s=args.token_delay_s,
            failure_rate=args.failure_rate,
            seed=args.seed,
            metrics=args.metrics,
        )
    )

    async def run() -> None:
        ready = threading.Event()
        task = asyncio.create_task(server.serve(args.host, args.port, ready))
        while not ready.is_set():
            await asyncio.sleep(0.01)
        print(f"http://{args.host}:{server.port}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
