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
after a warm-up, in rounds that run every setting once in a rotating order (so a noisy machine's
slow phases hit all alike). One torch thread by default: two threads on a shared 2-core CPU give
erratic numbers. ``speedup`` = batched (padded) items/s over one-at-a-time items/s; the target
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


SETTINGS = {"one_at_a_time": {"batch_tokens": 1}, "batched_padded": {"layout": "padded"},
            "batched_packed": {"layout": "packed", "pack_length": 512}}


def bench_profile(model: TextSpeechLM, profile: str, n: int, repeats: int, batch_tokens: int) -> dict:
    """Rounds in which every setting scores all items once (order rotating), so drift hits all alike."""
    items = make_items(profile, n, model.config.speech.num_units, model.config.backbone.vocab_size)
    tokens = sum(len(LikelihoodScorer(model).build(it).ids) for it in items)
    scorers = {name: LikelihoodScorer(model, **{"batch_tokens": batch_tokens, **kw}) for name, kw in SETTINGS.items()}
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    scores = {}
    for scorer in scorers.values():
        scorer.score(items[:16])  # warm-up
    print(f"{profile}: {repeats} rounds ...", file=sys.stderr)
    for r in range(repeats):
        names = list(SETTINGS)
        for name in names[r % 3:] + names[:r % 3]:
            start = time.perf_counter()
            scores[name] = scorers[name].score(items)
            times[name].append(time.perf_counter() - start)
    results: dict = {"items": len(items), "tokens": tokens}
    for name in SETTINGS:
        seconds = statistics.median(times[name])
        results[name] = {"items_per_s": round(len(items) / seconds, 1), "tokens_per_s": round(tokens / seconds)}
        if name != "one_at_a_time":
            results[name]["max_abs_diff"] = max(abs(a.logprob - b.logprob)
                                                for a, b in zip(scores["one_at_a_time"], scores[name]))
    base = results["one_at_a_time"]["items_per_s"]
    results["speedup"] = round(results["batched_padded"]["items_per_s"] / base, 2)
    results["speedup_packed"] = round(results["batched_packed"]["items_per_s"] / base, 2)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared CPU; 0 = torch's choice)")
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
