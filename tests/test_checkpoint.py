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
    for variant in VARIANTS:
        tiny_model(variant).save_pretrained(tmp_path / variant)
        assert TextSpeechLM.from_pretrained(tmp_path / variant).config.speech == tiny_model(variant).config.speech


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

    import smoltolk.model.tslm as tslm

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(tslm, "save_weights", crash)
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
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError
    assert (target / "a.txt").read_text() == "one"


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(CheckpointError, match="not a smoltolk checkpoint; refusing"):
        tiny_model().save_pretrained(tmp_path / "notes")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_checkpoint_holds_no_pickle(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
