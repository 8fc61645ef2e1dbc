"""Training-time samplers: speech-only and text-only windows, interleaved text-speech samples,
a mixture over modalities and datasets, and batches that resume exactly.

Every sample has a *global index* g and is drawn from ``numpy.random.default_rng([seed, g])``
alone, so the stream is a pure function of (seed, g): a resumed run continues at the saved index
and sees exactly the batches it would have seen, and ranks take disjoint slices of the same
global stream (rank r of W takes the r-th of W equal parts of each global batch). A run on W
processes therefore sees the same global batches as one process with W times the micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from smoltolk.data.interleave import InterleaveConfig, Interleaver
from smoltolk.data.prepare import SpeechShard, load_prepared
from smoltolk.errors import ConfigError, InputError

if TYPE_CHECKING:
    from smoltolk.model.protocol import SpeechVocab

MODALITIES = ("speech", "text", "interleaved")


@dataclass
class DatasetConfig:
    """One prepared corpus (a ``smoltolk prepare`` output directory) used as one modality."""

    path: str
    modality: str  # speech | text | interleaved (interleaved reads a speech corpus with word alignments)
    weight: float | None = None  # sampling weight within its modality; None = proportional to size
    name: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"data.datasets: modality must be one of {list(MODALITIES)}, got {self.modality!r}")
        if self.weight is not None and self.weight <= 0:
            raise ConfigError(f"data.datasets ({self.path}): weight must be positive, got {self.weight}")


@dataclass
class DataConfig:
    """What the samplers draw from. Paper: stage 1 interleaved only, stage 2 one third each."""

    datasets: list[DatasetConfig] = field(default_factory=list)
    modality_weights: dict[str, float] = field(
        default_factory=lambda: {"speech": 1 / 3, "text": 1 / 3, "interleaved": 1 / 3})
    context: int = 2048  # model input length; samples are context + 1 tokens
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    # The paper (and its release) lets attention run across the EOS-separated utterances and
    # documents of a window. Set true to give each its own document id instead (attention and
    # targets then never cross an EOS boundary).
    mask_documents: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.modality_weights) - set(MODALITIES)
        if unknown:
            raise ConfigError(f"data.modality_weights: unknown modalities {sorted(unknown)}")
        if any(w < 0 for w in self.modality_weights.values()) or sum(self.modality_weights.values()) <= 0:
            raise ConfigError("data.modality_weights must be non-negative with a positive sum")
        if self.context < 1:
            raise ConfigError(f"data.context must be positive, got {self.context}")


class Source:
    """A sampler of (ids, is_speech, eos) windows of one dataset."""

    size: int

    def sample(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class StreamSource(Source):
    """Windows of a flat token stream (speech units or text tokens, EOS after each record)."""

    def __init__(self, streams: list[np.ndarray], speech: bool, name: str) -> None:
        self.streams = [s for s in streams if len(s) > 0]
        if not self.streams:
            raise InputError(f"{name}: no tokens")
        self.lengths = np.array([len(s) for s in self.streams], dtype=np.int64)
        self.cum = np.cumsum(self.lengths)
        self.size = int(self.cum[-1])
        self.speech = speech

    def sample(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # a uniformly random start token; a window runs on into the following shards (cyclically)
        start = int(rng.integers(self.size))
        shard = int(np.searchsorted(self.cum, start, side="right"))
        offset = start - (int(self.cum[shard - 1]) if shard else 0)
        pieces, got = [], 0
        while got < length:
            piece = self.streams[shard][offset:offset + length - got]
            pieces.append(np.asarray(piece))
            got += len(piece)
            shard, offset = (shard + 1) % len(self.streams), 0
        ids = np.concatenate(pieces).astype(np.int64)
        return ids, np.full(length, self.speech)


class InterleavedSource(Source):
    """Interleaved samples from the aligned utterances of a prepared speech corpus."""

    def __init__(self, shards: list[SpeechShard], swt_id: int, text_eos_id: int, speech_eos_id: int,
                 cfg: InterleaveConfig, name: str) -> None:
        corpora = [s.aligned for s in shards if s.aligned is not None]
        if not corpora:
            raise InputError(f"{name}: no utterances with word alignments (needed for interleaving)")
        self.interleavers = [Interleaver(c, swt_id, text_eos_id, speech_eos_id, cfg) for c in corpora]
        words = np.array([c.num_words for c in corpora], dtype=np.float64)
        self.p = words / words.sum()
        self.size = int(sum(len(c.units) + len(c.tokens) for c in corpora))

    def sample(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.choice(len(self.interleavers), p=self.p)) if len(self.interleavers) > 1 else 0
        return self.interleavers[i].sample(length, rng)


class Mixture:
    """Samples of ``context + 1`` tokens from a mixture over modalities and datasets.

    A sample (:meth:`sample`) is a dict of numpy arrays, each of shape (context + 1,):
      tokens    int64  text-vocabulary ids where ``is_speech`` is False, speech ids elsewhere
      is_speech bool   modality of each token
      doc_ids   int64  document of each token (all 0 unless ``mask_documents``)
    """

    def __init__(self, cfg: DataConfig, swt_id: int | None, speech_eos_id: int | None,
                 text_eos_id: int | None = None, num_units: int | None = None) -> None:
        """``swt_id`` and ``speech_eos_id`` None: a text LM's mixture (text datasets only)."""
        self.cfg = cfg
        if swt_id is None or speech_eos_id is None:
            spoken = [ds for ds in cfg.datasets if ds.modality != "text"]
            if spoken:
                raise ConfigError(f"data.datasets: {spoken[0].path} is {spoken[0].modality} data, but a text LM (no "
                                  "speech modules) trains on text only; wrap it first (smoltolk wrap) or keep "
                                  "text datasets only")
        self.speech_eos_id = speech_eos_id
        self.sources: dict[str, list[tuple[Source, float]]] = {m: [] for m in MODALITIES}
        eos_seen = set()
        for ds in cfg.datasets:
            index, shards = load_prepared(ds.path)
            name = ds.name or ds.path
            if num_units is not None and index["kind"] == "speech" and index.get("num_units") != num_units:
                raise ConfigError(f"{ds.path}: prepared with num_units={index.get('num_units')}, but the model's "
                                  f"speech vocabulary has {num_units} units; re-run smoltolk prepare --num-units "
                                  f"{num_units}")
            eos = text_eos_id if text_eos_id is not None else index.get("text_eos_id")
            eos_seen.add(eos)
            if ds.modality == "text":
                if index["kind"] != "text":
                    raise InputError(f"{ds.path}: a {index['kind']} corpus cannot be the text modality")
                src: Source = StreamSource([s.stream for s in shards], speech=False, name=name)
            elif index["kind"] != "speech":
                raise InputError(f"{ds.path}: a {index['kind']} corpus cannot be the {ds.modality} modality")
            elif ds.modality == "speech":
                src = StreamSource([s.stream for s in shards], speech=True, name=name)
            else:
                src = InterleavedSource(shards, swt_id, eos, speech_eos_id, cfg.interleave, name)
            self.sources[ds.modality].append((src, ds.weight if ds.weight is not None else float(src.size)))
        self.text_eos_ids = eos_seen
        weights = {m: w for m, w in cfg.modality_weights.items() if w > 0}
        missing = [m for m in weights if not self.sources[m]]
        if missing:
            raise ConfigError(f"data: modality weights ask for {missing} but no dataset provides them")
        self.modalities = list(weights)
        self.modality_p = np.array([weights[m] for m in self.modalities]) / sum(weights.values())
        self.dataset_p = {m: np.array([w for _, w in s]) / sum(w for _, w in s) for m, s in self.sources.items() if s}

    @classmethod
    def for_model(cls, cfg: DataConfig, vocab: SpeechVocab | None) -> Mixture:
        """The mixture a model trains on: with its speech ids, or text only for a text LM (``vocab`` None)."""
        if vocab is None:
            return cls(cfg, None, None)
        return cls(cfg, vocab.swt_id, vocab.speech_eos_id, num_units=vocab.num_units)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """The sample with global index ``index`` (a pure function of the seed and the index)."""
        rng = np.random.default_rng([self.cfg.seed, index])
        m = self.modalities[int(rng.choice(len(self.modalities), p=self.modality_p))]
        sources = self.sources[m]
        src = sources[int(rng.choice(len(sources), p=self.dataset_p[m]))][0] if len(sources) > 1 else sources[0][0]
        length = self.cfg.context + 1
        tokens, is_speech = src.sample(length, rng)
        doc = np.zeros(length, dtype=np.int64)
        if self.cfg.mask_documents:
            eos = np.where(is_speech, tokens == self.speech_eos_id, np.isin(tokens, list(self.text_eos_ids)))
            doc[1:] = np.cumsum(eos[:-1])  # an EOS ends its document; the next token starts a new one
        return {"tokens": tokens, "is_speech": is_speech, "doc_ids": doc}


