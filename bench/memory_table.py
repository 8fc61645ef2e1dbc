"""How large a context and micro-batch fit in training: SmolTolk-150M / 400M / 2B on 24, 80 and 140 GB devices,
and the FSDP2 world size the 2B recipe needs, computed from counted activation bytes per token and measured
peak memory (``bench/paper_shapes.py``).

Run from the repository root (400M and 2B are counted at depths 2 and 4 and extrapolated to their own depth)::

    .venv/bin/python bench/memory_table.py --paper-shapes docs/paper-shapes/context-{1024,2048}.json \
        > docs/paper-shapes/memory_table.json

(about 15-25 minutes on one thread; `--counts FILE` reuses the counts of an earlier run and only recomputes the table).

What is counted. For each model, one training forward of random weights at two contexts (``--contexts``,
batch 1, interleaved-shaped rows as ``paper_shapes``) with a ``saved_tensors_hooks`` that adds up the distinct
storages autograd keeps for the backward pass (parameters excluded): the difference between the two contexts
divided by the difference in tokens is the activation bytes per token ``a`` (fixed terms cancel). Counted in
float32 and under CPU bf16 autocast (close to what ``run.precision=bf16`` does on a GPU, whose autocast casts a
similar but not identical set of ops), in stage 2 (everything trains)
and stage 1 (backbone frozen: linear layers keep no inputs for weight gradients), with the heads' loss whole
and chunked (``run.loss_chunk`` = an eighth of the larger context, at least 64: the chunks' logits are
rebuilt in the backward pass, so what is saved does not depend on the chunk size). With activation
checkpointing per layer (``run.activation_checkpointing``) what a layer saves is rebuilt in the backward
pass: counted is then what autograd keeps outside the layers (heads, pooling) and each layer's input,
which the checkpoint holds; the table adds one layer's own activations (the layer being rebuilt),
estimated as the difference to the same layout without checkpointing over the number of decoder layers.

The formula. Peak bytes = ``P + k x a x tokens``, with ``tokens = context x micro_batch`` and ``P`` = 16 bytes per
trained parameter (float32 weight, gradient and AdamW's two moments) + 4 per frozen one, + 2 per parameter
under bf16 autocast (its bf16 copies); under FSDP2 over ``W`` devices ``P`` is divided by ``W`` (activations
are not). ``k`` is the measured peak over the counted: the slope of ``paper_shapes``' peak resident memory
between its two contexts over ``a`` counted for the same contender (transients of the backward pass: the
gradients of the logits and of each layer's output); 1 when no ``paper_shapes`` result is given. A device
holds ``0.9 x`` its memory for these (CUDA context and allocator slack). The largest context is shown at
micro-batch 1 (a power of two, capped at 8192: the count is linear in tokens, measured between 256 and 2048;
longer contexts add attention terms that grow with its square, such as the adapters' explicit masks), the
largest micro-batch at the recipes' context 2048.

One JSON object to stdout; ``--markdown`` also prints the README's tables to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

from common import UNITS, batch_for, run_self

SIZES = {"150M": "smoltolk-150m", "400M": "smoltolk-400m", "2B": "smoltolk-2b"}
DEVICES_GB = (24, 80, 140)
USABLE = 0.9
MAX_CONTEXT = 8192  # beyond it the linear count no longer holds (see the docstring)
RECIPE_CONTEXT, RECIPE_MICRO_BATCH = 2048, 8  # recipes/smoltolk-400m.yaml (2B inherits them)


def count_saved(model, context: int, vocab: int, bf16: bool) -> int:
    """Bytes of the distinct non-parameter storages one training forward keeps for the backward pass: what
    autograd saves, and (with activation checkpointing) each decoder layer's input, which the checkpoint holds."""
    import torch

    from smoltolk.model.llama import DecoderLayer
    from smoltolk.model.tslm import shift_targets

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, tuple[int, object]] = {}

    def keep(t) -> None:  # holds the tensor, so a freed storage's address is never reused within the count
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            kept[s.data_ptr()] = (s.nbytes(), t)

    def pack(t):
        keep(t)
        return t

    hooks = []
    if model.backbone.checkpoint_layers:
        hooks = [m.register_forward_pre_hook(lambda _m, args: keep(args[0]))
                 for m in model.modules() if isinstance(m, DecoderLayer)]
    ids, is_speech = batch_for(context, 1, vocab)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
            loss = model(**shift_targets(ids, is_speech)).loss
    finally:
        for h in hooks:
            h.remove()
    del loss
    return sum(n for n, _ in kept.values())


