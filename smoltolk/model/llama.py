"""A compact Llama-family decoder: RMSNorm, rotary embeddings, grouped-query attention through
``scaled_dot_product_attention``, SwiGLU MLP, tied or untied embeddings.

Module names follow Hugging Face's ``LlamaForCausalLM`` (minus its ``model.`` prefix), so
checkpoints map one to one. The decoder stack is a plain ``nn.ModuleList`` run by
:func:`run_layers`; the SmolTolk adapters are stacks of the same layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smoltolk.model.cache import Cache, KVCache, attention_mask, document_positions, run_starts
from smoltolk.model.config import BackboneConfig
from smoltolk.model.ops import rms_norm, swiglu
from smoltolk.model.outputs import IGNORE, LMOutput, head_cross_entropy_sum, logits_mode


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_inv_freq(cfg: BackboneConfig, theta: float) -> Tensor:
    """Inverse frequencies (head_dim/2,) for base ``theta`` and the config's scaling type."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if cfg.rope_type == "linear":
        inv_freq = inv_freq / cfg.rope_factor
    elif cfg.rope_type == "llama3":
        # Llama 3.1 frequency-dependent scaling.
        low_wavelen = cfg.rope_original_max_position / cfg.rope_low_freq_factor
        high_wavelen = cfg.rope_original_max_position / cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / cfg.rope_factor, inv_freq)
        smooth = (cfg.rope_original_max_position / wavelen - cfg.rope_low_freq_factor) / (
            cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
        smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    """cos/sin tables (B, T, head_dim) for given position ids; computed once per forward and
    shared by every layer (and, in the text-speech model, by the adapters)."""

    def __init__(self, cfg: BackboneConfig, theta: float | None = None) -> None:
        super().__init__()
        self.cfg, self.theta = cfg, cfg.rope_theta if theta is None else theta
        self.register_buffer("inv_freq", rope_inv_freq(cfg, self.theta), persistent=False)

    def reset_buffers(self) -> None:
        """Recompute the (non-persistent) frequency table, e.g. after building on the meta device."""
        self.inv_freq = rope_inv_freq(self.cfg, self.theta).to(self.inv_freq.device)

    def _apply(self, fn, recurse=True):
        # ``model.to(torch.bfloat16)`` must not round the frequencies: keep them float32 (as HF does)
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            self.inv_freq = rope_inv_freq(self.cfg, self.theta).to(self.inv_freq.device)
        return self

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (B, T, D)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=cfg.has_bias("q"))
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.has_bias("k"))
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=cfg.has_bias("v"))
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=cfg.has_bias("o"))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                kv: tuple[KVCache, int] | None) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if kv is not None:
            cache, layer = kv
            k, v = cache.update(layer, k, v)  # (B, Hkv, past + T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=cfg.has_bias("gate"))
        self.up_proj = nn.Linear(d, f, bias=cfg.has_bias("up"))
        self.down_proj = nn.Linear(f, d, bias=cfg.has_bias("down"))

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                kv: tuple[KVCache, int] | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


def run_layers(layers: nn.ModuleList, x: Tensor, cos: Tensor, sin: Tensor, seg: Tensor | None,
               cache: KVCache | None, collect: bool = False, checkpoint_layers: bool = False
               ) -> tuple[Tensor, list[Tensor]]:
    """Run a decoder stack over x (B, T, d).

    seg: (B, T) segment ids (see :mod:`smoltolk.model.cache`), None = one causal segment.
    ``checkpoint_layers``: activation checkpointing per layer when training (less memory, one more
    forward pass of each layer in the backward; same gradients).
    Returns the last layer's output and, if ``collect``, every layer's output.
    """
    if cache is None:
        mask = None if seg is None else attention_mask(seg, seg)
    else:
        if seg is None:
            seg = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        past = cache.length
        keys = cache.begin(seg)
        # a first chunk that is one segment (a prompt of one document, unpadded) needs no explicit mask:
        # the causal kernel does it (SDPA's is_causal aligns queries and keys at 0, true only when past == 0)
        one = past == 0 and bool((seg == seg[:, :1]).all())
        mask = None if one else attention_mask(seg, keys, past)
    outs: list[Tensor] = []
    recompute = checkpoint_layers and cache is None and torch.is_grad_enabled()
    for i, layer in enumerate(layers):
        if recompute:  # keep only each layer's input; its insides are recomputed in the backward pass
            from torch.utils.checkpoint import checkpoint

            x = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)
        else:
            x = layer(x, cos, sin, mask, None if cache is None else (cache, i))
        if collect:
            outs.append(x)
    if cache is not None:
        cache.commit(x.shape[1])
    return x, outs


