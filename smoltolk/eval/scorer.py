"""Likelihood scoring: log-probabilities of token spans of mixed text/speech sequences, in batches.

An :class:`Item` is a list of segments, each text or speech ids; the scorer joins them into one
sequence the way training data looks:

- a BOS first: the speech EOS when the item starts with speech (as the authors' evaluation
  does), the text BOS (if the backbone has one) when it starts with text;
- SWT (a text token, ``model.swt_id``) between two segments of different modality;
- the targets of ``segments[score_from:]`` are scored (``score_from=0``: the whole sequence;
  ``score_from=1`` with two segments: the continuation only). BOS and SWT are never scored.

The target at position t+1 is scored with the head of its own modality: log_softmax of the
text logits for a text target, of the speech logits for a speech target. Each head runs only
on the positions whose target it scores (the model returns the heads' inputs, see
``TextSpeechLM.forward(return_head_inputs=True)``); no logits are computed for context, BOS,
SWT or pads.

Items are sorted by length and grouped into batches of at most ``batch_tokens`` positions,
either right-padded (each item one row; causal attention never looks ahead at the pads, so no
mask is needed) or packed (several items per row, each its own document through ``doc_ids``:
attention never crosses items and positions restart at each).

Shared prefixes (``share_prefixes``, on by default): benchmark items come in tuples that share
a context (a StoryCloze story with its good and bad ending, scored whole or from the ending).
The built sequences are sorted, so items with a common prefix are neighbours, and the sorted
order is cut into runs: a run's shared prefix is the shortest common prefix of its neighbours
(ids, modality and scored flags agree exactly), at least ``min_shared`` positions; the cut is
the one that runs the fewest positions (see :meth:`LikelihoodScorer.shared_groups`). Each
group's shared prefix but its last position runs once (one left-padded row per group, many
groups per batch, the pads a document of their own), filling a KV cache of every stack; the
cache rows are then replicated per member (with room for the member's run) and each member
runs from the last shared position on (its output scores the first target after the prefix),
so an input-adapter speech run cut by the prefix continues as it would have. Scored targets
inside the prefix count once for each member. Items in no group use the layout above.

Every way gives the same numbers as scoring items one at a time (to float rounding).

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
from smoltolk.model.cache import Cache
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

    def window(self, start: int, stop: int | None = None) -> _Built:
        return _Built(self.ids[start:stop], self.speech[start:stop], self.scored[start:stop])


class LikelihoodScorer:
    """Score items with a text-speech LM (or a text backbone) in length-sorted batches.

    batch_tokens: at most this many positions per forward pass (a single longer item still
        runs, alone); a row that continues a cached shared prefix counts the prefix too.
    layout: "padded" (one item per row, right-padded) or "packed" (items share rows of
        ``pack_length`` positions, or the longest item's length if that is more).
    text_bos: the id put before items that start with text, or None for none (then the first
        text token has no context and is not scored).
    share_prefixes: run a prefix shared by several items once (see the module docstring);
        items that share none use ``layout``.
    min_shared: the shortest shared prefix (positions, BOS included) worth a run of its own.
    """

    def __init__(self, model: TextSpeechLM | LlamaLM, *, batch_tokens: int = 2048,
                 layout: Literal["padded", "packed"] = "padded", pack_length: int = 1024,
                 text_bos: int | None = None, share_prefixes: bool = True, min_shared: int = 8,
                 progress: bool = False) -> None:
        if layout not in ("padded", "packed"):
            raise ConfigError(f"layout: expected 'padded' or 'packed', got {layout!r}")
        if batch_tokens < 1 or pack_length < 1:
            raise ConfigError(f"batch_tokens ({batch_tokens}) and pack_length ({pack_length}) must be positive")
        if min_shared < 2:
            raise ConfigError(f"min_shared: expected at least 2 positions (BOS and one more), got {min_shared}")
        self.model = model
        self.batch_tokens, self.layout, self.pack_length = batch_tokens, layout, pack_length
        self.share_prefixes, self.min_shared = share_prefixes, min_shared
        self.progress = progress
        self.speech = model.speech_vocab is not None  # a text LM has none (smoltolk.model.protocol)
        if self.speech:
            self.text_vocab, self.speech_vocab = model.text_vocab_size, model.speech_vocab_size
            self.swt_id, self.speech_bos = model.swt_id, model.config.speech.eos_id
            self.num_units = model.config.speech.num_units
            self.text_head, self.speech_head = model.text_head, model.speech_head
        else:
            self.text_vocab, self.speech_vocab = model.config.vocab_size, 0
            self.swt_id = self.speech_bos = None
            self.num_units = 0
            self.text_head, self.speech_head = model.lm_head, None
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
        if self.layout == "padded":
            return [[[order[k]] for k in batch] for batch in _cut([lengths[i] for i in order], self.batch_tokens)]
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

    def shared_groups(self, built: list[_Built]) -> tuple[list[SharedGroup], list[int]]:
        """Groups of sequences that agree exactly (ids, modality, scored) on their first ``shared``
        >= ``min_shared`` positions, and the indices of the sequences in no group.

        The sequences are sorted, so a group is a run of neighbours and its shared length is the
        shortest common prefix of neighbours in the run. A group of m members sharing s positions
        runs s - 1 + sum(len - s) positions instead of sum(len - 1): it saves (m - 1)(s - 1).
        The rule: cut the sorted order into the runs that save the most positions in total
        (a dynamic program over the run ends; a run never spans a neighbour pair sharing fewer
        than ``min_shared`` positions, and holds at most ``_MAX_GROUP`` members, so the cost is
        linear in the number of items). So a group's shared length may shrink as it grows when
        that pays: four story endings after a 30-position context form one group of 4 sharing
        30 (saves 3 x 29) rather than a pair whose endings also share their first unit (31)
        and two items alone (saves 30); but a tight cluster is not merged into a neighbour that
        shares it only a short prefix. Extending greedily while a group's saving grows misses
        that: a pair sharing 12, then four sharing 40 that share only 10 with the pair, would
        make one group of 6 sharing 10 (saves 45) instead of two groups (saves 11 + 117).
        """
        keys = [tuple(zip(b.ids, b.speech, b.scored)) for b in built]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        n = len(order)
        # common[k]: positions sorted sequences k - 1 and k agree on
        common = [0] + [_common_prefix(keys[a], keys[b]) for a, b in zip(order, order[1:])]
        # best[i]: most positions saved by runs over the first i sorted sequences, the last run
        # starting at start[i] and sharing shared[i] positions (0: a sequence alone)
        best, start, shared = [0] * (n + 1), list(range(-1, n)), [0] * (n + 1)
        for i in range(1, n + 1):
            best[i] = best[i - 1]
            s = math.inf
            for j in range(i - 2, max(-1, i - 1 - _MAX_GROUP), -1):  # a run of sorted j..i-1
                s = min(s, common[j + 1])
                if s < self.min_shared:
                    break
                saved = best[j] + (i - 1 - j) * (s - 1)
                if saved > best[i]:
                    best[i], start[i], shared[i] = saved, j, s
        groups: list[SharedGroup] = []
        alone: list[int] = []
        i = n
        while i > 0:
            if shared[i]:
                groups.append(SharedGroup(shared[i], [order[k] for k in range(start[i], i)]))
            else:
                alone.append(order[i - 1])
            i = start[i]
        return groups[::-1], alone[::-1]

    # ----------------------------------------------------------------- scoring
    @torch.inference_mode()
    def score(self, items: Sequence[Item]) -> list[ItemScore]:
        """Summed log-prob and scored-token count of every item, in the order given."""
        built = [self.build(it) for it in items]
        sums = torch.zeros(len(items), dtype=torch.float64)
        counts = torch.zeros(len(items), dtype=torch.long)
        groups, alone = self.shared_groups(built) if self.share_prefixes else ([], list(range(len(built))))
        work = [(self._score_rows, [[alone[k] for k in row] for row in rows], sum(map(len, rows)))
                for rows in self._batches([len(built[i].ids) for i in alone])]
        by_prefix = sorted(groups, key=lambda g: -g.shared)
        work += [(self._score_shared, [by_prefix[k] for k in batch], sum(len(by_prefix[k].members) for k in batch))
                 for batch in _cut([g.shared for g in by_prefix], self.batch_tokens)]
        bar = None
        if self.progress:
            from smoltolk.progress import progress_bar

            bar = progress_bar(total=len(items), unit="item", desc="score", leave=False)
        for run, batch, num_items in work:
            s, c, owner = run(batch, built)
            sums.index_add_(0, owner, s)
            counts.index_add_(0, owner, c)
            if bar is not None:
                bar.update(num_items)
        if bar is not None:
            bar.close()
        return [ItemScore(float(s), int(n)) for s, n in zip(sums, counts)]

    def _score_rows(self, rows: list[list[int]], built: list[_Built]) -> tuple[Tensor, Tensor, Tensor]:
        """One batch of whole items (``rows``: row -> item indices): per scored target its
        log-prob, 1, and its item."""
        ids, speech, scored, owner, doc = _pack([[(i, built[i]) for i in row] for row in rows],
                                                docs=self.layout == "packed")
        logprob = self._logprobs(ids, speech, scored, doc, None)
        sel = scored[:, 1:]
        own = owner[:, 1:][sel]
        return logprob[sel], torch.ones_like(own), own

    def _score_shared(self, groups: list[SharedGroup], built: list[_Built]) -> tuple[Tensor, Tensor, Tensor]:
        """Each group's shared prefix once (one left-padded row per group, kept in a cache), then
        the rest of every member on top of its group's cached row. Returns per-item partial
        sums, counts and the items they belong to (an item may appear more than once)."""
        # prefix rows: inputs are positions 0..P-2, targets 1..P-1: every target the members share
        prefix = _pack([[(r, built[g.members[0]].window(0, g.shared))] for r, g in enumerate(groups)], left=True,
                       docs=True)
        ids, speech, scored, owner, doc = prefix
        cache = Cache()
        logprob = self._logprobs(ids, speech, scored, doc, cache, fill_cache=True)
        sel = scored[:, 1:]
        row = owner[:, 1:][sel]
        group_sum = torch.zeros(len(groups), dtype=torch.float64).index_add_(0, row, logprob[sel])
        group_count = torch.bincount(row, minlength=len(groups))
        members = [(i, r) for r, g in enumerate(groups) for i in g.members]
        member_row = torch.tensor([r for _, r in members])
        sums, counts = [group_sum[member_row]], [group_count[member_row]]
        owners = [torch.tensor([i for i, _ in members])]
        # the rest of a member starts at its last shared position: its output scores the first unshared
        # target; a member with no scored target after the prefix needs no run of its own
        rest = [(i, r, built[i].window(groups[r].shared - 1))
                for i, r in members if any(built[i].scored[groups[r].shared:])]
        rest.sort(key=lambda m: -len(m[2].ids))
        cached = ids.shape[1] - 1  # a row's copy of the cache counts against the budget too
        for chunk in _cut([cached + len(m[2].ids) for m in rest], self.batch_tokens):
            part = [rest[k] for k in chunk]
            ids, speech, scored, owner, _ = _pack([[(i, w)] for i, _, w in part])
            rows = torch.tensor([r for _, r, _ in part], device=self.device)
            # room for the chunk's inputs: the copied rows are written once and never regrown
            logprob = self._logprobs(ids, speech, scored, None, cache.select(rows, reserve=ids.shape[1] - 1))
            sel = scored[:, 1:]
            own = owner[:, 1:][sel]
            sums.append(logprob[sel])
            counts.append(torch.ones_like(own))
            owners.append(own)
        return torch.cat(sums), torch.cat(counts), torch.cat(owners)

    def _logprobs(self, ids: Tensor, speech: Tensor, scored: Tensor, doc: Tensor | None,
                  cache: Cache | None, fill_cache: bool = False) -> Tensor:
        """log p(ids[:, t+1] | ids[:, :t+1]) (B, T-1) float64 (CPU) at the scored targets, 0 elsewhere.

        The model runs on ids[:, :-1] (doc: their document ids, or None; cache: continue it);
        each head maps only the states whose target is scored and of its modality. Without a
        scored target the model does not run, unless ``fill_cache`` (the cache is read later).
        """
        tgt, tgt_speech, tgt_scored = ids[:, 1:], speech[:, 1:], scored[:, 1:]
        logprob = torch.zeros(tgt.shape, dtype=torch.float64)
        if ids.shape[1] < 2 or not (tgt_scored.any() or (fill_cache and cache is not None)):
            return logprob  # no targets, and no cache to fill
        device = self.device
        inputs, doc = ids[:, :-1].to(device), None if doc is None else doc[:, :-1].to(device)
        out = self.model(inputs, speech[:, :-1].to(device) if self.speech else None, doc_ids=doc, cache=cache,
                         logits="none", return_head_inputs=True)
        states = (out.text_head_input, out.speech_head_input)  # (B, T-1, d) each (speech: None for a text LM)
        for sel, h, head in ((tgt_scored & ~tgt_speech, states[0], self.text_head),
                             (tgt_scored & tgt_speech, states[1], self.speech_head)):
            if sel.any():
                logits = head(h[sel.to(device)]).float()  # (N, V)
                lp = torch.log_softmax(logits, dim=-1).gather(1, tgt[sel].to(device)[:, None])[:, 0]
                logprob[sel] = lp.double().cpu()
        return logprob


_MAX_GROUP = 64  # members per shared-prefix group: bounds the search (a larger group saves < 2% more)


@dataclass
class SharedGroup:
    """Items whose sequences agree exactly on their first ``shared`` positions."""

    shared: int
    members: list[int]


def _common_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading elements a and b share."""
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n


def _cut(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` (sorted longest first) in consecutive batches whose rows x longest
    length stays within ``budget`` (a batch holds at least one row)."""
    batches: list[list[int]] = []
    for k in range(len(lengths)):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


def _pack(rows: list[list[tuple[int, _Built]]], left: bool = False,
          docs: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Rows of (owner, sequence) pieces laid end to end, padded to the longest row on the right
    (or the left): ids, is_speech, scored, owner and (if ``docs``, else None) document ids, each
    (B, W). Piece k of a row is document k; pads have owner and document -1. A piece's first
    token is never a target (its context would be another piece)."""
    kinds = 5 if docs else 4  # ids, is_speech, scored, owner[, doc]
    columns: tuple[list[list], ...] = tuple([] for _ in range(kinds))
    width = max(sum(len(piece.ids) for _, piece in row) for row in rows)
    for row in rows:
        line: tuple[list, ...] = tuple([] for _ in range(kinds))
        for k, (i, piece) in enumerate(row):
            n = len(piece.ids)
            for values, new in zip(line, (piece.ids, piece.speech, [False, *piece.scored[1:]], [i] * n, [k] * n)):
                values.extend(new)
        for column, values, fill in zip(columns, line, (0, False, False, -1, -1)):
            pad = [fill] * (width - len(values))
            column.append(pad + values if left else values + pad)
    ids, speech, scored, owner, *doc = (torch.tensor(c, dtype=torch.bool if k in (1, 2) else torch.long)
                                        for k, c in enumerate(columns))
    return ids, speech, scored, owner, doc[0] if docs else None


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
