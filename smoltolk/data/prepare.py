"""``smoltolk prepare``: manifests -> compact, memory-mapped shards that the samplers read.

Layout of a prepared corpus directory::

    index.json                     kind ("speech" | "text"), shard list with record/token counts and
                                   per-file sizes and sha256, tokenizer checksum, settings
    shard-00000/                   one directory per ``shard_size`` records, written to a temporary
        done.json                  name and renamed, so an interrupted run never leaves a shard
        <arrays>.npy               that looks finished; a re-run skips shards whose inputs and
                                   settings are unchanged

Speech shard arrays: ``stream`` (units with the speech EOS after every utterance, for speech-only
windows) and, for utterances with word alignments, the :class:`AlignedCorpus` arrays (``units``,
``utt_units``, ``tokens``, ``word_tokens``, ``word_unit_end``, ``utt_words``) for interleaving.
Text shard arrays: ``stream`` (tokens with the text EOS after every document) and
``doc_offsets``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoltolk.data.alignments import check_transcript, load_alignments, normalize
from smoltolk.data.interleave import AlignedCorpus
from smoltolk.data.manifest import SpeechRecord, parse_speech_record, parse_text_record, read_manifest_located
from smoltolk.data.units import collapse, word_ends_to_collapsed
from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import InputError
from smoltolk.files import atomic_directory, file_sha256

ALIGNED_ARRAYS = ("units", "utt_units", "tokens", "word_tokens", "word_unit_end", "utt_words")
UNIT_DTYPE = np.int16


@dataclass
class PrepareSettings:
    tokenizer: str  # path to the backbone's tokenizer.json
    text_eos_id: int  # appended after every text document (and used by interleaving at utterance ends)
    num_units: int = DEFAULT_NUM_UNITS  # speech vocabulary: units 0..N-1; EOS = N
    shard_size: int = 10000  # records per shard
    workers: int = 0  # processes; 0 = one per CPU core

    def __post_init__(self) -> None:
        if not 0 < self.num_units < np.iinfo(UNIT_DTYPE).max:
            raise InputError(f"num_units must be in [1, {np.iinfo(UNIT_DTYPE).max}) (units are stored as int16), "
                             f"got {self.num_units}")


def word_token_counts(tokenizer, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Tokenize the words as one text (so tokens are those of the running transcript) and count
    each word's tokens. Returns (token ids, tokens per word)."""
    text, starts = "", []
    for w in words:
        if text:
            text += " "
        starts.append(len(text))
        text += w
    enc = tokenizer.encode(text, add_special_tokens=False)
    # a token belongs to the word of its last character (tokens carry a word's *leading* space)
    token_last = np.array([end - 1 for _, end in enc.offsets], dtype=np.int64)
    word_of_token = np.clip(np.searchsorted(starts, token_last, side="right") - 1, 0, None)
    return list(enc.ids), np.bincount(word_of_token, minlength=len(words)).tolist()


