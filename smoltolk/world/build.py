"""Write the mini-world: corpora, tokenizer, benchmarks in their public layouts, and ``world.json``.

Layout under ``out_dir``::

    text.jsonl                 TextRecords: stories on every topic, and carrier utterances (the text corpus)
    speech.jsonl               SpeechRecords (units, durations, words): stories on heard topics, and
                               held-out words alone in carrier utterances, spaced apart (see ``Split``)
    tokenizer.json             a byte-level BPE trained on text.jsonl
    bench/{held_out,heard}/
        sblimp/                gold.csv + units.jsonl (+ placeholder .wav files); BLIMP T reads gold.csv
        sstorycloze/           {i}_{storyid}_correct|incorrect.wav + units.jsonl: hard negative endings
        tstorycloze/           the same with random endings from other stories
        sstorycloze_xmodal/    {base}_mutual|_correct|_incorrect .txt and .wav + units.jsonl
        tstorycloze_xmodal/
        speech_dev.jsonl       the benchmark stories (correct endings) as SpeechRecords, for speech NLL
        salmon/                SALMon's layout: speaker_consistency/sample_{i}_{k}.wav + units.jsonl (a
                               story's second half in its first half's voice, k 0, or another, k 1)
    world.json                 the split, its held-out words, counts, and the eval task settings

The ``.wav`` files are placeholders (valid, no samples): the benchmark readers find items by them,
and the units come from the ``units.jsonl`` beside them (``tasks.<name>.units=<folder>``).
"""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from smoltolk.data.manifest import SpeechRecord, TextRecord, write_manifest
from smoltolk.errors import InputError
from smoltolk.world.diagnostics import write_diagnostics
from smoltolk.world.speech import PseudoSpeech
from smoltolk.world.world import (
    CARRIER_STYLES,
    PLACES,
    Split,
    Story,
    carrier,
    hard_negative,
    make_story,
    minimal_pairs,
    split_violations,
    topic_words,
    vocabulary,
    words,
)

SPLITS = ("held_out", "heard")
DIAGNOSTICS = ("lexical_cloze", "word_translation", "speaker_context")


def _placeholder_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(b"")


def _write_units(folder: Path, records: list[SpeechRecord]) -> None:
    """``units.jsonl`` keyed by wav stem, plus a placeholder ``{stem}.wav`` each."""
    write_manifest(folder / "units.jsonl", [SpeechRecord(r.id, units=r.units, durations=r.durations) for r in records])
    for r in records:
        _placeholder_wav(folder / f"{r.id}.wav")


def stories(rng: np.random.Generator, places: list[str], n: int, prefix: str) -> list[Story]:
    return [make_story(rng, places[int(rng.integers(len(places)))], f"{prefix}{i:05d}") for i in range(n)]