def positions_and_segments(doc_ids: Tensor | None, position_ids: Tensor | None, shape: tuple[int, int],
                           device: torch.device, cache: Cache | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """Check and fill in position ids and document ids for a chunk of ``shape`` (B, T).

    Returns (position_ids, segment ids for the attention mask or None, document ids).
    Segment ids number the contiguous runs of equal document ids (so a document id that
    reappears later is still a new document). Positions restart at every document start; with
    a cache, a chunk without ``doc_ids`` continues the cached document, and positions continue.
    """
    from smoltolk.errors import InputError

    b, t = shape
    if t == 0:
        raise InputError("empty sequence: expected at least one position (shape (batch, time) with time >= 1)")
    for name, value in (("doc_ids", doc_ids), ("position_ids", position_ids)):
        if value is not None and tuple(value.shape) != (b, t):
            raise InputError(f"{name}: expected shape {(b, t)} like the input ids, got {tuple(value.shape)}")
    prev = cache.last if cache is not None else None
    if prev is not None and prev["doc"].shape[0] != b:
        raise InputError(f"cache holds a batch of {prev['doc'].shape[0]} sequences, this call has {b}; "
                         "use a new Cache for a new batch")
    if doc_ids is not None:
        doc = doc_ids
    elif prev is not None:
        doc = prev["doc"][:, None].expand(b, t)
    else:
        doc = torch.zeros(shape, dtype=torch.long, device=device)
    if position_ids is None:
        if doc_ids is None and prev is None:
            position_ids = torch.arange(t, device=device).expand(b, t)
        else:
            position_ids = document_positions(doc, None if prev is None else prev["doc"],
                                              None if prev is None else prev["pos"])
    if doc_ids is None and cache is None:
        return position_ids, None, doc
    ones = torch.ones_like(doc, dtype=torch.bool)
    starts = run_starts(ones, doc, None if prev is None else torch.ones_like(prev["doc"], dtype=torch.bool),
                        None if prev is None else prev["doc"])
    base = prev["seg"] if prev is not None else torch.zeros(b, dtype=torch.long, device=device)
    return position_ids, base[:, None] + torch.cumsum(starts.long(), dim=1), doc


class LlamaLM(nn.Module):
    """A Llama-family causal LM. ``forward`` gives an :class:`LMOutput` (logits, loss, hidden states), as
    :class:`TextSpeechLM` does; :meth:`hidden` runs the decoder stack over embeddings."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(cfg)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def set_rope_theta(self, theta: float) -> None:
        """Change the RoPE base (the paper raises it to 100,000 for speech training)."""
        self.config.rope_theta = theta  # so an exported backbone carries the base it runs with
        self.rotary.theta = theta
        self.rotary.reset_buffers()

    def hidden(self, inputs_embeds: Tensor, cos: Tensor, sin: Tensor, seg: Tensor | None = None,
               cache: KVCache | None = None, all_layers: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Decoder stack + final norm over embeddings (B, T, d).

        Returns the final normed output (B, T, d) and, if ``all_layers``, the L layer outputs
        (the last one after the final norm, as Hugging Face's ``hidden_states[1:]``).
        """
        x, outs = run_layers(self.layers, inputs_embeds, cos, sin, seg, cache, collect=all_layers,
                             checkpoint_layers=self.checkpoint_layers)
        x = self.norm(x)
        if all_layers:
            outs[-1] = x
        return x, outs

    def forward(self, input_ids: Tensor | None, is_speech: Tensor | None = None, *, labels: Tensor | None = None,
                labels_is_speech: Tensor | None = None, doc_ids: Tensor | None = None,
                position_ids: Tensor | None = None, cache: Cache | None = None, logits: str = "auto",
                return_hidden_states: bool = False, return_head_inputs: bool = False,
                inputs_embeds: Tensor | None = None) -> LMOutput:
        """Run the LM on token ids (B, T) (or ``inputs_embeds`` (B, T, d)): an :class:`LMOutput`, the same
        interface as :meth:`TextSpeechLM.forward` (its speech fields None).

        labels: (B, T) next-token targets (a :func:`shift_targets` batch; IGNORE is not scored): the loss.
        ``is_speech`` and ``labels_is_speech`` are accepted (a text LM's batches hold no speech) and unused.
        doc_ids (B, T): packed documents; attention never crosses a document boundary and default positions
        restart at each document. cache: a :class:`Cache` to decode incrementally (pass the same object on
        every call).
        logits: "all" ``text_logits`` (B, T, V), "last" (B, 1, V), "none"; "auto" = "none" with labels, else
        "all". return_hidden_states: ``hidden_states``, the embeddings then the L layer outputs (the last after
        the final norm), as Hugging Face's. return_head_inputs: ``text_head_input``, the final normed states
        (B, T, d) (``lm_head`` of them = the logits), for callers that need logits at a few positions only.
        """
        mode = logits_mode(logits, labels)
        if inputs_embeds is None:
            check_ids(input_ids, self.config.vocab_size, "input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        shape, device = inputs_embeds.shape[:2], inputs_embeds.device
        position_ids, seg, doc = positions_and_segments(doc_ids, position_ids, shape, device, cache)
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        kv = cache.stack("backbone", len(self.layers)) if cache is not None else None
        x, outs = self.hidden(inputs_embeds, cos, sin, seg, kv, all_layers=return_hidden_states)
        if cache is not None:
            cache.last = {"doc": doc[:, -1], "pos": position_ids[:, -1], "seg": seg[:, -1]}
            cache.length += shape[1]
        out = LMOutput(hidden_states=(inputs_embeds, *outs) if return_hidden_states else None,
                       text_head_input=x if return_head_inputs else None)
        if labels is not None:
            self._loss(out, x, labels)
        if mode != "none":
            out.text_logits = self.lm_head(x[:, -1:] if mode == "last" else x)
        return out

    def _loss(self, out: LMOutput, states: Tensor, labels: Tensor) -> None:
        scored = labels != IGNORE
        n = scored.sum()
        ce = head_cross_entropy_sum(self.lm_head, states[scored], labels[scored], self.loss_chunk)
        out.loss = out.lm_loss = ce / n.clamp(min=1)
        out.text_loss, out.num_text = ce / n, n

    # -------------------------------------------------- the training surface shared with TextSpeechLM
    checkpoint_layers = False  # activation checkpointing per decoder layer in training (run.activation_checkpointing)
    loss_chunk: int | None = None  # positions per piece of the head's loss (run.loss_chunk); None: one piece
    speech_vocab = None  # a text LM has no speech vocabulary (smoltolk.model.protocol.TrainableLM)

    def speech_parameters(self) -> dict[str, nn.Parameter]:
        return {}

    def set_memory_options(self, checkpoint_layers: bool = False, loss_chunk: int | None = None) -> None:
        """Trade compute for activation memory in training: recompute each decoder layer in the backward
        pass, and make the head's logits ``loss_chunk`` positions at a time. Results are unchanged."""
        self.checkpoint_layers, self.loss_chunk = checkpoint_layers, loss_chunk

    def scored_targets(self, labels: Tensor, labels_is_speech: Tensor | None, is_speech: Tensor | None
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """(text mask, speech mask, speech targets) of the targets the loss scores: every label that is one."""
        text = labels != IGNORE
        return text, torch.zeros_like(text), labels

    def write_files(self, directory: Path, state: dict[str, Tensor] | None = None) -> None:
        """``config.json`` + ``model.safetensors`` of ``state`` (default: this model's) into ``directory``, as a
        Hugging Face directory of its family (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...; ``model.``
        prefixes); not atomic (callers rename)."""
        import json

        from smoltolk.model.hf_config import hf_config_from_backbone
        from smoltolk.model.io import WEIGHTS, unique_state_dict, write_safetensors

        state = unique_state_dict(self) if state is None else state
        hf = {k if k.startswith("lm_head") else f"model.{k}": v.contiguous() for k, v in state.items()}
        (directory / "config.json").write_text(json.dumps(hf_config_from_backbone(self.config), indent=2) + "\n")
        write_safetensors(hf, directory / WEIGHTS, metadata={"format": "pt"})

    @staticmethod
    def state_from_files(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensor names of a Hugging Face checkpoint (``model.`` prefixes) -> this module's."""
        return {k.removeprefix("model."): v for k, v in state.items()}


def check_ids(ids: Tensor, vocab_size: int, name: str, where: Tensor | None = None) -> None:
    """Raise a clear error when any id (optionally only where ``where``) is outside [0, vocab_size)."""
    from smoltolk.errors import InputError

    if torch.compiler.is_compiling() or ids.numel() == 0:
        return
    sel = ids if where is None else ids[where]
    if sel.numel() == 0:
        return
    lo, hi = int(sel.min()), int(sel.max())
    if lo < 0 or hi >= vocab_size:
        bad = ((ids < 0) | (ids >= vocab_size))
        if where is not None:
            bad &= where
        pos = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(f"{name}: id {int(ids[pos])} at position {pos} is outside [0, {vocab_size})")


def init_weights(module: nn.Module, std: float) -> None:
    """Hugging Face-style init: normal(0, std) for linear and embedding weights, zero biases,
    ones for norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)
