"""Training speed at the demo's default shape (recipes/demo/sizes.yaml; one-voice mini-world):
``smoltolk train`` against a bare forward/backward/step loop on the same model and batches, for each of the
demo's models; SmolTolk's output adapter over speech rows only against every row; two one-thread processes
side by side against one two-thread process; MFU against this CPU's measured matmul peak. Prints JSON.

    .venv/bin/python bench/demo_train_speed.py [--quick]      # on idle cores: it times

``smoltolk train``'s rate is the difference of a long and a short run (process set-up, loading and the final
checkpoint cancel); the bare loop times stage-2 steps on pre-built batches after two warm-up steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("baseline", "smoltolk", "smoltolk-no-adapters")


def build(root: Path) -> tuple[Path, Path, object]:
    """A one-voice world at the demo's shape (fewer stories) and a (briefly pretrained) backbone."""
    from smoltolk.data.prepare import default_text_eos_id
    from smoltolk.demo import SIZES, prepare_world, pretrain_backbone

    size = dataclasses.replace(SIZES["default"], n_text=400, n_speech=600, n_bench_stories=16, n_bench_pairs=16,
                               pretrain_steps=2)
    world_dir, _, _ = prepare_world(root, size, 0, progress=False)
    tok = world_dir / "tokenizer.json"
    backbone = pretrain_backbone(root / "data", root, size, 0, tok, default_text_eos_id(tok), progress=False)
    return root / "data", backbone, size


def time_train(data: Path, backbone: Path, size, model: str, root: Path, steps: int) -> float:
    from smoltolk.demo import train_model

    s = dataclasses.replace(size, stage1_steps=1, stage2_steps=steps - 1)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        train_model(data, root / f"{model}-{steps}-{time.monotonic_ns()}", model, backbone, s, 0, False, False)
    return time.perf_counter() - start


def bare_rate(config: Path, steps: int, rows_only: bool = True) -> float:
    """Stage-2 tokens/s of a plain loop: the model, optimizer and batches of the run whose train_config.json
    is ``config``."""
    import torch

    from smoltolk.model.tslm import shift_targets
    from smoltolk.train import trainer
    from smoltolk.train.trainer import load_train_config

    cfg = load_train_config(config, ["run.resume=never"])
    torch.manual_seed(0)
    model, _ = trainer.build_model(cfg)
    model.train()
    if hasattr(model, "speech_rows_only"):
        model.speech_rows_only = rows_only
    opt = torch.optim.AdamW(trainer.param_groups(model, cfg.optim.weight_decay), lr=1e-3,
                            betas=tuple(cfg.optim.betas))
    sampler = trainer._samplers(cfg, model, trainer.DistInfo())[2]
    batches = [shift_targets(b["tokens"], b["is_speech"]) for b in (next(sampler) for _ in range(steps + 2))]
    start = 0.0
    for i, batch in enumerate(batches):
        if i == 2:
            start = time.perf_counter()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * cfg.schedule.micro_batch * cfg.data.context / (time.perf_counter() - start)


def _bare_job(config: Path, steps: int) -> float:
    return bare_rate(config, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (checks the script, not the numbers)")
    args = ap.parse_args()
    import torch
    from common import matmul_peak

    from smoltolk.demo import SIZES
    from smoltolk.parallel import run_jobs
    from smoltolk.train import trainer
    from smoltolk.train.trainer import load_train_config

    torch.set_num_threads(1)
    long, short, bare = (12, 4, 6) if args.quick else (60, 15, 30)
    d = SIZES["default"]
    out: dict = {"shape": f"demo default (width {d.width}, {d.layers} layers, context {d.context}, "
                          f"micro-batch {d.micro_batch}, {d.speakers} voice(s))",
                 "threads": 1, "steps_long_short": [long, short], "bare_steps": bare, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, backbone, size = build(root)
        tokens = size.micro_batch * size.context
        peak = matmul_peak()
        configs = {}
        for model in MODELS:
            t_long = time_train(data, backbone, size, model, root, long)
            t_short = time_train(data, backbone, size, model, root, short)
            configs[model] = next(root.glob(f"{model}-{long}-*/runs/{model}/train_config.json"))
            train = (long - short) * tokens / (t_long - t_short)
            plain = bare_rate(configs[model], bare)
            cfg = load_train_config(configs[model], [])
            model_obj, _ = trainer.build_model(cfg)
            fpt = trainer.flops_per_token(model_obj, size.context)
            out["models"][model] = {"train_tokens_per_s": round(train), "bare_tokens_per_s": round(plain),
                                    "ratio_train_vs_bare": round(train / plain, 3), "flops_per_token": fpt,
                                    "mfu_train": round(train * fpt / peak, 3)}
        every = bare_rate(configs["smoltolk"], bare, rows_only=False)
        rows = bare_rate(configs["smoltolk"], bare, rows_only=True)
        out["smoltolk_output_adapter"] = {"speech_rows_only_tokens_per_s": round(rows),
                                          "every_row_tokens_per_s": round(every), "speedup": round(rows / every, 3)}
        # both cores: two one-thread loops side by side, against one loop on two threads
        torch.set_num_threads(2)
        two_threads = bare_rate(configs["baseline"], bare)
        torch.set_num_threads(1)
        side = run_jobs(_bare_job, [(configs["baseline"], bare)] * 2, 2, 1)
        out["two_cores"] = {"one_process_two_threads_tokens_per_s": round(two_threads),
                            "two_processes_one_thread_tokens_per_s": round(sum(side)),
                            "one_thread_tokens_per_s": out["models"]["baseline"]["bare_tokens_per_s"],
                            "side_by_side_vs_two_threads": round(sum(side) / two_threads, 3)}
        out["matmul_peak_gflops_one_thread"] = round(peak / 1e9, 1)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
