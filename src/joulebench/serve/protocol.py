"""Request schemas of the OpenAI and TGI protocols (pydantic: malformed bodies → 422).

Parameters joulebench does not implement are refused with a 400 that names them, never
silently ignored; unknown vendor fields are ignored. ``temperature`` omitted or 0 means greedy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from joulebench.serve.request import SamplingParams


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _OpenAIBase(_Body):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def unsupported(self) -> str | None:
        """The first parameter set to something joulebench does not implement, as a message."""
        if self.n != 1:
            return f"n={self.n} is not supported (one choice per request); send n=1"
        if self.logprobs not in (None, False, 0):
            return "logprobs are not supported; omit 'logprobs'"
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value not in (None, 0, 0.0):
                return f"{name} is not supported; omit it or send 0"
        if self.logit_bias:
            return "logit_bias is not supported; omit it"
        return None

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature or 0.0,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
        )

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_OpenAIBase):
    prompt: str | list[str] | list[int]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> str | None:
        batched = isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], str)
        if batched and len(self.prompt) != 1:
            return "a list of prompts is not supported; send one request per prompt"
        if self.echo:
            return "echo is not supported; omit it"
        if self.best_of not in (None, 1):
            return "best_of is not supported; omit it"
        if self.suffix:
            return "suffix is not supported; omit it"
        return super().unsupported()


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"content part of type {part.get('type')!r} is not supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_OpenAIBase):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None

    def unsupported(self) -> str | None:
        if self.tools:
            return "tools are not supported; omit 'tools'"
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            return "max_tokens and max_completion_tokens disagree; send one of them"
        return super().unsupported()

    @property
    def token_limit(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )


class TGIParameters(_Body):
    max_new_tokens: int | None = None
    temperature: float | None = Field(default=None, gt=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    do_sample: bool = False
    stop: list[str] = Field(default_factory=list)
    details: bool = False
    return_full_text: bool = False
    best_of: int | None = None
    top_n_tokens: int | None = None

    def sampling(self) -> SamplingParams:
        sample = self.do_sample or (self.temperature is not None and self.temperature != 1.0)
        sample = sample or self.top_p is not None
        if not sample:
            return SamplingParams()
        return SamplingParams(
            temperature=self.temperature or 1.0,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
        )

    def unsupported(self) -> str | None:
        if self.best_of not in (None, 1):
            return "best_of is not supported; omit it"
        if self.top_n_tokens:
            return "top_n_tokens is not supported; omit it"
        return None


class TGIRequest(_Body):
    inputs: str = Field(min_length=1)
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False