class BatchSampler:
    """Micro-batches for one rank, resumable exactly.

    Each item is a dict of torch tensors of shape (micro_batch, context + 1): ``tokens`` (int64),
    ``is_speech`` (bool), ``doc_ids`` (int64); feed it to ``smoltolk.model.tslm.shift_targets``.
    The micro-batch ``k`` of this rank holds global samples
    ``k // W_acc * G + (k % W_acc) * W * B + rank * B + i`` for i < B, where B = micro_batch,
    W = world_size, W_acc = grad_accum and G = B * W * W_acc (the global batch).
    """

    def __init__(self, mixture: Mixture, micro_batch: int, rank: int = 0, world_size: int = 1,
                 grad_accum: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside [0, {world_size})")
        self.mixture, self.micro_batch, self.rank, self.world_size = mixture, micro_batch, rank, world_size
        self.grad_accum = grad_accum
        self.micro_step = 0

    def indices(self, micro_step: int) -> list[int]:
        b, w = self.micro_batch, self.world_size
        step, acc = divmod(micro_step, self.grad_accum)
        base = step * b * w * self.grad_accum + acc * w * b + self.rank * b
        return list(range(base, base + b))

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> dict:
        import torch

        samples = [self.mixture.sample(i) for i in self.indices(self.micro_step)]
        self.micro_step += 1
        return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}

    def state_dict(self) -> dict:
        return {"micro_step": self.micro_step, "seed": self.mixture.cfg.seed, "micro_batch": self.micro_batch,
                "world_size": self.world_size, "grad_accum": self.grad_accum}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "micro_batch", "world_size", "grad_accum"):
            mine = self.mixture.cfg.seed if key == "seed" else getattr(self, key)
            if state.get(key) != mine:
                raise ConfigError(f"sampler state was saved with {key}={state.get(key)}, this run has {mine}; "
                                  "resuming would not replay the same batches")
        self.micro_step = int(state["micro_step"])

