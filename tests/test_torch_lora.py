"""The fused LoRA layer and ForgeLLM's torch step give PEFT's outputs, losses and gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from forgellm.models.resolve import describe
from forgellm.training.config import TrainingConfig
from forgellm.training.torch_lora import fuse_lora_layers
from forgellm.training.torch_trainable import TorchTrainable


class _Net(torch.nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.q = torch.nn.Linear(12, 10, bias=bias)
        self.o = torch.nn.Linear(10, 12, bias=bias)

    def forward(self, x):
        return self.o(torch.tanh(self.q(x)))


def _pair(*, bias: bool = False, dropout: float = 0.0, dora: bool = False):
    """The same PEFT model twice, adapters made non-zero (PEFT starts B at zero); the second fused."""
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = get_peft_model(
            _Net(bias), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, use_dora=dora, target_modules=["q", "o"])
        )
        torch.manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        models.append(model)
    assert fuse_lora_layers(models[1]) == 2
    return models


def _run(model, x: torch.Tensor):
    torch.manual_seed(2)  # the same dropout masks in both
    x = x.clone().requires_grad_()
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out, x.grad, grads


@pytest.mark.parametrize("bias,dropout", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_fused_layer_gives_pefts_outputs_and_gradients(bias: bool, dropout: float):
    peft_model, fused = _pair(bias=bias, dropout=dropout)
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(3))
    out_p, gx_p, g_p = _run(peft_model, x)
    out_f, gx_f, g_f = _run(fused, x)
    assert "LoraLinear" in type(out_f.grad_fn).__name__  # the fused path ran
    torch.testing.assert_close(out_f, out_p)
    torch.testing.assert_close(gx_f, gx_p)
    assert g_f.keys() == g_p.keys() and len(g_f) == 4
    for name in g_p:
        assert g_p[name].abs().sum() > 0, name
        torch.testing.assert_close(g_f[name], g_p[name], msg=name)


def test_dora_and_a_disabled_adapter_take_pefts_own_forward():
    peft_model, fused = _pair(dora=True)
    x = torch.randn(2, 12)
    out_p, _, g_p = _run(peft_model, x)
    out_f, _, g_f = _run(fused, x)
    assert "LoraLinear" not in type(out_f.grad_fn).__name__
    torch.testing.assert_close(out_f, out_p)
    plain, fused = _pair()
    with plain.disable_adapter(), fused.disable_adapter():
        torch.testing.assert_close(fused(x), plain(x))


def test_torch_lora_step_equals_the_plain_transformers_peft_computation(tiny_model_dir: Path):
    """ForgeLLM's step (fused LoRA layers, fused output layer + loss) against ``model(ids, labels)``
    of a PEFT model built the documented way: the same loss and adapter gradients."""
    from transformers import AutoModelForCausalLM

    config = TrainingConfig(
        model_name=str(tiny_model_dir),
        engine="torch",
        fine_tune_type="lora",
        lora_rank=4,
        lora_alpha=8,
        batch_size=2,
        max_seq_length=16,
        seed=0,
    )
    ours = TorchTrainable(config, describe(tiny_model_dir))
    assert ours.output_head is not None  # the fused loss is in use
    torch.manual_seed(0)
    reference = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
        LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=list(config.lora_target_modules)
        ),
    )
    with torch.no_grad():  # the same non-zero adapters in both
        for (name, p), (ref_name, q) in zip(ours.model.named_parameters(), reference.named_parameters()):
            assert name == ref_name
            if "lora_" in name:
                p.normal_(0, 0.2)
                q.copy_(p)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 1000, size=(2, 16))
    mask = np.ones_like(tokens)
    mask[1, 10:] = 0  # padding: those targets do not count
    loss_sum, count = ours.forward_backward(tokens, mask, 1.0 / (mask[:, 1:].sum()))
    ids = torch.from_numpy(tokens)
    labels = ids.masked_fill(torch.from_numpy(mask == 0), -100)
    reference_loss = reference(input_ids=ids, labels=labels).loss
    reference_loss.backward()
    assert count == int(mask[:, 1:].sum())
    assert loss_sum / count == pytest.approx(reference_loss.item(), rel=1e-5)
    ours_grads = {n: p.grad for n, p in ours.model.named_parameters() if p.requires_grad}
    for name, p in reference.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
