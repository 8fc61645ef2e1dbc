"""Model presets as data: the paper's SmolTolk and baseline models (Tables 4 and 5) and a tiny one.

Each preset is a plain nested dict accepted by ``from_dict(ModelConfig, ...)``; fetch one with
:func:`preset`, list them with :data:`PRESETS`. The backbone shapes are SmolLM's (Table 4):
tied embeddings, 49,152-token vocabulary, RMSNorm eps 1e-5, RoPE base 10,000 in the checkpoint
(raised to 100,000 by ``speech.rope_theta``, as the paper does).
"""

from __future__ import annotations

import copy
from typing import Any

from smoltolk.config import from_dict
from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import ConfigError
from smoltolk.model.config import BASELINE, ModelConfig


def _smollm(layers: int, heads: int, kv_heads: int, width: int, hidden: int) -> dict[str, Any]:
    return {"vocab_size": 49152, "hidden_size": width, "intermediate_size": hidden, "num_layers": layers,
            "num_heads": heads, "num_kv_heads": kv_heads, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True, "max_position_embeddings": 2048}


SMOLLM_135M = _smollm(30, 9, 3, 576, 1536)
SMOLLM_360M = _smollm(32, 15, 5, 960, 2560)
SMOLLM_1_7B = _smollm(24, 32, 32, 2048, 8192)

TINY_BACKBONE = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 4,
                 "num_heads": 4, "num_kv_heads": 2, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                 "tie_word_embeddings": True, "max_position_embeddings": 1024}

PRESETS: dict[str, dict[str, Any]] = {
    "smoltolk-150m": {"backbone": SMOLLM_135M, "speech": {"entropy_beta": 0.0}},
    "smoltolk-400m": {"backbone": SMOLLM_360M, "speech": {"entropy_beta": 0.01}},
    "smoltolk-2b": {"backbone": SMOLLM_1_7B, "speech": {"entropy_beta": 0.01}},
    "baseline-135m": {"backbone": SMOLLM_135M, "speech": dict(BASELINE)},
    "baseline-360m": {"backbone": SMOLLM_360M, "speech": dict(BASELINE)},
    "baseline-1.7b": {"backbone": SMOLLM_1_7B, "speech": dict(BASELINE)},
    "tiny": {"backbone": TINY_BACKBONE, "speech": {"num_units": DEFAULT_NUM_UNITS}},
    "tiny-baseline": {"backbone": TINY_BACKBONE, "speech": {"num_units": DEFAULT_NUM_UNITS, **BASELINE}},
}

# Paper Table 5: (text params, speech params) of each preset, for reference and tests.
PAPER_TABLE5: dict[str, tuple[float, float]] = {
    "baseline-135m": (135e6, 0.29e6),
    "baseline-360m": (360e6, 0.48e6),
    "baseline-1.7b": (1.7e9, 1e6),
    "smoltolk-150m": (135e6, 15e6),
    "smoltolk-400m": (360e6, 40e6),
    "smoltolk-2b": (1.7e9, 270e6),
}


def preset_dict(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def preset(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a named preset."""
    return from_dict(ModelConfig, preset_dict(name), where=f"preset {name}")
