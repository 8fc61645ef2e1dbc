"""smoltolk.model.ops: the same values as the plain expressions, correct gradients, and less kept for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoltolk.model.ops import rms_norm, swiglu


def plain_rms_norm(x, weight, eps):
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def plain_swiglu(gate, up):
    return F.silu(gate) * up


def kept_bytes(fn, *args) -> int:
    """Bytes of the distinct non-leaf storages autograd keeps for ``fn(*args)``'s backward."""
    leaves = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
    kept = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in leaves:
            kept[s.data_ptr()] = (s.nbytes(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(n for n, _ in kept.values())


def test_swiglu_gradients_are_exact_in_float64():
    # (rms_norm computes in float32 whatever its input, as Llama's: it is checked against autograd below)
    torch.manual_seed(0)
    g = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (g, u))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_are_bit_identical_and_gradients_match_autograd(dtype):
    torch.manual_seed(0)
    x = (3 * torch.randn(3, 7, 16)).to(dtype)
    w = torch.randn(16)  # a float32 parameter, as under bf16 autocast
    g, u = torch.randn(3, 7, 24).to(dtype), torch.randn(3, 7, 24).to(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for ours, plain, args, exact in (
            (lambda a, b: rms_norm(a, b, 1e-6), lambda a, b: plain_rms_norm(a, b, 1e-6), (x, w), False),
            (swiglu, plain_swiglu, (g, u), True)):  # swiglu's backward runs autograd's own operations
        a = [t.clone().requires_grad_() for t in args]
        b = [t.clone().requires_grad_() for t in args]
        out_a, out_b = ours(*a), plain(*b)
        assert out_a.dtype == out_b.dtype and torch.equal(out_a, out_b)
        dy = torch.randn_like(out_a)
        out_a.backward(dy)
        out_b.backward(dy)
        for ta, tb in zip(a, b, strict=True):
            assert ta.grad.dtype == tb.grad.dtype
            if exact:
                assert torch.equal(ta.grad, tb.grad)
            torch.testing.assert_close(ta.grad, tb.grad, **tol)


def test_frozen_norm_weight_gets_no_gradient_and_the_input_still_does():
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8)  # requires_grad=False, as a frozen backbone's in stage 1
    rms_norm(x, w, 1e-5).pow(2).sum().backward()
    ref = x.detach().clone().requires_grad_()
    plain_rms_norm(ref, w, 1e-5).pow(2).sum().backward()
    assert w.grad is None
    torch.testing.assert_close(x.grad, ref.grad)


def test_keeps_less_for_backward_than_the_plain_expressions():
    x = torch.randn(2, 64, 32, requires_grad=True)
    w = torch.randn(32, requires_grad=True)
    row = x.numel() * 4  # one float32 copy of the input
    # plain: x, the normalised copy and the scale; ours: x and the scale
    assert kept_bytes(lambda a, b: plain_rms_norm(a, b, 1e-5), x, w) - kept_bytes(
        lambda a, b: rms_norm(a, b, 1e-5), x, w) == row
    g, u = torch.randn(2, 64, 48, requires_grad=True), torch.randn(2, 64, 48, requires_grad=True)
    # plain: gate, up and silu(gate); ours: gate and up
    assert kept_bytes(plain_swiglu, g, u) - kept_bytes(swiglu, g, u) == g.numel() * 4
