"""What the models return, shared by the text-speech model and the bare text LM (one training surface)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # a label that is not a target


def head_cross_entropy_sum(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor,
                           chunk: int | None = None) -> Tensor:
    """Summed cross-entropy of ``head(hidden)`` (N, d) -> (N, V) against ``targets`` (N,).

    ``chunk``: positions per piece. Each piece's logits are made, reduced to its loss and dropped; the
    backward pass makes them again (activation checkpointing of the head), so (N, V) logits never exist
    at once: with a 49k vocabulary they are most of a training step's activation memory. Same loss
    and gradients as one piece, up to float summation order.
    """
    def piece(h: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

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


@dataclass
class LMOutput:
    """What :meth:`TextSpeechLM.forward` (and :meth:`LlamaLM.forward` given labels) returns. Logits are None
    unless asked for; speech fields are None for a text LM."""

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
