"""bench/memory_table.py: the activation count behaves as the memory options say, and the table's arithmetic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def mt():  # run as a script, bench/ is on the path (for bench/common.py); loaded here, the test puts it there
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("memory_table", BENCH / "memory_table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_counted_activations_follow_the_memory_options(mt):
    counts = mt.per_token("tiny", (64, 128), every=True)["bytes_per_token"]
    for stage in ("stage1", "stage2"):
        for precision in ("fp32", "bf16"):
            whole, chunk = counts[f"{stage}-{precision}"], counts[f"{stage}-{precision}-chunk"]
            ckpt = counts[f"{stage}-{precision}-chunk-ckpt"]
            assert 0 < ckpt < chunk < whole, (stage, precision, counts)
        assert counts[f"{stage}-fp32"] > counts[f"{stage}-bf16"]
    assert counts["stage1-fp32"] < counts["stage2-fp32"]  # a frozen backbone keeps no inputs for weight gradients


def test_counts_extrapolated_from_two_depths_equal_the_direct_count(mt):
    direct = mt.per_token("tiny", (64, 128), every=False)
    shallow = mt.per_token("tiny", (64, 128), every=False, depths=(1, 2))  # the tiny preset has 4 layers
    for key, value in direct["bytes_per_token"].items():
        assert abs(shallow["bytes_per_token"][key] - value) <= 1, key  # rounding only


def test_the_table_solves_the_stated_formula(mt):
    n = 1_000_000_000
    counts = {"2B": {"parameters": {"text": n, "speech": 0}, "decoder_layers": 10,
                     "bytes_per_token": {"stage2-fp32-chunk": 400_000, "stage2-bf16-chunk": 200_000,
                                         "stage2-bf16-chunk-ckpt": 20_000}}}
    t = mt.table(counts, k=2.0)
    cell = t["2B"]["bf16"]["80GB"]
    expected = int((0.9 * 80e9 - 18 * n) // (2.0 * 200_000))  # (usable - 18 N) / (k a)
    assert cell["max_tokens"] == expected and cell["max_micro_batch_ctx2048"] == expected // 2048
    assert cell["max_context_mb1"] == 8192  # capped where the linear count stops holding
    assert t["2B"]["fp32"]["24GB"]["max_tokens"] == int((0.9 * 24e9 - 16 * n) // (2.0 * 400_000))
    # checkpointing: what it keeps, plus the one layer being rebuilt ((200000 - 20000) / 10 layers)
    assert t["2B"]["bf16 + checkpointing"]["80GB"]["max_tokens"] == int((0.9 * 80e9 - 18 * n) // (2.0 * 38_000))
    # FSDP2: the state shards, activations do not; the recipe's 8 x 2048 tokens
    act = 2.0 * 200_000 * 8 * 2048
    fsdp = t["fsdp2_2b_recipe"]["bf16"]["24GB"]
    w = fsdp["world_size"]
    assert 18 * n / w + act <= 0.9 * 24e9 and (w == 1 or 18 * n / (w // 2) + act > 0.9 * 24e9)
    # activations alone above the device: no world size helps
    assert t["fsdp2_2b_recipe"]["bf16"]["24GB"]["activations_gb"] == round(act / 1e9, 1)
    big = mt.table({"2B": {**counts["2B"], "bytes_per_token": {**counts["2B"]["bytes_per_token"],
                                                                "stage2-bf16-chunk": 10_000_000}}}, k=1.0)
    assert big["fsdp2_2b_recipe"]["bf16"]["24GB"]["world_size"] is None
    assert "does not fit" in mt.markdown({"table": big})
