"""Do the tests' float tolerances still catch real bugs? Break the model on purpose, one way at a time,
and run the test family that should notice.

Each mutant replaces one line of the library (in place; the file is restored afterwards, also on
Ctrl-C) and runs each named test file on its own: every one of them must fail (the first failing
test is printed). Prints one JSON line per mutant; exits 1 if any file let a mutant through. Run it
on a clean tree with nothing else using it (the tests import the mutated file):

    .venv/bin/python scripts/tolerance_mutants.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (file, exact text, replacement, tests that must fail, what kind of bug it is)
MUTANTS = {
    "documents-mix": (
        "smoltolk/model/cache.py",
        "    return (causal & same)[:, None]",
        "    return causal[None, None].expand(q_seg.shape[0], 1, -1, -1)",
        ["tests/test_backbone.py", "tests/test_tslm.py", "tests/test_eval_scorer.py"], "wrong mask"),
    "position-skips-one": (
        "smoltolk/model/cache.py",
        "    return torch.where(last_start >= 0, idx - last_start, prev_pos[:, None] + 1 + idx)",
        "    return torch.where(last_start >= 0, idx - last_start, prev_pos[:, None] + 2 + idx)",
        ["tests/test_backbone.py", "tests/test_tslm.py", "tests/test_generate.py", "tests/test_hf.py"],
        "dropped position (cached decoding)"),
    "mlp-without-norm": (
        "smoltolk/model/llama.py",
        "        return x + self.mlp(self.post_attention_layernorm(x))",
        "        return x + self.mlp(x)", ["tests/test_hf.py"], "misplaced norm"),
    "rope-wrong-frequency": (
        "smoltolk/model/llama.py",
        "        freqs = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, D/2)",
        "        freqs = position_ids[..., None].float() * 1.01 * self.inv_freq.float()  # (B, T, D/2)",
        ["tests/test_hf.py"], "RoPE 1% off (a wrong base or scaling)"),
    "residual-after-adapter": (
        "smoltolk/model/tslm.py", "            pooled = pooled + z", "            pooled = pooled + x",
        ["tests/test_tslm.py"], "speech path: the residual taken after the input adapter"),
    "hubert-next-layer": (
        "smoltolk/data/speech_tokenizer.py",
        "        return out.hidden_states[self.layer].float().cpu()  # (B, frames, dim)",
        "        return out.hidden_states[self.layer + 1].float().cpu()  # (B, frames, dim)",
        ["tests/test_speech_tokenizer.py"], "wrong feature layer"),
    "packed-items-mix": (
        "smoltolk/eval/scorer.py",
        "        inputs, doc = ids[:, :-1].to(device), None if doc is None else doc[:, :-1].to(device)",
        "        inputs, doc = ids[:, :-1].to(device), None", ["tests/test_eval_scorer.py"],
        "wrong mask (packed scoring)"),
    "no-weight-decay": (
        "smoltolk/train/config.py", "    weight_decay: float = 0.1", "    weight_decay: float = 0.0",
        ["tests/test_train.py::test_golden_loss_reproduces_and_falls"], "wrong recipe"),
}


def _resolve(name: str) -> tuple[str, str, str]:
    path, old, new, *_ = MUTANTS[name]
    return path, old, new


def run(name: str) -> dict:
    path, old, new = _resolve(name)
    tests, kind = MUTANTS[name][3], MUTANTS[name][4]
    file = ROOT / path
    original = file.read_text()
    if original.count(old) != 1:
        raise SystemExit(f"{name}: expected the line once in {path}, found it {original.count(old)} times")
    t0 = time.time()
    caught = {}
    try:
        file.write_text(original.replace(old, new))
        for test in tests:  # each family on its own: every one of them should notice
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                                  cwd=ROOT, capture_output=True, text=True)
            failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
            caught[test] = failed[0].split("::", 1)[1] if proc.returncode and failed else proc.returncode != 0
    finally:
        file.write_text(original)
    return {"mutant": name, "kind": kind, "file": path, "caught_by": caught, "seconds": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(MUTANTS), help="run these mutants only")
    args = ap.parse_args()
    survived = 0
    for name in args.only or MUTANTS:
        result = run(name)
        survived += not all(result["caught_by"].values())
        print(json.dumps(result), flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
