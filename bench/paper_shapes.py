"""One training step at the paper's shapes (SmolTolk-150M: SmolLM-135M's 30 layers, width 576, 9 heads, 3 KV
heads, intermediate 1536, vocabulary 49,152; 500 units; 2 + 2 adapter layers), random weights, against what
users would run instead: a ``transformers`` ``LlamaForCausalLM`` with its embeddings resized by 502 + 1 rows
(vocabulary expansion as it is usually done).

Run from the repository root::

    .venv/bin/python bench/paper_shapes.py --quick          # small shapes, ~2 min: checks the script
    .venv/bin/python bench/paper_shapes.py                  # the paper's shapes (run it on an idle machine)

What the README reports (docs/paper-shapes/; about 18, 12, 21, 11 and 5 minutes on 2 cores; ``bench/head_cost.py``
times the heads alone)::

    .venv/bin/python bench/paper_shapes.py --contexts 1024 --repeats 2 > docs/paper-shapes/context-1024.json
    .venv/bin/python bench/paper_shapes.py --contexts 2048 --repeats 1 \
        --contenders transformers baseline smoltolk smoltolk+chunk smoltolk+ckpt > docs/paper-shapes/context-2048.json
    .venv/bin/python bench/paper_shapes.py --contexts 1024 2048 --repeats 2 --contenders transformers baseline \
        smoltolk > docs/paper-shapes/main-contenders-1024-2048.json
    .venv/bin/python bench/paper_shapes.py --contexts 1024 --repeats 4 --contenders baseline smoltolk \
        > docs/paper-shapes/smoltolk-vs-baseline-1024.json
    .venv/bin/python bench/paper_shapes.py --contexts 1024 --repeats 1 --contenders transformers baseline smoltolk \
        --mmap-threshold 131072 > docs/paper-shapes/context-1024-mmap.json

One JSON object goes to stdout; progress to stderr. Every measurement runs in a fresh process (this script
with ``--one NAME``), so its memory is its own: the model, AdamW (betas 0.9/0.95, weight decay 0.1) and one
batch of ``--batch`` rows of ``context`` tokens shaped like interleaved data (alternating text and speech
runs of 20-120 tokens), then ``--warmup`` steps and ``--steps`` timed steps (forward, backward, AdamW). The
warm-up is two steps: the second step still pays for the allocator's growth (at context 1024 it took 1.2-1.4x a
later step's time with 1.7-1.8x its page faults), so a single warm-up step biases the medians.
Reported per contender and context: the median step time, tokens/s and the process's peak resident memory
(``ru_maxrss``), and under ``rounds`` each round's own figures. Rounds (``--repeats``) visit the contenders
in a rotating order so slow phases of a noisy machine hit all alike; ratios are medians over rounds of
per-round ratios.

Resident memory is what the C allocator holds, not only live tensors: glibc's malloc raises its mmap
threshold each time a large block is freed, after which freed activations stay in its heap and count in
the next step's peak. ``--mmap-threshold BYTES`` fixes the threshold (``MALLOC_MMAP_THRESHOLD_``) in every
contender's process alike, so large blocks go back to the system when freed and the peak follows live memory.

Contenders: ``transformers`` (resized LlamaForCausalLM; its loss over all positions of the joint vocabulary),
``baseline`` and ``smoltolk`` in stage 2 (everything trains) and stage 1 (``-s1``: the backbone frozen with
``requires_grad=False``, as the trainer does), and SmolTolk stage 2 with ``--set``-style memory options:
``smoltolk+chunk`` (``loss_chunk`` = an eighth of the batch's positions), ``smoltolk+ckpt`` (activation
checkpointing per layer). MFU counts 2N FLOPs per token forward, 2N backward through every layer and
2N for the weight gradients of the parameters that train (stage 1: the speech ones only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

from common import SHAPES, UNITS, batch_for, log, run_self

CONTENDERS = ("transformers", "baseline", "smoltolk", "baseline-s1", "smoltolk-s1", "smoltolk+chunk",
              "smoltolk+ckpt")
def build(name: str, shape: dict, context: int, rows: int, device: str = "cpu", bf16: bool = False,
          compile_model: bool = False):
    """(a step function, tokens per step, parameter count) for one contender."""
    import contextlib

    import torch

    ids, is_speech = batch_for(context, rows, shape["vocab_size"])
    if name == "transformers":
        import transformers

        cfg = transformers.LlamaConfig(
            vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
            intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
            num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
            max_position_embeddings=max(2048, context), tie_word_embeddings=True, rope_theta=100000.0)
        model = transformers.LlamaForCausalLM(cfg)
        model.resize_token_embeddings(shape["vocab_size"] + UNITS + 2 + 1)  # units, EOS, PAD; SWT
        joint = torch.where(is_speech, ids + shape["vocab_size"] + 1, ids)  # speech ids after the text ones
        inputs, labels = joint[:, :-1], joint[:, 1:]
        params = list(model.parameters())

        def forward():
            return model(input_ids=inputs, labels=labels).loss
    else:
        from smoltolk.model.config import BASELINE, BackboneConfig, ModelConfig, SpeechConfig
        from smoltolk.model.tslm import TextSpeechLM, shift_targets

        base = name.split("-")[0].split("+")[0]
        speech = SpeechConfig(num_units=UNITS, **(BASELINE if base == "baseline" else {}))
        backbone = BackboneConfig(**shape, max_position_embeddings=max(2048, context), tie_word_embeddings=True)
        model = TextSpeechLM(ModelConfig(backbone, speech))
        # pieces of an eighth of the batch's positions (each head scores about half of them)
        model.set_memory_options(checkpoint_layers=name.endswith("+ckpt"),
                                 loss_chunk=max(64, rows * context // 8) if name.endswith("+chunk") else None)
        params = list(model.parameters())
        if name.endswith("-s1"):  # stage 1: only the speech parameters train
            params = list(model.speech_parameters().values())
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        batch = shift_targets(ids, is_speech)

        def forward():
            return model(**batch).loss
    model.train().to(device)
    if name != "transformers":
        batch.update({k: v.to(device) for k, v in batch.items()})
    else:
        inputs, labels = inputs.to(device), labels.to(device)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    run = torch.compile(forward) if compile_model else forward
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with autocast:
            loss = run()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    total, trained = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in params)
    return step, rows * context, (4 * total + 2 * trained) / 6  # parameters that do 6 FLOPs per token


def one(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    step, tokens, params = build(args.one, SHAPES["quick" if args.quick else "paper"], args.context, args.batch,
                                 args.device, args.bf16, args.compile)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    row = {"step_seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if args.device.startswith("cuda"):
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if args.peak_flops:  # 6 x (effective) parameters x tokens
        row["mfu"] = round(6 * params * tokens / seconds / args.peak_flops, 4)
    print(json.dumps(row))


def run_one(name: str, context: int, args: argparse.Namespace) -> dict:
    argv = ["--one", name, "--context", str(context), "--batch", str(args.batch), "--threads", str(args.threads),
            "--warmup", str(args.warmup), "--steps", str(args.steps), "--device", args.device]
    argv += ["--quick"] * args.quick + ["--bf16"] * args.bf16 + ["--compile"] * args.compile
    argv += ["--peak-flops", str(args.peak_flops)] if args.peak_flops else []
    env = (None if args.mmap_threshold is None else
           {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)})
    return run_self(__file__, argv, f"{name} at context {context}", env=env)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes (4 layers, width 128): checks the script")
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="default: 1024 2048 (quick: 256)")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--batch", type=int, default=1, help="rows per step (default: 1)")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the contenders (default: 2)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (default: 2: glibc's heap settles only after the second step)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per process (default: 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (bench/gpu.sh)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights), as run.precision=bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    p.add_argument("--peak-flops", type=float, default=None, help="the device's peak FLOP/s: adds MFU")
    p.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="glibc's fixed mmap threshold in every contender's process (e.g. 131072; glibc caps it at "
                        "32 MiB): peaks follow live memory, not what the allocator keeps")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement in this process
    p.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one(args)
        return
    contexts = args.contexts or ([256] if args.quick else [1024, 2048])
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.repeats):
        for context in contexts:
            order = args.contenders[r % len(args.contenders):] + args.contenders[:r % len(args.contenders)]
            for name in order:
                log(f"round {r + 1}/{args.repeats}: {name} at context {context}")
                runs.setdefault((name, context), []).append(run_one(name, context, args))
    report: dict = {"shapes": "quick" if args.quick else "SmolLM-135M (paper)", "batch": args.batch,
                    "threads": args.threads, "device": args.device, "bf16": args.bf16, "compile": args.compile,
                    "mmap_threshold": args.mmap_threshold,
                    "repeats": args.repeats, "results": {}, "ratios": {}, "rounds": {}}
    for (name, context), rows in runs.items():
        report["rounds"].setdefault(str(context), {})[name] = rows  # each round's own measurement
        report["results"].setdefault(str(context), {})[name] = {
            "step_seconds": statistics.median(x["step_seconds"] for x in rows),
            "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rows),
            "peak_rss_gb": max(x["peak_rss_gb"] for x in rows),
            **({"peak_cuda_gb": max(x["peak_cuda_gb"] for x in rows)} if "peak_cuda_gb" in rows[0] else {}),
            **({"mfu": statistics.median(x["mfu"] for x in rows)} if "mfu" in rows[0] else {})}

    def ratio(a: str, b: str, key: str, context: int) -> float | None:
        if (a, context) not in runs or (b, context) not in runs:
            return None
        return round(statistics.median(x[key] / y[key] for x, y in zip(runs[(a, context)], runs[(b, context)],
                                                                        strict=True)), 3)

    for context in contexts:
        report["ratios"][str(context)] = {
            "baseline_vs_transformers_tokens_per_s": ratio("baseline", "transformers", "tokens_per_s", context),
            "baseline_vs_transformers_peak_memory": ratio("baseline", "transformers", "peak_rss_gb", context),
            "smoltolk_vs_baseline_step_time": ratio("smoltolk", "baseline", "step_seconds", context),
            "stage1_vs_stage2_step_time": ratio("smoltolk-s1", "smoltolk", "step_seconds", context),
            "chunked_vs_whole_peak_memory": ratio("smoltolk+chunk", "smoltolk", "peak_rss_gb", context),
            "checkpointed_vs_plain_peak_memory": ratio("smoltolk+ckpt", "smoltolk", "peak_rss_gb", context),
            "checkpointed_vs_plain_step_time": ratio("smoltolk+ckpt", "smoltolk", "step_seconds", context)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
