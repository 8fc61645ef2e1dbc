"""What the models return, shared by the text-speech model and the bare text LM (one training surface)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

IGNORE = -100  # a label that is not a target


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