def write_sblimp(folder: Path, rng: np.random.Generator, places: list[str], n: int, speech: PseudoSpeech,
                 voices: int = 2) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    per_place = -(-n // len(places))
    pairs = [p for place in places for p in minimal_pairs(rng, place, per_place, f"{place}_")][:n]
    rows, recs = [], []
    for pair in pairs:
        for v in range(voices):
            for correct, sentence in ((1, pair.good), (0, pair.bad)):
                stem = f"{pair.id}_v{v}_{correct}"
                rows.append({"filename": stem, "type": pair.type, "subtype": pair.subtype, "transcription": sentence,
                             "correct": correct, "id": pair.id, "voice": f"v{v}"})
                recs.append(speech.render(stem, words(sentence), speaker=v % speech.speakers))
    with open(folder / "gold.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _write_units(folder, recs)
    return len(pairs)


def _endings(rng: np.random.Generator, items: list[Story], places: list[str], kind: str) -> list[str]:
    """The incorrect ending sentence of every story: a hard negative, or another story's ending."""
    out = []
    for i, st in enumerate(items):
        if kind == "hard":
            out.append(st.ending_sentence(hard_negative(rng, st, places)[0]))
        else:
            others = [o for o in items if o.topic != st.topic] or [o for j, o in enumerate(items) if j != i]
            out.append(others[int(rng.integers(len(others)))].ending_sentence())
    return out


def write_storycloze(folder: Path, items: list[Story], wrong: list[str], speech: PseudoSpeech) -> None:
    """Speech-only StoryCloze: whole stories, ``{2k}_{id}_correct`` and ``{2k+1}_{id}_incorrect``."""
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for k, (st, bad) in enumerate(zip(items, wrong, strict=True)):
        for i, side, ending in ((2 * k, "correct", st.ending_sentence()), (2 * k + 1, "incorrect", bad)):
            recs.append(speech.render(f"{i}_{st.id}_{side}", words(st.context_text() + " " + ending),
                                      speaker=k % speech.speakers))
    _write_units(folder, recs)


def write_xmodal(folder: Path, items: list[Story], wrong: list[str], speech: PseudoSpeech) -> None:
    """Cross-modal StoryCloze triples ``{base}_mutual|_correct|_incorrect`` as ``.txt`` and units."""
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for k, (st, bad) in enumerate(zip(items, wrong, strict=True)):
        base = f"{k:05d}_{st.id}"
        for part, text in (("mutual", st.context_text()), ("correct", st.ending_sentence() + "."),
                           ("incorrect", bad + ".")):
            (folder / f"{base}_{part}.txt").write_text(text + "\n", encoding="utf-8")
            recs.append(speech.render(f"{base}_{part}", words(text), speaker=k % speech.speakers))
    _write_units(folder, recs)


SALMON_SAMPLES = 100  # stories of the speaker-consistency task per split


def write_salmon(folder: Path, items: list[Story], speech: PseudoSpeech) -> int:
    """A SALMon-shaped speaker-consistency task (``folder/speaker_consistency/sample_{i}_{k}.wav``
    placeholders, units in ``folder/units.jsonl``): a story's first half in one voice, then its second half in
    the same voice (option 0, the positive) or in another (option 1). With one voice in the world the other
    is a voice it never heard."""
    voices = PseudoSpeech(seed=speech.seed, speakers=max(2, speech.speakers), jitter=speech.jitter,
                          noise=speech.noise)
    part = folder / "speaker_consistency"
    part.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, st in enumerate(items[:SALMON_SAMPLES]):
        ws = words(st.text())
        half = len(ws) // 2
        voice = i % speech.speakers
        other = (voice + 1 + i % (voices.speakers - 1)) % voices.speakers
        start = voices.render(f"salmon-{st.id}-a", ws[:half], speaker=voice)
        for k, speaker in enumerate((voice, other)):
            end = voices.render(f"salmon-{st.id}-b", ws[half:], speaker=speaker)
            recs.append(SpeechRecord(f"speaker_consistency/sample_{i}_{k}", units=start.units + end.units,
                                     durations=start.durations + end.durations))
            _placeholder_wav(part / f"sample_{i}_{k}.wav")
    write_manifest(folder / "units.jsonl", recs)
    return len(recs) // 2


def write_benchmarks(root: Path, rng: np.random.Generator, places: list[str], n_stories: int, n_pairs: int,
                     speech: PseudoSpeech, prefix: str) -> tuple[list[Story], dict[str, int]]:
    """Every benchmark on ``places`` under ``root``; returns the stories used (to keep out of training)."""
    items = stories(rng, places, n_stories, prefix)
    counts = {"sblimp_pairs": write_sblimp(root / "sblimp", rng, places, n_pairs, speech), "stories": len(items)}
    for kind, name in (("hard", "sstorycloze"), ("random", "tstorycloze")):
        wrong = _endings(rng, items, places, kind)
        write_storycloze(root / name, items, wrong, speech)
        write_xmodal(root / f"{name}_xmodal", items, wrong, speech)
    dev = [speech.render(f"dev-{st.id}", words(st.text()), speaker=k % speech.speakers) for k, st in enumerate(items)]
    write_manifest(root / "speech_dev.jsonl", dev)
    counts["diagnostics"] = write_diagnostics(root, items, places, root.name, speech, prefix)
    counts["salmon_samples"] = write_salmon(root / "salmon", items, speech)
    return items, counts


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 512) -> Path:
    """A byte-level BPE (as ``smoltolk.data.synthetic``) with ``<|endoftext|>`` = id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(path))
    return path


def _corpus(rng: np.random.Generator, places: list[str], n: int, prefix: str, exclude: set[str]) -> list[Story]:
    out: list[Story] = []
    while len(out) < n:
        st = make_story(rng, places[int(rng.integers(len(places)))], f"{prefix}{len(out):06d}")
        if st.context_text() not in exclude:
            out.append(st)
    return out


def with_carriers(rng: np.random.Generator, texts: list[str], split: Split, min_gap_words: int,
                  style: str = "plain") -> list[str]:
    """``texts`` with carrier utterances of held-out words inserted between them, as many as the
    split allows: each carrier's topic is the one whose last mention lies furthest back, once that is
    at least ``min_gap_words`` words (and its words take turns in a seeded order). Read cyclically
    the gaps hold too: no carrier within the first or the last ``min_gap_words / 2`` words. ``style``: the
    carrier frames (:data:`~smoltolk.world.world.CARRIER_STYLES`)."""
    if not split.held_out_words:
        return list(texts)
    half = -(-min_gap_words // 2)
    lengths = [len(words(t)) for t in texts]
    remaining = np.cumsum(lengths[::-1])[::-1].tolist()[1:] + [0]  # words of the texts after each one
    queues: dict[str, list[str]] = {t: [] for t in split.held_out_words}
    last = {t: half - min_gap_words for t in split.held_out_words}  # position after the topic's last mention
    out: list[str] = []
    pos = 0
    for text, n, rest in zip(texts, lengths, remaining, strict=True):
        out.append(text)
        pos += n
        topic = min(last, key=lambda t: (last[t], t))
        if pos - last[topic] >= min_gap_words and rest >= half:
            if not queues[topic]:
                queues[topic] = [split.held_out_words[topic][int(i)]
                                 for i in rng.permutation(len(split.held_out_words[topic]))]
            line = carrier(rng, queues[topic].pop(), style)
            out.append(line)
            pos += len(words(line))
            last[topic] = pos
    return out


def _world_info(out: Path, seed: int, split: Split, min_gap_words: int, carriers: str, speakers: int,
                text: list[Story], spoken: list[Story], text_records: list[TextRecord],
                speech_records: list[SpeechRecord], counts: dict[str, Any]) -> dict[str, Any]:
    """The ``world.json`` data: the split, the corpora's counts, notes and the eval task settings."""
    n_units = sum(len(r.units) for r in speech_records)
    n_words = sum(len(r.words) for r in speech_records)
    topic_of = split.topic_of()
    heard_held = [w for r in speech_records for w in words(r.text or "") if w in topic_of]
    info = {
        "seed": seed,
        "split": {"heard": split.heard, "held_out": split.held_out, "held_out_words": split.held_out_words},
        "min_gap_words": min_gap_words,
        "carriers": carriers,
        "counts": {"text_stories": len(text), "text_utterances": len(text_records), "speech_stories": len(spoken),
                   "speech_utterances": len(speech_records), "speech_carriers": len(speech_records) - len(spoken),
                   "held_out_word_mentions_in_speech": {"total": len(heard_held), "words": len(set(heard_held)),
                                                        "of": len(topic_of)},
                   "speech_units": n_units, "speech_words": n_words, "units_per_word": n_units / n_words,
                   "vocabulary": len(vocabulary()), "benchmarks": counts},
        "speakers": speakers,
        "files": {"text": "text.jsonl", "speech": "speech.jsonl", "tokenizer": "tokenizer.json"},
        "notes": ["text.jsonl covers every topic; speech.jsonl has stories on heard topics only, and held-out words "
                  f"alone in {carriers} carrier utterances (echo: the word said twice), one held-out topic's at "
                  f"least {min_gap_words} words apart, so no "
                  f"speech or interleaved sample of at most {min_gap_words} tokens (read from one shard) ever holds "
                  "a held-out topic's association",
                  "bench/*/ .wav files are placeholders without samples: evaluate with the units.jsonl beside them "
                  "(eval_tasks)"],
        "eval_tasks": {name: eval_task_overrides(out / "bench" / name) for name in SPLITS},
    }
    return info


def build_world(out_dir: str | Path, seed: int = 0, n_text: int = 4000, n_speech: int = 2000,
                n_bench_stories: int = 200, n_bench_pairs: int = 200, speakers: int = 4,
                tokenizer_vocab: int = 512, held_out: list[str] | None = None,
                min_gap_words: int = 300, carriers: str = "plain") -> dict[str, Any]:
    """Write the mini-world under ``out_dir`` (see the module docstring); returns the ``world.json`` data.

    The text corpus covers every topic; speech has stories on heard topics only, and held-out words
    alone in carrier utterances at least ``min_gap_words`` words apart per topic (so training
    samples of fewer tokens never hold two words of one held-out topic: the rule of
    :func:`~smoltolk.world.world.split_violations`, checked before anything is written; it holds
    for the corpus read cyclically, i.e. prepared as one shard). Benchmark stories never occur in
    training. ``held_out``: the held-out topics (places); default: half of them, drawn by ``seed``.
    ``carriers``: the carrier frames of text and speech, "plain" (the word once) or "echo" (said twice, so an
    interleaved switch between the mentions pairs its text and its sound; a lever, see ``CARRIER_STYLES``).
    """
    if min(n_text, n_speech, n_bench_stories, n_bench_pairs) < 1:
        raise InputError("build_world: every size must be at least 1")
    if carriers not in CARRIER_STYLES:
        raise InputError(f"build_world: carriers {carriers!r}: expected one of {sorted(CARRIER_STYLES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = Split.make(seed, held_out)
    speech = PseudoSpeech(seed=seed, speakers=speakers)
    bench_rng = np.random.default_rng([seed, 1])
    used: set[str] = set()
    counts: dict[str, Any] = {}
    for name, places in zip(SPLITS, (split.held_out, split.heard), strict=True):
        items, counts[name] = write_benchmarks(out / "bench" / name, bench_rng, places, n_bench_stories,
                                               n_bench_pairs, speech, prefix=f"{name[0]}")
        used |= {st.context_text() for st in items}

    corpus_rng = np.random.default_rng([seed, 2])
    text = _corpus(corpus_rng, [p.name for p in PLACES], n_text, "t", used)
    spoken = _corpus(corpus_rng, split.heard, n_speech, "s", used)
    # text: a carrier after every third story, on any topic's word (the genre exists in text too)
    all_words = sorted({w for p in PLACES for w in topic_words(p.name)})
    text_lines = []
    for i, st in enumerate(text):
        text_lines.append(st.text())
        if i % 3 == 2:
            word = all_words[int(corpus_rng.integers(len(all_words)))]
            text_lines.append(carrier(corpus_rng, word, carriers) + ".")
    spoken_lines = with_carriers(corpus_rng, [" ".join(words(st.text())) for st in spoken], split, min_gap_words,
                                 carriers)
    text_records = [TextRecord(f"text-{i:06d}", line) for i, line in enumerate(text_lines)]
    speech_records = [speech.render(f"speech-{i:06d}", words(line), speaker=i % speakers)
                      for i, line in enumerate(spoken_lines)]
    bad = split_violations(split, [(r.id, r.text or "") for r in speech_records], min_gap_words)
    if bad:  # cannot happen by construction; a guard against edits to the world
        raise AssertionError(f"the speech corpus breaks the split: {bad[:3]}")
    write_manifest(out / "text.jsonl", text_records)
    write_manifest(out / "speech.jsonl", speech_records)
    train_tokenizer([r.text for r in text_records], out / "tokenizer.json", tokenizer_vocab)

    info = _world_info(out, seed, split, min_gap_words, carriers, speakers, text, spoken, text_records,
                       speech_records, counts)
    (out / "world.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def eval_task_overrides(root: str | Path) -> list[str]:
    """``smoltolk eval`` ``key=value`` overrides that point every task at a benchmark folder and its units."""
    root = Path(root)
    out = [f"tasks.blimp_text.path={root / 'sblimp' / 'gold.csv'}",
           f"tasks.speech_nll.path={root / 'speech_dev.jsonl'}"]
    for name in ("sblimp", "sstorycloze", "tstorycloze", "sstorycloze_xmodal", "tstorycloze_xmodal"):
        out += [f"tasks.{name}.path={root / name}", f"tasks.{name}.units={root / name}"]
    if (root / "salmon" / "units.jsonl").is_file():  # acoustic consistency, SALMon's layout
        out += [f"tasks.salmon.path={root / 'salmon'}", f"tasks.salmon.units={root / 'salmon'}"]
    for name in DIAGNOSTICS:  # cross-modal diagnostics (smoltolk.world.diagnostics), units inline
        if (root / f"{name}.jsonl").is_file():
            out.append(f"tasks.{name}.path={root / name}.jsonl")
    return out
