"""Likelihood-scoring throughput: batched, packed and prefix-sharing vs one item at a time, on the
tiny preset (CPU).

Run from the repository root (one run per thread count)::

    python bench/eval_speed.py --threads 1     # ~30 s on an idle 2-core CPU
    python bench/eval_speed.py --threads 2
    python bench/eval_speed.py --quick         # ~6 s

One JSON object goes to stdout. Four item profiles, shaped like the benchmarks (items come in
pairs, as the tasks list them):

* ``swuggy``: word / non-word pairs, speech-only items of 5-25 units scored whole; the two
  utterances share no prefix (beyond the speech BOS);
* ``sblimp``: sentence pairs, speech-only items of 25-80 units scored whole, no shared prefix;
* ``storycloze``: sSC / tSC, speech-only stories of 150-350 units scored whole, in pairs that
  share the context (all but a 30-60 unit ending);
* ``storycloze_xmodal``: cross-modal T->S StoryCloze, pairs sharing a 40-80 token text context,
  then SWT and a 30-60 unit speech ending each; only the ending is scored.

Settings, each scoring the same items:

* ``one_at_a_time``: ``batch_tokens=1``, no prefix sharing: what the authors' release does;
* ``batched_padded``, ``batched_packed``: length-sorted batches of ``--batch-tokens`` positions,
  no prefix sharing;
* ``batched_shared``: padded batches with shared prefixes run once (what ``smoltolk eval`` does).

Per profile the time of a setting is the median of ``--repeats`` rounds after a warm-up; each
round runs every setting once, in a rotating order (so a noisy machine's slow phases hit all
alike). ``--threads 2`` needs both cores free: while another job holds one, torch's two threads
wait for each other and a run takes many times longer.

``speedup``: items/s of each setting over one-at-a-time; the target is >= 5 for
``batched_shared``. ``max_abs_diff``: the largest difference of an item's summed log-prob from
one-at-a-time. Short items gain most from batching (one at a time pays a fixed per-call cost per
item); long items are compute-bound either way on a CPU, so they gain only from work not done:
a shared context runs once per pair.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch

from smoltolk.eval.scorer import Item, LikelihoodScorer, Segment, continuation_item, speech_item
from smoltolk.model.tslm import TextSpeechLM
from smoltolk.presets import preset

TARGET = 5.0
PROFILES = {"swuggy": 512, "sblimp": 256, "storycloze": 64, "storycloze_xmodal": 128}  # items (pairs x 2)
SETTINGS = {"one_at_a_time": {"batch_tokens": 1, "share_prefixes": False},
            "batched_padded": {"layout": "padded", "share_prefixes": False},
            "batched_packed": {"layout": "packed", "pack_length": 512, "share_prefixes": False},
            "batched_shared": {"layout": "padded", "share_prefixes": True}}


def make_items(profile: str, n: int, num_units: int, text_vocab: int, seed: int = 0) -> list[Item]:
    """``n`` items (n / 2 pairs) of a profile (see the module docstring), random ids."""
    rng = random.Random(seed)

    def units(lo: int, hi: int) -> tuple[int, ...]:
        return tuple(rng.randrange(num_units) for _ in range(rng.randint(lo, hi)))

    items = []
    for _ in range(n // 2):
        if profile == "swuggy":
            items += [speech_item(units(5, 25)), speech_item(units(5, 25))]
        elif profile == "sblimp":
            items += [speech_item(units(25, 80)), speech_item(units(25, 80))]
        elif profile == "storycloze":
            context = units(120, 290)
            items += [speech_item(context + units(30, 60)), speech_item(context + units(30, 60))]
        else:
            context = Segment("text", tuple(rng.randrange(text_vocab) for _ in range(rng.randint(40, 80))))
            items += [continuation_item(context, Segment("speech", units(30, 60))) for _ in range(2)]
    return items


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
    names = list(SETTINGS)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
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
    results["speedup"] = {name: round(results[name]["items_per_s"] / base, 2) for name in names[1:]}
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared CPU; 0 = torch's choice)")
    parser.add_argument("--quick", action="store_true", help="a quarter of the items, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TextSpeechLM(preset("tiny")).eval()
    profiles = {p: bench_profile(model, p, n // 4 if args.quick else n, args.repeats, args.batch_tokens)
                for p, n in PROFILES.items()}
    out = {"model": "tiny preset (4 layers, width 64, SmolTolk), CPU", "threads": torch.get_num_threads(),
           "batch_tokens": args.batch_tokens, "repeats": args.repeats, "profiles": profiles,
           "target_speedup": TARGET,
           "meets_target": {p: r["speedup"]["batched_shared"] >= TARGET for p, r in profiles.items()}}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
