"""Hugging Face interop: read and write Llama-family checkpoint directories
(``config.json`` + ``model.safetensors`` or a sharded index) and their ``tokenizer.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smoltolk.errors import CheckpointError, ConfigError
from smoltolk.model.config import BackboneConfig
from smoltolk.model.io import WEIGHTS, atomic_directory, load_into, meta_build, read_json, read_weights
from smoltolk.model.llama import LlamaLM

SUPPORTED = {
    "llama": "LlamaForCausalLM",  # Llama 1-3, SmolLM, SmolLM2, TinyLlama
    "mistral": "MistralForCausalLM",  # without sliding-window attention
    "qwen2": "Qwen2ForCausalLM",  # q/k/v bias, without sliding-window attention
}


def _rope_from_hf(hf: dict[str, Any], where: Path) -> dict[str, Any]:
    """RoPE settings from a v4 (``rope_theta`` + ``rope_scaling``) or v5 (``rope_parameters``) config."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    merged = {**scaling, **params}
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    out: dict[str, Any] = {"rope_theta": float(theta), "rope_type": rope_type}
    if rope_type == "default":
        return out
    if rope_type == "linear":
        return {**out, "rope_factor": float(merged["factor"])}
    if rope_type == "llama3":
        return {**out, "rope_factor": float(merged["factor"]),
                "rope_low_freq_factor": float(merged["low_freq_factor"]),
                "rope_high_freq_factor": float(merged["high_freq_factor"]),
                "rope_original_max_position": int(merged["original_max_position_embeddings"])}
    raise ConfigError(f"{where}: RoPE type {rope_type!r} is not supported (supported: default, linear, llama3)")


def backbone_config_from_hf(hf: dict[str, Any], where: Path = Path("config.json")) -> BackboneConfig:
    """Map a Hugging Face ``config.json`` dict onto :class:`BackboneConfig`."""
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type not in SUPPORTED:
        raise ConfigError(
            f"{where}: model_type {model_type!r} (architectures {archs}) is not supported; "
            f"expected one of {sorted(SUPPORTED)} (Llama-family decoders such as SmolLM, SmolLM2, TinyLlama)"
        )
    if archs and SUPPORTED[model_type] not in archs:
        raise ConfigError(
            f"{where}: architectures {archs}: expected {SUPPORTED[model_type]} for model_type {model_type!r}")
    if model_type in ("mistral", "qwen2"):
        window = hf.get("sliding_window")
        uses = hf.get("use_sliding_window", model_type == "mistral")
        if uses and window is not None and window < hf.get("max_position_embeddings", 0):
            raise ConfigError(f"{where}: sliding-window attention (window {window}) is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act {hf.get('hidden_act')!r} is not supported (expected 'silu')")
    required = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
    missing = [k for k in required if k not in hf]
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}")
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return BackboneConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=bool(hf.get("attention_bias", False)),
        qkv_bias=model_type == "qwen2",
        mlp_bias=bool(hf.get("mlp_bias", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos,
        **_rope_from_hf(hf, where),
    )


def hf_config_from_backbone(cfg: BackboneConfig) -> dict[str, Any]:
    """A Hugging Face ``LlamaForCausalLM`` config.json for :class:`BackboneConfig` (v4 and v5 keys)."""
    if cfg.qkv_bias and not cfg.attention_bias:
        raise ConfigError("a q/k/v-only-bias (Qwen2-style) backbone cannot be written as a Llama config")
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type in ("linear", "llama3"):
        rope["factor"] = cfg.rope_factor
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_position)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "max_position_embeddings": cfg.max_position_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None if cfg.rope_type == "default" else rope,
        "rope_parameters": rope,
        "torch_dtype": "float32",
    }


def load_hf_config(directory: str | Path) -> BackboneConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (expected a Hugging Face checkpoint directory)")
    return backbone_config_from_hf(read_json(directory / "config.json"), directory / "config.json")


def load_hf_backbone(directory: str | Path, dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu") -> LlamaLM:
    """A :class:`LlamaLM` with the weights of a Hugging Face checkpoint directory."""
    directory = Path(directory)
    cfg = load_hf_config(directory)
    state = LlamaLM.state_from_files(read_weights(directory))
    state = {k: v for k, v in state.items() if "rotary_emb" not in k}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = meta_build(lambda: LlamaLM(cfg))
    with torch.device(device):
        load_into(model, state, directory, dtype=dtype)
    return model.to(device).eval()


def save_hf_backbone(model: LlamaLM, directory: str | Path, tokenizer_file: str | Path | None = None) -> Path:
    """Write ``model`` as a Hugging Face ``LlamaForCausalLM`` directory (atomically)."""
    directory = Path(directory)
    hf_config_from_backbone(model.config)  # refuses what a Llama config cannot say, before anything is written
    with atomic_directory(directory, replaceable=_is_our_export) as tmp:
        model.write_files(tmp)
        if tokenizer_file is not None:
            (tmp / "tokenizer.json").write_bytes(Path(tokenizer_file).read_bytes())
    return directory


def _is_our_export(directory: Path) -> bool:
    """A directory that :func:`save_hf_backbone` wrote (only its files), safe to replace."""
    return {p.name for p in directory.iterdir()} <= {"config.json", WEIGHTS, "tokenizer.json"}


def load_tokenizer(directory_or_file: str | Path):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` (or a directory holding one)."""
    from tokenizers import Tokenizer

    path = Path(directory_or_file)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a Hugging Face tokenizers 'tokenizer.json')")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception subclass
        raise CheckpointError(f"{path}: not a valid tokenizer.json ({e})") from None
