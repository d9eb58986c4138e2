"""The output layer and the cross-entropy of a training step, fused and computed in chunks of rows.

The plain path materialises every logit: ``tokens x vocabulary`` floats (100 MB for 508 tokens of
a 49,152-token vocabulary, 1.6 GB for 4 x 2048), then a log-softmax of the same size, then its
gradient: three such buffers, each written once and read once, mostly from fresh pages. Here the
logits of a few hundred rows at a time (`CHUNK_BYTES`) stay in cache: their log-sum-exp gives the loss, and their
softmax minus the one-hot target, weighted, is the gradient, which is turned straight away into the
gradients of the hidden states (and of the output weight when it is trained). The backward pass
then only scales what the forward pass kept. The same sums as ``F.cross_entropy`` on the full
logits, to float32 rounding (tests/test_torch_loss.py).
"""

from __future__ import annotations

import torch

# Logits per chunk, in bytes: 256 rows of a 49,152-token vocabulary (50 MB). Fewer rows make the
# output layer's products less efficient (64 rows: 0.76 s for the loss of 508 tokens, 256: 0.55-0.61 s,
# all at once: 0.65-0.69 s), and more only cost memory.
CHUNK_BYTES = 50 << 20


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, chunk_rows: int
    ) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Products in the hidden states' dtype (bfloat16 on a GPU), softmax and sums in float32.
        w = weight.to(hidden.dtype)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t, scale = hidden[rows], targets[rows], weights[rows]
            logits = (h @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            loss += ((lse - logits.gather(1, t[:, None]).squeeze(1)) * scale).sum()
            if need_hidden or need_weight:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' buffer
                grad[torch.arange(len(t), device=t.device), t] -= 1.0
                grad = grad.mul_(scale[:, None]).to(hidden.dtype)
                if grad_hidden is not None:
                    torch.mm(grad, w, out=grad_hidden[rows])
                if grad_weight is not None:
                    grad_weight += (grad.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_loss.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_loss).to(ctx.weight_dtype),
            None,
            None,
            None,
        )


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """``sum(weights * cross_entropy(hidden @ weight.T, targets))`` without holding all the logits.

    hidden: (rows, d); weight: (vocabulary, d), the output layer's; targets: (rows,) token ids;
    weights: (rows,) float32, 0 for positions that do not count.
    """
    rows = chunk_rows or max(16, CHUNK_BYTES // (4 * weight.shape[0]))
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, weights.float(), rows)
