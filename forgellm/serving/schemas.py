"""Request bodies of every endpoint, as pydantic models, and the one way a body is read.

Types are strict (``"5"`` is not a number, ``true`` is not an integer) so a client learns
about a wrong type at once instead of getting a silently converted value. A body that is not
valid JSON, nests too deep, is not an object, or breaks a field's rule becomes a `UserError`
(HTTP 400) naming the field; a model or adapter outside what requests may reach, a 403
(`forgellm.access`). The same models produce the OpenAPI document (`forgellm.serving.openapi`)
and check the web app's proxied bodies.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgellm.engines.base import MAX_TOKENS_LIMIT, SamplingParams
from forgellm.security.requests import ModelRef, json_object, validate

SEED_MAX = 2**32 - 1  # both engines accept it (mlx seeds with 32 bits)
TOP_K_MAX = 1_000_000
MAX_STOP_STRINGS = 16
NAME_MAX = 4096  # model/adapter names and paths

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
# A model or adapter to read from disk: confined by the request rule (`forgellm.access`).
ModelName = Annotated[ModelRef, Field(min_length=1, max_length=NAME_MAX)]
StopString = Annotated[str, Field(min_length=1, max_length=512)]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)]
EngineName = Literal["auto", "torch", "mlx"]


class _Body(BaseModel):
    """Reference API bodies: strict types, unknown fields refused (a typo is an error, not a no-op)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _OpenAIBody(BaseModel):
    """OpenAI bodies: strict types, but unknown fields ignored, as clients send many optional ones."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


# ---------------------------------------------------------------- reference API


class LoadRequest(_Body):
    model: ModelName = Field(description="A model path, a name under models/, 'default', a training run or an adapter.")
    adapter: ModelName | None = Field(
        None, description="An adapter folder, a training run (its final or best checkpoint) or one of its checkpoints."
    )
    engine: EngineName | None = Field(None, description="torch or mlx; default: the server's engine.")


class UnloadRequest(_Body):
    model: Name | None = Field(None, description="Id of a cached model (from status); default: the current one.")
    all: bool = Field(False, description="Unload every cached model.")


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=1_000_000)]


class SamplingFields(BaseModel):
    """Sampling parameters shared by the generate endpoints (reference names and ranges)."""

    max_tokens: int = Field(256, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(0.7, ge=0, le=5, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=TOP_K_MAX, description="0 disables it.")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="1 disables it.")
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    stop: Stop | None = Field(None, description="A string or a list of strings that end the answer.")

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=stop_list(self.stop),
        )


class GenerateRequest(SamplingFields, _Body):
    prompt: Annotated[str, Field(max_length=1_000_000)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1000)] | None = None
    system: Annotated[str, Field(max_length=100_000)] | None = Field(None, description="Replaces any system turn.")
    format: Literal["chat", "raw"] | None = Field(
        None, description="chat template or raw continuation; default: chat for instruct models, raw for base models."
    )
    enable_thinking: bool = Field(
        False,
        description="For chat templates that read it (Qwen 3): let the model "
        "think in <think>...</think> before it answers. Others ignore it.",
    )
    stream: bool = Field(False, description="Server-sent events: one per text piece, then a final one.")
    model: ModelName | None = Field(
        None, description="Generate with this model (loaded on demand) instead of the current one."
    )
    adapter: ModelName | None = Field(None, description="With `model`: the adapter to apply.")

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` (a string) or `messages` (a list of turns)")
        if self.adapter is not None and self.model is None:
            raise ValueError("`adapter` needs `model`: name the model the adapter applies to")
        return self

    def prompt_input(self) -> str | list[dict[str, str]]:
        return self.prompt if self.prompt is not None else [m.model_dump() for m in self.messages or []]


# ---------------------------------------------------------------- OpenAI API


class TextPart(_OpenAIBody):
    type: Literal["text"]
    text: str


class OpenAIMessage(_OpenAIBody):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=1_000_000)] | Annotated[list[TextPart], Field(max_length=1000)] | None

    def as_turn(self) -> dict[str, str]:
        """Our message shape: OpenAI's ``developer`` role is a system turn; text parts are joined."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatTemplateKwargs(_OpenAIBody):
    """vLLM's extension, for the one template argument ForgeLLM passes on."""

    enable_thinking: bool = Field(
        False,
        description="For chat templates that read it (Qwen 3): let the model "
        "think in <think>...</think> before it answers.",
    )


class StreamOptions(_OpenAIBody):
    include_usage: bool = False


class _OpenAISampling(_OpenAIBody):
    model: ModelName
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    presence_penalty: float = Field(0, ge=0, le=0, description="Not supported: use repetition_penalty.")
    frequency_penalty: float = Field(0, ge=0, le=0, description="Not supported: use repetition_penalty.")
    top_k: int = Field(0, ge=0, le=TOP_K_MAX, description="Extension: 0 disables it.")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="Extension: 1 disables it.")
    user: str | None = None

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            stop=stop_list(self.stop),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


CHAT_DEFAULT_MAX_TOKENS = 1024


class ChatCompletionRequest(_OpenAISampling):
    messages: Annotated[list[OpenAIMessage], Field(min_length=1, max_length=1000)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool = Field(False, description="Not supported.")
    tools: Annotated[list[Any], Field(max_length=0)] | None = Field(None, description="Not supported.")
    chat_template_kwargs: ChatTemplateKwargs | None = Field(
        None, description="Extension (as vLLM): arguments for the chat template."
    )

    @property
    def enable_thinking(self) -> bool:
        return bool(self.chat_template_kwargs and self.chat_template_kwargs.enable_thinking)

    def sampling_params(self, max_tokens: int | None = None) -> SamplingParams:
        limit = self.max_completion_tokens or self.max_tokens or CHAT_DEFAULT_MAX_TOKENS
        return super().sampling_params(limit)

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.logprobs:
            raise ValueError("`logprobs` is not supported by this server")
        return self


class CompletionRequest(_OpenAISampling):
    prompt: Annotated[str, Field(max_length=1_000_000)] | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS_LIMIT)
    echo: bool = Field(False, description="Put the prompt in front of the completion.")
    logprobs: int | None = Field(None, ge=0, le=0, description="Not supported.")
    suffix: None = Field(None, description="Not supported.")

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def sampling_params(self, max_tokens: int | None = None) -> SamplingParams:
        return super().sampling_params(self.max_tokens)


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


# ---------------------------------------------------------------- reading a body

BodyT = TypeVar("BodyT", bound=BaseModel)


def parse_body(raw: bytes, schema: type[BodyT], *, empty_ok: bool = False) -> BodyT:
    """Validate a request body against ``schema``; every failure is a `UserError` naming the field."""
    return validate(schema, json_object(raw, empty_ok=empty_ok))
