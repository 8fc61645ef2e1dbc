"""GGUF in: a tiny GGUF written in-test (llama.cpp's layout) converts to a directory smoltolk and transformers read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_close, decoder_terms

from smoltolk.cli import main
from smoltolk.errors import CheckpointError, ConfigError
from smoltolk.model.gguf import convert_gguf
from smoltolk.model.hf import load_hf_backbone, load_tokenizer
from smoltolk.model.io import read_weights

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def llama_cpp_order(w: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q and k (each head's two rotary halves interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        i, rest = hf[len("model.layers."):].split(".", 1)
        return f"blk.{i}.{HF_TO_GGUF[rest]}"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def write_gguf(path, hf_model, tokenizer_file, types=None, arch="llama", tokenizer_model="gpt2", extra=None):
    """Write ``hf_model`` as llama.cpp would: metadata, the tokenizer's vocabulary and merges, q/k reordered,
    each tensor in ``types[hf name]`` (default F32). Returns {hf name: what the file holds, dequantized, HF order}."""
    cfg = hf_model.config
    tok = json.loads(tokenizer_file.read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tok["added_tokens"]}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters") else cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    stored = {}
    for name, p in hf_model.state_dict().items():
        if "rotary" in name or (name == "lm_head.weight" and cfg.tie_word_embeddings):
            continue
        x = p.detach().numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            x = llama_cpp_order(x, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            x = llama_cpp_order(x, cfg.num_key_value_heads)
        qtype = (types or {}).get(name, Q.F32)
        if qtype == Q.F32:
            w.add_tensor(gguf_name(name), x)
            held = x
        elif qtype == Q.F16:
            w.add_tensor(gguf_name(name), x.astype(np.float16))
            held = x.astype(np.float16).astype(np.float32)
        else:
            blocks = gguf.quants.quantize(x, qtype)
            w.add_tensor(gguf_name(name), blocks, raw_dtype=qtype)
            held = gguf.quants.dequantize(blocks, qtype)
        stored[name] = held
    for name, x in (extra or {}).items():
        w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for name in stored:  # what a correct reader returns: the stored values in Hugging Face's row order
        x = stored[name]
        heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}
        for key, h in heads.items():
            if name.endswith(f"{key}.weight"):  # invert by search: the permutation is a fixed row shuffle
                order = llama_cpp_order(np.arange(x.shape[0])[:, None], h)[:, 0]
                x = x[np.argsort(order)]
        stored[name] = x
    return stored


@pytest.fixture
def tiny_hf(hf_llama_dir, bpe_tokenizer_file):
    vocab = len(json.loads(bpe_tokenizer_file.read_text())["model"]["vocab"])
    _, model = hf_llama_dir(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                            num_key_value_heads=2)
    return model


SENTENCES = ["the cat sat on the mat", "Hello, world! The quick brown fox", "a little fox ran 42 times"]


def test_f32_gguf_gives_the_original_model_and_tokenizer(tiny_hf, bpe_tokenizer_file, tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_hf, bpe_tokenizer_file)
    summary = convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert summary["tensor_types"] == {"F32": 2 + 9 * 3 + 1} and summary["architecture"] == "llama"
    ours = load_hf_backbone(tmp_path / "out")
    ids = torch.randint(0, tiny_hf.config.vocab_size, (2, 12))
    with torch.no_grad():
        expected = tiny_hf(ids).logits
    assert_close(ours(ids).text_logits, expected, terms=decoder_terms(3, 64, 96, 12))
    rebuilt, original = load_tokenizer(tmp_path / "out"), load_tokenizer(bpe_tokenizer_file)
    for s in SENTENCES:
        assert rebuilt.encode(s).ids == original.encode(s).ids
        assert rebuilt.decode(rebuilt.encode(s).ids) == s
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and cfg["num_key_value_heads"] == 2 and cfg["rope_theta"] == 10000.0


def test_quantized_tensors_are_dequantized_as_stored(hf_llama_dir, bpe_tokenizer_file, tmp_path):
    vocab = len(json.loads(bpe_tokenizer_file.read_text())["model"]["vocab"])
    _, model = hf_llama_dir(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                            num_key_value_heads=2, tie_word_embeddings=True)
    types = {"model.embed_tokens.weight": Q.F16, "model.layers.0.self_attn.q_proj.weight": Q.Q8_0,
             "model.layers.0.self_attn.k_proj.weight": Q.Q4_0, "model.layers.1.self_attn.q_proj.weight": Q.Q4_1,
             "model.layers.1.mlp.up_proj.weight": Q.BF16, "model.layers.2.mlp.down_proj.weight": Q.Q5_1}
    stored = write_gguf(tmp_path / "m.gguf", model, bpe_tokenizer_file, types)
    summary = convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert summary["tensor_types"]["Q4_1"] == 1 and summary["tensor_types"]["F16"] == 1
    weights = read_weights(tmp_path / "out")
    assert "lm_head.weight" not in weights and set(weights) == set(stored)
    original = model.state_dict()
    for name, held in stored.items():
        got = weights[name]
        assert got.dtype == torch.float32
        assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(held))), name  # exactly what the file holds
        if name in types and types[name] not in (Q.F16, Q.BF16):  # lossy, yet near the original weights
            scale = original[name].abs().max()
            assert not torch.equal(got, original[name])
            assert (got - original[name]).abs().max() < 0.15 * scale, name
    ours = load_hf_backbone(tmp_path / "out")
    assert ours.config.tie_word_embeddings
    ids = torch.randint(0, vocab, (1, 10))
    with torch.no_grad():  # the tied head is the stored embedding: logits from the converted weights
        logits = ours(ids).text_logits
    assert torch.isfinite(logits).all()


def test_other_architectures_and_tokenizers_are_named(tiny_hf, bpe_tokenizer_file, tmp_path):
    write_gguf(tmp_path / "falcon.gguf", tiny_hf, bpe_tokenizer_file, arch="falcon")
    with pytest.raises(ConfigError, match="architecture 'falcon' is not supported"):
        convert_gguf(tmp_path / "falcon.gguf", tmp_path / "a")
    write_gguf(tmp_path / "spm.gguf", tiny_hf, bpe_tokenizer_file, tokenizer_model="llama")
    with pytest.raises(ConfigError, match="tokenizer model 'llama'.*--tokenizer"):
        convert_gguf(tmp_path / "spm.gguf", tmp_path / "b")
    convert_gguf(tmp_path / "spm.gguf", tmp_path / "b", tokenizer=bpe_tokenizer_file)  # its own tokenizer.json
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == bpe_tokenizer_file.read_bytes()
    write_gguf(tmp_path / "bias.gguf", tiny_hf, bpe_tokenizer_file,
               extra={"blk.0.attn_q.bias": np.zeros(64, dtype=np.float32)})
    with pytest.raises(ConfigError, match="blk.0.attn_q.bias"):
        convert_gguf(tmp_path / "bias.gguf", tmp_path / "c")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="junk.gguf"):
        convert_gguf(tmp_path / "junk.gguf", tmp_path / "d")
    assert not any((tmp_path / d).exists() for d in ("a", "c", "d"))  # nothing half-written


def test_convert_gguf_command_output_wraps(tiny_hf, bpe_tokenizer_file, tmp_path, capsys):
    write_gguf(tmp_path / "m.gguf", tiny_hf, bpe_tokenizer_file)
    assert main(["convert-gguf", str(tmp_path / "m.gguf"), str(tmp_path / "converted")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parameters"] > 0
    assert main(["wrap", str(tmp_path / "converted"), str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "tokenizer.json").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["convert-gguf", str(tmp_path / "m.gguf"), str(tmp_path / "mine")]) != 0  # never replaces others' files
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_convert_replaces_its_own_output_but_never_another_model(tiny_hf, bpe_tokenizer_file, tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_hf, bpe_tokenizer_file)
    convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    convert_gguf(tmp_path / "m.gguf", tmp_path / "out")  # a re-run replaces what it wrote
    tiny_hf.save_pretrained(tmp_path / "model")  # a real model's directory: same file names, no marker
    for extra in (tmp_path / "model").iterdir():
        if extra.name not in ("config.json", "model.safetensors"):
            extra.unlink()
    before = (tmp_path / "model" / "config.json").read_bytes()
    with pytest.raises(CheckpointError, match="refusing to replace"):
        convert_gguf(tmp_path / "m.gguf", tmp_path / "model")
    assert (tmp_path / "model" / "config.json").read_bytes() == before
