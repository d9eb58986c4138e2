"""PEFT's LoRA linear layer as one autograd function: the frozen product and the adapter's, fused.

PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as five autograd nodes, each
writing a fresh ``tokens x out_features`` tensor (the adapter's product, its scaled copy, the
sum) and, in the backward pass, as many again (the scaled gradient, two partial input
gradients and their sum). Here the adapter's rank-r product is added into the frozen layer's
output in place (``addmm_``, the scaling as its ``alpha``), and the backward pass adds the
adapter's share of the input gradient into the frozen layer's the same way. Same parameters,
same gradients (tests/test_torch_lora.py); only the order of float32 additions differs.

Used for plain LoRA with one active adapter whose weights share the input's dtype (float32 on a
CPU); anything else (DoRA, several adapters, a merged or disabled adapter, bfloat16 base with
float32 adapters on a GPU) takes PEFT's own forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        dropped: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        # dropped: the adapter's input after dropout, or None when dropout is off (then it is x)
        rows = x.reshape(-1, x.shape[-1])
        adapter_in = rows if dropped is None else dropped.reshape(-1, dropped.shape[-1])
        down = adapter_in @ lora_a.t()  # (tokens, r)
        out = F.linear(rows, weight, bias).addmm_(down, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(rows, adapter_in if dropped is not None else None, down, weight, lora_a, lora_b)
        ctx.scaling, ctx.has_bias, ctx.input_shape = scaling, bias is not None, x.shape
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        rows, dropped, down, weight, lora_a, lora_b = ctx.saved_tensors
        adapter_in = rows if dropped is None else dropped
        need_x, need_dropped, need_w, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        s = ctx.scaling
        g = grad_out.reshape(-1, grad_out.shape[-1])
        g_down = g @ lora_b  # (tokens, r): the gradient reaching the adapter's rank-r product, unscaled
        grad_x = grad_dropped = grad_w = grad_bias = grad_a = grad_b = None
        if need_x:
            grad_x = g @ weight
            if dropped is None:  # the adapter saw x itself: its share goes into the same buffer
                grad_x.addmm_(g_down, lora_a, alpha=s)
            grad_x = grad_x.reshape(ctx.input_shape)
        if need_dropped and dropped is not None:
            grad_dropped = (g_down @ lora_a).mul_(s).reshape(ctx.input_shape)
        if need_w:
            grad_w = g.t() @ rows
        if need_bias and ctx.has_bias:
            grad_bias = g.sum(0)
        if need_a:
            grad_a = (g_down.t() @ adapter_in).mul_(s)
        if need_b:
            grad_b = (g.t() @ down).mul_(s)
        return grad_x, grad_dropped, grad_w, grad_bias, grad_a, grad_b, None


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A LoRA layer's forward: fused when it is plain LoRA with one active adapter, PEFT's otherwise."""
    adapters = self.active_adapters
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or len(adapters) != 1
        or adapters[0] not in self.lora_A
        or adapters[0] in self.lora_variant
    ):
        return self._peft_forward(x, *args, **kwargs)
    name = adapters[0]
    base, lora_a, lora_b = self.base_layer, self.lora_A[name].weight, self.lora_B[name].weight
    if (
        self.fan_in_fan_out
        or type(base) is not torch.nn.Linear
        or not (x.dtype == base.weight.dtype == lora_a.dtype == lora_b.dtype)
    ):
        return self._peft_forward(x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    dropped = None if isinstance(dropout, torch.nn.Identity) else dropout(x)
    return _LoraLinear.apply(x, dropped, base.weight, base.bias, lora_a, lora_b, float(self.scaling[name]))


def fuse_lora_layers(model: torch.nn.Module) -> int:
    """Give every PEFT LoRA ``Linear`` layer of ``model`` the fused forward; returns how many."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and not hasattr(module, "_peft_forward"):
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
