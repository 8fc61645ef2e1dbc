"""What several bench/ scripts share: progress messages, the paper's model shapes, a random mixed text-speech batch,
the matmul peak. The scripts run as ``python bench/NAME.py``, which puts bench/ on the import path."""

from __future__ import annotations

import json
import subprocess
import sys
import time

SHAPES = {  # SmolLM-135M (paper) and a small stand-in for --quick
    "paper": dict(hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
                  vocab_size=49152),
    "quick": dict(hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2,
                  vocab_size=4096),
}
UNITS = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def batch_for(context: int, rows: int, vocab: int, seed: int = 0, *, units: int = UNITS,
              text_run: tuple[int, int] = (20, 120), speech_run: tuple[int, int] = (20, 120),
              switch: int | None = None):
    """(ids, is_speech) of ``rows`` x (context + 1): alternating text and speech runs whose lengths are uniform in
    ``text_run`` / ``speech_run`` (inclusive; odd rows start with speech), text ids below ``vocab``, units below
    ``units``. With ``switch`` (a text id), that token sits at every modality switch, as in prepared data. One
    builder for every bench script; a fixed seed, so every process agrees."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = context + 1
    ids, is_speech = torch.empty(rows, n, dtype=torch.long), torch.empty(rows, n, dtype=torch.bool)
    for r in range(rows):
        row: list[int] = []
        flags: list[bool] = []
        speech = bool(r % 2)
        while len(row) < n:
            if row and switch is not None:
                row.append(switch)
                flags.append(False)
            lo, hi = speech_run if speech else text_run
            length = int(torch.randint(lo, hi + 1, (), generator=g))
            row += torch.randint(0, units if speech else vocab, (length,), generator=g).tolist()
            flags += [speech] * length
            speech = not speech
        ids[r], is_speech[r] = torch.tensor(row[:n]), torch.tensor(flags[:n])
    return ids, is_speech


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of the best of ``repeats`` n x n float32 matmuls on this process's threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def backbone_config(args, max_position_embeddings: int = 2048):
    """The backbone of a script's ``--vocab --hidden --intermediate --layers --heads --kv-heads`` options."""
    from smoltolk.model.config import BackboneConfig

    return BackboneConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                          num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
                          max_position_embeddings=max_position_embeddings)


def run_self(script: str, argv: list[str], what: str, env: dict | None = None, mark: str = "") -> dict:
    """Run ``script`` again in a fresh process (peak memory and allocator state are not carried over) and
    return the JSON of its last stdout line (or of the line after ``mark``); a failure raises with its stderr
    (exit -9 is the OOM killer)."""
    done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env)
    lines = done.stdout.splitlines()
    if mark:
        lines = [line[len(mark):] for line in lines if line.startswith(mark)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {done.returncode}; -9 is the OOM killer):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])
