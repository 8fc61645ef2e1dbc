"""Generation speed: cached (KV caches in backbone and both adapters) vs full recomputation, and
text-only generation vs ``transformers``' ``generate`` on the same backbone weights.

Run from the repository root::

    python bench/generate_speed.py            # ~2 min on an idle 2-core CPU
    python bench/generate_speed.py --quick    # ~40 s, noisier

One JSON object goes to stdout; progress goes to stderr. All decoding is greedy, batch 1, with
EOS stopping off, so every run produces exactly ``--new-tokens`` tokens.

* ``cached_vs_full``: SmolTolk (random weights) continues a mixed text/speech prompt of 256 and
  1024 tokens in speech (``smoltolk.generate.generate``, ``use_cache=True`` vs ``False``).
  ``new_tokens_per_s`` counts the whole call (prefill included); ``decode_tokens_per_s`` only the
  tokens after the first (what each extra token costs). ``speedup`` is the ratio of whole-call
  times (target >= 10 at 1024 tokens). ``same_tokens``: both produced identical tokens.
* ``vs_transformers``: the bare backbone (``LlamaLM``, text only) saved with ``save_hf_backbone``
  and loaded with ``transformers.LlamaForCausalLM.from_pretrained``; our ``generate`` vs theirs
  (``do_sample=False``, ``min_new_tokens = max_new_tokens``) on the same prompt. ``speedup`` =
  their time / ours (target >= 1.0). For reference it also times SmolTolk's text->text path.

Timing: one warm-up call each, then ``--repeats`` rounds with the contenders interleaved; medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from common import backbone_config, log

from smoltolk.generate import Text, generate, stream
from smoltolk.model.config import ModelConfig, SpeechConfig
from smoltolk.model.hf import save_hf_backbone
from smoltolk.model.llama import LlamaLM, init_weights
from smoltolk.model.tslm import TextSpeechLM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--units", type=int, default=500)
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per cached/full call")
    p.add_argument("--hf-prompt", type=int, default=128, help="prompt length for the transformers comparison")
    p.add_argument("--hf-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timing rounds of the cached/full comparison")
    p.add_argument("--hf-repeats", type=int, default=7, help="timing rounds of the transformers comparison")
    p.add_argument("--quick", action="store_true", help="1 round, 16 new tokens, contexts as given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.hf_repeats, args.new_tokens, args.hf_new_tokens = 1, 3, 16, 64
    return args


def mixed_prompt(length: int, args: argparse.Namespace) -> list:
    """Alternating text (10-30 tokens) and speech (20-60 units) segments, ``length`` tokens with
    the SWTs generation inserts between them, ending in speech."""
    g = torch.Generator().manual_seed(args.seed)
    segments, total, speech = [], 0, True
    while total < length:
        n = int(torch.randint(20, 61, (), generator=g)) if speech else int(torch.randint(10, 31, (), generator=g))
        n = min(n, length - total - (1 if segments else 0))
        if n <= 0:
            break
        ids = torch.randint(0, args.units if speech else args.vocab, (n,), generator=g).tolist()
        segments.append(ids if speech else Text(tuple(ids)))
        total += n + (1 if len(segments) > 1 else 0)
        speech = not speech
    return segments[::-1] if isinstance(segments[-1], Text) else segments  # end in speech


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_stream(model, prompt, n: int, use_cache: bool) -> dict:
    """Time one call token by token: whole-call seconds and seconds after the first token."""
    t0 = time.perf_counter()
    stamps, ids = [], []
    for tok in stream(model, [prompt], to="speech", max_new_tokens=n, temperature=0.0, stop_at_eos=False,
                      use_cache=use_cache):
        stamps.append(time.perf_counter())
        ids.append(tok.id)
    return {"total": stamps[-1] - t0, "decode": stamps[-1] - stamps[0], "ids": ids}


def cached_vs_full(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = TextSpeechLM(ModelConfig(backbone_config(args, 4096), SpeechConfig(num_units=args.units))).eval()
    out = {"model": {"params": sum(p.numel() for p in model.parameters()), "layers": args.layers,
                     "hidden": args.hidden, "adapter_layers": 2, "new_tokens": args.new_tokens}}
    n = args.new_tokens
    for ctx in args.contexts:
        prompt = mixed_prompt(ctx, args)
        for use_cache in (True, False):
            run_stream(model, prompt, 2, use_cache)  # warm-up
        runs = {True: [], False: []}
        for r in range(args.repeats):
            for use_cache in (True, False) if r % 2 == 0 else (False, True):
                runs[use_cache].append(run_stream(model, prompt, n, use_cache))
            log(f"context {ctx}: round {r + 1}/{args.repeats}")
        res = {}
        for use_cache, name in ((True, "cached"), (False, "full")):
            total = statistics.median(x["total"] for x in runs[use_cache])
            decode = statistics.median(x["decode"] for x in runs[use_cache])
            res[name] = {"seconds": round(total, 4), "new_tokens_per_s": round(n / total, 2),
                         "decode_tokens_per_s": round((n - 1) / decode, 2)}
        res["speedup"] = round(res["full"]["seconds"] / res["cached"]["seconds"], 2)
        res["decode_speedup"] = round(res["cached"]["decode_tokens_per_s"] / res["full"]["decode_tokens_per_s"], 2)
        res["same_tokens"] = runs[True][0]["ids"] == runs[False][0]["ids"]
        out[f"context_{ctx}"] = res
    return out


def vs_transformers(args: argparse.Namespace) -> dict:
    import transformers

    torch.manual_seed(args.seed)
    ours = LlamaLM(backbone_config(args, 4096)).eval()
    init_weights(ours, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_backbone(ours, tmp)
        theirs = transformers.LlamaForCausalLM.from_pretrained(tmp).eval()
    torch.manual_seed(args.seed + 1)
    tsl = TextSpeechLM(ModelConfig(backbone_config(args, 4096), SpeechConfig(num_units=args.units))).eval()
    prompt = torch.randint(0, args.vocab, (args.hf_prompt,), generator=torch.Generator().manual_seed(3)).tolist()
    n = args.hf_new_tokens

    def run_ours():
        return generate(ours, Text(tuple(prompt)), max_new_tokens=n, temperature=0.0, stop_at_eos=False).ids

    def run_tslm():
        return generate(tsl, Text(tuple(prompt)), to="text", max_new_tokens=n, temperature=0.0, stop_at_eos=False).ids

    def run_theirs():
        with torch.inference_mode():
            out = theirs.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=0)
        return out[0, len(prompt):].tolist()

    contenders = {"smoltolk_llama": run_ours, "transformers": run_theirs, "smoltolk_tslm_text": run_tslm}
    for fn in contenders.values():
        fn()  # warm-up
    times = {k: [] for k in contenders}
    outputs = {}
    for r in range(args.hf_repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for k in order:
            t, outputs[k] = timed(contenders[k])
            times[k].append(t)
        log(f"transformers comparison: round {r + 1}/{args.hf_repeats}")
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"prompt_tokens": args.hf_prompt, "new_tokens": n, "transformers_version": transformers.__version__}
    for k in contenders:
        res[k] = {"seconds": round(med[k], 4), "new_tokens_per_s": round(n / med[k], 2)}
    res["speedup"] = round(med["transformers"] / med["smoltolk_llama"], 2)
    res["same_tokens"] = outputs["smoltolk_llama"] == outputs["transformers"]
    return res


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "cached_vs_full": cached_vs_full(args), "vs_transformers": vs_transformers(args)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
