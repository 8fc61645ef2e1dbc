"""Likelihood scoring: log-probabilities of token spans of mixed text/speech sequences, in batches.

An :class:`Item` is a list of segments, each text or speech ids; the scorer joins them into one
sequence the way training data looks:

- a BOS first: the speech EOS when the item starts with speech (as the authors' evaluation
  does), the text BOS (if the backbone has one) when it starts with text;
- SWT (a text token, ``model.swt_id``) between two segments of different modality;
- the targets of ``segments[score_from:]`` are scored (``score_from=0``: the whole sequence;
  ``score_from=1`` with two segments: the continuation only). BOS and SWT are never scored.

The target at position t+1 is scored with the head of its own modality: log_softmax of the
text logits for a text target, of the speech logits for a speech target. Items are sorted by
length and grouped into batches of at most ``batch_tokens`` tokens, either right-padded (each
item one row; causal attention never looks ahead at the pads, so no mask is needed) or packed
(several items per row, each its own document through ``doc_ids``: attention never crosses
items and positions restart at each).
Both layouts give the same numbers as scoring items one at a time.

The model is a :class:`~smoltolk.model.tslm.TextSpeechLM` or a plain
:class:`~smoltolk.model.llama.LlamaLM` (a text backbone: text-only items, no SWT).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from smoltolk.errors import CheckpointError, ConfigError, InputError
from smoltolk.model.llama import LlamaLM
from smoltolk.model.tslm import TextSpeechLM

Modality = Literal["text", "speech"]
Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class Segment:
    """One run of ids in one modality (text ids: the text vocabulary; speech ids: units)."""

    modality: Modality
    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.modality not in ("text", "speech"):
            raise InputError(f"segment modality: expected 'text' or 'speech', got {self.modality!r}")


@dataclass(frozen=True)
class Item:
    """Segments scored as one sequence; the targets of ``segments[score_from:]`` count."""

    segments: tuple[Segment, ...]
    score_from: int = 0
    name: str = ""  # for error messages

    def __post_init__(self) -> None:
        if not self.segments or not 0 <= self.score_from < len(self.segments):
            raise InputError(f"item {self.name!r}: needs segments and 0 <= score_from < {len(self.segments)}")
        for seg in self.segments:
            if not seg.ids:
                raise InputError(f"item {self.name!r}: an empty {seg.modality} segment")

    @property
    def has_speech(self) -> bool:
        return any(s.modality == "speech" for s in self.segments)


def speech_item(units: Sequence[int], name: str = "") -> Item:
    """A speech-only item scored whole (BOS = speech EOS)."""
    return Item((Segment("speech", tuple(int(u) for u in units)),), 0, name)


def text_item(ids: Sequence[int], name: str = "") -> Item:
    """A text-only item scored whole (after the text BOS, if any)."""
    return Item((Segment("text", tuple(int(i) for i in ids)),), 0, name)


def continuation_item(context: Segment, continuation: Segment, name: str = "") -> Item:
    """Context, then (SWT if the modality changes) the continuation; only the continuation is scored."""
    return Item((context, continuation), 1, name)


@dataclass(frozen=True)
class ItemScore:
    """Summed log-probability of an item's scored targets and how many there were."""

    logprob: float
    num_tokens: int

    @property
    def mean(self) -> float:
        return self.logprob / self.num_tokens if self.num_tokens else float("nan")

    def value(self, reduction: Reduction) -> float:
        return self.mean if reduction == "mean" else self.logprob


@dataclass
class _Built:
    ids: list[int]
    speech: list[bool]
    scored: list[bool]  # scored[i]: token i is a scored target (never i = 0)


