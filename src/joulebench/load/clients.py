"""Protocol clients: send one streaming request and fill a :class:`RequestRecord`.

Three protocols, chosen by name: ``openai-chat`` (``/v1/chat/completions``),
``openai-completions`` (``/v1/completions``) and ``tgi`` (``/generate_stream``). Requests always
stream (SSE) so that TTFT and inter-token latency are measured; OpenAI requests ask for
``stream_options.include_usage`` so token counts come from the server's ``usage``. Without it
the counts come from a tokenizer when one is given, else from the number of streamed chunks
(labelled in ``token_source``).

Server-reported energy is captured when present: an ``x-energy-j`` response header (with
``x-energy-method``), a ``usage.energy`` extension (a number or ``{"energy_j", "method"}``), the
finishing chunk's ``energy``, TGI's ``details.energy`` (joulebench serve) or ``details.energy_mj``
(TGI's own, GPU millijoules, converted to J and labelled :data:`TGI_ENERGY_LABEL`); its label is normalised by
:func:`energy_label`, so streamed and non-streamed answers of one server read the same.
Queue time is read from an ``x-queue-time`` (TGI, ms) or ``x-queue-ms`` header.

Outcome. An answer is ``ok`` only if it ended properly: an OpenAI stream with a
``finish_reason`` (``[DONE]`` alone is not an end: llama.cpp's server closed overlapping streams
after one token with ``[DONE]`` and no reason), TGI's final event carrying ``details`` with a
``finish_reason``. A finish reason that says the server gave up (``error``, ``abort``,
``cancelled``) is ``failed``. With a *forced* length (``forced=True``: a fixed number or the
prompts' reference lengths, min = max) the answer must also hold the tokens asked for: OpenAI
requests then carry ``ignore_eos`` (vLLM, SGLang, llama.cpp and joulebench serve honour it; TGI
has no such parameter), and an answer that stopped early (``finish_reason`` other than
``length``, or a server-counted ``completion_tokens`` below ``max_tokens``) is ``truncated``.
Anything else that started but did not end properly is ``truncated`` too; it is counted, never
averaged in, and never given a per-request energy.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from joulebench.errors import UnknownName
from joulebench.load.metrics import FAILED, OK, TRUNCATED, RequestRecord

Tokenizer = Callable[[str], int]  # text → token count
PromptInput = str | list[dict[str, str]]  # plain text, or chat messages


def prompt_as_text(prompt: PromptInput) -> str:
    """Text for protocols without chat turns (and for token counting): contents joined."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m["content"] for m in prompt)


_ERROR_CHARS = 300


def energy_label(energy: dict[str, Any]) -> str | None:
    """The label of a server's energy block, the same string as its ``x-energy-method`` header:
    ``label`` when given (joulebench serve), else ``method`` with ``;meter=<meter_method>``."""
    if energy.get("label"):
        return str(energy["label"])
    method = energy.get("method")
    if not method:
        return None
    meter = energy.get("meter_method")
    return f"{method};meter={meter}" if meter else str(method)


#: Finish reasons by which a server says it gave the answer up (vLLM ``abort``, joulebench's).
GAVE_UP = frozenset({"error", "abort", "cancelled"})
#: The label of TGI's own per-request energy (``details.energy_mj``: GPU energy while the router
#: handled the request, batch-mates overlapping), converted to J at the boundary.
TGI_ENERGY_LABEL = "tgi:details.energy_mj;gpu"
#: Finish reasons that mean the answer reached ``max_tokens``.
LENGTH_REASONS = frozenset({"length"})


