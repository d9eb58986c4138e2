"""The fused, chunked output layer + cross-entropy gives the plain computation's loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from forgellm.training.torch_loss import linear_cross_entropy_sum


def _inputs(rows: int = 37, d: int = 24, vocab: int = 101, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, d, generator=g).to(dtype)
    weight = (torch.randn(vocab, d, generator=g) * 0.3).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    weights = (torch.rand(rows, generator=g) > 0.3).float()  # some positions do not count
    return hidden, weight, targets, weights


def _plain(hidden, weight, targets, weights):
    logits = (hidden @ weight.t()).float()
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


@pytest.mark.parametrize("chunk_rows", [1, 8, 37, 64])  # 8 does not divide 37 rows
def test_loss_and_gradients_equal_the_plain_computation(chunk_rows: int):
    hidden, weight, targets, weights = _inputs()
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    plain = _plain(h1, w1, targets, weights)
    fused = linear_cross_entropy_sum(h2, w2, targets, weights, chunk_rows)
    (plain * 0.5).backward()
    (fused * 0.5).backward()  # the backward pass scales by the loss's gradient
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-5, atol=1e-6)


def test_a_frozen_output_layer_gets_no_gradient_and_no_grad_mode_computes_only_the_loss():
    hidden, weight, targets, weights = _inputs()
    h = hidden.clone().requires_grad_()
    linear_cross_entropy_sum(h, weight, targets, weights, 8).backward()
    assert weight.grad is None and h.grad is not None
    with torch.no_grad():
        value = linear_cross_entropy_sum(hidden, weight, targets, weights)
    torch.testing.assert_close(value, _plain(hidden, weight, targets, weights), rtol=1e-5, atol=1e-4)
    assert value.grad_fn is None


def test_bfloat16_inputs_keep_bfloat16_gradients_and_a_float32_loss():
    hidden, weight, targets, weights = _inputs(dtype=torch.bfloat16)
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    fused = linear_cross_entropy_sum(h, w, targets, weights, 8)
    fused.backward()
    assert fused.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == torch.bfloat16
    torch.testing.assert_close(fused, _plain(hidden, weight, targets, weights), rtol=1e-3, atol=1e-2)
