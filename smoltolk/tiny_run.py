"""A one-minute run on a laptop CPU that shows the model working end to end.

It writes a tiny random text LM as a Hugging Face directory, loads it back through the HF
loader, wraps it as SmolTolk and as the vocabulary-expansion baseline, trains both briefly on
a synthetic interleaved text/speech language (each word has a fixed 3-unit "pronunciation"),
checks that cached decoding equals the full forward and that a checkpoint round-trips, and
prints the losses. (It proves the machinery, not the paper's claim: that is the mini-world
demo's job.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from smoltolk.model.cache import Cache
from smoltolk.model.config import BASELINE, SpeechConfig
from smoltolk.model.hf import load_hf_backbone, save_hf_backbone
from smoltolk.model.llama import LlamaLM, init_weights
from smoltolk.model.tslm import TextSpeechLM, shift_targets
from smoltolk.presets import preset

NUM_WORDS = 96  # text ids 1..NUM_WORDS are words
UNITS_PER_WORD = 3


class SyntheticLanguage:
    """Words follow a sparse random Markov chain; each word is spoken as 3 fixed speech units.
    Sequences interleave spans of text words and spoken words, with SWT at every switch."""

    def __init__(self, swt_id: int, num_units: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.next_words = torch.randint(1, NUM_WORDS + 1, (NUM_WORDS + 1, 3), generator=g)  # 3 successors each
        self.pron = torch.randint(0, num_units, (NUM_WORDS + 1, UNITS_PER_WORD), generator=g)
        self.swt_id = swt_id

    def sample(self, batch: int, length: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        tokens = torch.zeros(batch, length + 1, dtype=torch.long)
        speech = torch.zeros(batch, length + 1, dtype=torch.bool)
        word_start = torch.zeros(batch, length + 1, dtype=torch.bool)
        for b in range(batch):
            toks, mods, starts = [], [], []
            word = int(torch.randint(1, NUM_WORDS + 1, (1,), generator=g))
            spoken = bool(torch.randint(0, 2, (1,), generator=g))
            while len(toks) < length + 1:
                for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
                    if spoken:
                        units = self.pron[word].tolist()
                        toks += units
                        mods += [True] * len(units)
                        starts += [True] + [False] * (len(units) - 1)
                    else:
                        toks.append(word)
                        mods.append(False)
                        starts.append(True)
                    word = int(self.next_words[word, int(torch.randint(0, 3, (1,), generator=g))])
                toks.append(self.swt_id)
                mods.append(False)
                starts.append(False)
                spoken = not spoken
            tokens[b] = torch.tensor(toks[: length + 1])
            speech[b] = torch.tensor(mods[: length + 1])
            word_start[b] = torch.tensor(starts[: length + 1])
        return {**shift_targets(tokens, speech), "word_start": word_start[:, :-1]}


def _train(model: TextSpeechLM, data: SyntheticLanguage, steps: int, seed: int, label: str) -> list[float]:
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(range(steps), desc=f"train {label}", unit="step")
    for _ in bar:
        batch = data.sample(16, 128, g)
        batch.pop("word_start")
        out = model(**batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.lm_loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


@torch.no_grad()
def _evaluate(model: TextSpeechLM, data: SyntheticLanguage, seed: int) -> dict[str, float]:
    model.eval()
    batch = data.sample(32, 128, torch.Generator().manual_seed(seed + 1000))
    word_start = batch.pop("word_start")
    out = model(**batch, return_layer_weights=True)
    result = {"text_loss": float(out.text_loss), "speech_loss": float(out.speech_loss)}
    # Incremental decoding must reproduce the full forward exactly (up to float error).
    full = model(batch["input_ids"][:2], batch["is_speech"][:2])
    cache, parts = Cache(), []
    for t in range(0, 128, 16):
        parts.append(model(batch["input_ids"][:2, t:t + 16], batch["is_speech"][:2, t:t + 16], cache=cache))
    # relative to the largest logit: float rounding alone leaves about 1e-6 (another order of the same sums)
    result["cached_vs_full_rel_diff"] = max(
        float((torch.cat([p.speech_logits for p in parts], 1) - full.speech_logits).abs().max()
              / full.speech_logits.abs().max()),
        float((torch.cat([p.text_logits for p in parts], 1) - full.text_logits).abs().max()
              / full.text_logits.abs().max()))
    if out.layer_weights is not None:
        w_last = out.layer_weights[..., -1]
        sp = batch["is_speech"]
        # Input position t predicts t+1: a word boundary is ahead where the *next* unit starts a word.
        ahead = torch.zeros_like(word_start)
        ahead[:, :-1] = word_start[:, 1:]
        result["last_layer_weight_before_word_start"] = float(w_last[sp & ahead].mean())
        result["last_layer_weight_within_word"] = float(w_last[sp & ~ahead].mean())
    model.train()
    return result


def tiny_run(out: Path, steps: int = 150, seed: int = 0) -> dict:
    """Run the whole tiny pipeline into ``out``; returns (and writes) a summary."""
    t0 = time.time()
    torch.manual_seed(seed)
    cfg = preset("tiny")
    backbone = LlamaLM(cfg.backbone)
    init_weights(backbone, 0.02)
    save_hf_backbone(backbone, out / "backbone")
    print(f"wrote a tiny random text LM as a Hugging Face directory: {out / 'backbone'}")

    summary: dict = {"steps": steps, "seed": seed, "models": {}}
    models = {}
    for name, speech in [("smoltolk", SpeechConfig()), ("baseline", SpeechConfig(**BASELINE))]:
        torch.manual_seed(seed)
        model = TextSpeechLM.from_backbone(load_hf_backbone(out / "backbone"), speech)
        data = SyntheticLanguage(model.swt_id, speech.num_units, seed)
        losses = _train(model, data, steps, seed, name)
        result = _evaluate(model, data, seed)
        result["first_loss"], result["last_loss"] = losses[0], losses[-1]
        result["speech_params"] = sum(p.numel() for p in model.speech_parameters().values())
        summary["models"][name] = result
        models[name] = model

    path = models["smoltolk"].save_pretrained(out / "smoltolk")
    reloaded = TextSpeechLM.from_pretrained(path)
    probe = SyntheticLanguage(models["smoltolk"].swt_id, 500, seed).sample(2, 64, torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = models["smoltolk"].eval()(probe["input_ids"], probe["is_speech"]).speech_logits
        b = reloaded.eval()(probe["input_ids"], probe["is_speech"]).speech_logits
    summary["checkpoint_round_trip_exact"] = bool(torch.equal(a, b))
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, out)
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    print(f"\n{'model':<10}{'loss start':>11}{'loss end':>10}{'text':>8}{'speech':>8}{'cached vs full':>16}")
    for name, r in summary["models"].items():
        print(f"{name:<10}{r['first_loss']:>11.3f}{r['last_loss']:>10.3f}{r['text_loss']:>8.3f}"
              f"{r['speech_loss']:>8.3f}{r['cached_vs_full_rel_diff']:>16.1e}")
    print("(losses in nats per token; 'cached vs full': largest difference between incremental decoding with the KV "
          "cache and one full pass, relative to the largest logit: rounding alone, about 1e-6)")
    st = summary["models"]["smoltolk"]
    if "last_layer_weight_before_word_start" in st:
        print(f"SmolTolk last-layer pooling weight: {st['last_layer_weight_before_word_start']:.3f} before a word "
              f"starts vs {st['last_layer_weight_within_word']:.3f} within words")
    print(f"checkpoint round trip exact: {summary['checkpoint_round_trip_exact']}; "
          f"{summary['seconds']} s; summary in {out / 'summary.json'}")
