"""End-to-end ``smoltolk train`` throughput on the tiny recipe vs a bare forward/backward/step loop
on the same model shape and batches, in one run; plus an MFU estimate against a measured matmul
peak. Prints JSON. Target: train / bare >= 0.9 (data, logging, checkpointing cost <= 10%).

    python bench/train_speed.py [--quick]

Fixed costs (process set-up, loading shards, the final checkpoint) are removed by timing a long
and a short run and using the difference, for both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import matmul_peak

from smoltolk.data.synthetic import make_synthetic_corpus
from smoltolk.model.tslm import shift_targets
from smoltolk.train import trainer
from smoltolk.train.schedule import learning_rates
from smoltolk.train.trainer import load_train_config, train

RECIPE = Path(__file__).parent.parent / "recipes" / "tiny.yaml"


def overrides(data: dict, out: Path, steps: int, checkpoint_every: int) -> list[str]:
    ds = (f"[{{path: {data['speech']}, modality: speech}}, {{path: {data['text']}, modality: text}}, "
          f"{{path: {data['speech']}, modality: interleaved}}]")
    return [f"data.datasets={ds}", "validation.datasets=[]", "validation.every=0", f"run.out_dir={out}",
            "schedule.stage1_steps=0", f"schedule.stage2_steps={steps}", f"run.checkpoint_every={checkpoint_every}",
            "run.progress=true", "run.log_every=1"]


def time_train(data: dict, root: Path, steps: int, checkpoint_every: int) -> float:
    out = root / f"train-{steps}-{time.monotonic_ns()}"
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        train(load_train_config(RECIPE, overrides(data, out, steps, checkpoint_every)))
    return time.perf_counter() - start


def time_bare(data: dict, root: Path, steps: int) -> tuple[float, float]:
    """A plain loop: same model, optimizer, learning rates and (pre-built) batches; returns
    (seconds for ``steps`` steps, flops per token)."""
    cfg = load_train_config(RECIPE, overrides(data, root / "bare", steps, 0))
    torch.manual_seed(cfg.run.seed)
    model, _ = trainer.build_model(cfg)
    opt = torch.optim.AdamW(trainer.param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                            betas=tuple(cfg.optim.betas))
    sampler = trainer._samplers(cfg, model, trainer.DistInfo())[2]
    batches = [shift_targets(b["tokens"], b["is_speech"]) for b in (next(sampler) for _ in range(steps))]
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        rates = learning_rates(step, cfg.optim, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = rates[g["name"]]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start, trainer.flops_per_token(model, cfg.data.context)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared CPU; 0 = torch's choice)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    long, short = (30, 5) if args.quick else (80, 10)
    cfg = load_train_config(RECIPE, [])
    tokens_per_step = cfg.schedule.micro_batch * cfg.data.context
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_synthetic_corpus(root / "data", n_utterances=400, n_documents=400)
        # warm-up (allocator, thread pools) so that neither side pays it
        time_bare(data, root, 3)
        ratios, train_rates, bare_rates = [], [], []
        for _ in range(1 if args.quick else 2):
            t_long = time_train(data, root, long, checkpoint_every=long // 2)
            t_short = time_train(data, root, short, checkpoint_every=short)
            b_long, fpt = time_bare(data, root, long)
            b_short, _ = time_bare(data, root, short)
            train_rate = (long - short) * tokens_per_step / (t_long - t_short)
            bare_rate = (long - short) * tokens_per_step / (b_long - b_short)
            train_rates.append(train_rate)
            bare_rates.append(bare_rate)
            ratios.append(train_rate / bare_rate)
    peak = matmul_peak()
    train_tps = statistics.median(train_rates)
    result = {
        "recipe": "recipes/tiny.yaml", "context": cfg.data.context, "micro_batch": cfg.schedule.micro_batch,
        "steps_long_short": [long, short], "threads": torch.get_num_threads(),
        "train_tokens_per_s": round(train_tps, 1), "bare_loop_tokens_per_s": round(statistics.median(bare_rates), 1),
        "ratio_train_vs_bare": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
        "target_ratio": 0.9, "target_met": statistics.median(ratios) >= 0.9,
        "train_includes": "data sampling from shards, metrics JSONL every step, progress bar, checkpoints every "
                          "half run (long) / at the end",
        "flops_per_token": fpt, "measured_matmul_peak_gflops": round(peak / 1e9, 1),
        "mfu_estimate": round(train_tps * fpt / peak, 4),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
