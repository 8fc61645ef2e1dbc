"""Generation: continue a mixed text/speech prompt in text, in speech, or in either.

A **prompt** is a sequence of segments: a string (text, tokenised with a ``tokenizers.Tokenizer``),
:class:`Text` (text ids already tokenised), :class:`Speech` or a plain list of ints (speech unit
ids). Strings are tokenised without special tokens (no BOS: training data has none; pass
``Text([bos, ...])`` to add one). Consecutive segments of different modality are joined with
SWT, as in training. The output modality is asked for with ``to``:

* ``"text"`` / ``"speech"``: if the prompt ends in the other modality an SWT is appended, then the
  model continues in the asked modality only (it is never allowed to switch).
* ``"either"``: the model continues in the prompt's last modality; if it was trained with
  ``speech.predict_switch`` it may switch on its own: when the active head predicts the switch
  (SWT in the text head, the switch row in the speech head) an SWT is emitted and the other head
  takes over (at least one token before it may switch back). Without ``predict_switch`` (the
  paper's setting) it never switches.

Decoding is incremental: the prompt fills the KV caches of the backbone and both adapters once
(prefill), then every new token costs one position's work in each stack. Prompts of different
lengths are batched by left-padding; pad positions form their own document (doc id -1), so real
tokens never attend to them and their positions start at 0, exactly as if each prompt ran alone.

Sampling: ``temperature`` (0 = greedy), ``top_k``, ``top_p`` (nucleus), a ``seed`` for a private
``torch.Generator`` (same seed, same batch -> same tokens). Speech PAD is never sampled.
Generation of a row stops at the active modality's EOS (text: ``backbone.eos_token_id`` if the
backbone has one; speech: unit EOS) or after ``max_new_tokens`` new tokens (SWT and EOS count).

The same code generates text with a bare :class:`~smoltolk.model.llama.LlamaLM` (text prompts only).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from smoltolk.errors import ConfigError, InputError
from smoltolk.files import read_text
from smoltolk.model.cache import Cache
from smoltolk.model.llama import LlamaLM
from smoltolk.model.tslm import TextSpeechLM

Modality = Literal["text", "speech", "either"]
Kind = Literal["token", "switch", "eos"]


@dataclass(frozen=True)
class Text:
    """A text segment given as token ids (text vocabulary, without SWT)."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class Speech:
    """A speech segment: unit ids 0..num_units-1, optionally ending in the speech EOS (num_units)."""

    units: tuple[int, ...]


Segment = str | Text | Speech | Sequence[int]


