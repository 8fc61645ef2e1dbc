"""What the models return, shared by the text-speech model and the bare text LM (one training surface)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100  # a label that is not a target


class _CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy of logits (N, V) against targets (N,) in float32, a ``masked`` column (or None) out of
    the softmax. Keeps the log-probabilities (N, V), as autograd's cross-entropy does; its backward makes one
    (N, V) tensor where autograd's makes two (the NLL's zero-filled gradient and log-softmax's), plus a third
    for an in-place mask's backward: at a 49k vocabulary these are the step's largest element-wise passes."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, masked: int | None):
        ctx.set_materialize_grads(False)
        if masked is not None:  # as -inf logits: the column gets probability 0 and gradient 0
            logits.index_fill_(-1, torch.tensor([masked], device=logits.device), float("-inf"))
            ctx.mark_dirty(logits)
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
        ctx.save_for_backward(log_probs, targets)
        ctx.dtype = logits.dtype
        return -log_probs.gather(-1, targets[:, None]).sum(), logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: Tensor | None, _grad_logits: None):
        if grad_loss is None:
            return None, None, None
        log_probs, targets = ctx.saved_tensors
        grad = log_probs.exp()  # softmax - one-hot(target), times the loss's gradient
        grad.scatter_add_(-1, targets[:, None], grad.new_full((targets.shape[0], 1), -1.0))
        return grad.mul_(grad_loss).to(ctx.dtype), None, None


def cross_entropy_sum(logits: Tensor, targets: Tensor, masked: int | None = None) -> Tensor:
    """``F.cross_entropy(logits.float(), targets, reduction="sum")`` with column ``masked`` (if given) set to -inf
    first, in place (``logits`` are the caller's scratch: a head's fresh output), and a lighter backward."""
    from smoltolk.errors import InputError

    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise InputError(f"cross_entropy_sum: expected logits (N, V) and targets (N,), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    return _CrossEntropySum.apply(logits, targets, masked)[0]


def head_cross_entropy_sum(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor,
                           chunk: int | None = None, masked: int | None = None) -> Tensor:
    """Summed cross-entropy of ``head(hidden)`` (N, d) -> (N, V) against ``targets`` (N,), the ``masked`` column
    (if any) out of the softmax (see :func:`cross_entropy_sum`).

    ``chunk``: positions per piece. Each piece's logits are made, reduced to its loss and dropped; the
    backward pass makes them again (activation checkpointing of the head), so (N, V) logits never exist
    at once: with a 49k vocabulary they are most of a training step's activation memory. Same loss
    and gradients as one piece, up to float summation order.
    """
    def piece(h: Tensor, t: Tensor) -> Tensor:
        return cross_entropy_sum(head(h), t, masked)

    n = hidden.shape[0]
    if chunk is None or n <= chunk:
        return piece(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled()  # without gradients (validation) the pieces need no recomputation
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        total = total + (checkpoint(piece, h, t, use_reentrant=False) if grad else piece(h, t))
    return total


def logits_mode(logits: str, labels: Tensor | None) -> str:
    """Which logits a forward pass makes, for both model types: "all", "last" or "none"; "auto" is "none" when
    ``labels`` are given (training needs the loss only), else "all"."""
    if logits not in ("auto", "all", "last", "none"):
        from smoltolk.errors import InputError

        raise InputError(f"logits: expected 'auto', 'all', 'last' or 'none', got {logits!r}")
    return ("none" if labels is not None else "all") if logits == "auto" else logits


@dataclass
class LMOutput:
    """What :meth:`TextSpeechLM.forward` and :meth:`LlamaLM.forward` return. Logits are None unless asked for;
    speech fields are None for a text LM."""

    loss: Tensor | None = None  # LM loss - beta * entropy (what training minimises)
    lm_loss: Tensor | None = None  # token-weighted mean cross-entropy over both modalities
    text_loss: Tensor | None = None  # mean cross-entropy over text targets (nan if none)
    speech_loss: Tensor | None = None  # mean cross-entropy over speech targets (nan if none)
    num_text: Tensor | None = None  # number of scored text targets
    num_speech: Tensor | None = None  # number of scored speech targets
    entropy: Tensor | None = None  # mean selector entropy H(w): over speech-target positions given labels, else all
    text_logits: Tensor | None = None  # (B, T, V_text) or (B, 1, V_text) with logits="last"
    speech_logits: Tensor | None = None  # (B, T, V_speech) or (B, 1, V_speech)
    layer_weights: Tensor | None = None  # (B, T, L) dynamic weights w (dynamic pooling only)
    hidden_states: tuple[Tensor, ...] | None = None  # L + 1 x (B, T, d): backbone input, then each layer's output
    text_head_input: Tensor | None = None  # (B, T, d) what lm_head maps to text logits (return_head_inputs)
    speech_head_input: Tensor | None = None  # (B, T, d) what speech_head maps to speech logits (return_head_inputs)
