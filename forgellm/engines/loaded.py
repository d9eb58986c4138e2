"""What a loaded model does the same way in every engine.

Prompt formatting, encoding, parameter checks and the generation loop (end of sequence, max
tokens, stop strings, text pieces, timings) live here once; an engine only supplies the token
ids its model samples (`_sample_tokens`), its memory use and how to free it.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.engines.base import FinishReason, GenerationChunk, Message, PromptFormat, SamplingParams
from forgellm.engines.batched import BatchSampling
from forgellm.engines.prompting import encode_prompt, format_prompt
from forgellm.engines.streaming import IncrementalDecoder, StopStrings
from forgellm.errors import ConflictError, UserError

if TYPE_CHECKING:
    from forgellm.models.resolve import ModelInfo


def read_eos_token_ids(model_dir: Path, tokenizer: Any) -> set[int]:
    """Every end-of-sequence id: the generation config's, the model config's and the tokenizer's.

    Chat models often end a turn with a token (``<|im_end|>``, ``<|eot_id|>``) that only the
    generation config lists, so all three are read; both engines stop on the same set.
    """
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((model_dir / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    if isinstance(getattr(tokenizer, "eos_token_id", None), int):
        ids.add(tokenizer.eos_token_id)
    return ids


def adapter_mismatch(adapter: ModelInfo, info: ModelInfo, reason: BaseException | str) -> UserError:
    """The one error for an adapter that cannot be applied to a model, naming both and the fix."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()] or [type(reason).__name__]
    detail = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    trained_on = f" ({adapter.base_model})" if adapter.base_model else ""
    return UserError(
        f"adapter {adapter.name} does not fit model {info.name}: {detail.rstrip('.')}. "
        f"Use the base model the adapter was trained on{trained_on}."
    )


class LoadedModelBase(ABC):
    """A model (and optional adapter) in memory; see `forgellm.engines.base.LoadedModel`."""

    engine: str

    def __init__(self, *, info: ModelInfo, adapter: ModelInfo | None, tokenizer: Any):
        self.info = info
        self.adapter: Path | None = adapter.path if adapter is not None else None
        self.adapter_info = adapter
        self.tokenizer = tokenizer
        self.eos_token_ids = read_eos_token_ids(info.path, tokenizer)
        self.closed = False

    def format_prompt(
        self,
        prompt: str | Sequence[Message],
        *,
        system: str | None = None,
        fmt: PromptFormat | None = None,
        enable_thinking: bool = False,
    ) -> str:
        return format_prompt(self.tokenizer, prompt, system=system, fmt=fmt, enable_thinking=enable_thinking)

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def generate(self, prompt: str, params: SamplingParams) -> Generator[GenerationChunk, None, None]:
        """Check the request now (errors raise here, not at the first chunk), then stream."""
        self._require_open()
        params.validate()
        started = time.perf_counter()
        prompt_ids = self.encode(prompt)
        if not prompt_ids:
            raise UserError("the prompt is empty: give some text to complete or a question to answer")
        limit = self.info.context_length
        if limit and len(prompt_ids) >= limit:
            raise UserError(
                f"the prompt has {len(prompt_ids)} tokens, the model's context holds {limit}: "
                f"shorten the prompt or clear the conversation"
            )
        return self._stream(prompt_ids, params, started)

    def _stream(
        self, prompt_ids: list[int], params: SamplingParams, started: float
    ) -> Generator[GenerationChunk, None, None]:
        tokens = self._sample_tokens(prompt_ids, params)
        decoder = IncrementalDecoder(self.tokenizer, prompt_ids)
        stops = StopStrings(params.stop)
        count, first_at = 0, None
        text, stopped_by_string = "", False
        finish: FinishReason = "length"

        def chunk(piece: str, finish_reason: FinishReason | None = None) -> GenerationChunk:
            now = time.perf_counter()
            return GenerationChunk(
                text=piece,
                prompt_tokens=len(prompt_ids),
                completion_tokens=count,
                finish_reason=finish_reason,
                time_to_first_token=None if first_at is None else first_at - started,
                tokens_per_second=count / (now - first_at) if first_at is not None and now > first_at else 0.0,
            )

        try:
            for token in tokens:
                if token in self.eos_token_ids:
                    finish = "stop"
                    break
                count += 1
                if first_at is None:
                    first_at = time.perf_counter()
                text, stopped_by_string = stops.feed(decoder.add(token))
                if stopped_by_string:
                    finish = "stop"
                    break
                if count >= params.max_tokens:
                    break
                yield chunk(text)
                text = ""
        finally:
            tokens.close()  # stops the engine's loop, also when the caller closes this generator
        if not stopped_by_string:
            tail, stopped_by_string = stops.feed(decoder.flush())
            text += tail if stopped_by_string else tail + stops.flush()
            finish = "stop" if stopped_by_string else finish
        yield chunk(text, finish)

    def greedy_batch(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy answers to many encoded prompts at once (`forgellm.engines.batched`): per prompt, the
        generated ids before the first end-of-sequence id, at most ``max_tokens``."""
        self._check_batch(prompts)
        return self._batch(prompts, max_tokens, None)

    def sample_batch(self, prompts: list[list[int]], max_tokens: int, sample: BatchSampling) -> list[list[int]]:
        """Like `greedy_batch`, sampled with ``sample``'s temperature, top-p and seed."""
        self._check_batch(prompts)
        return self._batch(prompts, max_tokens, sample)

    def _check_batch(self, prompts: list[list[int]]) -> None:
        self._require_open()
        limit = self.info.context_length
        for ids in prompts:
            if not ids:
                raise UserError("a prompt is empty: give some text to complete or a question to answer")
            if limit and len(ids) >= limit:
                raise UserError(f"a prompt has {len(ids)} tokens, the model's context holds {limit}: shorten it")

    def _require_open(self) -> None:
        if self.closed:
            raise ConflictError(f"model {self.info.name} was unloaded: load it again")

    def close(self) -> None:
        """Free the weights; the object is unusable afterwards."""
        if not self.closed:
            self.closed = True
            self._release()

    @abstractmethod
    def _sample_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Generator[int, None, None]:
        """Endless (or ``max_tokens`` long) stream of sampled token ids; closed when no longer needed."""

    @abstractmethod
    def _batch(self, prompts: list[list[int]], max_tokens: int, sample: BatchSampling | None) -> list[list[int]]: ...

    @abstractmethod
    def memory_bytes(self) -> int: ...

    @abstractmethod
    def _release(self) -> None: ...
