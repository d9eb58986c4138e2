"""The torch engine: transformers for the model, PEFT for adapters, our own token loop.

The loop feeds one token at a time through the KV cache and samples with transformers' own
logits processors, so it does what ``model.generate`` does for one sequence, but as a
generator the caller can stop at any token. float32 on the CPU; bfloat16/float16 on CUDA.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import inspect
import logging
import secrets
import warnings
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from forgellm.engines.base import SamplingParams
from forgellm.engines.batched import BatchSampling
from forgellm.engines.loaded import LoadedModelBase, adapter_mismatch
from forgellm.errors import UserError

if TYPE_CHECKING:
    from forgellm.models.resolve import ModelInfo

log = logging.getLogger(__name__)
INSTALL_HINT = "install it with: pip install 'torch==2.13.0' transformers peft"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class TorchEngine:
    name = "torch"

    def availability(self) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return False, f"{exc}; {INSTALL_HINT}"
        return True, ""

    def version(self) -> str:
        return ", ".join(
            f"{pkg} {_package_version(pkg)}" for pkg in ("torch", "transformers", "peft") if _package_version(pkg)
        )

    def device(self) -> str:
        """Where models run: ``cuda`` when a GPU is visible, else ``cpu``."""
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load(self, info: ModelInfo, adapter: ModelInfo | None = None) -> TorchLoadedModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if info.is_adapter:
            raise UserError(
                f"{info.name} is an adapter, not a model: pass its base model with --model "
                f"and this folder with --adapter"
            )
        device = self.device()
        dtype = torch.float32
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(info.path)
                model = AutoModelForCausalLM.from_pretrained(info.path, dtype=dtype).to(device)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"the torch engine cannot load model {info.name} from {info.path}: {exc}") from exc
        # transformers 5.x renames `past_key_values` to `cache`; use the name this version reads.
        cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        if adapter is not None:
            model = _attach_peft_adapter(model, info, adapter)
        model.eval()
        return TorchLoadedModel(
            model=model, info=info, adapter=adapter, tokenizer=tokenizer, device=device, cache_kwarg=cache_kwarg
        )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or advisory warnings from transformers while loading (the CLI prints its own)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _attach_peft_adapter(model: Any, info: ModelInfo, adapter: ModelInfo) -> Any:
    """Wrap the model with a PEFT adapter; any mismatch becomes one `UserError` naming both."""
    if adapter.adapter_format != "peft":
        raise UserError(
            f"adapter {adapter.name} is in {adapter.adapter_format or 'an unknown'} format; the torch "
            f"engine needs a PEFT adapter (adapter_config.json with peft_type): use --engine mlx "
            f"for mlx-lm adapters"
        )
    from peft import PeftConfig, get_peft_model, load_peft_weights, set_peft_model_state_dict

    try:
        with warnings.catch_warnings():  # PEFT's advisory warnings; the checks below are ours
            warnings.simplefilter("ignore")
            config = PeftConfig.from_pretrained(str(adapter.path))
            config.inference_mode = True
            peft_model = get_peft_model(model, config)
            result = set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter.path)))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise adapter_mismatch(adapter, info, exc) from exc
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        keys = ", ".join((result.unexpected_keys or missing)[:3])
        raise adapter_mismatch(adapter, info, f"its weights {keys} have no place in the model.")
    return peft_model


class TorchLoadedModel(LoadedModelBase):
    engine = "torch"

    def __init__(
        self,
        *,
        model: Any,
        info: ModelInfo,
        adapter: ModelInfo | None,
        tokenizer: Any,
        device: str,
        cache_kwarg: str = "past_key_values",
    ):
        super().__init__(info=info, adapter=adapter, tokenizer=tokenizer)
        self.model = model
        self.device = device
        self._cache_kwarg = cache_kwarg

    def _sample_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Generator[int, None, None]:
        import torch
        from transformers import DynamicCache

        processors = _logits_processors(params)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
        model = self.model
        ids = torch.tensor([prompt_ids], device=self.device)
        cache = DynamicCache(config=model.config)
        logits = self._forward(ids, cache)
        while True:
            with torch.inference_mode():
                scores = processors(ids, logits) if processors else logits
                if params.temperature == 0:
                    token = scores.argmax(dim=-1, keepdim=True)
                else:
                    token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)
                if processors:  # they read the whole sequence (repetition penalty)
                    ids = torch.cat([ids, token], dim=-1)
            yield int(token)
            logits = self._forward(token, cache)

    def _batch(self, prompts: list[list[int]], max_tokens: int, sample: BatchSampling | None) -> list[list[int]]:
        from forgellm.engines.batched import torch_batch

        return torch_batch(self.model, prompts, max_tokens, self.eos_token_ids, sample)

    def _forward(self, ids: Any, cache: Any) -> Any:
        """Logits (float32) of the last position; extends ``cache`` in place."""
        import torch

        with torch.inference_mode():  # entered per call: a generator must not leave it on for its caller
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
            return out.logits[:, -1, :].float()

    def memory_bytes(self) -> int:
        if self.closed:
            return 0
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def _release(self) -> None:
        device = self.device
        self.model = None
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _logits_processors(params: SamplingParams) -> Any:
    """transformers' processors for the sampling parameters; an empty list when greedy and unpenalised."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature > 0:
        if params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors
