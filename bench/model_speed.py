"""Forward+backward throughput and peak memory: bare backbone vs. baseline text-speech LM vs. SmolTolk.

Run from the repository root::

    python bench/model_speed.py            # default shape: ~75 s on an idle 2-core CPU, < 3 min when slow
    python bench/model_speed.py --quick    # ~25 s, noisier

One JSON object goes to stdout; progress goes to stderr.

Every model does the same work per step on the same (B, T) mixed-modality batch:
``zero_grad(set_to_none=True)``, forward with a loss, ``loss.backward()`` (no optimiser step).

* ``backbone``: ``LlamaLM`` alone, ``logits = model(input_ids).text_logits`` and a cross-entropy over all positions.
* ``baseline``: ``TextSpeechLM`` with ``SpeechConfig(**BASELINE)`` (regular vocabulary expansion).
* ``smoltolk``: ``TextSpeechLM`` with the default ``SpeechConfig`` (K input + K output adapter layers,
  dynamic layer pooling, residual).

Timing: warm-up steps for every model, then ``--repeats`` rounds; in each round every model runs
``--iters`` steps back to back (the model order rotates between rounds, so slow phases of a noisy
machine hit all models alike). No round starts after ``--budget`` seconds (but at least ``--min-repeats``
rounds run). A model's time per step is the median over rounds; ``time_ratio_vs_scaled_baseline_paired``
is the median of the per-round SmolTolk/baseline ratios (more robust to drift), divided by the layer ratio.

Memory: measured per model in a fresh Python process (this script with ``--memory-only MODEL``), after the
model and the batch are built and a short warm-up step has initialised kernels and thread pools (its
gradients are dropped again). "Peak" is the *extra* memory during one full forward+backward over what the
model and the batch already hold (it includes the parameter gradients the step allocates):

* ``peak_mem_mb`` (primary): peak of live bytes allocated through PyTorch's CPU allocator during the step,
  from ``torch.profiler`` memory events (exact tensor bytes; deterministic).
* ``peak_rss_delta_mb`` (cross-check): ``ru_maxrss`` after the step minus the process's resident set
  size just before it (includes malloc overhead/fragmentation and any library scratch buffers).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from common import backbone_config, batch_for, log, run_self

from smoltolk.model.config import BASELINE, ModelConfig, SpeechConfig
from smoltolk.model.llama import LlamaLM, init_weights
from smoltolk.model.tslm import TextSpeechLM, shift_targets

MODELS = ("backbone", "baseline", "smoltolk")
MEMORY_MARK = "MEMORY_RESULT "
TIME_TARGET = 1.05
MEMORY_TARGET = 1.25


# --------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("shape")
    g.add_argument("--layers", type=int, default=6, help="backbone layers L")
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--intermediate", type=int, default=768, help="SwiGLU intermediate size")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=2)
    g.add_argument("--vocab", type=int, default=1024, help="text vocabulary of the backbone")
    g.add_argument("--units", type=int, default=500, help="speech units")
    g.add_argument("--adapter-layers", type=int, default=2, help="SmolTolk's K (input and output adapter)")
    g.add_argument("--batch", type=int, default=4)
    g.add_argument("--seq", type=int, default=512, help="sequence length T (model inputs)")
    g.add_argument("--speech-run", type=int, nargs=2, default=(20, 60), metavar=("MIN", "MAX"))
    g.add_argument("--text-run", type=int, nargs=2, default=(10, 30), metavar=("MIN", "MAX"))
    g.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("measurement")
    t.add_argument("--warmup", type=int, default=2, help="warm-up steps per model")
    t.add_argument("--repeats", type=int, default=15, help="maximum timing rounds (models interleaved)")
    t.add_argument("--min-repeats", type=int, default=3, help="rounds run even past --budget")
    t.add_argument("--iters", type=int, default=2, help="steps per model per round")
    t.add_argument("--budget", type=float, default=110.0,
                   help="seconds for the timing rounds; no new round starts after this (slow/noisy machines)")
    t.add_argument("--quick", action="store_true",
                   help="short run (~25 s): warmup 1, up to 4 rounds of 1 step, budget 6 s")
    t.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice, the default)")
    t.add_argument("--profile", action="store_true",
                   help="also print a torch.profiler op table of one baseline and one SmolTolk step to stderr")
    t.add_argument("--memory-only", choices=MODELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats, args.min_repeats, args.iters, args.budget = 1, 4, 2, 1, 6.0
    return args


SHAPE_FLAGS = {"layers": "--layers", "hidden": "--hidden", "intermediate": "--intermediate", "heads": "--heads",
               "kv_heads": "--kv-heads", "vocab": "--vocab", "units": "--units", "adapter_layers": "--adapter-layers",
               "batch": "--batch", "seq": "--seq", "seed": "--seed"}


def shape_argv(args: argparse.Namespace) -> list[str]:
    argv = []
    for key, flag in SHAPE_FLAGS.items():
        argv += [flag, str(getattr(args, key))]
    argv += ["--speech-run", *map(str, args.speech_run), "--text-run", *map(str, args.text_run)]
    return argv


# --------------------------------------------------------------------------- data and models
def mixed_tokens(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) ids and is_speech of ``args``' shape (:func:`common.batch_for`), a switch token (text id = vocab
    size) at every modality switch."""
    return batch_for(args.seq, args.batch, args.vocab, args.seed, units=args.units, text_run=tuple(args.text_run),
                     speech_run=tuple(args.speech_run), switch=args.vocab)


