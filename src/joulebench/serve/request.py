"""One generation request as the schedulers see it, and the events it sends back to its handler.

A :class:`GenRequest` lives on two threads: the asyncio side creates it and reads its events;
the scheduler's worker thread fills in tokens and finishes it. The only channel back is
:meth:`GenRequest.emit`, which hands an event to the asyncio loop thread-safely, so the event
loop never blocks on inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class FinishReason(str, Enum):
    """Why a request stopped (OpenAI ``finish_reason`` vocabulary)."""

    STOP = "stop"  # end-of-sequence token or a stop string
    LENGTH = "length"  # max_tokens reached
    CANCELLED = "cancelled"  # the client went away
    ERROR = "error"  # the request failed; the server did not

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding parameters. ``temperature`` 0 (the default when a client sends none) is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # generate to max_tokens past EOS (vLLM's extension; forced lengths)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def is_default(self) -> bool:
        """Greedy decoding: top_p and seed have no effect then."""
        return self.greedy


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """New tokens of one request (one decode step, or the first token after prefill)."""

    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FinishEvent:
    """The last event of a request: why it stopped and its attributed energy."""

    reason: FinishReason
    energy: dict[str, Any] | None = None
    error: str | None = None


Event = TokenEvent | FinishEvent

_ids = itertools.count(1)


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_ids)}"


@dataclass(slots=True, eq=False)
class GenRequest:
    """A request in flight. Identity-hashed: the energy ledger keys its work by the object."""

    id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    arrival_s: float
    sink: Callable[[Event], None] = field(repr=False, default=lambda e: None)
    eos_token_ids: frozenset[int] = frozenset()
    scheduled_s: float | None = None
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    cancel_reason: FinishReason = FinishReason.CANCELLED

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def cancel(self, reason: FinishReason = FinishReason.CANCELLED) -> None:
        """Ask the scheduler to stop this request at its next step (thread-safe flag)."""
        if not self.finished and not self.cancelled:
            self.cancel_reason = reason
            self.cancelled = True

    def emit(self, event: Event) -> None:
        self.sink(event)

    def finish_reason_for(self, token_id: int) -> FinishReason | None:
        """The reason to stop after appending ``token_id``, or None to go on."""
        if token_id in self.eos_token_ids:
            return FinishReason.STOP
        if len(self.generated) >= self.max_new_tokens:
            return FinishReason.LENGTH
        return None


def loop_sink(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]
) -> Callable[[Event], None]:
    """A sink that delivers events into ``queue`` on ``loop`` from any thread.

    A closed loop (server shutting down) drops the event: nobody is left to read it.
    """

    def sink(event: Event) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, event)

    return sink
