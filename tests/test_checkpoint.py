"""save_pretrained / from_pretrained: exact round trip, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import VARIANTS, mixed_batch, tiny_backbone, tiny_model

from smoltolk.errors import CheckpointError
from smoltolk.model.io import atomic_directory
from smoltolk.model.tslm import TextSpeechLM


@pytest.mark.parametrize("variant", ["smoltolk", "baseline", "no-dynamic-pooling"])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_is_exact(tmp_path, variant, tied):
    model = tiny_model(variant, backbone=tiny_backbone(tie_word_embeddings=tied))
    model.save_pretrained(tmp_path / "ckpt")
    loaded = TextSpeechLM.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    for (n, p), (m, q) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert n == m and torch.equal(p, q), n
    assert loaded.speech_head.weight is loaded.speech_embed.weight
    assert (loaded.backbone.lm_head.weight is loaded.backbone.embed_tokens.weight) == tied
    ids, is_speech = mixed_batch(2, 16)
    with torch.no_grad():
        assert torch.equal(model(ids, is_speech).speech_logits, loaded(ids, is_speech).speech_logits)
    assert loaded.backbone.rotary.theta == model.backbone.rotary.theta


def test_all_variants_load(tmp_path):
    ids, is_speech = mixed_batch(2, 16)
    for variant in VARIANTS:
        model = tiny_model(variant, seed=3)
        model.save_pretrained(tmp_path / variant)
        loaded = TextSpeechLM.from_pretrained(tmp_path / variant).eval()
        assert loaded.config == model.config
        with torch.no_grad():
            a, b = model(ids, is_speech), loaded(ids, is_speech)
        assert torch.equal(a.speech_logits, b.speech_logits) and torch.equal(a.text_logits, b.text_logits)


def test_truncated_weights_give_a_clear_error(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated or corrupted"):
        TextSpeechLM.from_pretrained(tmp_path / "ckpt")


def test_corrupted_config_gives_a_clear_error(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    cfg = tmp_path / "ckpt" / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        TextSpeechLM.from_pretrained(tmp_path / "ckpt")


def test_config_that_does_not_fit_the_weights(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["model"]["speech"]["input_adapter_layers"] = 1
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['input_adapter\.1\."):
        TextSpeechLM.from_pretrained(tmp_path / "ckpt")


def test_a_hugging_face_directory_is_not_mistaken_for_a_checkpoint(hf_llama_dir):
    path, _ = hf_llama_dir()
    with pytest.raises(CheckpointError, match="not a smoltolk checkpoint.*from_backbone"):
        TextSpeechLM.from_pretrained(path)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = tiny_model(seed=0)
    first.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr("smoltolk.model.tslm.write_safetensors", crash)  # the weights' write, after config.json
    with pytest.raises(KeyboardInterrupt):
        tiny_model(seed=1).save_pretrained(tmp_path / "ckpt")
    after = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directory left behind


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, replaceable=lambda p: True) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError
    assert (target / "a.txt").read_text() == "one"


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(CheckpointError, match="holds files this save did not write; refusing"):
        tiny_model().save_pretrained(tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_checkpoint_holds_no_pickle(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_a_hugging_face_directory_is_never_overwritten(tmp_path, hf_llama_dir):
    from smoltolk.cli import main
    from smoltolk.model.hf import load_hf_backbone, save_hf_backbone

    path, _ = hf_llama_dir()
    (path / "README.md").write_text("model card")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    assert main(["wrap", str(path), str(path)]) == 2
    with pytest.raises(CheckpointError, match="refusing"):
        save_hf_backbone(load_hf_backbone(path), path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    out = save_hf_backbone(load_hf_backbone(path), tmp_path / "export")
    save_hf_backbone(load_hf_backbone(path), out)  # its own export may be replaced


def test_a_stale_backup_from_a_crashed_save_does_not_block_saving(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    (tmp_path / f".ckpt.old-{__import__('os').getpid()}").mkdir()
    (tmp_path / f".ckpt.old-{__import__('os').getpid()}" / "x").write_text("leftover")
    tiny_model(seed=1).save_pretrained(tmp_path / "ckpt")
    assert TextSpeechLM.from_pretrained(tmp_path / "ckpt").config == tiny_model().config


def test_bf16_loading_keeps_rope_frequencies_in_float32(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    model = TextSpeechLM.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert model.backbone.embed_tokens.weight.dtype == torch.bfloat16
    assert model.backbone.rotary.inv_freq.dtype == torch.float32
    assert torch.equal(model.backbone.rotary.inv_freq, tiny_model().backbone.rotary.inv_freq)


def test_safetensors_writer_gives_the_same_bytes_for_the_same_tensors_and_reads_back(tmp_path):
    """Equal weights give equal files (sorted tensors and metadata; the safetensors library writes metadata
    in a hash map's order), and the file reads back with the safetensors library, dtypes and metadata kept."""
    from safetensors import safe_open

    from smoltolk.model.io import write_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"b.weight": torch.randn(3, 5, generator=g), "a.bias": torch.randn(7, generator=g).bfloat16(),
               "mask": torch.tensor([True, False, True]), "step": torch.tensor(12), "empty": torch.zeros(0, 4),
               "t": torch.randn(4, 6, generator=g).t()}  # not contiguous
    meta = {"smoltolk": "tslm", "format": "pt", "note": "x"}
    write_safetensors(tensors, tmp_path / "one.safetensors", meta)
    write_safetensors(dict(reversed(tensors.items())), tmp_path / "two.safetensors", dict(reversed(meta.items())))
    data = (tmp_path / "one.safetensors").read_bytes()
    assert data == (tmp_path / "two.safetensors").read_bytes()
    assert int.from_bytes(data[:8], "little") % 8 == 0
    with safe_open(str(tmp_path / "one.safetensors"), "pt") as f:
        assert f.metadata() == meta and sorted(f.keys()) == sorted(tensors)
        for name, t in tensors.items():
            back = f.get_tensor(name)
            assert back.dtype == t.dtype and torch.equal(back, t), name
    with pytest.raises(TypeError, match="complex"):
        write_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "z.safetensors")