def make_model(name: str, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    bb = backbone_config(args)
    if name == "backbone":
        model = LlamaLM(bb)
        init_weights(model, 0.02)
        return model
    extra = BASELINE if name == "baseline" else {"input_adapter_layers": args.adapter_layers,
                                                  "output_adapter_layers": args.adapter_layers}
    return TextSpeechLM(ModelConfig(backbone=bb, speech=SpeechConfig(num_units=args.units, **extra)))


def make_step(name: str, model: torch.nn.Module, args: argparse.Namespace):
    """A ``step()`` on the batch of ``args``' shape: zero_grad + forward + loss + backward."""
    tokens, is_speech = mixed_tokens(args)
    if name == "backbone":
        ids = tokens.masked_fill(~is_speech & (tokens == args.vocab), args.vocab - 1)  # no SWT row here
        inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

        def step() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            logits = model(inputs).text_logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            loss.backward()
            return loss

        return step

    batch = shift_targets(tokens, is_speech)

    def step() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out.loss.backward()
        return out.loss

    return step


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied weights


# --------------------------------------------------------------------------- memory (subprocess side)
def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def profiler_peak_bytes(step) -> int | None:
    """Peak live bytes allocated through PyTorch's CPU allocator during ``step()`` (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:
        return None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and str(event.extra_fields.device) == "cpu":
            peak = max(peak, int(event.extra_fields.total_allocated))
    return peak


def memory_only(args: argparse.Namespace) -> None:
    name = args.memory_only
    model = make_model(name, args)
    step = make_step(name, model, args)
    # Warm up kernels, thread pools and lazy library state on a short batch, then drop its gradients.
    make_step(name, model, argparse.Namespace(**{**vars(args), "seq": min(args.seq, 32)}))()
    model.zero_grad(set_to_none=True)
    gc.collect()
    before = current_rss_kb()
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    model.zero_grad(set_to_none=True)
    gc.collect()
    peak = profiler_peak_bytes(step)
    result = {"peak_rss_delta_mb": (after - before) / 1024, "rss_before_mb": before / 1024,
              "peak_mem_mb": None if peak is None else peak / 2**20}
    print(MEMORY_MARK + json.dumps(result), flush=True)


def measure_memory(name: str, args: argparse.Namespace) -> dict:
    """Run this script with ``--memory-only name`` in a fresh process; returns its result."""
    return run_self(os.path.abspath(__file__), ["--memory-only", name, *shape_argv(args)],
                    f"memory subprocess for {name}", mark=MEMORY_MARK)


# --------------------------------------------------------------------------- timing
def time_models(steps: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    for name, step in steps.items():
        for _ in range(args.warmup):
            step()
        log(f"warmed up {name}")
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for r in range(args.repeats):
            if r >= args.min_repeats and time.perf_counter() - start > args.budget:
                log(f"time budget of {args.budget:.0f}s used up after {r} rounds")
                break
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                step = steps[name]
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    step()
                times[name].append((time.perf_counter() - t0) / args.iters)
            log(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def profile_step(name: str, step) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    log(f"--- torch.profiler, one {name} step (self CPU time) ---")
    log(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


# --------------------------------------------------------------------------- main
def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def report(args: argparse.Namespace, times: dict, built: dict, memory: dict, inputs_speech: torch.Tensor,
           n_tok: int, start: float) -> dict:
    """The JSON report: per-model times and memory, and SmolTolk against the depth-scaled baseline."""
    models = {}
    for name in MODELS:
        med = statistics.median(times[name])
        mem = memory.get(name, {})
        models[name] = {
            "params": num_params(built[name]),
            "s_per_step_median": med,
            "s_per_step_min": min(times[name]),
            "s_per_step_all": [round(t, 4) for t in times[name]],
            "tokens_per_s": n_tok / med,
            "s_per_token": med / n_tok,
            "peak_mem_mb": mem.get("peak_mem_mb"),
            "peak_rss_delta_mb": mem.get("peak_rss_delta_mb"),
        }

    L, K = args.layers, args.adapter_layers
    layer_ratio = (L + 2 * K) / L
    bk, bl, st = models["backbone"], models["baseline"], models["smoltolk"]
    time_ratio = st["s_per_token"] / (bl["s_per_token"] * layer_ratio)
    # Per-round paired ratio: both models timed within the same round, so slow machine phases mostly cancel.
    paired = statistics.median(s / b for s, b in zip(times["smoltolk"], times["baseline"])) / layer_ratio
    mem_ratio = ratio(st["peak_mem_mb"], None if bl["peak_mem_mb"] is None else bl["peak_mem_mb"] * layer_ratio)
    rss_ratio = ratio(st["peak_rss_delta_mb"],
                      None if bl["peak_rss_delta_mb"] is None else bl["peak_rss_delta_mb"] * layer_ratio)
    result = {
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "shape": {
            "layers": L, "hidden": args.hidden, "intermediate": args.intermediate, "heads": args.heads,
            "kv_heads": args.kv_heads, "text_vocab": args.vocab, "speech_units": args.units,
            "adapter_layers_K": K, "batch": args.batch, "seq": args.seq, "tokens_per_step": n_tok,
            "speech_run": list(args.speech_run), "text_run": list(args.text_run), "seed": args.seed,
            "speech_fraction": round(float(inputs_speech.float().mean()), 4),
            "speech_runs_per_row": round(float(
                (inputs_speech[:, 1:] & ~inputs_speech[:, :-1]).sum() + inputs_speech[:, 0].sum()) / args.batch, 2),
        },
        "measurement": {
            "step": "zero_grad(set_to_none) + forward + loss + backward, no optimiser step",
            "warmup_steps": args.warmup, "repeats": len(times["baseline"]), "iters_per_repeat": args.iters,
            "timing_budget_s": args.budget,
            "statistic": "median over repeats of mean step time per repeat; models interleaved, order rotated",
        },
        "memory_method": (
            "each model in a fresh python process (this script --memory-only MODEL), after building model+batch "
            "and a short warm-up step whose grads are dropped. Peak = extra memory over that model+batch "
            "baseline during one forward+backward (incl. parameter grads). peak_mem_mb: max live bytes of "
            "PyTorch's CPU allocator during the step (torch.profiler profile_memory events, main thread). "
            "peak_rss_delta_mb: ru_maxrss after the step minus current RSS before it (malloc-level cross-check)."
            if memory else "skipped (--no-memory)"),
        "models": models,
        "layer_ratio": layer_ratio,
        "time_ratio_vs_scaled_baseline": time_ratio,
        "time_ratio_vs_scaled_baseline_paired": paired,
        "time_target": TIME_TARGET,
        "time_target_met": time_ratio <= TIME_TARGET,
        "memory_ratio_vs_scaled_baseline": mem_ratio,
        "memory_ratio_vs_scaled_baseline_rss": rss_ratio,
        "memory_target": MEMORY_TARGET,
        "memory_target_met": None if mem_ratio is None else mem_ratio <= MEMORY_TARGET,
        "baseline_vs_backbone_time_ratio": bl["s_per_token"] / bk["s_per_token"],
        "baseline_vs_backbone_memory_ratio": ratio(bl["peak_mem_mb"], bk["peak_mem_mb"]),
        "smoltolk_vs_baseline_time_ratio": st["s_per_token"] / bl["s_per_token"],
        "smoltolk_vs_baseline_memory_ratio": ratio(st["peak_mem_mb"], bl["peak_mem_mb"]),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    return result


def main() -> None:
    """Interleaved timing rounds over the models, then memory in subprocesses, then the JSON report (one
    sequential measurement protocol; kept in one place so its order is visible)."""
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_only:
        memory_only(args)
        return
    start = time.perf_counter()
    tokens, is_speech = mixed_tokens(args)
    inputs_speech = is_speech[:, :-1]
    n_tok = args.batch * args.seq

    memory: dict[str, dict] = {}
    if not args.no_memory:
        for name in MODELS:  # one after the other: they would only slow each other down on 2 cores
            t0 = time.perf_counter()
            memory[name] = measure_memory(name, args)
            log(f"memory: {name} peak {memory[name]['peak_mem_mb']:.1f} MB (allocator), "
                f"{memory[name]['peak_rss_delta_mb']:.1f} MB (RSS delta) [{time.perf_counter() - t0:.1f}s]")

    built = {name: make_model(name, args) for name in MODELS}
    steps = {name: make_step(name, model, args) for name, model in built.items()}
    times = time_models(steps, args)
    if args.profile:
        for name in ("baseline", "smoltolk"):
            profile_step(name, steps[name])

    print(json.dumps(report(args, times, built, memory, inputs_speech, n_tok, start), indent=2))


if __name__ == "__main__":
    main()
