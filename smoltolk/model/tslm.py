"""The text-speech LM: SmolTolk (paper Section 3.1) and regular vocabulary expansion (baseline).

Sequences mix modalities position by position: ``input_ids`` (B, T) holds a text-vocabulary id
at text positions and a speech-vocabulary id at speech positions; ``is_speech`` (B, T) says
which. Text vocabulary = the backbone's + the modality-switch token SWT (id = backbone vocab
size). Speech vocabulary = ``num_units`` units + speech EOS (id N) + PAD (id N+1) (+ "switch",
id N+2, with ``speech.predict_switch``).

Data flow (SmolTolk; each piece is a config switch, see ``SpeechConfig``)::

    z = text_embed(text ids) | speech_embed(speech ids)             merged input (B, T, d)
    x = z, with speech positions replaced by input_adapter(z)        causal within each speech run
    c_1..c_L = backbone layers(x)                                    c_L after the final norm
    text logits   = lm_head(c_L), SWT's column -inf unless speech.predict_switch
    c' = sum_l softmax(phi)_l c_l;  w = softmax(S(c'));  c_bar = sum_l w_l c_l
    speech logits = speech_head(output_adapter(c_bar + z))            speech_head tied to speech_embed
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from smoltolk.config import from_dict, to_dict
from smoltolk.errors import CheckpointError, ConfigError, InputError
from smoltolk.model.cache import Cache, speech_run_segments
from smoltolk.model.config import ModelConfig, SpeechConfig
from smoltolk.model.io import (
    WEIGHTS,
    atomic_directory,
    load_into,
    meta_build,
    read_json,
    read_weights,
    unique_state_dict,
    write_safetensors,
)
from smoltolk.model.llama import DecoderLayer, LlamaLM, check_ids, init_weights, positions_and_segments, run_layers
from smoltolk.model.outputs import IGNORE, LMOutput, head_cross_entropy_sum, logits_mode
from smoltolk.model.protocol import SpeechVocab

CHECKPOINT_FORMAT = "smoltolk.TextSpeechLM"


class TextSpeechLM(nn.Module):
    """SmolTolk, the baseline, or any Table 2 ablation, on a Llama-family backbone."""

    def __init__(self, cfg: ModelConfig, backbone: LlamaLM | None = None) -> None:
        super().__init__()
        self.config = cfg
        sp, bb = cfg.speech, cfg.backbone
        std = sp.init_std
        if backbone is None:
            backbone = LlamaLM(bb)
            init_weights(backbone, std)
        elif backbone.config.vocab_size != bb.vocab_size or backbone.config.num_layers != bb.num_layers:
            raise ConfigError(
                f"the backbone (vocab {backbone.config.vocab_size}, {backbone.config.num_layers} layers) does not "
                f"match config.backbone (vocab {bb.vocab_size}, {bb.num_layers} layers)")
        self.backbone = _with_switch_token(backbone, std)
        if sp.rope_theta is not None:
            self.backbone.set_rope_theta(sp.rope_theta)  # shared by backbone and adapters
        layer_cfg = self.backbone.config
        d, n_layers = bb.hidden_size, bb.num_layers
        self.speech_embed = nn.Embedding(sp.vocab_size, d)
        self.speech_head = nn.Linear(d, sp.vocab_size, bias=False)
        self.input_adapter = nn.ModuleList(DecoderLayer(layer_cfg) for _ in range(sp.input_adapter_layers))
        self.output_adapter = nn.ModuleList(DecoderLayer(layer_cfg) for _ in range(sp.output_adapter_layers))
        self.phi = nn.Parameter(0.01 * torch.randn(n_layers)) if sp.pooling != "last" else None
        self.layer_selector = nn.Linear(d, n_layers) if sp.pooling == "dynamic" else None
        for module in (self.speech_embed, self.input_adapter, self.output_adapter, self.layer_selector):
            if module is not None:
                init_weights(module, std)
        self.tie_weights()
        ref = self.backbone.embed_tokens.weight
        if not ref.is_meta:  # a pretrained backbone may live on a GPU or in bf16: new modules follow it
            self.to(device=ref.device, dtype=ref.dtype)

    # ----------------------------------------------------------------- vocabulary facts
    @property
    def swt_id(self) -> int:
        """The modality-switch token, the first id after the backbone's own vocabulary."""
        return self.config.backbone.vocab_size

    @property
    def speech_eos_id(self) -> int:
        return self.config.speech.eos_id

    @property
    def num_units(self) -> int:
        return self.config.speech.num_units

    @property
    def speech_vocab(self) -> SpeechVocab:
        """The speech ids the data and the benchmarks need (:class:`~smoltolk.model.protocol.TrainableLM`)."""
        return SpeechVocab(self.swt_id, self.speech_eos_id, self.num_units)

    @property
    def text_vocab_size(self) -> int:
        return self.config.backbone.vocab_size + 1

    @property
    def speech_vocab_size(self) -> int:
        return self.config.speech.vocab_size

    def tie_weights(self) -> None:
        self.speech_head.weight = self.speech_embed.weight

    def set_memory_options(self, checkpoint_layers: bool = False, loss_chunk: int | None = None) -> None:
        """Activation checkpointing per decoder layer (backbone and adapters) and the heads' losses in
        pieces of ``loss_chunk`` positions (see :meth:`LlamaLM.set_memory_options`)."""
        self.backbone.set_memory_options(checkpoint_layers, loss_chunk)

    def speech_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters that exist for speech (paper Table 5 'Speech params'); the rest is text/backbone."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("backbone.")}

    def text_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if n.startswith("backbone.")}

    # ----------------------------------------------------------------- forward
    def embed(self, input_ids: Tensor, is_speech: Tensor) -> Tensor:
        """Merged input embeddings z (B, T, d): text rows at text positions, speech rows at speech positions."""
        text = self.backbone.embed_tokens(input_ids.masked_fill(is_speech, 0))
        speech = self.speech_embed(input_ids.masked_fill(~is_speech, 0))
        return torch.where(is_speech[..., None], speech, text)

    def forward(
        self,
        input_ids: Tensor,
        is_speech: Tensor,
        *,
        labels: Tensor | None = None,
        labels_is_speech: Tensor | None = None,
        doc_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Cache | None = None,
        logits: str = "auto",
        return_layer_weights: bool = False,
        return_hidden_states: bool = False,
        return_head_inputs: bool = False,
    ) -> LMOutput:
        """Run the model on a mixed sequence (the module docstring's data flow, a few lines per step).

        input_ids, is_speech: (B, T) ids and modality of each input position.
        labels, labels_is_speech: (B, T) next-token targets and their modality; IGNORE (-100)
            is not scored, nor are PAD (speech) targets, nor SWT targets unless
            ``speech.predict_switch`` (see :meth:`_loss`). See :func:`shift_targets`.
        doc_ids: (B, T) document of each position for packed sequences; attention (backbone and
            both adapters) never crosses a document, positions restart at each document.
        cache: a :class:`Cache` for incremental decoding: pass the same object each call; each
            call then costs only the new positions' work in every stack.
        logits: "all" (B, T, V) for both heads, "last" (B, 1, V), "none"; "auto" = "none" when
            labels are given, else "all".
        return_hidden_states: also return the backbone's input (after the input adapter) and its
            L layer outputs (the last after the final norm), as Hugging Face's ``hidden_states``.
        return_head_inputs: also return what each head maps to logits, at every position:
            ``text_head_input`` (the backbone's final normed states; ``text_head`` of it
            = text logits) and ``speech_head_input`` (the layer-pooled backbone states, i.e. the
            final ones under ``speech.pooling="last"``, plus the input embeddings z if
            ``speech.residual``, then through the output adapter if the model has one;
            ``speech_head`` of it = speech logits). With ``logits="none"``, a caller that needs
            logits at a few positions only applies the heads to those rows (the likelihood
            scorer does).
        """
        mode = logits_mode(logits, labels)
        self._check_inputs(input_ids, is_speech, labels, labels_is_speech)
        sp = self.config.speech
        b, t = input_ids.shape
        z = self.embed(input_ids, is_speech)  # (B, T, d)
        position_ids, seg, doc = positions_and_segments(doc_ids, position_ids, (b, t), z.device, cache)
        cos, sin = self.backbone.rotary(position_ids, z.dtype)  # (B, T, head_dim)
        past = cache.length if cache is not None else 0
        prev = cache.last if cache is not None else None

        x, run = self._adapt_input(z, is_speech, cos, sin, doc, cache, past, prev)
        kv = cache.stack("backbone", len(self.backbone.layers)) if cache is not None else None
        final, layers = self.backbone.hidden(x, cos, sin, seg, kv,
                                             all_layers=sp.pooling != "last" or return_hidden_states)
        pooled, weights, entropy = self._pool(final, layers)  # entropy: (B, T) or None
        if sp.residual:
            pooled = pooled + z
        rows = None  # training: the output adapter over the rows that predict speech only (see _speech_rows)
        if (len(self.output_adapter) and self.speech_rows_only and labels is not None and mode == "none"
                and cache is None and not return_head_inputs):
            rows = self._speech_rows(labels, labels_is_speech, is_speech)
        pooled = self._adapt_output(pooled, cos, sin, seg, cache, rows)
        if cache is not None:
            cache.last = {"doc": doc[:, -1], "pos": position_ids[:, -1], "seg": seg[:, -1],
                          "is_speech": is_speech[:, -1], "run": (torch.zeros_like(doc) if run is None else run)[:, -1]}
            cache.length += t

        out = LMOutput(entropy=None if entropy is None else entropy.mean(),
                       layer_weights=weights if return_layer_weights else None,
                       hidden_states=(x, *layers) if return_hidden_states else None)
        if return_head_inputs:
            out.text_head_input, out.speech_head_input = final, pooled
        if labels is not None:
            self._loss(out, final, pooled, entropy, labels, labels_is_speech, is_speech, rows)
        if mode != "none":
            if mode == "last":
                final, pooled = final[:, -1:], pooled[:, -1:]
            out.text_logits = self.text_head(final)
            out.speech_logits = self.speech_head(pooled)
        return out

    def _adapt_input(self, z: Tensor, is_speech: Tensor, cos: Tensor, sin: Tensor, doc: Tensor,
                     cache: Cache | None, past: int, prev: dict | None) -> tuple[Tensor, Tensor | None]:
        """The backbone's input: ``z`` with speech positions through the input adapter (causal within each
        speech run), and the runs (None without an input adapter)."""
        if not len(self.input_adapter):
            return z, None
        in_seg, run = speech_run_segments(is_speech, doc, past, prev)
        if cache is None and self.adapter_speech_only:
            return self._adapt_speech_only(z, is_speech, cos, sin, in_seg), run
        kv = cache.stack("input_adapter", len(self.input_adapter)) if cache is not None else None
        adapted, _ = run_layers(self.input_adapter, z, cos, sin, in_seg, kv,
                                checkpoint_layers=self.backbone.checkpoint_layers)
        return torch.where(is_speech[..., None], adapted, z), run

    def _adapt_output(self, pooled: Tensor, cos: Tensor, sin: Tensor, seg: Tensor | None, cache: Cache | None,
                      rows: Tensor | None) -> Tensor:
        """The speech head's input: ``pooled`` through the output adapter, if the model has one (over ``rows``
        only where given)."""
        if not len(self.output_adapter):
            return pooled
        if rows is not None:
            out, _ = run_layers(self.output_adapter, pooled[rows], cos[rows], sin[rows],
                                None if seg is None else seg[rows], None,
                                checkpoint_layers=self.backbone.checkpoint_layers)
            return out
        kv = cache.stack("output_adapter", len(self.output_adapter)) if cache is not None else None
        out, _ = run_layers(self.output_adapter, pooled, cos, sin, seg, kv,
                            checkpoint_layers=self.backbone.checkpoint_layers)
        return out

    def _speech_rows(self, labels: Tensor, labels_is_speech: Tensor, is_speech: Tensor) -> Tensor:
        """(R,) indices of the rows holding a scored speech target, in order: in training, the only rows whose
        pooled states reach a head, so the output adapter (causal within a row) runs on them alone; a text-only
        row costs it nothing. At least one row, so that the adapter takes part in every graph (zero gradients
        without speech targets; DDP expects a gradient for every parameter)."""
        speech_sel = self.scored_targets(labels, labels_is_speech, is_speech)[1]
        rows = speech_sel.any(1).nonzero().flatten()
        return rows if rows.numel() else rows.new_zeros(1)

    speech_rows_only = True  # training: the output adapter over rows with speech targets only (False: every row)
    adapter_speech_only = True  # run the input adapter over speech positions only (no cache); False: everywhere

    def _adapt_speech_only(self, z: Tensor, is_speech: Tensor, cos: Tensor, sin: Tensor, seg: Tensor) -> Tensor:
        """The input adapter over the speech positions alone: they are gathered, in order, into (B, S) rows
        (S: the most speech positions of any row; shorter rows are filled with some of their text positions,
        which keep their own segment and attend only to themselves), run with their own positions and
        segment ids, so every speech position sees exactly the keys it saw in the full sequence, and
        scattered back. Text positions, which the adapter passes through, cost nothing."""
        counts = is_speech.sum(1)  # (B,); S below reads it on the host (a sync, and under torch.compile a
        # shape that changes from batch to batch: recompiles until dynamic shapes settle)
        # at least one position, so that the adapter takes part in every graph (zero gradients without
        # speech, as before; DDP expects a gradient for every parameter)
        s = max(1, int(counts.max()))
        order = torch.argsort((~is_speech).to(torch.int8), dim=1, stable=True)[:, :s]  # (B, S) speech first

        def gather(x: Tensor) -> Tensor:
            return torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))

        zg = gather(z)
        out, _ = run_layers(self.input_adapter, zg, gather(cos), gather(sin), torch.gather(seg, 1, order), None,
                            checkpoint_layers=self.backbone.checkpoint_layers)
        speech = torch.arange(s, device=z.device)[None, :] < counts[:, None]  # (B, S): not a filler
        out = torch.where(speech[..., None], out, zg)
        return z.scatter(1, order[..., None].expand(-1, -1, z.shape[-1]), out)

    def _pool(self, final: Tensor, layers: list[Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Layer pooling: (pooled (B, T, d), dynamic weights w (B, T, L) or None, the selector's entropy
        H(w) per position (B, T) or None).

        Sums run layer by layer (no (L, B, T, d) stack is materialised), so pooling costs no
        more activation memory than the layer outputs the backward pass keeps anyway.
        """
        mode = self.config.speech.pooling
        if mode == "last":
            return final, None, None
        fixed = torch.softmax(self.phi.float(), dim=0).to(final.dtype)  # (L,)
        c_prime = _weighted_sum(layers, fixed)  # (B, T, d)
        if mode == "fixed":
            return c_prime, None, None
        log_w = torch.log_softmax(self.layer_selector(c_prime).float(), dim=-1)  # (B, T, L)
        w = log_w.exp()
        entropy = -(w * log_w).sum(-1)
        return _weighted_sum(layers, w.to(final.dtype)), w, entropy

    def text_head(self, hidden: Tensor) -> Tensor:
        """Text logits of the backbone's final states (..., d) -> (..., V_text).

        Without ``speech.predict_switch`` SWT is never a text target, so its column is -inf: the
        text distribution stays over the backbone's own vocabulary (as the authors' code masks it),
        and a freshly wrapped model with the backbone's RoPE base scores text exactly as its
        backbone. With ``predict_switch`` the text head predicts SWT and the column stays.
        """
        logits = self.backbone.lm_head(hidden)
        if self._text_masked is not None:
            logits.index_fill_(-1, torch.tensor([self._text_masked], device=logits.device), float("-inf"))
        return logits

    @property
    def _text_masked(self) -> int | None:
        """The text head's column that is -inf (SWT without ``speech.predict_switch``), or None."""
        return None if self.config.speech.predict_switch else self.swt_id

    def scored_targets(self, labels: Tensor, labels_is_speech: Tensor, is_speech: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """Which targets the loss scores: (text mask, speech mask, speech targets), each (B, T).
        See :meth:`_loss` for the rules; the trainer counts targets with this before a forward pass."""
        sp = self.config.speech
        valid = labels != IGNORE
        swt = valid & ~labels_is_speech & (labels == self.swt_id)
        text_sel = valid & ~labels_is_speech & ~swt
        speech_sel = valid & labels_is_speech & (labels != sp.pad_id)
        speech_targets = labels
        if sp.predict_switch:
            switch_in_speech = swt & is_speech
            text_sel = text_sel | (swt & ~is_speech)
            speech_sel = speech_sel | switch_in_speech
            speech_targets = labels.masked_fill(switch_in_speech, sp.switch_id)
        return text_sel, speech_sel, speech_targets

    def _loss(self, out: LMOutput, final: Tensor, pooled: Tensor, entropy: Tensor | None, labels: Tensor,
              labels_is_speech: Tensor, is_speech: Tensor, rows: Tensor | None = None) -> None:
        """Token-weighted cross-entropy of both heads. PAD targets are never scored.

        The selector's entropy (``out.entropy``, and the bonus ``speech.entropy_beta`` x it) is its
        mean over the positions that predict a speech target, the only ones whose pooled state is
        used (the authors pool there only); a batch without speech targets has none (0).

        SWT targets (a text label equal to ``swt_id``) are skipped unless ``speech.predict_switch``.
        Then an SWT is scored in the head of the modality it ends, told by the *input* position
        that predicts it: after a text input, in the text head (class ``swt_id``); after a speech
        input, in the speech head as the switch row (class ``speech.switch_id``).
        """
        sp = self.config.speech
        text_sel, speech_sel, speech_targets = self.scored_targets(labels, labels_is_speech, is_speech)
        chunk = self.backbone.loss_chunk
        # the head's module itself (its hooks run), the mask inside the loss: as text_head, with a lighter backward
        text_sum = head_cross_entropy_sum(self.backbone.lm_head, final[text_sel], labels[text_sel], chunk,
                                          masked=self._text_masked)
        # pooled holds the rows ``rows`` only when given (the same speech targets, in the same order)
        speech_rows = (speech_sel, speech_targets) if rows is None else (speech_sel[rows], speech_targets[rows])
        speech_sum = head_cross_entropy_sum(self.speech_head, pooled[speech_rows[0]], speech_rows[1][speech_rows[0]],
                                            chunk)
        n_text, n_speech = text_sel.sum(), speech_sel.sum()
        out.num_text, out.num_speech = n_text, n_speech
        out.text_loss = text_sum / n_text
        out.speech_loss = speech_sum / n_speech
        out.lm_loss = (text_sum + speech_sum) / (n_text + n_speech).clamp(min=1)
        out.loss = out.lm_loss
        if entropy is not None:
            out.entropy = (entropy * speech_sel).sum() / n_speech.clamp(min=1)
            if sp.entropy_beta > 0:
                out.loss = out.lm_loss - sp.entropy_beta * out.entropy

    def _check_inputs(self, input_ids: Tensor, is_speech: Tensor, labels: Tensor | None,
                      labels_is_speech: Tensor | None) -> None:
        if input_ids.dim() != 2:
            raise InputError(f"input_ids: expected shape (batch, time), got {tuple(input_ids.shape)}")
        if is_speech.shape != input_ids.shape or is_speech.dtype != torch.bool:
            raise InputError(f"is_speech: expected a bool tensor of shape {tuple(input_ids.shape)}, "
                             f"got {is_speech.dtype} {tuple(is_speech.shape)}")
        if not torch.compiler.is_compiling():
            _check_modal_ids(input_ids, is_speech, self.text_vocab_size, self.speech_vocab_size, "input_ids")
        if labels is None:
            return
        if labels_is_speech is None or labels.shape != input_ids.shape or labels_is_speech.shape != input_ids.shape:
            raise InputError("labels and labels_is_speech must both be given, shaped like input_ids")
        if not torch.compiler.is_compiling():
            scored = labels != IGNORE
            _check_modal_ids(labels.masked_fill(~scored, 0), labels_is_speech, self.text_vocab_size,
                             self.speech_vocab_size, "labels")

    # ----------------------------------------------------------------- construction and checkpoints
    @classmethod
    def from_backbone(cls, backbone: LlamaLM, speech: SpeechConfig | None = None) -> TextSpeechLM:
        """Wrap a (pretrained) backbone; new modules, the SWT row and the speech table are fresh.

        The model takes ownership of ``backbone``: its embedding (and untied head) grow by the
        SWT row and its RoPE base follows ``speech.rope_theta``.
        """
        cfg = ModelConfig(backbone=dataclasses.replace(backbone.config), speech=speech or SpeechConfig())
        return cls(cfg, backbone)

    def save_pretrained(self, directory: str | Path, tokenizer_file: str | Path | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to a temporary directory, then rename it
        over ``directory`` (an interrupted save never leaves a half-written checkpoint).

        ``tokenizer_file``: a ``tokenizer.json`` to keep beside the weights (generation and the
        CLI look for it there). Without it, a ``tokenizer.json`` already in ``directory`` is kept.
        """
        directory = Path(directory)
        tokenizer = Path(tokenizer_file) if tokenizer_file is not None else directory / "tokenizer.json"
        if tokenizer_file is not None and not tokenizer.is_file():
            raise CheckpointError(f"{tokenizer}: missing (expected a tokenizer.json to store with the checkpoint)")
        tokenizer_bytes = tokenizer.read_bytes() if tokenizer.is_file() else None
        with atomic_directory(directory, replaceable=_is_checkpoint) as tmp:
            self.write_files(tmp)
            if tokenizer_bytes is not None:
                (tmp / "tokenizer.json").write_bytes(tokenizer_bytes)
        return directory

    def write_files(self, directory: Path, state: dict[str, Tensor] | None = None) -> None:
        """``config.json`` + ``model.safetensors`` of ``state`` (default: this model's, tied copies once) into
        ``directory``; not atomic (:meth:`save_pretrained` and the trainer's checkpoints write into a
        temporary directory and rename it). The one writer of this format."""
        state = unique_state_dict(self) if state is None else state
        meta = {"format": CHECKPOINT_FORMAT, "version": 1, "model": to_dict(self.config)}
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_safetensors(state, directory / WEIGHTS, metadata={"format": "pt", "smoltolk": CHECKPOINT_FORMAT})

    @staticmethod
    def state_from_files(state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Tensor names as :meth:`write_files` stores them -> this module's (the same)."""
        return state

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> TextSpeechLM:
        """Load a checkpoint written by :meth:`save_pretrained` (safetensors only, never a pickle)."""
        directory = Path(directory)
        cfg = read_model_config(directory)
        model = meta_build(lambda: cls(cfg))
        with torch.device(device):
            load_into(model, read_weights(directory), directory, dtype=dtype)
        return model.to(device)


def _is_checkpoint(directory: Path) -> bool:
    """A directory holding only a smoltolk checkpoint (safe for a new save to replace)."""
    try:
        marked = json.loads((directory / "config.json").read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False
    return marked and {p.name for p in directory.iterdir()} <= {"config.json", WEIGHTS, "tokenizer.json"}


def read_model_config(directory: Path) -> ModelConfig:
    meta = read_json(directory / "config.json")
    if meta.get("format") != CHECKPOINT_FORMAT:
        hint = " (a Hugging Face text LM? wrap it with TextSpeechLM.from_backbone)" if "model_type" in meta else ""
        raise CheckpointError(f"{directory / 'config.json'}: not a smoltolk checkpoint{hint}")
    return from_dict(ModelConfig, meta.get("model", {}), where=str(directory / "config.json"))


def shift_targets(tokens: Tensor, is_speech: Tensor, doc_ids: Tensor | None = None) -> dict[str, Tensor]:
    """Turn sequences of T+1 tokens (B, T+1) into model inputs and next-token labels (B, T).

    A target in a different document from its input position is IGNORE (never scored), so
    packed documents never predict each other.
    """
    labels = tokens[:, 1:].clone()
    batch = {"input_ids": tokens[:, :-1], "is_speech": is_speech[:, :-1], "labels_is_speech": is_speech[:, 1:]}
    if doc_ids is not None:
        labels[doc_ids[:, 1:] != doc_ids[:, :-1]] = IGNORE
        batch["doc_ids"] = doc_ids[:, :-1]
    batch["labels"] = labels
    return batch


def _weighted_sum(layers: list[Tensor], weights: Tensor) -> Tensor:
    """sum_l weights[..., l] * layers[l]; weights (L,) or (B, T, L); layers L x (B, T, d)."""
    out = None
    for i, h in enumerate(layers):
        w = weights[i] if weights.dim() == 1 else weights[..., i:i + 1]
        out = h * w if out is None else torch.addcmul(out, h, w)
    return out




def _check_modal_ids(ids: Tensor, is_speech: Tensor, text_vocab: int, speech_vocab: int, name: str) -> None:
    if ids.numel() == 0:
        return
    text_ids = ids.masked_fill(is_speech, 0)
    if int(text_ids.max()) >= text_vocab or int(text_ids.min()) < 0:
        bad = ((ids >= text_vocab) | (ids < 0)) & ~is_speech
        pos = tuple(int(i) for i in bad.nonzero()[0])
        value = int(ids[pos])
        hint = (" (a speech id in a text position? mark speech positions in is_speech; speech ids are "
                "0..num_units+1 in their own vocabulary)" if value >= text_vocab else "")
        raise InputError(f"{name}: text id {value} at position {pos} is outside [0, {text_vocab}){hint}")
    check_ids(ids, speech_vocab, f"{name} (speech positions)", where=is_speech)


def _with_switch_token(backbone: LlamaLM, std: float) -> LlamaLM:
    """The backbone with one more text row (SWT), initialised N(0, std); the head grows with it."""
    old = backbone.config
    cfg = dataclasses.replace(old, vocab_size=old.vocab_size + 1)
    emb = backbone.embed_tokens
    new_emb = nn.Embedding(cfg.vocab_size, old.hidden_size, device=emb.weight.device, dtype=emb.weight.dtype)
    with torch.no_grad():
        new_emb.weight[:-1].copy_(emb.weight)
        nn.init.normal_(new_emb.weight[-1:], std=std)
    backbone.embed_tokens = new_emb
    if not cfg.tie_word_embeddings:
        head = backbone.lm_head
        new_head = nn.Linear(old.hidden_size, cfg.vocab_size, bias=False, device=head.weight.device,
                             dtype=head.weight.dtype)
        with torch.no_grad():
            new_head.weight[:-1].copy_(head.weight)
            nn.init.normal_(new_head.weight[-1:], std=std)
        backbone.lm_head = new_head
    backbone.config = cfg
    backbone.tie_weights()
    return backbone


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """Text and speech parameter counts of a config, computed on the meta device (no memory)."""
    model = meta_build(lambda: TextSpeechLM(cfg))
    text = sum(p.numel() for p in model.text_parameters().values())
    speech = sum(p.numel() for p in model.speech_parameters().values())
    return {"text": text, "speech": speech, "total": text + speech}