class LikelihoodScorer:
    """Score items with a text-speech LM (or a text backbone) in length-sorted batches.

    batch_tokens: at most this many positions per forward pass (a single longer item still
        runs, alone). The text logits of a batch take batch_tokens x text vocab floats.
    layout: "padded" (one item per row, right-padded) or "packed" (items share rows of
        ``pack_length`` positions, or the longest item's length if that is more).
    text_bos: the id put before items that start with text, or None for none (then the first
        text token has no context and is not scored).
    """

    def __init__(self, model: TextSpeechLM | LlamaLM, *, batch_tokens: int = 2048,
                 layout: Literal["padded", "packed"] = "padded", pack_length: int = 1024,
                 text_bos: int | None = None, progress: bool = False) -> None:
        if layout not in ("padded", "packed"):
            raise ConfigError(f"layout: expected 'padded' or 'packed', got {layout!r}")
        if batch_tokens < 1 or pack_length < 1:
            raise ConfigError(f"batch_tokens ({batch_tokens}) and pack_length ({pack_length}) must be positive")
        self.model = model
        self.batch_tokens, self.layout, self.pack_length = batch_tokens, layout, pack_length
        self.progress = progress
        self.speech = isinstance(model, TextSpeechLM)
        if self.speech:
            self.text_vocab, self.speech_vocab = model.text_vocab_size, model.speech_vocab_size
            self.swt_id, self.speech_bos = model.swt_id, model.config.speech.eos_id
            self.num_units = model.config.speech.num_units
        else:
            self.text_vocab, self.speech_vocab = model.config.vocab_size, 0
            self.swt_id = self.speech_bos = None
            self.num_units = 0
        if text_bos is not None and not 0 <= text_bos < self.text_vocab:
            raise ConfigError(f"text_bos: id {text_bos} is outside the text vocabulary [0, {self.text_vocab})")
        self.text_bos = text_bos

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----------------------------------------------------------------- building sequences
    def build(self, item: Item) -> _Built:
        """The token sequence of an item, its modality per position and which targets count."""
        if item.has_speech and not self.speech:
            raise CheckpointError(f"item {item.name!r} has speech, but the model is a text-only backbone (no speech "
                                  "modules); score speech with a smoltolk text-speech checkpoint")
        ids: list[int] = []
        speech: list[bool] = []
        scored: list[bool] = []
        first = item.segments[0].modality
        bos = self.speech_bos if first == "speech" else self.text_bos
        if bos is not None:
            ids.append(bos)
            speech.append(first == "speech")
            scored.append(False)
        prev = None
        for k, seg in enumerate(item.segments):
            is_sp = seg.modality == "speech"
            self._check_ids(seg, item)
            if prev is not None and seg.modality != prev:
                ids.append(self.swt_id)
                speech.append(False)
                scored.append(False)
            ids.extend(seg.ids)
            speech.extend([is_sp] * len(seg.ids))
            scored.extend([k >= item.score_from] * len(seg.ids))
            prev = seg.modality
        scored[0] = False  # the first token has no context
        return _Built(ids, speech, scored)

    def _check_ids(self, seg: Segment, item: Item) -> None:
        limit = self.num_units if seg.modality == "speech" else self.text_vocab
        lo, hi = min(seg.ids), max(seg.ids)
        if lo < 0 or hi >= limit:
            what = "speech units" if seg.modality == "speech" else "text ids"
            raise InputError(f"item {item.name!r}: {what} must be in [0, {limit}), found {lo if lo < 0 else hi}"
                             + (" (units from a tokenizer with more centroids than the model has units?)"
                                if seg.modality == "speech" else ""))

    # ----------------------------------------------------------------- batching
    def _batches(self, lengths: list[int]) -> list[list[list[int]]]:
        """Item indices grouped into batches of rows: batch -> row -> items (longest first)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[list[int]]] = []
        if self.layout == "padded":
            batch: list[list[int]] = []
            for i in order:
                width = lengths[batch[0][0]] if batch else lengths[i]
                if batch and (len(batch) + 1) * width > self.batch_tokens:
                    batches.append(batch)
                    batch = []
                batch.append([i])
            if batch:
                batches.append(batch)
            return batches
        # packed: first-fit decreasing into rows of `capacity` positions
        capacity = max(self.pack_length, max(lengths, default=1))
        rows: list[list[int]] = []
        free: list[int] = []
        for i in order:
            for r, room in enumerate(free):
                if lengths[i] <= room:
                    rows[r].append(i)
                    free[r] -= lengths[i]
                    break
            else:
                rows.append([i])
                free.append(capacity - lengths[i])
        per_batch = max(1, self.batch_tokens // capacity)
        return [rows[k:k + per_batch] for k in range(0, len(rows), per_batch)]

    # ----------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(self, items: Sequence[Item]) -> list[ItemScore]:
        """Summed log-prob and scored-token count of every item, in the order given."""
        built = [self.build(it) for it in items]
        sums = torch.zeros(len(items), dtype=torch.float64)
        counts = torch.zeros(len(items), dtype=torch.long)
        batches = self._batches([len(b.ids) for b in built])
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), unit="item", desc="score", leave=False)
        for rows in batches:
            s, c, owner = self._score_batch(rows, built)
            sums.index_add_(0, owner, s)
            counts.index_add_(0, owner, c)
            if bar is not None:
                bar.update(sum(len(r) for r in rows))
        if bar is not None:
            bar.close()
        return [ItemScore(float(s), int(n)) for s, n in zip(sums, counts)]

    def _score_batch(self, rows: list[list[int]], built: list[_Built]) -> tuple[Tensor, Tensor, Tensor]:
        width = max(sum(len(built[i].ids) for i in row) for row in rows)
        b = len(rows)
        ids = torch.zeros(b, width, dtype=torch.long)
        speech = torch.zeros(b, width, dtype=torch.bool)
        scored = torch.zeros(b, width, dtype=torch.bool)
        owner = torch.full((b, width), -1, dtype=torch.long)  # item index of each position, -1 = pad
        doc = torch.zeros(b, width, dtype=torch.long)
        for r, row in enumerate(rows):
            pos = 0
            for k, i in enumerate(row):
                item, n = built[i], len(built[i].ids)
                ids[r, pos:pos + n] = torch.tensor(item.ids)
                speech[r, pos:pos + n] = torch.tensor(item.speech)
                scored[r, pos:pos + n] = torch.tensor(item.scored)
                owner[r, pos:pos + n] = i
                doc[r, pos:pos + n] = k
                pos += n
            doc[r, pos:] = len(row)  # pads: a document of their own (packed rows)
        device = self.device
        packed = self.layout == "packed"
        text_logits, speech_logits = self._logits(ids.to(device), speech.to(device), doc.to(device) if packed else None)
        # the logits at t score the target at t + 1
        tgt, tgt_speech, tgt_scored = ids[:, 1:], speech[:, 1:], scored[:, 1:]
        logprob = torch.zeros(b, width - 1, dtype=torch.float64)
        for sel, logits in ((tgt_scored & ~tgt_speech, text_logits), (tgt_scored & tgt_speech, speech_logits)):
            if sel.any():
                rows_logits = logits[:, :-1][sel.to(device)].float()  # (N, V)
                lp = torch.log_softmax(rows_logits, dim=-1).gather(1, tgt[sel].to(device)[:, None])[:, 0]
                logprob[sel] = lp.double().cpu()
        own = owner[:, 1:][tgt_scored]
        return logprob[tgt_scored], torch.ones_like(own), own

    def _logits(self, ids: Tensor, speech: Tensor, doc: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.speech:
            out = self.model(ids, speech, doc_ids=doc, logits="all")
            return out.text_logits, out.speech_logits
        return self.model(ids, doc_ids=doc), None


def pair_score(good: float, bad: float) -> float:
    """1 if the good option scores higher, 0.5 on a tie, else 0."""
    if math.isnan(good) or math.isnan(bad):
        raise InputError("a NaN score (an item with no scored tokens?)")
    return 1.0 if good > bad else 0.5 if good == bad else 0.0


def choice_score(scores: Sequence[float], gold: int) -> float:
    """Multiple choice: 1 if the gold option alone scores highest, 1/m if it ties with m-1 others."""
    best = max(scores)
    tied = [k for k, s in enumerate(scores) if s == best]
    return 1.0 / len(tied) if gold in tied else 0.0
