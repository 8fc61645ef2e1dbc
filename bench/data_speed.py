"""Batch construction from prepared shards vs the tiny model's training speed (JSON on stdout).

Builds a synthetic word-aligned speech corpus and a text corpus (a BPE tokenizer trained on the
spot), prepares them into shards with ``smoltolk.data.prepare``, then times ``BatchSampler`` on
one core (interleaved only, and the stage-2 mixture), and a training step of the ``tiny`` preset
on batches of the same shape. Targets: >= 500,000 tokens/s, and >= 20x the model's tokens/s.

    python bench/data_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import batch_for

from smoltolk.data.manifest import SpeechRecord, TextRecord, Word, write_manifest
from smoltolk.data.prepare import PrepareSettings, prepare
from smoltolk.data.sampler import BatchSampler, DataConfig, DatasetConfig, Mixture
from smoltolk.model.tslm import TextSpeechLM, shift_targets
from smoltolk.presets import preset

VOCAB = [f"w{i}" for i in range(400)]


def build_corpus(root: Path, n_utts: int, n_docs: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    rng = np.random.default_rng(0)
    sentences = [" ".join(VOCAB[int(i)] for i in rng.integers(0, len(VOCAB), 20)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=480, special_tokens=["<|endoftext|>", "<unk>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(root / "tokenizer.json"))
    speech = []
    for u in range(n_utts):
        words = [VOCAB[int(i)] for i in rng.integers(0, len(VOCAB), int(rng.integers(10, 40)))]
        units, times = [], []
        for _ in words:
            units += rng.integers(0, 500, int(rng.integers(3, 7))).tolist()
            times.append(len(units) / 25.0)
        starts = [0.0] + times[:-1]
        speech.append(SpeechRecord(id=f"u{u}", units=units, durations=[1] * len(units), frame_rate=25.0,
                                   words=[Word(w, s, e) for w, s, e in zip(words, starts, times, strict=True)]))
    write_manifest(root / "speech.jsonl", speech)
    write_manifest(root / "text.jsonl", [TextRecord(f"d{i}", sentences[i % 200] * 3) for i in range(n_docs)])
    settings = PrepareSettings(str(root / "tokenizer.json"), text_eos_id=0, shard_size=max(n_utts // 4, 1))
    prepare(root / "speech.jsonl", root / "speech", "speech", settings, progress=False)
    prepare(root / "text.jsonl", root / "text", "text", settings, progress=False)
    return root


def time_sampler(mixture: Mixture, micro_batch: int, seconds: float) -> float:
    sampler = BatchSampler(mixture, micro_batch=micro_batch)
    next(sampler)
    start, tokens = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        tokens += next(sampler)["tokens"].numel()
    return tokens / (time.perf_counter() - start)


def time_training(context: int, micro_batch: int, steps: int) -> float:
    model = TextSpeechLM(preset("tiny"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, speech = batch_for(context, micro_batch, 512)
    batch = shift_targets(tokens, speech)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return micro_batch * context * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 6.0
    torch.set_num_threads(1)  # "on one core"
    with tempfile.TemporaryDirectory() as tmp:
        root = build_corpus(Path(tmp), n_utts=400 if args.quick else 2000, n_docs=300)
        datasets = [DatasetConfig(str(root / "speech"), "speech"), DatasetConfig(str(root / "text"), "text"),
                    DatasetConfig(str(root / "speech"), "interleaved")]
        results = {}
        for name, weights in [("interleaved", {"interleaved": 1.0}),
                              ("mixture", {"speech": 1 / 3, "text": 1 / 3, "interleaved": 1 / 3})]:
            mix = Mixture(DataConfig(datasets=datasets, modality_weights=weights, context=args.context), 480, 500)
            results[f"{name}_tokens_per_s"] = time_sampler(mix, micro_batch=8, seconds=seconds)
        torch.set_num_threads(2)
        results["tiny_model_train_tokens_per_s_2_threads"] = time_training(args.context, 2, 3 if args.quick else 6)
    slowest = min(results["interleaved_tokens_per_s"], results["mixture_tokens_per_s"])
    results.update({
        "context": args.context, "sampler_threads": 1,
        "target_tokens_per_s": 500_000, "target_met": slowest >= 500_000,
        "ratio_vs_tiny_training": slowest / results["tiny_model_train_tokens_per_s_2_threads"],
        "ratio_target": 20, "ratio_target_met": slowest / results["tiny_model_train_tokens_per_s_2_threads"] >= 20,
    })
    json.dump({k: (round(v, 1) if isinstance(v, float) else v) for k, v in results.items()}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
