"""The engine interface: what every backend (mlx, torch) provides to the rest of ForgeLLM.

Everything above this interface (CLI, model server, trainer loop, web app) is written once.
An engine loads a model folder (optionally with an adapter) and returns a `LoadedModel`,
which formats prompts, tokenizes and streams generated text. Training goes through
`forgellm.training` which asks the engine for a trainable model of its own.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from forgellm.errors import UserError

if TYPE_CHECKING:
    from forgellm.engines.batched import BatchSampling
    from forgellm.models.resolve import ModelInfo

PromptFormat = Literal["chat", "raw"]
FinishReason = Literal["stop", "length"]
Message = dict[str, str]

MAX_TOKENS_LIMIT = 32768


@dataclass
class SamplingParams:
    """How to sample. Defaults give a deterministic-looking but varied answer."""

    max_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0  # 1 disables nucleus sampling
    top_k: int = 0  # 0 disables top-k
    repetition_penalty: float = 1.0  # 1 disables it
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def validate(self) -> SamplingParams:
        """Raise `UserError` naming the first field out of range."""
        checks = [
            (
                "max_tokens",
                isinstance(self.max_tokens, int) and 1 <= self.max_tokens <= MAX_TOKENS_LIMIT,
                f"an integer from 1 to {MAX_TOKENS_LIMIT}",
            ),
            ("temperature", _is_number(self.temperature) and 0 <= self.temperature <= 5, "a number from 0 to 5"),
            ("top_p", _is_number(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0 (0 disables it)"),
            (
                "repetition_penalty",
                _is_number(self.repetition_penalty) and 0 < self.repetition_penalty <= 10,
                "a number in (0, 10]",
            ),
            ("seed", self.seed is None or isinstance(self.seed, int), "an integer or null"),
            (
                "stop",
                isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
                "a list of non-empty strings",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise UserError(f"{name}={getattr(self, name)!r} is out of range: expected {expected}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class GenerationChunk:
    """One step of a streamed generation. The last chunk has a ``finish_reason``."""

    text: str  # text added since the previous chunk (may be empty while a stop string is pending)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    time_to_first_token: float | None = None  # seconds from the call to the first generated token
    tokens_per_second: float = 0.0  # completion tokens / seconds since the first token


class LoadedModel(Protocol):
    """A model (and optional adapter) in memory, ready to generate."""

    engine: str
    info: ModelInfo
    adapter: Path | None
    tokenizer: Any  # the Hugging Face tokenizer (both engines use one)

    def format_prompt(
        self,
        prompt: str | Sequence[Message],
        *,
        system: str | None = None,
        fmt: PromptFormat | None = None,
        enable_thinking: bool = False,
    ) -> str:
        """Chat template for instruct models, raw text for base models; ``fmt`` overrides.
        ``enable_thinking`` reaches templates that read it (Qwen 3)."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def generate(self, prompt: str, params: SamplingParams) -> Generator[GenerationChunk, None, None]:
        """Stream a completion of an already formatted prompt. Closing the iterator stops it."""
        ...

    def greedy_batch(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy answers to many encoded prompts at once: per prompt, the generated ids before the
        first end-of-sequence id, at most ``max_tokens``."""
        ...

    def sample_batch(self, prompts: list[list[int]], max_tokens: int, sample: BatchSampling) -> list[list[int]]:
        """Like `greedy_batch`, sampled with ``sample``'s temperature, top-p and seed."""
        ...

    def memory_bytes(self) -> int:
        """Bytes held by the weights (and adapter)."""
        ...

    def close(self) -> None:
        """Free the memory; the object is unusable afterwards."""
        ...


class Engine(Protocol):
    name: str

    def availability(self) -> tuple[bool, str]:
        """(usable here, reason when not)."""
        ...

    def version(self) -> str: ...

    def device(self) -> str:
        """Where it computes (cpu, cuda, mps, gpu), for `forgellm info`."""
        ...

    def load(self, info: ModelInfo, adapter: ModelInfo | None = None) -> LoadedModel: ...