TABLE_KEYS = ("stage2-fp32-chunk", "stage2-bf16-chunk", "stage2-bf16-chunk-ckpt")  # what the table uses


def _count_layouts(cfg, contexts: tuple[int, int], every: bool, label: str) -> dict[str, float]:
    """Counted activation bytes per token of one model config, per stage / precision / loss layout."""
    import torch

    from smoltolk.model.tslm import TextSpeechLM

    torch.manual_seed(0)
    model = TextSpeechLM(cfg).train()
    vocab = cfg.backbone.vocab_size
    t0, t1 = contexts
    out: dict[str, float] = {}
    for stage in (2, 1):
        for p in model.backbone.parameters():
            p.requires_grad_(stage == 2)
        for precision in ("fp32", "bf16"):
            for layout, options in (("", {}), ("-chunk", {"loss_chunk": max(64, t1 // 8)}),
                                    ("-chunk-ckpt", {"loss_chunk": max(64, t1 // 8), "checkpoint_layers": True})):
                key = f"stage{stage}-{precision}{layout}"
                if not every and key not in TABLE_KEYS:
                    continue
                model.set_memory_options(**options)
                a = [count_saved(model, t, vocab, precision == "bf16") for t in (t0, t1)]
                out[key] = (a[1] - a[0]) / (t1 - t0)
                print(f"{label}: {key}: {out[key]:.0f} bytes/token", file=sys.stderr, flush=True)
    return out


def per_token(name: str, contexts: tuple[int, int], every: bool, depths: tuple[int, int] | None = None) -> dict:
    """Counted activation bytes per token of one preset: for every precision / stage / loss layout if ``every``,
    else for the table's layouts only. With ``depths`` (two backbone depths), the preset is counted at those
    depths and extrapolated to its own (every term is a per-layer cost times the depth plus a fixed rest: exact
    when the counts are), which keeps the 2B count within this machine's memory."""
    import dataclasses

    import torch

    from smoltolk.model.llama import DecoderLayer
    from smoltolk.model.tslm import TextSpeechLM
    from smoltolk.presets import preset

    cfg = preset(name)
    cfg.speech.num_units = UNITS
    with torch.device("meta"):  # parameter counts without the weights
        meta = TextSpeechLM(cfg)
    out: dict = {"parameters": {"text": sum(p.numel() for p in meta.text_parameters().values()),
                                "speech": sum(p.numel() for p in meta.speech_parameters().values())},
                 "decoder_layers": sum(isinstance(m, DecoderLayer) for m in meta.modules()),
                 "width": cfg.backbone.hidden_size, "counted_at_depths": list(depths) if depths else None}
    if depths is None:
        counts = _count_layouts(cfg, contexts, every, name)
    else:
        d0, d1 = depths
        shallow = [_count_layouts(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, num_layers=d)),
                                  contexts, every, f"{name} at depth {d}") for d in depths]
        depth = cfg.backbone.num_layers
        counts = {k: shallow[0][k] + (shallow[1][k] - shallow[0][k]) * (depth - d0) / (d1 - d0) for k in shallow[0]}
    out["bytes_per_token"] = {k: round(v) for k, v in counts.items()}
    return out


def merge_results(reports: list[dict]) -> dict:
    """paper_shapes reports of one batch size merged: their results by context and contender."""
    if len({r["batch"] for r in reports}) != 1:
        raise SystemExit("memory_table: the paper_shapes results were measured with different batch sizes")
    merged = {"batch": reports[0]["batch"], "results": {}}
    for r in reports:
        for context, contenders in r["results"].items():
            merged["results"].setdefault(context, {}).update(contenders)
    return merged


def calibration(paper_shapes: dict | None, counted_150m: dict) -> dict:
    """k = measured peak-memory slope per token / counted bytes per token, per paper_shapes contender."""
    if not paper_shapes:
        return {"k": 1.0, "source": "none (no paper_shapes result given): k = 1"}
    res = paper_shapes["results"]
    ctx = sorted(res, key=int)
    if len(ctx) < 2:
        return {"k": 1.0, "source": "paper_shapes has one context only: k = 1"}
    lo, hi = ctx[0], ctx[-1]
    tokens = (int(hi) - int(lo)) * paper_shapes["batch"]
    ks = {}
    for contender, key in (("smoltolk", "stage2-fp32"), ("smoltolk+chunk", "stage2-fp32-chunk"),
                           ("smoltolk-s1", "stage1-fp32")):
        if contender in res[lo] and contender in res[hi]:
            slope = (res[hi][contender]["peak_rss_gb"] - res[lo][contender]["peak_rss_gb"]) * 2**30 / tokens
            ks[contender] = round(slope / counted_150m["bytes_per_token"][key], 3)
    if not ks:
        return {"k": 1.0, "source": "paper_shapes has no smoltolk contender: k = 1"}
    return {"k": max(ks.values()), "per_contender": ks,
            "source": f"peak resident memory slope between contexts {lo} and {hi} (paper_shapes) over the count; "
                      "the largest ratio is used"}


def fits(budget: float, fixed: float, per_tok: float) -> int:
    """Tokens per device that fit (0 when the fixed bytes alone do not)."""
    return max(0, int((budget - fixed) // per_tok))


def per_token_bytes(count: dict, key: str) -> float:
    """Counted bytes per token of a layout; with checkpointing plus one layer's own (the layer being rebuilt in
    the backward pass: what the same layout without checkpointing keeps, less what checkpointing keeps, over
    the decoder layers)."""
    a = count["bytes_per_token"][key]
    if key.endswith("-ckpt"):
        a += (count["bytes_per_token"][key[:-len("-ckpt")]] - a) / count["decoder_layers"]
    return a


def state_bytes(n: int, bf16: bool) -> int:
    """Weights, gradients and AdamW moments of ``n`` trained float32 parameters, + their bf16 copies under autocast."""
    return 16 * n + (2 * n if bf16 else 0)


def table(counts: dict, k: float) -> dict:
    """Largest context (micro-batch 1) and micro-batch (context 2048) per size, device and layout, and the 2B
    recipe's FSDP2 world size."""
    out: dict = {}
    layouts = {"bf16": "stage2-bf16-chunk", "bf16 + checkpointing": "stage2-bf16-chunk-ckpt",
               "fp32": "stage2-fp32-chunk"}
    for size, c in counts.items():
        n = c["parameters"]["text"] + c["parameters"]["speech"]
        for layout, key in layouts.items():
            fixed = state_bytes(n, "bf16" in layout)
            per_tok = k * per_token_bytes(c, key)
            for gb in DEVICES_GB:
                tokens = fits(USABLE * gb * 1e9, fixed, per_tok)
                context = 0 if tokens < 256 else min(MAX_CONTEXT, 2 ** int(math.log2(tokens)))
                out.setdefault(size, {}).setdefault(layout, {})[f"{gb}GB"] = {
                    "max_tokens": tokens, "max_context_mb1": context, "max_micro_batch_ctx2048": tokens // 2048}
    recipe_tokens = RECIPE_CONTEXT * RECIPE_MICRO_BATCH
    c2b = counts.get("2B")
    if c2b:
        n = c2b["parameters"]["text"] + c2b["parameters"]["speech"]
        fsdp: dict = {}
        for layout, key in layouts.items():
            if layout == "fp32":
                continue
            act = k * per_token_bytes(c2b, key) * recipe_tokens
            for gb in DEVICES_GB:
                budget = USABLE * gb * 1e9
                state = state_bytes(n, bf16=True)
                world = next((w for w in (1, 2, 4, 8, 16, 32, 64) if state / w + act <= budget), None)
                fsdp.setdefault(layout, {})[f"{gb}GB"] = {
                    "world_size": world, "activations_gb": round(act / 1e9, 1),
                    "state_gb_unsharded": round(state / 1e9, 1)}
        out["fsdp2_2b_recipe"] = {"context": RECIPE_CONTEXT, "micro_batch": RECIPE_MICRO_BATCH, **fsdp}
    return out


def _context(cell: dict) -> str:
    if not cell["max_context_mb1"]:
        return "does not fit"
    return f">= {MAX_CONTEXT}" if cell["max_tokens"] >= 2 * MAX_CONTEXT else str(cell["max_context_mb1"])


def markdown(report: dict) -> str:
    t = report["table"]
    lines = ["| model | layout | " + " | ".join(f"{gb} GB: context (mb 1) / micro-batch (ctx 2048)"
                                             for gb in DEVICES_GB) + " |",
             "|---|---|" + "---|" * len(DEVICES_GB)]
    for size in SIZES:
        for layout, cells in t.get(size, {}).items():
            row = [f"{_context(cells[f'{gb}GB'])} / {cells[f'{gb}GB']['max_micro_batch_ctx2048']}"
                   for gb in DEVICES_GB]
            lines.append(f"| {size} | {layout} | " + " | ".join(row) + " |")
    f = t.get("fsdp2_2b_recipe")
    if f:
        lines += ["", "| 2B recipe (context 2048, micro-batch 8) | " + " | ".join(f"{gb} GB" for gb in DEVICES_GB)
                  + " |", "|---|" + "---|" * len(DEVICES_GB)]
        for layout in ("bf16", "bf16 + checkpointing"):
            cells = [str(f[layout][f"{gb}GB"]["world_size"] or "does not fit") for gb in DEVICES_GB]
            lines.append(f"| FSDP2 devices, {layout} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def count_in_subprocess(size: str, args: argparse.Namespace) -> dict:
    """per_token for one size in a fresh process: the allocator's high-water mark of one size (about 13 GB for
    the 2B at depth 4) is not carried into the next."""
    return run_self(__file__, ["--one", size, "--contexts", *map(str, args.contexts), "--threads", str(args.threads)],
                    f"memory_table: counting {size}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper-shapes", type=Path, nargs="+", help="bench/paper_shapes.py JSON results (calibrate k; "
                   "several files, e.g. one per context, are merged)")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--contexts", type=int, nargs=2, default=(256, 512), help="the two counted contexts")
    p.add_argument("--counts", type=Path, help="reuse the counts of an earlier run's JSON (only recompute the table)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", action="store_true", help="also print the README's tables to stderr")
    p.add_argument("--one", choices=list(SIZES), help=argparse.SUPPRESS)  # internal: count one size, print JSON
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        # every layout for 150M (the calibration compares it with paper_shapes' contenders), the table's for the
        # rest; 400M and 2B counted at depths 2 and 4 and extrapolated (the 2B at full depth needs > 24 GB)
        print(json.dumps(per_token(SIZES[args.one], tuple(args.contexts), every=args.one == "150M",
                                   depths=None if args.one == "150M" else (2, 4))))
        return
    if args.counts:
        earlier = json.loads(args.counts.read_text())
        counts, args.contexts = {s: c for s, c in earlier["counts"].items() if s in args.sizes}, earlier["contexts"]
    else:
        counts = {size: count_in_subprocess(size, args) for size in args.sizes}
    shapes = merge_results([json.loads(f.read_text()) for f in args.paper_shapes]) if args.paper_shapes else None
    if shapes and "150M" not in counts:
        raise SystemExit("memory_table: --paper-shapes calibrates against the 150M count: include 150M in --sizes")
    cal = calibration(shapes, counts["150M"]) if "150M" in counts else {"k": 1.0, "source": "no 150M count"}
    report = {"contexts": list(args.contexts), "usable_fraction": USABLE, "calibration": cal, "counts": counts,
              "table": table(counts, cal["k"])}
    print(json.dumps(report, indent=2))
    if args.markdown:
        print(markdown(report), file=sys.stderr)


if __name__ == "__main__":
    main()