@dataclass
class GenerationConfig:
    """How to generate. ``temperature=0`` is greedy decoding (top-k / top-p are then irrelevant)."""

    to: Modality = "either"  # output modality; "either" continues the prompt's last one (see module doc)
    max_new_tokens: int = 256  # new positions per row, SWT and EOS included
    temperature: float = 1.0
    top_k: int | None = None  # keep the k most likely tokens (None: all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # None: torch's global RNG
    stop_at_eos: bool = True  # stop a row at the active modality's EOS
    use_cache: bool = True  # False: recompute the whole sequence for every token (reference / benchmark)

    def __post_init__(self) -> None:
        if self.to not in ("text", "speech", "either"):
            raise ConfigError(f"generation.to must be 'text', 'speech' or 'either', got {self.to!r}")
        if self.max_new_tokens < 0:
            raise ConfigError(f"generation.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"generation.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"generation.top_k must be >= 1 or None, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"generation.top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GeneratedToken:
    """One new token of one row, as the stream yields it.

    ``id`` indexes the speech vocabulary when ``is_speech``, else the text vocabulary. ``kind`` is
    "switch" for an SWT (always a text id), "eos" for the active modality's EOS, else "token".
    """

    row: int
    index: int  # position among the row's new tokens, from 0
    id: int
    is_speech: bool
    kind: Kind


@dataclass
class Generation:
    """All new tokens of one row, in order (SWT and EOS included), and why generation stopped."""

    ids: list[int] = dataclasses.field(default_factory=list)
    is_speech: list[bool] = dataclasses.field(default_factory=list)
    kinds: list[Kind] = dataclasses.field(default_factory=list)
    finish_reason: Literal["eos", "length"] = "length"

    def segments(self) -> list[tuple[Literal["text", "speech"], list[int]]]:
        """The output split at every SWT into (modality, ids) runs; SWT and EOS left out."""
        out: list[tuple[Literal["text", "speech"], list[int]]] = []
        for i, speech, kind in zip(self.ids, self.is_speech, self.kinds, strict=True):
            if kind != "token":
                continue
            modality = "speech" if speech else "text"
            if not out or out[-1][0] != modality:
                out.append((modality, []))
            out[-1][1].append(i)
        return out

    @property
    def text_ids(self) -> list[int]:
        """Every new text token (SWT and EOS left out)."""
        return [i for i, s, k in zip(self.ids, self.is_speech, self.kinds, strict=True) if k == "token" and not s]

    @property
    def units(self) -> list[int]:
        """Every new speech unit (EOS left out)."""
        return [i for i, s, k in zip(self.ids, self.is_speech, self.kinds, strict=True) if k == "token" and s]

    def text(self, tokenizer: Any) -> str:
        return tokenizer.decode(self.text_ids)


# ----------------------------------------------------------------------------- sampling
def sample_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Next token ids (B,) from logits (B, V). Entries set to -inf are never chosen.

    temperature 0 = argmax; otherwise softmax(logits / temperature) restricted to the top-k tokens
    and to the smallest prefix (by probability) whose mass reaches top_p, then one draw.
    """
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
        drop = before >= top_p  # the most likely token always stays (before = 0)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ----------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class _Vocab:
    """The ids generation needs, for a TextSpeechLM or a bare LlamaLM (no speech, no SWT)."""

    text_size: int
    swt: int | None
    text_eos: int | None
    speech_eos: int | None = None
    speech_pad: int | None = None
    speech_switch: int | None = None  # the speech head's "switch" row (speech.predict_switch)
    learned_switch: bool = False

    @classmethod
    def of(cls, model: TextSpeechLM | LlamaLM) -> _Vocab:
        if model.speech_vocab is None:  # a text LM (smoltolk.model.protocol)
            return cls(text_size=model.config.vocab_size, swt=None, text_eos=model.config.eos_token_id)
        sp = model.config.speech
        return cls(text_size=model.text_vocab_size, swt=model.swt_id, text_eos=model.config.backbone.eos_token_id,
                   speech_eos=sp.eos_id, speech_pad=sp.pad_id, speech_switch=sp.switch_id,
                   learned_switch=sp.predict_switch)


def _as_int_list(seg: Any) -> list[int] | None:
    """A list of ints if ``seg`` is a 1-D sequence / tensor / array of integers, else None."""
    if isinstance(seg, (str, bytes, Text, Speech)):
        return None
    if hasattr(seg, "tolist"):  # torch.Tensor, numpy.ndarray
        seg = seg.tolist()
    if not isinstance(seg, Sequence) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seg):
        return None
    return list(seg)


def _segments(prompt: Any) -> list[Any]:
    if isinstance(prompt, (str, Text, Speech)):
        return [prompt]
    units = _as_int_list(prompt)
    if units is not None:
        return [Speech(tuple(units))]
    if not isinstance(prompt, Sequence):
        raise InputError(f"prompt: expected a string, a list of speech units or a list of segments, got {prompt!r}")
    return list(prompt)


def encode_prompt(model: TextSpeechLM | LlamaLM, prompt: Any, to: Modality = "either",
                  tokenizer: Any = None) -> tuple[list[int], list[bool]]:
    """A prompt (see module doc) as (ids, is_speech) lists, with SWT between modalities and, when
    ``to`` asks for the other modality than the prompt's last, one SWT at the end."""
    vocab = _Vocab.of(model)
    ids: list[int] = []
    is_speech: list[bool] = []
    for n, seg in enumerate(_segments(prompt)):
        where = f"prompt segment {n}"
        if isinstance(seg, str):
            if tokenizer is None:
                raise InputError(f"{where}: a text string needs a tokenizer (tokenizer.json); "
                                 "or pass smoltolk.generate.Text(ids)")
            seg = Text(tuple(tokenizer.encode(seg, add_special_tokens=False).ids))
        elif not isinstance(seg, (Text, Speech)):
            units = _as_int_list(seg)
            if units is None:
                raise InputError(f"{where}: expected a string, Text, Speech or a list of unit ids, got {seg!r}")
            seg = Speech(tuple(units))
        speech = isinstance(seg, Speech)
        seg_ids = list(seg.units if speech else seg.ids)
        _check_segment(seg_ids, speech, vocab, where)
        if not seg_ids:
            continue
        if is_speech and is_speech[-1] != speech:
            ids.append(vocab.swt)
            is_speech.append(False)
        ids += seg_ids
        is_speech += [speech] * len(seg_ids)
    if not ids:
        raise InputError("prompt: empty (give at least one text token or speech unit)")
    if vocab.swt is None and to == "speech":
        raise InputError("to='speech' needs a text-speech model; a bare text LM generates text only")
    if to != "either" and is_speech[-1] != (to == "speech"):
        ids.append(vocab.swt)
        is_speech.append(False)
    return ids, is_speech


def _check_segment(ids: list[int], speech: bool, vocab: _Vocab, where: str) -> None:
    if speech:
        if vocab.swt is None:
            raise InputError(f"{where}: speech units given to a text-only model")
        hi, what = vocab.speech_eos + 1, f"[0, {vocab.speech_eos}] (units, then EOS {vocab.speech_eos})"
    else:
        hi = vocab.swt if vocab.swt is not None else vocab.text_size
        what = f"[0, {hi}) (the backbone's text vocabulary)"
    bad = [i for i in ids if not 0 <= i < hi]
    if bad:
        raise InputError(f"{where}: {'unit' if speech else 'text id'} {bad[0]} is outside {what}")


def check_speech_outputs(to: str, wav: str | None = None, vocoder: str | None = None, centroids: str | None = None,
                         world: str | None = None) -> None:
    """Whether a way to write generated speech as audio is coherent: a ``wav`` needs a ``vocoder`` (a unit
    vocoder), ``centroids`` (log-mel k-means units) or a mini-``world`` (its words said by espeak-ng), one of
    them; errors name the options (``smoltolk generate``'s)."""
    if vocoder is not None and centroids is not None:
        raise InputError("give --vocoder or --centroids, not both")
    if (vocoder is not None or centroids is not None) and wav is None:
        raise InputError("--vocoder and --centroids need --wav (where to write the audio)")
    if wav is not None and vocoder is None and centroids is None and world is None:
        raise InputError("--wav needs --vocoder (a unit vocoder), --centroids (log-mel k-means units) or --world DIR "
                         "(mini-world speech, said by espeak-ng)")
    if world is not None and wav is not None and vocoder is None and to == "text":
        raise InputError("--world with --wav says generated speech, but --to text generates none")
    if world is not None and not (Path(world) / "world.json").is_file():
        raise InputError(f"{world}: not a mini-world directory (no world.json); --world reads its speech as words")


def read_units(path: str | Path) -> list[int]:
    """Speech units from a file: a JSON list of ints, or ints separated by white space."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing (expected speech units: a JSON list of ints or space-separated ints)")
    text = read_text(path).strip()
    try:
        units = json.loads(text) if text.startswith("[") else [int(x) for x in text.split()]
    except (json.JSONDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a list of speech units ({e}); expected a JSON list of ints "
                         "or space-separated ints") from None
    if not isinstance(units, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in units):
        raise InputError(f"{path}: expected a JSON list of ints")
    return units


# ----------------------------------------------------------------------------- decoding
class _Runner:
    """Next-token logits for a batch: prefill + one position per step (cached), or the whole
    sequence every step (``use_cache=False``). Pads are a separate document (-1)."""

    def __init__(self, model: TextSpeechLM | LlamaLM, ids: Tensor, is_speech: Tensor, doc: Tensor | None,
                 use_cache: bool) -> None:
        self.model = model
        self.ids, self.is_speech, self.doc = ids, is_speech, doc  # (B, T) prompt, grown when not cached
        self.cache = Cache() if use_cache else None

    def _forward(self, ids: Tensor, is_speech: Tensor, doc: Tensor | None) -> tuple[Tensor, Tensor | None]:
        out = self.model(ids, is_speech, doc_ids=doc, cache=self.cache, logits="last")
        # (B, Vt), (B, Vs) (a text LM has no speech logits)
        return out.text_logits[:, -1], None if out.speech_logits is None else out.speech_logits[:, -1]

    @torch.inference_mode()
    def first(self) -> tuple[Tensor, Tensor | None]:
        return self._forward(self.ids, self.is_speech, self.doc)

    @torch.inference_mode()
    def next(self, ids: Tensor, is_speech: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits after appending one token per row: ids, is_speech (B, 1)."""
        doc = None if self.doc is None else torch.zeros_like(ids)
        if self.cache is not None:
            return self._forward(ids, is_speech, doc)
        self.ids = torch.cat([self.ids, ids], dim=1)
        self.is_speech = torch.cat([self.is_speech, is_speech], dim=1)
        if self.doc is not None:
            self.doc = torch.cat([self.doc, doc], dim=1)
        return self._forward(self.ids, self.is_speech, self.doc)


def _left_pad(rows: list[tuple[list[int], list[bool]]], device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """(ids, is_speech, doc ids or None if no row needs padding), each (B, T_max), left-padded."""
    t = max(len(r[0]) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    speech = torch.zeros(len(rows), t, dtype=torch.bool)
    doc = torch.full((len(rows), t), -1, dtype=torch.long)
    for b, (r_ids, r_speech) in enumerate(rows):
        n = len(r_ids)
        ids[b, t - n:] = torch.tensor(r_ids)
        speech[b, t - n:] = torch.tensor(r_speech)
        doc[b, t - n:] = 0
    padded = bool((doc < 0).any())
    return ids.to(device), speech.to(device), doc.to(device) if padded else None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def stream(model: TextSpeechLM | LlamaLM, prompts: Sequence[Any], *, tokenizer: Any = None,
           config: GenerationConfig | None = None, **options: Any) -> Iterator[GeneratedToken]:
    """Generate for a batch of prompts, yielding every new token as soon as it is produced.

    prompts: a list of prompts (each one segment or a list of segments; see module doc).
    config / options: a :class:`GenerationConfig`, or its fields as keywords (``to="speech"``, ...).
    Per step, tokens come in row order; a finished row yields nothing more.
    """
    cfg = dataclasses.replace(config or GenerationConfig(), **options)
    if isinstance(prompts, (str, Text, Speech)) or _as_int_list(prompts) is not None or not len(prompts):
        raise InputError("prompts: expected a non-empty list of prompts (for one prompt use generate())")
    vocab = _Vocab.of(model)
    rows = [encode_prompt(model, p, cfg.to, tokenizer) for p in prompts]
    device = _device(model)
    ids, is_speech, doc = _left_pad(rows, device)
    mode = is_speech[:, -1].clone()  # (B,) active head: True = speech
    if cfg.to != "either":
        mode.fill_(cfg.to == "speech")
    allow_switch = cfg.to == "either" and vocab.learned_switch
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    return _decode(model, vocab, cfg, ids, is_speech, doc, mode, allow_switch, generator)


def _decode(model: TextSpeechLM | LlamaLM, vocab: _Vocab, cfg: GenerationConfig, ids: Tensor, is_speech: Tensor,
            doc: Tensor | None, mode: Tensor, allow_switch: bool,
            generator: torch.Generator | None) -> Iterator[GeneratedToken]:
    b = ids.shape[0]
    finished = [False] * b
    runner = _Runner(model, ids, is_speech, doc, cfg.use_cache)
    in_ids = in_speech = None
    # a row may switch (learned switching only), but never twice in a row: no empty segments
    may_switch = torch.full_like(mode, allow_switch)
    for index in range(cfg.max_new_tokens):
        # inference mode only inside each step: a generator must not leave it on while suspended
        text_logits, speech_logits = runner.first() if index == 0 else runner.next(in_ids, in_speech)
        with torch.inference_mode():
            tok, in_speech, switched, eos = _choose(text_logits, speech_logits, mode, vocab, cfg, may_switch,
                                                    generator)
            in_ids = torch.where(switched, vocab.swt if vocab.swt is not None else 0, tok)[:, None]  # (B, 1)
            in_speech = in_speech[:, None]
            next_mode = mode ^ switched
            if allow_switch:
                may_switch = ~switched
        tok_l, speech_l, switched_l, eos_l = tok.tolist(), mode.tolist(), switched.tolist(), eos.tolist()
        for r in range(b):
            if finished[r]:
                continue
            kind: Kind = "switch" if switched_l[r] else "eos" if eos_l[r] else "token"
            if kind == "switch":
                yield GeneratedToken(r, index, vocab.swt, False, kind)
            else:
                yield GeneratedToken(r, index, tok_l[r], speech_l[r], kind)
            finished[r] = eos_l[r]
        if all(finished):
            return
        mode = next_mode


def _choose(text_logits: Tensor, speech_logits: Tensor | None, mode: Tensor, vocab: _Vocab, cfg: GenerationConfig,
            may_switch: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample each row from its active head; rows where ``may_switch`` (B,) is False never pick
    the switch. Returns (token (B,), next input is_speech (B,), switched (B,), stopped at EOS (B,));
    a switched row's next input is SWT (a text position)."""
    sample = lambda x: sample_logits(x, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # noqa: E731
    any_speech = speech_logits is not None and bool(mode.any())
    any_text = not bool(mode.all())
    tok = torch.zeros_like(mode, dtype=torch.long)
    switched = torch.zeros_like(mode)
    eos = torch.zeros_like(mode)
    if any_text:
        logits = text_logits.float()
        if vocab.swt is not None:
            logits[:, vocab.swt].masked_fill_(~may_switch, float("-inf"))
        text_tok = sample(logits)
        tok = torch.where(mode, tok, text_tok)
        if vocab.swt is not None:
            switched |= ~mode & (text_tok == vocab.swt)
        if cfg.stop_at_eos and vocab.text_eos is not None:
            eos |= ~mode & (text_tok == vocab.text_eos)
    if any_speech:
        logits = speech_logits.float()
        logits[:, vocab.speech_pad] = float("-inf")
        if vocab.speech_switch is not None:
            logits[:, vocab.speech_switch].masked_fill_(~may_switch, float("-inf"))
        speech_tok = sample(logits)
        tok = torch.where(mode, speech_tok, tok)
        if vocab.speech_switch is not None:
            switched |= mode & (speech_tok == vocab.speech_switch)
        if cfg.stop_at_eos:
            eos |= mode & (speech_tok == vocab.speech_eos)
    return tok, mode & ~switched, switched, eos


def collect(tokens: Iterable[GeneratedToken], batch_size: int) -> list[Generation]:
    """Gather a token stream (e.g. :func:`stream`, maybe wrapped in a progress bar) into one
    :class:`Generation` per row."""
    out = [Generation() for _ in range(batch_size)]
    for tok in tokens:
        g = out[tok.row]
        g.ids.append(tok.id)
        g.is_speech.append(tok.is_speech)
        g.kinds.append(tok.kind)
        if tok.kind == "eos":
            g.finish_reason = "eos"
    return out


def generate_batch(model: TextSpeechLM | LlamaLM, prompts: Sequence[Any], *, tokenizer: Any = None,
                   config: GenerationConfig | None = None, **options: Any) -> list[Generation]:
    """Generate for a batch of prompts (any lengths and modalities); one :class:`Generation` per prompt."""
    return collect(stream(model, prompts, tokenizer=tokenizer, config=config, **options), len(prompts))


def generate(model: TextSpeechLM | LlamaLM, prompt: Any, *, tokenizer: Any = None,
             config: GenerationConfig | None = None, **options: Any) -> Generation:
    """Continue one prompt. E.g. ``generate(model, ["the cat", [3, 3, 7]], tokenizer=tok, to="text",
    max_new_tokens=50, temperature=0.8, top_p=0.95, seed=0)``."""
    return generate_batch(model, [prompt], tokenizer=tokenizer, config=config, **options)[0]


def render(gen: Generation, tokenizer: Any = None, to: Modality = "either") -> str:
    """A generation as the CLI prints it: text as text, speech as a JSON list of units; an output
    that switches modality as a JSON list of ``{"text": ...}`` / ``{"units": [...]}`` segments."""
    segments = gen.segments()
    if any(m == "text" for m, _ in segments) and tokenizer is None:
        raise InputError("the output holds text but no tokenizer was given (tokenizer.json) to decode it")
    if len(segments) > 1:
        return json.dumps([{"text": tokenizer.decode(ids)} if m == "text" else {"units": ids} for m, ids in segments])
    if segments:
        modality, ids = segments[0]
        return tokenizer.decode(ids) if modality == "text" else json.dumps(ids)
    return "[]" if to == "speech" else ""
