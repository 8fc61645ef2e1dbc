"""Hugging Face config.json <-> :class:`~smoltolk.model.config.BackboneConfig` for the Llama-family
architectures we support. No model code, so :mod:`smoltolk.model.llama` (which writes Hugging Face
directories) and :mod:`smoltolk.model.hf` (which reads them into a model) both import it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoltolk.errors import CheckpointError, ConfigError
from smoltolk.files import read_json
from smoltolk.model.config import BackboneConfig


@dataclass(frozen=True)
class Family:
    """One Hugging Face decoder family this loader reads and writes: all are Llama-shaped (RMSNorm,
    SwiGLU, RoPE, grouped-query attention); they differ in the export class, their biases and
    whether their configs may ask for sliding-window attention (which is refused)."""

    architecture: str  # the class export writes and the loader expects in ``architectures``
    fixed_biases: tuple[str, ...] = ()  # projections that always carry a bias in this family
    flag_biases: bool = True  # ``attention_bias`` (q, k, v, o) and ``mlp_bias`` (gate, up, down) are read
    sliding_window_default: bool | None = None  # None: no sliding window; else ``use_sliding_window``'s default


FAMILIES = {
    "llama": Family("LlamaForCausalLM"),  # Llama 1-3, SmolLM, SmolLM2, TinyLlama
    "mistral": Family("MistralForCausalLM", sliding_window_default=True),  # without sliding-window attention
    "qwen2": Family("Qwen2ForCausalLM", fixed_biases=("q", "k", "v"), flag_biases=False,
                    sliding_window_default=False),  # without sliding-window attention
}
SUPPORTED = {name: f.architecture for name, f in FAMILIES.items()}  # model_type -> architecture


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
    family = FAMILIES[model_type]
    if archs and family.architecture not in archs:
        raise ConfigError(
            f"{where}: architectures {archs}: expected {family.architecture} for model_type {model_type!r}")
    if family.sliding_window_default is not None:
        window = hf.get("sliding_window")
        uses = hf.get("use_sliding_window", family.sliding_window_default)
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
        biases=_biases(family, hf),
        family=model_type,
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos,
        **_rope_from_hf(hf, where),
    )


def _biases(family: Family, hf: dict[str, Any]) -> tuple[str, ...]:
    biases = list(family.fixed_biases)
    if family.flag_biases and hf.get("attention_bias", False):
        biases += ["q", "k", "v", "o"]
    if family.flag_biases and hf.get("mlp_bias", False):
        biases += ["gate", "up", "down"]
    return tuple(dict.fromkeys(biases))


def _bias_flags(cfg: BackboneConfig, family: Family) -> dict[str, bool]:
    """The config flags that give ``cfg.biases`` in ``family``; an error if none can."""
    rest = set(cfg.biases) - set(family.fixed_biases)
    attention, mlp = {"q", "k", "v", "o"} - set(family.fixed_biases), {"gate", "up", "down"}
    flags = {"attention_bias": bool(rest & attention), "mlp_bias": bool(rest & mlp)}
    said = set(family.fixed_biases) | (attention if flags["attention_bias"] else set()) | (
        mlp if flags["mlp_bias"] else set())
    if not family.flag_biases and rest or said != set(cfg.biases):
        raise ConfigError(f"biases on {sorted(cfg.biases)} cannot be written as a {family.architecture} config "
                          f"(it says: {sorted(said) or 'none'})")
    return flags if family.flag_biases else {}


def hf_config_from_backbone(cfg: BackboneConfig) -> dict[str, Any]:
    """A Hugging Face config.json of the backbone's own family (v4 and v5 keys)."""
    if cfg.family not in FAMILIES:
        raise ConfigError(f"backbone.family {cfg.family!r}: expected one of {sorted(FAMILIES)}")
    family = FAMILIES[cfg.family]
    flags = _bias_flags(cfg, family)
    rope: dict[str, Any] = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type in ("linear", "llama3"):
        rope["factor"] = cfg.rope_factor
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_position)
    return {
        "architectures": [family.architecture],
        "model_type": cfg.family,
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
        **flags,
        **({"use_sliding_window": False, "sliding_window": None} if family.sliding_window_default is not None else {}),
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
