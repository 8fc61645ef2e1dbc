"""A small synthetic text+speech corpus, prepared and ready to train on (``smoltolk synth-data``).

Words follow a seeded sparse Markov chain; each word has a fixed "pronunciation" of 2-5 speech
units, so spoken and written text share structure and word alignments are exact. It exists so
that the training path (tokenizer.json, manifests, shards, samplers, two-stage recipe) can run
anywhere in a minute; it is not the mini-world of the demo and measures nothing about transfer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smoltolk.data.manifest import SpeechRecord, TextRecord, Word, write_manifest
from smoltolk.data.prepare import PrepareSettings, default_text_eos_id, prepare
from smoltolk.defaults import DEFAULT_NUM_UNITS

SYLLABLES = ["ka", "to", "mi", "re", "su", "no", "la", "pe", "zu", "bo", "ri", "da"]


def _lexicon(n_words: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < n_words:
        words.add("".join(SYLLABLES[int(i)] for i in rng.integers(0, len(SYLLABLES), int(rng.integers(1, 4)))))
    return sorted(words)


def make_synthetic_corpus(out: str | Path, n_utterances: int = 400, n_documents: int = 400, n_words: int = 120,
                          num_units: int = DEFAULT_NUM_UNITS, seed: int = 0, workers: int = 1,
                          tokenizer: str | Path | None = None) -> dict[str, str]:
    """Write a BPE tokenizer.json, manifests, and prepared ``speech`` / ``text`` corpora under ``out``.
    Returns their paths.

    ``tokenizer``: a model's own ``tokenizer.json`` (e.g. a converted SmolLM2's) to prepare the text with,
    copied to ``out``, instead of a small BPE trained on the corpus; the text EOS is its end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lexicon = _lexicon(n_words, rng)
    successors = rng.integers(0, n_words, (n_words, 3))
    pron = [rng.choice(num_units, int(rng.integers(2, 6)), replace=False).tolist() for _ in range(n_words)]

    def sentence() -> list[int]:
        w, words = int(rng.integers(n_words)), []
        for _ in range(int(rng.integers(6, 20))):
            words.append(w)
            w = int(successors[w, int(rng.integers(3))])
        return words

    docs = [TextRecord(f"doc{i}", " ".join(lexicon[w] for w in sentence()) + ".") for i in range(n_documents)]
    if tokenizer is not None:
        eos = default_text_eos_id(tokenizer)  # also checks the file is a tokenizer.json
        (out / "tokenizer.json").write_bytes(Path(tokenizer).read_bytes())
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([d.text for d in docs], trainers.BpeTrainer(
            vocab_size=512, special_tokens=["<|endoftext|>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        tok.save(str(out / "tokenizer.json"))
        eos = 0

    utts = []
    for i in range(n_utterances):
        ws = sentence()
        units: list[int] = []
        times = []
        for w in ws:
            units += pron[w]
            times.append(len(units) / 25.0)
        starts = [0.0] + times[:-1]
        utts.append(SpeechRecord(id=f"utt{i}", units=units, durations=[1] * len(units), frame_rate=25.0,
                                 text=" ".join(lexicon[w] for w in ws),
                                 words=[Word(lexicon[w], s, e) for w, s, e in zip(ws, starts, times, strict=True)]))
    write_manifest(out / "speech.jsonl", utts)
    write_manifest(out / "text.jsonl", docs)
    settings = PrepareSettings(str(out / "tokenizer.json"), text_eos_id=eos, num_units=num_units,
                               shard_size=max(1, n_utterances // 2), workers=workers)
    prepare(out / "speech.jsonl", out / "speech", "speech", settings, progress=False)
    prepare(out / "text.jsonl", out / "text", "text", settings, progress=False)
    return {"tokenizer": str(out / "tokenizer.json"), "speech": str(out / "speech"), "text": str(out / "text")}
