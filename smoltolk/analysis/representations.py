"""What the analyses read from a model: dynamic layer weights, and per-layer representations.

Data: an aligned speech manifest (``smoltolk.data.manifest``: ``units`` + ``durations`` +
``frame_rate`` + ``words``, as ``smoltolk tokenize`` writes for a manifest with alignments).
Word i of an utterance spans units ``[end[i-1], end[i])`` (the paper's spoken word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoltolk.data.manifest import read_speech_manifest, read_text_manifest
from smoltolk.data.units import collapse, word_ends_to_collapsed
from smoltolk.errors import ConfigError, InputError
from smoltolk.model.tslm import TextSpeechLM


@dataclass
class AlignedUtterance:
    id: str
    units: np.ndarray  # (N,) collapsed units
    word_ends: np.ndarray  # (W,) exclusive end index of each word into ``units``
    words: list[str]


def read_aligned(path: str | Path) -> list[AlignedUtterance]:
    """Utterances of a speech manifest that carry units and word alignments (every record must)."""
    out = []
    for rec in read_speech_manifest(path):
        where = f"{path} (id {rec.id!r})"
        if rec.units is None or rec.words is None:
            raise InputError(f"{where}: needs 'units' and 'words' (word alignments); tokenize an aligned manifest "
                             "with `smoltolk tokenize` first")
        units = np.asarray(rec.units, dtype=np.int64)
        durations = np.asarray(rec.durations) if rec.durations is not None else None
        if durations is None:
            units, durations = collapse(units)
        ends = word_ends_to_collapsed(np.array([w.end for w in rec.words]), durations, rec.frame_rate, where)
        out.append(AlignedUtterance(rec.id, units, ends, [w.word for w in rec.words]))
    return out


# ---------------------------------------------------------------------------------------------------
# Windows of words
# ---------------------------------------------------------------------------------------------------


@dataclass
class Window:
    """A run of ``words`` words as text and (when it comes from speech) as units."""

    text: str
    units: np.ndarray | None


def speech_windows(utterances: Sequence[AlignedUtterance], n: int, words: int,
                   rng: np.random.Generator) -> list[Window]:
    """``n`` random runs of ``words`` consecutive words (with replacement), paired text and units."""
    starts = [(u, s) for u in utterances for s in range(len(u.words) - words + 1)]
    if not starts:
        raise InputError(f"no utterance has {words} words; use longer utterances or fewer words per window")
    out = []
    for k in rng.integers(0, len(starts), size=n):
        u, s = starts[k]
        lo = int(u.word_ends[s - 1]) if s > 0 else 0
        hi = int(u.word_ends[s + words - 1])
        if hi <= lo:
            raise InputError(f"utterance {u.id!r}: words {s}..{s + words - 1} cover no units")
        prefix = " " if s > 0 else ""  # mid-transcript words carry their leading space
        out.append(Window(prefix + " ".join(u.words[s:s + words]), u.units[lo:hi]))
    return out


def text_windows(path: str | Path, n: int, words: int, rng: np.random.Generator) -> list[Window]:
    """``n`` random runs of ``words`` whitespace-separated words from a text manifest."""
    docs = [r.text.split() for r in read_text_manifest(path)]
    starts = [(d, s) for d in range(len(docs)) for s in range(len(docs[d]) - words + 1)]
    if not starts:
        raise InputError(f"{path}: no document has {words} words")
    out = []
    for k in rng.integers(0, len(starts), size=n):
        d, s = starts[k]
        out.append(Window((" " if s > 0 else "") + " ".join(docs[d][s:s + words]), None))
    return out


# ---------------------------------------------------------------------------------------------------
# Model read-outs
# ---------------------------------------------------------------------------------------------------


def require_dynamic_pooling(model: TextSpeechLM, what: str) -> None:
    if model.config.speech.pooling != "dynamic":
        raise ConfigError(f"{what} needs a model with dynamic layer pooling; this one has "
                          f"speech.pooling={model.config.speech.pooling!r} (analyse it with intrinsic-dim and "
                          "overlap only)")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, batch = [], []
    for i in order:
        if batch and (len(batch) + 1) * lengths[batch[0]] > batch_tokens:
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + ([batch] if batch else [])


def _padded(seqs: list[tuple[list[int], bool]], idx: list[int], device: torch.device):
    width = max(len(seqs[i][0]) for i in idx)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    speech = torch.zeros(len(idx), width, dtype=torch.bool)
    for r, i in enumerate(idx):
        toks, is_sp = seqs[i]
        ids[r, :len(toks)] = torch.tensor(toks)
        speech[r, :len(toks)] = is_sp
    return ids.to(device), speech.to(device)


@torch.no_grad()
def layer_weights(model: TextSpeechLM, utterances: Sequence[AlignedUtterance],
                  batch_tokens: int = 8192) -> list[np.ndarray]:
    """Dynamic weights w (N + 1, L) of each utterance scored as ``[speech EOS, units...]``."""
    require_dynamic_pooling(model, "the layer-weight analyses")
    eos = model.config.speech.eos_id
    seqs = [([eos, *u.units.tolist()], True) for u in utterances]
    out: list[np.ndarray | None] = [None] * len(seqs)
    for idx in _batches([len(s[0]) for s in seqs], batch_tokens):
        ids, speech = _padded(seqs, idx, _device(model))
        w = model(ids, speech, logits="none", return_layer_weights=True).layer_weights.float().cpu().numpy()
        for r, i in enumerate(idx):
            out[i] = w[r, :len(seqs[i][0])]
    return out


def encode_windows(windows: Sequence[Window], modality: str, tokenizer: Any) -> list[tuple[list[int], bool]]:
    if modality == "speech":
        return [(w.units.tolist(), True) for w in windows]
    return [(tokenizer.encode(w.text, add_special_tokens=False).ids, False) for w in windows]


@torch.no_grad()
def final_representations(model: TextSpeechLM, seqs: Sequence[tuple[list[int], bool]],
                          batch_tokens: int = 8192, progress: bool = False) -> np.ndarray:
    """(L + 1, n, d) float32: each sequence's last-position state at the backbone input and after each layer."""
    n = len(seqs)
    reps = None
    batches = _batches([len(s[0]) for s in seqs], batch_tokens)
    if progress:
        from smoltolk.progress import progress_bar

        batches = progress_bar(batches, unit="batch", desc="representations", leave=False)
    for idx in batches:
        ids, speech = _padded(seqs, idx, _device(model))
        hidden = model(ids, speech, logits="none", return_hidden_states=True).hidden_states
        last = torch.tensor([len(seqs[i][0]) - 1 for i in idx], device=ids.device)
        rows = torch.arange(len(idx), device=ids.device)
        stacked = torch.stack([h[rows, last] for h in hidden]).float().cpu().numpy()  # (L + 1, b, d)
        if reps is None:
            reps = np.empty((stacked.shape[0], n, stacked.shape[2]), dtype=np.float32)
        reps[:, idx] = stacked
    return reps