def _speech_units(rec: SpeechRecord, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Collapsed units and their durations (None when unknown) of a record."""
    if rec.units is None:
        raise InputError(f"{where}: no 'units' (tokenize the audio first: smoltolk tokenize)")
    units = np.asarray(rec.units, dtype=np.int64)
    if rec.durations is not None:
        return units, np.asarray(rec.durations, dtype=np.int64)
    if rec.words is not None:  # raw frame-level units: collapse and keep durations
        return collapse(units)
    return collapse(units)[0], None


def _speech_shard(records: list[dict], settings: PrepareSettings, wheres: list[str], out: Path, key: str) -> None:
    from smoltolk.model.hf import load_tokenizer

    tok = load_tokenizer(settings.tokenizer)
    eos = settings.num_units
    stream: list[np.ndarray] = []
    aligned: list[list[tuple[list[int], list[int]]]] = []
    n_words = 0
    for raw, where in zip(records, wheres, strict=True):
        rec = parse_speech_record(raw, where)
        rid = f"{where} (id {rec.id!r})"
        units, durations = _speech_units(rec, rid)
        if units.min() < 0 or units.max() >= settings.num_units:
            bad = int(units[(units < 0) | (units >= settings.num_units)][0])
            raise InputError(f"{rid}: unit {bad} is outside [0, {settings.num_units})")
        stream += [units, np.array([eos])]
        if rec.words:
            words = rec.words
            if rec.text is not None:
                check_transcript(words, rec.text, rid)
                texts = [t for t in rec.text.split() if normalize(t)]
            else:
                texts = [w.word for w in words]
            ends = word_ends_to_collapsed(np.array([w.end for w in words]), durations, rec.frame_rate, rid)
            ends[-1] = len(units)  # the last word takes the utterance's trailing units
            ids, counts = word_token_counts(tok, texts)
            bounds = np.r_[0, ends]
            offs = np.r_[0, np.cumsum(counts)]
            aligned.append([(ids[offs[i]:offs[i + 1]], units[bounds[i]:bounds[i + 1]].tolist())
                            for i in range(len(words))])
            n_words += len(words)
    arrays = {"stream": np.concatenate(stream).astype(UNIT_DTYPE)}
    if aligned:
        corpus = AlignedCorpus.from_words(aligned)
        # e.g. a word left without text tokens by the tokenizer
        corpus.validate(settings.num_units, f"the records of {wheres[0]} to {wheres[-1]}")
        for name in ALIGNED_ARRAYS:
            arr = getattr(corpus, name)
            arrays[name] = arr.astype(UNIT_DTYPE if name == "units" else np.int64)
    _write_shard(out, arrays, {"records": len(records), "units": int(arrays["stream"].size),
                               "aligned_utterances": len(aligned), "words": n_words}, key)


def _text_shard(records: list[dict], settings: PrepareSettings, wheres: list[str], out: Path, key: str) -> None:
    from smoltolk.model.hf import load_tokenizer

    tok = load_tokenizer(settings.tokenizer)
    texts = [parse_text_record(r, where).text for r, where in zip(records, wheres, strict=True)]
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    docs = [np.r_[np.asarray(e.ids, dtype=np.int64), settings.text_eos_id] for e in encodings]
    stream = np.concatenate(docs)
    dtype = np.int32 if tok.get_vocab_size() < 2**31 else np.int64
    offsets = np.r_[0, np.cumsum([len(d) for d in docs])].astype(np.int64)
    _write_shard(out, {"stream": stream.astype(dtype), "doc_offsets": offsets},
                 {"records": len(records), "tokens": int(stream.size)}, key)


def _write_shard(out: Path, arrays: dict[str, np.ndarray], stats: dict, key: str) -> None:
    """Write one shard atomically; ``done.json`` records its inputs' key and each file's size and sha256."""
    with atomic_directory(out) as tmp:
        files = {}
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            files[f"{name}.npy"] = {"bytes": (tmp / f"{name}.npy").stat().st_size,
                                    "sha256": file_sha256(tmp / f"{name}.npy")}
        (tmp / "done.json").write_text(json.dumps({**stats, "files": files, "input": key}, indent=1) + "\n")


def _job(args: tuple) -> None:
    kind, records, settings, wheres, out, key = args
    (_speech_shard if kind == "speech" else _text_shard)(records, settings, wheres, Path(out), key)


def default_text_eos_id(tokenizer_file: str | Path) -> int:
    """The tokenizer's end-of-text token (``<|endoftext|>``, ``</s>``, ``<eos>`` or ``<|end_of_text|>``)."""
    from smoltolk.model.hf import load_tokenizer

    tok = load_tokenizer(tokenizer_file)
    for name in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"):
        tid = tok.token_to_id(name)
        if tid is not None:
            return tid
    raise InputError(f"{tokenizer_file}: no end-of-text token found; give the text EOS id explicitly")


def prepare(manifest: str | Path, out: str | Path, kind: str, settings: PrepareSettings,
            progress: bool = True, alignments: str | Path | None = None) -> dict:
    """Prepare a speech or text manifest into shards under ``out``; returns the index.

    ``alignments``: a CTM file or a directory of ``<id>.TextGrid`` / ``<id>.json`` word
    alignments for speech records that carry none in the manifest.
    Idempotent: a shard whose inputs (its records, the tokenizer, the settings) are unchanged and
    whose ``done.json`` exists is skipped. Shards are built in parallel processes.
    """
    from smoltolk.progress import progress_bar

    if kind not in ("speech", "text"):
        raise InputError(f"kind must be 'speech' or 'text', got {kind!r}")
    manifest, out = Path(manifest), Path(out)
    if not Path(settings.tokenizer).is_file():
        raise InputError(f"{settings.tokenizer}: tokenizer.json not found")
    records, located = read_manifest_located(manifest, kind)
    if alignments is not None and kind == "speech":
        found = load_alignments(alignments, [r.id for r in records])
        for rec in records:
            if rec.words is None and rec.id in found:
                rec.words = found[rec.id]
        missing = [r.id for r in records if r.words is None]
        if missing:
            print(f"prepare: {len(missing)} of {len(records)} utterances have no word alignment in {alignments} "
                  f"(they are used for speech-only windows, not interleaving): {missing[:5]}"
                  f"{' ...' if len(missing) > 5 else ''}", file=sys.stderr)
    rows = [r.to_json() for r in records]
    tok_hash = file_sha256(Path(settings.tokenizer))
    setting_key = json.dumps({"kind": kind, "eos": settings.text_eos_id, "units": settings.num_units,
                              "tokenizer": tok_hash}, sort_keys=True)
    out.mkdir(parents=True, exist_ok=True)
    jobs, shards = [], []
    for i, start in enumerate(range(0, len(rows), settings.shard_size)):
        chunk, wheres = rows[start:start + settings.shard_size], located[start:start + settings.shard_size]
        key = hashlib.sha256((setting_key + json.dumps(chunk, sort_keys=True)).encode()).hexdigest()
        path = out / f"shard-{i:05d}"
        shards.append(path)
        done = path / "done.json"
        if done.is_file() and json.loads(done.read_text()).get("input") == key:
            continue
        jobs.append((kind, chunk, settings, wheres, str(path), key))
    workers = settings.workers or os.cpu_count() or 1
    skipped = len(shards) - len(jobs)
    desc = f"prepare {kind}" + (f" ({skipped} unchanged shard{'s' * (skipped != 1)} skipped)" if skipped else "")
    # closed (newline) on error
    with progress_bar(total=len(jobs), desc=desc, unit="shard", disable=not progress) as bar:
        if jobs and (workers == 1 or len(jobs) == 1):
            for job in jobs:
                _job(job)
                bar.update()
        elif jobs:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                for _ in pool.map(_job, jobs):
                    bar.update()
    for stale in sorted(out.glob("shard-*")):  # shards beyond the manifest's end (it shrank)
        if stale not in shards:
            import shutil

            shutil.rmtree(stale)
    index = {"kind": kind, "manifest": str(manifest), "tokenizer_sha256": tok_hash,
             "text_eos_id": settings.text_eos_id, "num_units": settings.num_units,
             "shards": [{"name": p.name, **json.loads((p / "done.json").read_text())} for p in shards]}
    tmp = out / ".index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    tmp.replace(out / "index.json")
    return index


@dataclass
class SpeechShard:
    stream: np.ndarray  # units with EOS after each utterance (memory-mapped)
    aligned: AlignedCorpus | None


@dataclass
class TextShard:
    stream: np.ndarray
    doc_offsets: np.ndarray


def load_prepared(directory: str | Path, verify: bool = False) -> tuple[dict, list]:
    """The index and the memory-mapped shards of a prepared corpus. ``verify`` checks sha256 sums."""
    directory = Path(directory)
    path = directory / "index.json"
    if not path.is_file():
        raise InputError(f"{directory}: no index.json (run smoltolk prepare first)")
    index = json.loads(path.read_text())
    shards = []
    for entry in index["shards"]:
        sd = directory / entry["name"]
        arrays = {}
        for fname, meta in entry["files"].items():
            fpath = sd / fname
            if not fpath.is_file() or fpath.stat().st_size != meta["bytes"]:
                raise InputError(f"{fpath}: missing or of the wrong size (expected {meta['bytes']} bytes); "
                                 "re-run smoltolk prepare")
            if verify and file_sha256(fpath) != meta["sha256"]:
                raise InputError(f"{fpath}: checksum mismatch; re-run smoltolk prepare")
            arrays[fname[:-4]] = np.load(fpath, mmap_mode="r", allow_pickle=False)
        if index["kind"] == "speech":
            aligned = None
            if "units" in arrays:
                aligned = AlignedCorpus(*(np.asarray(arrays[n]) if n != "units" else arrays[n]
                                          for n in ALIGNED_ARRAYS))
            shards.append(SpeechShard(arrays["stream"], aligned))
        else:
            shards.append(TextShard(arrays["stream"], np.asarray(arrays["doc_offsets"])))
    return index, shards
