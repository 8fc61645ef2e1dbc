"""Hugging Face interop: logits parity with transformers, sharded loading, tokenizer, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_close, model_terms

from smoltolk.errors import CheckpointError, ConfigError
from smoltolk.model.cache import Cache
from smoltolk.model.hf import load_hf_backbone, load_tokenizer, save_hf_backbone

PARITY_CASES = {
    "gqa-untied": dict(),
    "tied": dict(tie_word_embeddings=True),
    "mha-bias": dict(num_key_value_heads=4, attention_bias=True),
    "mqa-theta": dict(num_attention_heads=6, num_key_value_heads=1, rope_theta=100000.0),
    "head-dim": dict(head_dim=16),
    "llama3-rope": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "linear-rope": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_logits_and_hidden_states_match_transformers(hf_llama_dir, case):
    path, ref = hf_llama_dir(**PARITY_CASES[case])
    ours = load_hf_backbone(path)
    ids = torch.randint(0, 96, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(ids, output_hidden_states=True)
        out = ours(ids, return_hidden_states=True)
    terms = model_terms(ours, 40)
    assert_close(out.text_logits, expected.logits, terms=terms)
    assert len(out.hidden_states) == len(expected.hidden_states)
    for mine, theirs in zip(out.hidden_states, expected.hidden_states, strict=True):  # last one after the final norm
        assert_close(mine, theirs, terms=terms)


def test_sharded_checkpoint_loads_the_same_weights(hf_llama_dir):
    single, ref = hf_llama_dir("single")
    sharded, _ = hf_llama_dir("sharded", shard="30KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    a, b = load_hf_backbone(single), load_hf_backbone(sharded)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_kv_cache_matches_transformers(hf_llama_dir):
    path, ref = hf_llama_dir(tie_word_embeddings=True)
    ours = load_hf_backbone(path)
    ids = torch.randint(0, 96, (2, 21), generator=torch.Generator().manual_seed(2))
    cache, parts = Cache(), []
    with torch.no_grad():
        expected = ref(ids).logits
        for start, stop in [(0, 6), (6, 7), (7, 8), (8, 15), (15, 21)]:
            parts.append(ours(ids[:, start:stop], cache=cache).text_logits)
    assert_close(torch.cat(parts, 1), expected, terms=model_terms(ours, 21))


def test_saved_backbone_loads_in_transformers(tmp_path, hf_llama_dir):
    transformers = pytest.importorskip("transformers")
    path, _ = hf_llama_dir(tie_word_embeddings=True, attention_bias=True)
    ours = load_hf_backbone(path)
    out = save_hf_backbone(ours, tmp_path / "export")
    theirs = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, 96, (2, 17))
    with torch.no_grad():
        assert_close(theirs(ids).logits, ours(ids).text_logits, terms=model_terms(ours, 17))


def test_tokenizer_json_beside_the_checkpoint(tmp_path, hf_llama_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path, _ = hf_llama_dir()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran to the cat"] * 20,
                            trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>"]))
    tok.save(str(path / "tokenizer.json"))
    loaded = load_tokenizer(path)
    assert loaded.decode(loaded.encode("the cat ran").ids).strip() == "the cat ran"
    (path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(path)
    with pytest.raises(CheckpointError, match="missing"):
        load_tokenizer(tmp_path)


def test_unknown_architecture_is_named(hf_llama_dir):
    path, _ = hf_llama_dir()
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="gpt2.*not supported"):
        load_hf_backbone(path)


def test_missing_weight_file_is_named(hf_llama_dir):
    path, _ = hf_llama_dir(shard="30KB")
    victim = sorted(path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_hf_backbone(path)


def test_no_weights_and_pickles_are_refused(hf_llama_dir):
    path, _ = hf_llama_dir()
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        load_hf_backbone(path)


def test_shape_mismatch_names_the_tensor(hf_llama_dir):
    path, _ = hf_llama_dir()
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|up|down)_proj\.weight.*shape"):
        load_hf_backbone(path)


def test_missing_tensor_is_named(hf_llama_dir):
    from safetensors.torch import load_file, save_file

    path, _ = hf_llama_dir()
    state = load_file(path / "model.safetensors")
    del state["model.norm.weight"]
    save_file(state, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors \['norm.weight'\]"):
        load_hf_backbone(path)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_hf_backbone(tmp_path / "nowhere")


def test_qwen2_style_qkv_bias_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                   use_sliding_window=False, max_position_embeddings=128)
    ref = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)
    ref.save_pretrained(tmp_path / "qwen")
    ours = load_hf_backbone(tmp_path / "qwen")
    assert ours.layers[0].self_attn.q_proj.bias is not None and ours.layers[0].self_attn.o_proj.bias is None
    assert ours.config.family == "qwen2" and ours.config.biases == ("q", "k", "v")
    ids = torch.randint(0, 96, (2, 19))
    with torch.no_grad():
        expected = ref(ids).logits
        assert_close(ours(ids).text_logits, expected, terms=model_terms(ours, ids.shape[1]))
    # the export writes the family it read: transformers loads it back as Qwen2, with the same logits
    save_hf_backbone(ours, tmp_path / "export")
    cfg_json = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg_json["architectures"] == ["Qwen2ForCausalLM"] and cfg_json["model_type"] == "qwen2"
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(back).__name__ == "Qwen2ForCausalLM"
    with torch.no_grad():
        assert_close(back(ids).logits, expected, terms=model_terms(ours, ids.shape[1]))
    assert_close(load_hf_backbone(tmp_path / "export")(ids).text_logits.detach(), expected, terms=model_terms(ours, 19))


def test_biases_the_family_cannot_say_are_refused_and_old_bias_flags_still_load():
    from smoltolk.config import from_dict
    from smoltolk.errors import ConfigError
    from smoltolk.model.config import BackboneConfig
    from smoltolk.model.hf_config import hf_config_from_backbone

    with pytest.raises(ConfigError, match="cannot be written as a LlamaForCausalLM config"):
        hf_config_from_backbone(BackboneConfig(biases=("q", "k", "v")))  # Qwen2's layout, in the Llama family
    with pytest.raises(ConfigError, match="unknown projection"):
        BackboneConfig(biases=("qkv",))
    assert hf_config_from_backbone(BackboneConfig(biases=("q", "k", "v", "o")))["attention_bias"] is True
    old = {"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_layers": 1, "num_heads": 2,
           "num_kv_heads": 1, "attention_bias": False, "qkv_bias": True, "mlp_bias": False}  # before December
    cfg = from_dict(BackboneConfig, old)
    assert cfg.biases == ("q", "k", "v") and cfg.family == "qwen2"
    assert from_dict(BackboneConfig, {**old, "qkv_bias": False, "mlp_bias": True}).biases == ("gate", "up", "down")


@pytest.mark.parametrize("scaling", [None, {"type": "linear", "factor": 2.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}])
def test_transformers_v4_style_config_json(hf_llama_dir, scaling):
    """Checkpoints written by transformers 4.x carry rope_theta + rope_scaling, not rope_parameters."""
    kw = {} if scaling is None else {"rope_scaling": {**scaling, "rope_type": scaling.get("rope_type", "linear")}}
    path, ref = hf_llama_dir(rope_theta=50000.0, **kw)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = 50000.0
    cfg["rope_scaling"] = scaling
    (path / "config.json").write_text(json.dumps(cfg))
    ours = load_hf_backbone(path)
    assert ours.rotary.theta == 50000.0
    ids = torch.randint(0, 96, (2, 30))
    with torch.no_grad():
        assert_close(ours(ids).text_logits, ref(ids).logits, terms=model_terms(ours, ids.shape[1]))


def test_bf16_loading_keeps_rope_in_float32(hf_llama_dir):
    path, _ = hf_llama_dir()
    ours = load_hf_backbone(path, dtype=torch.bfloat16)
    assert ours.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert ours.rotary.inv_freq.dtype == torch.float32
