"""The mlx engine: mlx-lm loads the model (and an mlx-lm adapter) and streams tokens.

On Linux the optimized BLAS is loaded before mlx (see `forgellm.engines.blas`). Prompts are
formatted and encoded with the Hugging Face tokenizer under mlx-lm's wrapper, exactly as the
torch engine does, so both engines see the same token ids.
"""

from __future__ import annotations

import gc
import importlib.metadata
import secrets
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from forgellm.engines import blas
from forgellm.engines.base import SamplingParams
from forgellm.engines.batched import BatchSampling
from forgellm.engines.loaded import LoadedModelBase, adapter_mismatch
from forgellm.errors import UserError

if TYPE_CHECKING:
    from forgellm.models.resolve import ModelInfo

INSTALL_HINT = (
    "install it with: pip install 'mlx[cpu]' mlx-lm (Linux) or pip install mlx mlx-lm (macOS on Apple Silicon)"
)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class MLXEngine:
    name = "mlx"

    def availability(self) -> tuple[bool, str]:
        blas.activate()
        try:
            import mlx.core  # noqa: F401
            import mlx_lm  # noqa: F401
        except ImportError as exc:
            return False, f"{exc}; {INSTALL_HINT}"
        return True, ""

    def version(self) -> str:
        return ", ".join(f"{pkg} {_package_version(pkg)}" for pkg in ("mlx", "mlx-lm") if _package_version(pkg))

    def device(self) -> str:
        """``metal`` on Apple Silicon, ``cpu`` elsewhere (or ``gpu`` for other mlx GPU builds)."""
        blas.activate()
        import sys

        import mlx.core as mx

        if mx.default_device() == mx.cpu:
            return "cpu"
        return "metal" if sys.platform == "darwin" else "gpu"

    def load(self, info: ModelInfo, adapter: ModelInfo | None = None) -> MLXLoadedModel:
        blas.activate()
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.utils import load_adapters

        if info.is_adapter:
            raise UserError(
                f"{info.name} is an adapter, not a model: pass its base model with --model "
                f"and this folder with --adapter"
            )
        if adapter is not None and adapter.adapter_format != "mlx":
            raise UserError(
                f"adapter {adapter.name} is in {adapter.adapter_format or 'an unknown'} format; the mlx "
                f"engine needs an mlx-lm adapter (adapter_config.json + adapters.safetensors): "
                f"use --engine torch for PEFT adapters"
            )
        try:
            model, wrapper = mlx_lm.load(str(info.path))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"the mlx engine cannot load model {info.name} from {info.path}: {exc}") from exc
        if adapter is not None:
            try:
                model = load_adapters(model, str(adapter.path))
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
                raise adapter_mismatch(adapter, info, exc) from exc
        if mx.default_device() == mx.cpu:
            model.set_dtype(mx.float32)  # CPU computes in float32 (bf16 is emulated there and slow)
        model.eval()
        return MLXLoadedModel(model=model, wrapper=wrapper, info=info, adapter=adapter)


class MLXLoadedModel(LoadedModelBase):
    engine = "mlx"

    def __init__(self, *, model: Any, wrapper: Any, info: ModelInfo, adapter: ModelInfo | None):
        super().__init__(info=info, adapter=adapter, tokenizer=wrapper._tokenizer)
        self.model = model
        self._wrapper = wrapper
        for token_id in self.eos_token_ids:  # mlx-lm stops on the same ids as we do
            wrapper.add_eos_token(str(token_id))

    def _sample_tokens(self, prompt_ids: list[int], params: SamplingParams) -> Generator[int, None, None]:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx.random.seed(params.seed if params.seed is not None else secrets.randbits(32))
        sampler = make_sampler(temp=params.temperature, top_p=params.top_p, top_k=params.top_k)
        # Penalise every token of the sequence, as transformers does (mlx-lm defaults to the last 20).
        processors = make_logits_processors(
            repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
            repetition_context_size=len(prompt_ids) + params.max_tokens,
        )
        responses = stream_generate(
            self.model,
            self._wrapper,
            prompt_ids,
            max_tokens=params.max_tokens,
            sampler=sampler,
            logits_processors=processors,
        )
        try:
            for response in responses:
                yield response.token
        finally:
            responses.close()

    def _batch(self, prompts: list[list[int]], max_tokens: int, sample: BatchSampling | None) -> list[list[int]]:
        from forgellm.engines.batched import mlx_batch

        return mlx_batch(self.model, prompts, max_tokens, self.eos_token_ids, sample)

    def memory_bytes(self) -> int:
        if self.closed:
            return 0
        from mlx.utils import tree_flatten

        return sum(value.nbytes for _, value in tree_flatten(self.model.parameters()))

    def _release(self) -> None:
        import mlx.core as mx

        self.model = None
        self._wrapper = None
        gc.collect()
        mx.clear_cache()