class ProtocolClient(ABC):
    """One wire protocol. Subclasses build the payload and read one SSE event."""

    name: ClassVar[str]
    path: ClassVar[str]
    end_marker: ClassVar[str] = "end of stream"  # what ends a stream, named in truncations

    def __init__(
        self, model: str | None = None, tokenizer: Tokenizer | None = None, forced: bool = False
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.forced = forced
        # built requests by (id(prompt), max_tokens), with the prompt kept to check identity:
        # building one (URL and header merging, JSON encoding) costs as much as sending it
        self._requests: dict[tuple[int, int], tuple[PromptInput, httpx.Request]] = {}
        self._requests_for: httpx.AsyncClient | None = None

    @abstractmethod
    def payload(self, prompt: PromptInput, max_tokens: int) -> dict[str, Any]: ...

    @abstractmethod
    def on_event(self, event: dict[str, Any], rec: RequestRecord, now_s: float) -> bool:
        """Update ``rec`` from one decoded event; return True when the stream is complete."""

    # -- shared --------------------------------------------------------------------------------
    @staticmethod
    def _text(rec: RequestRecord, text: str | None, now_s: float) -> None:
        if not text:
            return
        if rec.first_token_s is None:
            rec.first_token_s = now_s
        rec.chunk_times_s.append(now_s)
        rec.text_parts.append(text)

    @staticmethod
    def _energy(rec: RequestRecord, value: Any) -> None:
        if isinstance(value, dict):
            j = value.get("energy_j", value.get("j"))
            method = energy_label(value)
        else:
            j, method = value, None
        try:
            rec.server_energy_j = float(j) if j is not None else rec.server_energy_j
        except (TypeError, ValueError):
            return
        if method:
            rec.server_energy_method = method

    def _headers(self, rec: RequestRecord, headers: httpx.Headers) -> None:
        # streamed responses send the label up front and the energy in the last event
        method = headers.get("x-energy-method")
        if method:
            rec.server_energy_method = method
        energy = headers.get("x-energy-j")
        if energy is not None:
            with contextlib.suppress(ValueError):
                rec.server_energy_j = float(energy)
        queue = headers.get("x-queue-time") or headers.get("x-queue-ms")
        if queue is not None:
            with contextlib.suppress(ValueError):
                rec.queue_ms = float(queue)

    def _finish_tokens(self, rec: RequestRecord, prompt: PromptInput) -> None:
        if rec.output_tokens is None:
            text = "".join(rec.text_parts)
            if self.tokenizer is not None:
                rec.output_tokens = self.tokenizer(text)
                rec.token_source = "tokenizer"
            else:
                rec.output_tokens = len(rec.chunk_times_s)
                rec.token_source = "chunks"
        if rec.input_tokens is None and self.tokenizer is not None:
            rec.input_tokens = self.tokenizer(prompt_as_text(prompt))

    async def send(
        self,
        http: httpx.AsyncClient,
        rec: RequestRecord,
        prompt: PromptInput,
        max_tokens: int,
        clock: Callable[[], float],
    ) -> RequestRecord:
        """Send ``prompt`` now, stream the answer into ``rec``; never raises for HTTP trouble."""
        request = self._request(http, prompt, max_tokens)
        rec.actual_send_s = clock()
        try:
            resp = await http.send(request, stream=True)
            try:
                rec.http_status = resp.status_code
                self._headers(rec, resp.headers)
                if resp.status_code != 200:
                    raw = await resp.aread()
                    rec.error = (
                        f"HTTP {resp.status_code}: {raw[:_ERROR_CHARS].decode('utf-8', 'replace')}"
                    )
                    rec.end_s = clock()
                    return rec
                done = await self._read_stream(resp, rec, clock)
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            rec.end_s = clock()
            rec.error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
            return rec
        rec.end_s = clock()
        rec.asked_tokens = max_tokens
        if rec.error is not None:
            rec.status = FAILED
            return rec
        self._finish_tokens(rec, prompt)
        rec.status, rec.error = self.outcome(rec, done, max_tokens)
        return rec

    def outcome(self, rec: RequestRecord, done: bool, max_tokens: int) -> tuple[str, str | None]:
        """``(status, why)`` of an answer that streamed without an error (module docstring)."""
        reason = rec.finish_reason
        if reason is None:
            if done:
                return TRUNCATED, f"{self.end_marker} without a finish_reason"
            return TRUNCATED, "stream ended before the server said it was complete"
        if reason in GAVE_UP:
            return FAILED, f"the server ended the answer with finish_reason {reason!r}"
        if self.forced:
            counted = rec.output_tokens if rec.token_source == "usage" else None
            if reason not in LENGTH_REASONS or (counted is not None and counted < max_tokens):
                got = "?" if rec.output_tokens is None else rec.output_tokens
                return TRUNCATED, (
                    f"forced length: {got} of {max_tokens} tokens asked for "
                    f"(finish_reason {reason!r}; a server that ignores ignore_eos stops at EOS: "
                    "use --output-length natural:N to accept that)"
                )
        return OK, None

    def _request(
        self, http: httpx.AsyncClient, prompt: PromptInput, max_tokens: int
    ) -> httpx.Request:
        """The request for ``prompt``, built once per prompt and length (requests are not
        changed by sending them, so in-flight ones can share it)."""
        if self._requests_for is not http:
            self._requests.clear()
            self._requests_for = http
        key = (id(prompt), max_tokens)
        hit = self._requests.get(key)
        if hit is not None and hit[0] is prompt:
            return hit[1]
        request = http.build_request(
            "POST", self.path.lstrip("/"), json=self.payload(prompt, max_tokens)
        )
        self._requests[key] = (prompt, request)
        return request

    async def _read_stream(
        self, resp: httpx.Response, rec: RequestRecord, clock: Callable[[], float]
    ) -> bool:
        buf = b""
        done = False
        async for chunk in resp.aiter_bytes():
            now = clock()
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line, buf = buf[:nl].rstrip(b"\r"), buf[nl + 1 :]
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event:/id: fields
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    rec.error = f"malformed SSE data: {data[:80]!r}"
                    return done
                if isinstance(event, dict) and "error" in event:
                    err = event["error"]
                    msg = err.get("message", err) if isinstance(err, dict) else err
                    rec.error = f"server error in stream: {msg}"[:_ERROR_CHARS]
                    return done
                if isinstance(event, dict) and self.on_event(event, rec, now):
                    done = True
        return done


def _usage(rec: RequestRecord, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    if usage.get("completion_tokens") is not None:
        rec.output_tokens = int(usage["completion_tokens"])
        rec.token_source = "usage"
    if usage.get("prompt_tokens") is not None:
        rec.input_tokens = int(usage["prompt_tokens"])
    if "energy" in usage:
        ProtocolClient._energy(rec, usage["energy"])
    _queue_ms(rec, usage.get("queue_ms"))


def _queue_ms(rec: RequestRecord, value: Any) -> None:
    """Server queue time from a body extension (joulebench serve streams it in the last event)."""
    if rec.queue_ms is None and value is not None:
        with contextlib.suppress(TypeError, ValueError):
            rec.queue_ms = float(value)


class _OpenAI(ProtocolClient):
    end_marker = "[DONE]"

    def _common(self, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model or "default",
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.forced:
            body["ignore_eos"] = True  # the forced length: no early stop at EOS
        return body

    def on_event(self, event: dict[str, Any], rec: RequestRecord, now_s: float) -> bool:
        finished = False
        for choice in event.get("choices") or ():
            self._text(rec, self._choice_text(choice), now_s)
            reason = choice.get("finish_reason")
            if reason is not None:
                rec.finish_reason = str(reason)
                finished = True
        if event.get("usage"):
            _usage(rec, event["usage"])
        elif event.get("energy") is not None:  # joulebench serve's finishing chunk
            self._energy(rec, event["energy"])
        return finished  # complete once a finish_reason (or [DONE]) arrives

    @staticmethod
    @abstractmethod
    def _choice_text(choice: dict[str, Any]) -> str | None: ...


class OpenAIChat(_OpenAI):
    name = "openai-chat"
    path = "/v1/chat/completions"

    def payload(self, prompt: PromptInput, max_tokens: int) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return {**self._common(max_tokens), "messages": messages}

    @staticmethod
    def _choice_text(choice: dict[str, Any]) -> str | None:
        delta = choice.get("delta") or {}
        return delta.get("content") or delta.get("reasoning_content")


class OpenAICompletions(_OpenAI):
    name = "openai-completions"
    path = "/v1/completions"

    def payload(self, prompt: PromptInput, max_tokens: int) -> dict[str, Any]:
        return {**self._common(max_tokens), "prompt": prompt_as_text(prompt)}

    @staticmethod
    def _choice_text(choice: dict[str, Any]) -> str | None:
        return choice.get("text")


#: TGI's finish reasons in OpenAI's words (``eos_token`` and ``stop_sequence`` end naturally).
_TGI_REASON = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


class TGI(ProtocolClient):
    name = "tgi"
    path = "/generate_stream"
    end_marker = "final event"

    def payload(self, prompt: PromptInput, max_tokens: int) -> dict[str, Any]:
        return {
            "inputs": prompt_as_text(prompt),
            "parameters": {"max_new_tokens": max_tokens, "details": True},
        }

    def on_event(self, event: dict[str, Any], rec: RequestRecord, now_s: float) -> bool:
        token = event.get("token") or {}
        if not token.get("special"):
            self._text(rec, token.get("text"), now_s)
        details = event.get("details")
        if isinstance(details, dict):
            if details.get("finish_reason") is not None and event.get("generated_text") is not None:
                rec.finish_reason = _TGI_REASON.get(
                    details["finish_reason"], details["finish_reason"]
                )
            if details.get("generated_tokens") is not None:
                rec.output_tokens = int(details["generated_tokens"])
                rec.token_source = "usage"
            prefill = details.get("prefill")
            if isinstance(prefill, list) and prefill:
                rec.input_tokens = len(prefill)
            elif details.get("input_length") is not None:  # joulebench serve's extension
                rec.input_tokens = int(details["input_length"])
            if details.get("energy") is not None:
                self._energy(rec, details["energy"])
            elif isinstance(details.get("energy_mj"), (int, float)):  # TGI's own, GPU mJ
                rec.server_energy_j = float(details["energy_mj"]) / 1e3
                rec.server_energy_method = TGI_ENERGY_LABEL
            _queue_ms(rec, details.get("queue_ms"))
        if event.get("usage"):
            _usage(rec, event["usage"])
        if "energy" in event:
            self._energy(rec, event["energy"])
        return event.get("generated_text") is not None


PROTOCOLS: dict[str, type[ProtocolClient]] = {
    c.name: c for c in (OpenAIChat, OpenAICompletions, TGI)
}


def make_client(
    protocol: str,
    *,
    model: str | None = None,
    tokenizer: Tokenizer | None = None,
    forced: bool = False,
) -> ProtocolClient:
    """The client for ``protocol``; an unknown name lists the known ones.

    ``forced``: the output length is forced (min = max): answers must hold ``max_tokens``.
    """
    cls = PROTOCOLS.get(protocol)
    if cls is None:
        raise UnknownName("protocol", protocol, list(PROTOCOLS))
    return cls(model=model, tokenizer=tokenizer, forced=forced)
