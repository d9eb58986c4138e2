"""The mlx engine's DPO, ORPO and SimPO equal the torch engine's (which equal TRL's,
tests/test_preference_loss.py) on the same tiny model and batch: losses, metrics and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from forgellm.models.resolve import describe
from forgellm.training.config import TrainingConfig
from forgellm.training.engine_api import create_trainable
from tests.test_preference_loss import pair_batch

pytest.importorskip("mlx.core")


@pytest.mark.parametrize(
    "loss,parameters",
    [
        ("dpo", {"beta": 0.3, "dpo_label_smoothing": 0.1}),
        ("simpo", {"beta": 2.0, "simpo_gamma": 0.4}),
        ("orpo", {"orpo_lambda": 0.2}),
    ],
)
def test_mlx_equals_torch(tiny_model_dir, loss, parameters):
    batch = pair_batch(3, seed=7)
    results = {}
    for engine in ("torch", "mlx"):
        config = TrainingConfig(
            model_name=str(tiny_model_dir),
            engine=engine,
            fine_tune_type="full",
            seed=0,
            training_type="preference",
            preference_loss=loss,
            max_seq_length=16,
            **parameters,
        )
        trainable = create_trainable(config, describe(tiny_model_dir))
        if loss == "dpo":  # a reference that differs from the policy: the starting model, shifted
            n, length = batch.tokens.shape[0], batch.tokens.shape[2]
            reference = trainable.sequence_logps(batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length))
            batch = batch._replace(reference=reference.reshape(n, 2) + np.array([[0.5, -0.5]], dtype=np.float32))
        evaluated = trainable.pair_eval(batch)
        trained = trainable.pair_backward(batch, 1.0 / 3)
        results[engine] = (evaluated, trained, trainable.optimizer_step(1e-4, 0.0))
    torch_eval, torch_train, torch_norm = results["torch"]
    mlx_eval, mlx_train, mlx_norm = results["mlx"]
    np.testing.assert_allclose(mlx_eval, torch_eval, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mlx_train, torch_train, rtol=1e-4, atol=1e-4)
    assert mlx_norm == pytest.approx(torch_norm, rel=1e-3)  # the gradients, through their global norm
