"""The decoder's element-wise pieces as autograd functions that keep less for the backward pass.

Each computes exactly what the plain expression computes (the same operations in the same order, so
the outputs are bit-identical) and differs only in what it keeps: the backward recomputes cheap
intermediates from the inputs instead of holding them. Per decoder layer and token at SmolLM-135M's
shapes a training step keeps 2,688 fewer floats of the 11,275 autograd keeps for the plain
expressions (RMSNorm's normalised copy of its input, twice, and SwiGLU's silu(gate)); the backward
does a few more element-wise operations. ``tests/test_ops.py`` checks values, gradients and what is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, rstd = ctx.saved_tensors
        normed = x.float() * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            low = normed.to(x.dtype)  # the forward multiplied the weight by this (in the promoted dtype)
            grad_weight = (grad * low).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = (grad * weight).to(x.dtype).float()  # rounded where the forward's product was
            grad_x = rstd * (g - normed * (g * normed).mean(-1, keepdim=True))
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_weight, None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``weight * (x / rms(x))`` computed in float32 and cast back to ``x``'s dtype (Llama's RMSNorm);
    keeps ``x`` and the per-position scale for the backward pass, not the normalised copy."""
    return _RMSNorm.apply(x, weight, eps)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up)
        return torch.nn.functional.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: Tensor):
        gate, up = ctx.saved_tensors
        # what autograd does for the plain expression (mul's backward, then silu's fused backward), so the
        # gradients are the same bits; silu(gate) is recomputed, one element-wise pass
        grad_gate = grad_up = None
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward((grad * up).to(gate.dtype), gate)
        if ctx.needs_input_grad[1]:
            grad_up = (grad * torch.nn.functional.silu(gate)).to(up.dtype)
        return grad_gate, grad_up


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """``silu(gate) * up``; keeps ``gate`` and ``up`` for the backward pass, not ``silu(gate)``."""
    return _SwiGLU.apply(gate, up)
