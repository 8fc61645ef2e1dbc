"""Likelihood-scoring throughput: batched vs one item at a time, on the tiny preset (CPU).

Run from the repository root::

    python bench/eval_speed.py             # ~1-2 min on a 2-core CPU
    python bench/eval_speed.py --quick

One JSON object goes to stdout. Three item profiles, shaped like the benchmarks:

* ``swuggy``: speech-only items of 5-25 units (a spoken word), scored whole;
* ``sblimp``: speech-only items of 25-80 units (a spoken sentence), scored whole;
* ``storycloze``: speech-only stories of 150-350 units, and cross-modal items (a 40-80 token
  text context, SWT, a 30-60 unit speech ending; the ending scored), half each.

Per profile every setting scores the same items; its time is the median of ``--repeats`` runs
after a warm-up. ``speedup`` = batched (padded) items/s over one-at-a-time items/s; the target
is >= 5. Batched and one-at-a-time scores agree to ``max_abs_diff``. Short items gain most: one
item at a time pays a fixed per-call cost per item; long items are compute-bound either way on
a CPU, so their speedup is bounded by how much more efficient large matrix products are.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch

from smoltolk.eval.scorer import LikelihoodScorer, Segment, continuation_item, speech_item
from smoltolk.model.tslm import TextSpeechLM
from smoltolk.presets import preset

TARGET = 5.0


PROFILES = {"swuggy": (5, 25, 512), "sblimp": (25, 80, 256), "storycloze": (150, 350, 64)}  # lengths, items


def make_items(profile: str, n: int, num_units: int, text_vocab: int, seed: int = 0):
    lo, hi, _ = PROFILES[profile]
    rng = random.Random(seed)
    items = []
    for i in range(n):
        units = tuple(rng.randrange(num_units) for _ in range(rng.randint(lo, hi)))
        if profile == "storycloze" and i % 2:
            text = tuple(rng.randrange(text_vocab) for _ in range(rng.randint(40, 80)))
            items.append(continuation_item(Segment("text", text), Segment("speech", units[:rng.randint(30, 60)])))
        else:
            items.append(speech_item(units))
    return items


def timed(scorer: LikelihoodScorer, items, repeats: int) -> tuple[float, list]:
    scorer.score(items[:16])  # warm-up
    times, scores = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        scores = scorer.score(items)
        times.append(time.perf_counter() - start)
    return statistics.median(times), scores


def bench_profile(model: TextSpeechLM, profile: str, n: int, repeats: int, batch_tokens: int) -> dict:
    items = make_items(profile, n, model.config.speech.num_units, model.config.backbone.vocab_size)
    tokens = sum(len(LikelihoodScorer(model).build(it).ids) for it in items)
    results: dict = {"items": len(items), "tokens": tokens}
    reference = None
    for name, kw in (("one_at_a_time", {"batch_tokens": 1}),
                     ("batched_padded", {"batch_tokens": batch_tokens, "layout": "padded"}),
                     ("batched_packed", {"batch_tokens": batch_tokens, "layout": "packed", "pack_length": 512})):
        print(f"{profile}: timing {name} ...", file=sys.stderr)
        seconds, scores = timed(LikelihoodScorer(model, **kw), items, repeats)
        results[name] = {"items_per_s": round(len(items) / seconds, 1), "tokens_per_s": round(tokens / seconds)}
        if reference is None:
            reference = scores
        else:
            results[name]["max_abs_diff"] = max(abs(a.logprob - b.logprob) for a, b in zip(reference, scores))
    base = results["one_at_a_time"]["items_per_s"]
    results["speedup"] = round(results["batched_padded"]["items_per_s"] / base, 2)
    results["speedup_packed"] = round(results["batched_packed"]["items_per_s"] / base, 2)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the items, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TextSpeechLM(preset("tiny")).eval()
    profiles = {p: bench_profile(model, p, n // 4 if args.quick else n, args.repeats, args.batch_tokens)
                for p, (_, _, n) in PROFILES.items()}
    out = {"model": "tiny preset (4 layers, width 64, SmolTolk), CPU", "threads": torch.get_num_threads(),
           "batch_tokens": args.batch_tokens, "profiles": profiles, "target_speedup": TARGET,
           "meets_target": {p: r["speedup"] >= TARGET for p, r in profiles.items()}}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
