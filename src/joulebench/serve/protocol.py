"""Request schemas of the OpenAI and TGI protocols (pydantic, parsed strictly at the edge).

Malformed bodies are refused by :mod:`joulebench.serve.errors` in the protocol's own shape (400
on OpenAI routes, 422 on TGI routes, as those servers answer), naming the parameter. Parameters
joulebench does not implement are refused with a 400 that names them, never silently ignored;
unknown vendor fields are ignored. ``temperature`` omitted or 0 means greedy, and so does a
positive temperature under :data:`~joulebench.serve.validate.MIN_TEMPERATURE` (its limit), which
would otherwise overflow the logits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from joulebench.serve.request import SamplingParams
from joulebench.serve.validate import (
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_FIELD,
    MIN_TEMPERATURE,
    SEED_MAX,
    SEED_MIN,
)

Unsupported = tuple[str, str]  # (param, message)
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


def _temperature(value: float | None, default: float) -> float:
    if value is None:
        return default
    return 0.0 if value < MIN_TEMPERATURE else value


class StreamOptions(_Body):
    include_usage: bool = False


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body (declared in the OpenAPI schema)."""

    error: ErrorDetail


class TGIError(BaseModel):
    """TGI's error body (declared in the OpenAPI schema)."""

    error: str
    error_type: str


TGI_PATHS = frozenset({"/", "/generate", "/generate_stream", "/info"})

_OPENAI_TYPE = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_OPENAI_CODE = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
_TGI_TYPE = {429: "overloaded"}


def is_tgi(path: str) -> bool:
    """Whether ``path`` is a TGI route (errors in TGI's shape) rather than an OpenAI one."""
    return path in TGI_PATHS


def openai_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body; ``code`` is a string or null, as OpenAI sends it."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPE.get(status, default_type),
            "param": param,
            "code": code if code is not None else _OPENAI_CODE.get(status),
        }
    }


def tgi_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """TGI's error body (``error_type``: validation, generation, overloaded...)."""
    default_type = "generation" if status >= 500 else "validation"
    return {"error": message, "error_type": error_type or _TGI_TYPE.get(status, default_type)}


class _OpenAIBase(_Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, le=MAX_TOKENS_FIELD)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: StopString | list[StopString] | None = Field(default=None)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=128)
    logprobs: Any = None
    top_logprobs: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens tokens, EOS or not

    def unsupported(self) -> Unsupported | None:
        """The first parameter set to something joulebench does not implement, and why."""
        if self.n != 1:
            return "n", f"n={self.n} is not supported (one choice per request); send n=1"
        if self.logprobs not in (None, False, 0):
            return "logprobs", "logprobs are not supported; omit 'logprobs'"
        if self.top_logprobs:
            return "top_logprobs", "top_logprobs is not supported; omit it"
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value not in (None, 0, 0.0):
                return name, f"{name} is not supported; omit it or send 0"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported; omit it"
        if self.response_format is not None and self.response_format.get("type") != "text":
            kind = self.response_format.get("type")
            return "response_format", (
                f"response_format of type {kind!r} is not supported (plain text only); "
                "omit it or send {'type': 'text'}"
            )
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            return "stop", f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(self.stop)}"
        return None

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=_temperature(self.temperature, 0.0),
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_OpenAIBase):
    prompt: str | list[str] | list[TokenId]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> Unsupported | None:
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) and len(prompt) != 1:
            return "prompt", "a list of prompts is not supported; send one request per prompt"
        if isinstance(prompt, list) and not prompt:
            return "prompt", "the prompt is empty"
        if self.echo:
            return "echo", "echo is not supported; omit it"
        if self.best_of not in (None, 1):
            return "best_of", "best_of is not supported; omit it"
        if self.suffix:
            return "suffix", "suffix is not supported; omit it"
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
            text = part.get("text", "")
            if not isinstance(text, str):
                raise ValueError("a text content part needs a string 'text'")
            parts.append(text)
        return "".join(parts)


class ChatCompletionRequest(_OpenAIBase):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, le=MAX_TOKENS_FIELD)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None

    def unsupported(self) -> Unsupported | None:
        if self.tools:
            return "tools", "tools are not supported; omit 'tools'"
        if self.tool_choice not in (None, "none"):
            return "tool_choice", "tool_choice is not supported; omit it"
        if self.functions:
            return "functions", "functions are not supported; omit 'functions'"
        if self.function_call not in (None, "none"):
            return "function_call", "function_call is not supported; omit it"
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            return "max_tokens", "max_tokens and max_completion_tokens disagree; send one of them"
        return super().unsupported()

    @property
    def token_limit(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )


class TGIParameters(_Body):
    max_new_tokens: int | None = Field(default=None, le=MAX_TOKENS_FIELD)
    temperature: float | None = Field(default=None, gt=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    do_sample: bool = False
    stop: list[StopString] = Field(default_factory=list)
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool | None = False
    best_of: int | None = None
    top_n_tokens: int | None = None
    top_k: int | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    watermark: bool = False
    truncate: int | None = None
    grammar: Any = None

    def sampling(self) -> SamplingParams:
        sample = self.do_sample or (self.temperature is not None and self.temperature != 1.0)
        sample = sample or self.top_p is not None
        if not sample:
            return SamplingParams()
        return SamplingParams(
            temperature=_temperature(self.temperature, 1.0),
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
        )

    def unsupported(self) -> Unsupported | None:
        if len(self.stop) > MAX_STOP_SEQUENCES:
            return "stop", (
                f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(self.stop)}"
            )
        if self.best_of not in (None, 1):
            return "best_of", "best_of is not supported; omit it"
        if self.top_n_tokens:
            return "top_n_tokens", "top_n_tokens is not supported; omit it"
        if self.top_k is not None:
            return "top_k", "top_k is not supported; omit it"
        if self.typical_p is not None:
            return "typical_p", "typical_p is not supported; omit it"
        for name in ("repetition_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None and value != (1.0 if name == "repetition_penalty" else 0.0):
                return name, f"{name} is not supported; omit it"
        if self.watermark:
            return "watermark", "watermark is not supported; omit it"
        if self.grammar is not None:
            return "grammar", "grammar is not supported; omit it"
        if self.decoder_input_details:
            return "decoder_input_details", "decoder_input_details is not supported; omit it"
        if self.truncate is not None:
            return "truncate", "truncate is not supported; send a prompt that fits the context"
        return None


class TGIRequest(_Body):
    inputs: str = Field(min_length=1)
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False
