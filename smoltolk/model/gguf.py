"""GGUF in: a Llama-family GGUF file (llama.cpp's format) -> a Hugging Face checkpoint directory
(``config.json``, ``model.safetensors``, ``tokenizer.json``) that ``wrap``, ``eval``, ``generate`` and
``train`` accept.

Read with the ``gguf`` package (``pip install gguf``, the ``gguf`` extra); no ``transformers`` needed.
Every tensor type the ``gguf`` package can dequantize is accepted (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 and the K-quants among them) and written as float32: the weights are exactly the values
the quantization left, not the original model's (a Q4_1 file stays a Q4_1 model, in float32).

llama.cpp stores the query and key projections with the rows of each head reordered for its RoPE
kernel; they are put back in Hugging Face's order here. The tokenizer is rebuilt from the file's
vocabulary and merges (byte-level BPE, ``tokenizer.ggml.model = gpt2``) with the pre-tokenizer its
``tokenizer.ggml.pre`` names; other tokenizers need ``tokenizer=`` (a ``tokenizer.json``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smoltolk.errors import CheckpointError, ConfigError
from smoltolk.model.io import WEIGHTS, atomic_directory, write_safetensors

ARCHITECTURES = ("llama",)  # general.architecture values read (SmolLM, SmolLM2, Llama 1-3, TinyLlama)
CONVERTED_KEY = "smoltolk_converted_from"  # in config.json: the GGUF file a directory was converted from

# GGUF tensor name -> Hugging Face name ({i}: the layer)
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}

# tokenizer.ggml.pre -> the pre-tokenizer of the published tokenizer.json it stands for
_DIGITS_THEN_BYTES = [{"type": "Digits", "individual_digits": True},
                      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt2": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "default": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "smollm": {"type": "Sequence", "pretokenizers": _DIGITS_THEN_BYTES},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
}
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of special and added tokens


def _reader(path: Path):
    try:
        import gguf
    except ImportError:
        raise ConfigError("reading GGUF needs the 'gguf' package: pip install gguf (or smoltolk[gguf])") from None
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a .gguf file)")
    try:
        return gguf, gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from None


class _Fields:
    """The file's metadata as plain Python values."""

    def __init__(self, reader, path: Path):
        self.reader, self.path = reader, path

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def need(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise CheckpointError(f"{self.path}: metadata key {key!r} missing (a Llama-family GGUF has it)")
        return value


def hf_config_from_gguf(fields: _Fields, vocab_size: int, tied: bool) -> dict[str, Any]:
    """A Hugging Face ``LlamaForCausalLM`` config.json dict from the GGUF metadata."""
    arch = fields.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{fields.path}: architecture {arch!r} is not supported (expected one of "
                          f"{list(ARCHITECTURES)}: Llama-family decoders such as SmolLM, SmolLM2, TinyLlama)")
    hidden, heads = int(fields.need(f"{arch}.embedding_length")), int(fields.need(f"{arch}.attention.head_count"))
    scaling = fields.get(f"{arch}.rope.scaling.type", "none")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(fields.get(f"{arch}.rope.freq_base", 1e4))}
    if scaling == "linear":
        rope.update(rope_type="linear", factor=float(fields.need(f"{arch}.rope.scaling.factor")))
    elif scaling != "none":
        raise ConfigError(f"{fields.path}: RoPE scaling {scaling!r} is not supported (supported: none, linear)")
    head_dim = int(fields.get(f"{arch}.attention.key_length", fields.get(f"{arch}.rope.dimension_count",
                                                                         hidden // heads)))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": int(fields.need(f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(fields.need(f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(fields.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "max_position_embeddings": int(fields.get(f"{arch}.context_length", 2048)),
        "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": fields.get("tokenizer.ggml.padding_token_id"),
        "rope_theta": rope["rope_theta"],
        "rope_scaling": None if rope["rope_type"] == "default" else rope,
        "rope_parameters": rope,
        "torch_dtype": "float32",
        CONVERTED_KEY: fields.path.name,  # marks a directory this converter wrote (it may replace it)
    }


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row order of q/k (pairs interleaved) back to Hugging Face's (halves)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str, path: Path) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
    raise ConfigError(f"{path}: tensor {name!r} is not part of a Llama decoder this converter reads "
                      "(RoPE frequency factors, biases and other architectures' tensors are not supported)")


def _dequantize(gguf, tensor, path: Path) -> np.ndarray:
    """A tensor as float32 in numpy (row-major) order: GGUF lists dims fastest-first."""
    qtype = tensor.tensor_type
    shape = tuple(int(d) for d in reversed(tensor.shape))
    if qtype == gguf.GGMLQuantizationType.F32:
        out = np.asarray(tensor.data, dtype=np.float32)
    elif qtype == gguf.GGMLQuantizationType.F16:
        out = np.asarray(tensor.data).astype(np.float32)
    else:
        try:
            out = gguf.quants.dequantize(tensor.data, qtype)
        except (NotImplementedError, gguf.quants.QuantError, KeyError) as e:
            raise ConfigError(f"{path}: tensor {tensor.name!r} is {qtype.name}, which the gguf package cannot "
                              f"dequantize ({e})") from None
    return np.array(out.reshape(shape), dtype=np.float32, order="C")  # a writable copy (the file is a memmap)


def tokenizer_json_from_gguf(fields: _Fields) -> dict[str, Any]:
    """A ``tokenizers`` tokenizer.json (as a dict) from the file's byte-level BPE vocabulary and merges."""
    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ConfigError(f"{fields.path}: tokenizer model {model!r} is not rebuilt here (only byte-level BPE, "
                          "'gpt2'); pass the model's own tokenizer.json (--tokenizer)")
    pre = fields.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ConfigError(f"{fields.path}: pre-tokenizer {pre!r} is not known (known: {sorted(PRE_TOKENIZERS)}); "
                          "pass the model's own tokenizer.json (--tokenizer)")
    tokens = list(fields.need("tokenizer.ggml.tokens"))
    types = list(fields.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [m.split(" ", 1) for m in fields.need("tokenizer.ggml.merges")]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": k == _CONTROL} for i, (t, k) in enumerate(zip(tokens, types, strict=True))
             if k in (_CONTROL, _USER_DEFINED)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }


def convert_gguf(path: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``out_dir`` (atomically; an existing directory is replaced only if this function wrote it)
    from the GGUF file ``path``. Returns a summary: architecture, tensor types, parameter count."""
    import json

    from smoltolk.progress import progress_bar

    path, out_dir = Path(path), Path(out_dir)
    gguf, reader = _reader(path)
    fields = _Fields(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ConfigError(f"{path}: no 'token_embd.weight' tensor (architecture "
                          f"{fields.get('general.architecture')!r}); expected a Llama-family decoder")
    vocab = int(tensors["token_embd.weight"].shape[-1])
    config = hf_config_from_gguf(fields, vocab, tied="output.weight" not in tensors)
    token_json = None
    if tokenizer is not None:
        tokenizer = Path(tokenizer)
        if not tokenizer.is_file():
            raise CheckpointError(f"{tokenizer}: missing (expected a tokenizer.json)")
    else:
        token_json = tokenizer_json_from_gguf(fields)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    state, kinds = {}, {}
    for name, tensor in progress_bar(tensors.items(), desc="convert", unit="tensor", disable=not progress):
        hf = _hf_name(name, path)
        w = _dequantize(gguf, tensor, path)
        if name.endswith("attn_q.weight"):
            w = _unpermute(w, heads)
        elif name.endswith("attn_k.weight"):
            w = _unpermute(w, kv_heads)
        state[hf] = torch.from_numpy(w)
        kinds[tensor.tensor_type.name] = kinds.get(tensor.tensor_type.name, 0) + 1
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{n}" for i in range(config["num_hidden_layers"]) for n in _LAYER_NAMES.values()}
    if missing := sorted(expected - set(state)):
        raise CheckpointError(f"{path}: tensors missing for {len(missing)} weights, e.g. {missing[:3]}")
    with atomic_directory(out_dir, replaceable=_is_converted) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_safetensors(state, tmp / WEIGHTS, metadata={"format": "pt", "source": path.name})
        if token_json is not None:
            (tmp / "tokenizer.json").write_text(json.dumps(token_json, ensure_ascii=False) + "\n")
        else:
            (tmp / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    return {"architecture": fields.get("general.architecture"), "name": fields.get("general.name"),
            "tensor_types": kinds, "parameters": sum(v.numel() for v in state.values()),
            "tokenizer": "given" if token_json is None else f"rebuilt ({fields.get('tokenizer.ggml.pre', 'default')})",
            "out": str(out_dir)}


def _is_converted(directory: Path) -> bool:
    """Only a directory this converter wrote (its files, and the marker in config.json) is replaced."""
    import json

    if not {p.name for p in directory.iterdir()} <= {"config.json", WEIGHTS, "tokenizer.json"}:
        return False
    try:
        return CONVERTED_KEY in json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
