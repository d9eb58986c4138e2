"""The mlx trainable's gradient norm: summed by BLAS on the CPU, and the same as the torch side's."""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from forgellm.models.resolve import describe
from forgellm.training.config import TrainingConfig
from forgellm.training.engine_api import create_trainable
from forgellm.training.mlx_trainable import _global_norm


def test_global_norm_sums_every_leaf_in_double_precision() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(3000, 37)).astype(np.float32) * 1e-3
    rows = rng.normal(size=(64, 9)).astype(np.float32)
    narrow = rng.normal(size=(50,)).astype(np.float32)
    grads = {"a": [mx.array(wide)], "b": {"c": mx.array(narrow).astype(mx.bfloat16), "d": mx.array(rows).T}}
    mx.eval(grads)
    narrow_as_stored = np.array(grads["b"]["c"].astype(mx.float32))
    exact = math.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in (wide, rows, narrow_as_stored)))
    assert _global_norm(grads) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("bad, expected", [(math.inf, math.inf), (math.nan, math.nan)])
def test_global_norm_of_a_non_finite_gradient_is_not_finite(bad: float, expected: float) -> None:
    grads = [mx.array([1.0, bad, 2.0]), mx.ones((4,))]
    mx.eval(grads)
    assert _global_norm(grads) == pytest.approx(expected, nan_ok=True)


def test_both_engines_report_the_same_gradient_norm(tiny_model_dir: Path) -> None:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 500, size=(2, 17)).astype(np.int32)
    mask = np.ones_like(tokens)
    targets = int(mask[:, 1:].sum())
    norms = {}
    for engine in ("torch", "mlx"):
        config = TrainingConfig(
            model_name=str(tiny_model_dir),
            engine=engine,
            fine_tune_type="full",
            batch_size=2,
            max_seq_length=17,
            seed=0,
        )
        trainable = create_trainable(config, describe(tiny_model_dir))
        trainable.forward_backward(tokens, mask, 1.0 / targets)
        norms[engine] = trainable.optimizer_step(1e-4, 0.0)
    assert norms["mlx"] == pytest.approx(norms["torch"], rel=1e-4)
