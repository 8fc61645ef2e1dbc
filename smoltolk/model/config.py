"""Model configuration: the text backbone's shape and the speech modules around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from smoltolk.defaults import DEFAULT_NUM_UNITS
from smoltolk.errors import ConfigError

RopeType = Literal["default", "linear", "llama3"]


PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")  # a decoder layer's linear maps (biases name them)


@dataclass
class BackboneConfig:
    """Shape of a Llama-family decoder (Llama, SmolLM, SmolLM2, TinyLlama, Qwen2-style bias).

    Field names follow ours; :func:`smoltolk.model.hf.backbone_config_from_hf` maps a
    Hugging Face ``config.json`` onto them.
    """

    vocab_size: int = 49152
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int | None = None  # None: hidden_size // num_heads
    rope_theta: float = 10000.0
    rope_type: RopeType = "default"
    rope_factor: float = 1.0  # "linear" and "llama3" scaling
    rope_low_freq_factor: float = 1.0  # "llama3" only
    rope_high_freq_factor: float = 4.0  # "llama3" only
    rope_original_max_position: int = 8192  # "llama3" only
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    biases: tuple[str, ...] = ()  # projections with a bias, of PROJECTIONS (Qwen2: q, k, v)
    family: str = "llama"  # the Hugging Face model_type it came from (hf_config.FAMILIES); export writes it
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    @staticmethod
    def upgrade(data: dict) -> dict:
        """A config dict written before biases were per projection (``attention_bias``: q, k, v, o;
        ``qkv_bias``: q, k, v; ``mlp_bias``: gate, up, down) in today's form."""
        if not any(k in data for k in ("attention_bias", "qkv_bias", "mlp_bias")):
            return data
        data = dict(data)
        attention, qkv, mlp = (bool(data.pop(k, False)) for k in ("attention_bias", "qkv_bias", "mlp_bias"))
        biases = ("q", "k", "v", "o") if attention else ("q", "k", "v") if qkv else ()
        data["biases"] = [*biases, *(("gate", "up", "down") if mlp else ())]
        if qkv and not attention:
            data.setdefault("family", "qwen2")
        return data

    def has_bias(self, projection: str) -> bool:
        return projection in self.biases

    def __post_init__(self) -> None:
        self.biases = tuple(self.biases)
        unknown = sorted(set(self.biases) - set(PROJECTIONS))
        if unknown:
            raise ConfigError(f"backbone.biases: unknown projection(s) {unknown}; expected some of {list(PROJECTIONS)}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"backbone.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"backbone.num_heads ({self.num_heads}) must be a multiple of "
                f"backbone.num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"backbone.hidden_size ({self.hidden_size}) is not divisible by num_heads "
                    f"({self.num_heads}); set backbone.head_dim"
                )
            self.head_dim = self.hidden_size // self.num_heads
        if self.head_dim % 2:
            raise ConfigError(f"backbone.head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.rope_theta <= 0:
            raise ConfigError(f"backbone.rope_theta must be positive, got {self.rope_theta}")
        if self.rope_type not in ("default", "linear", "llama3"):
            raise ConfigError(f"backbone.rope_type must be 'default', 'linear' or 'llama3', got {self.rope_type!r}")


Pooling = Literal["dynamic", "fixed", "last"]


@dataclass
class SpeechConfig:
    """The speech side of a text-speech LM. Defaults are SmolTolk's (paper Section 3.1).

    The regular-vocabulary-expansion **baseline** is ``input_adapter_layers=0,
    output_adapter_layers=0, pooling="last", residual=false``: speech embeddings enter the
    backbone directly and speech logits come from its final (normed) output.
    Table 2's ablations are single switches of this config (see :data:`ABLATIONS`).
    """

    num_units: int = DEFAULT_NUM_UNITS  # ids 0..N-1; N = speech EOS; N+1 = PAD; N+2 = switch (predict_switch only)
    input_adapter_layers: int = 2  # K decoder layers over each contiguous speech run
    output_adapter_layers: int = 2  # K decoder layers before the speech head
    pooling: Pooling = "dynamic"  # dynamic: selector S over phi-average; fixed: phi only; last: L-th layer
    residual: bool = True  # add the merged input embedding z to the pooled representation
    entropy_beta: float = 0.0  # loss -= beta * mean selector entropy (paper: 0.01 for 400M/2B)
    # The paper raises the RoPE base to 100,000 for backbone *and* adapters. (The authors'
    # release never applied it; we do.) ``null`` keeps the backbone checkpoint's own base.
    rope_theta: float | None = 100000.0
    init_std: float = 0.02  # normal init of new rows and new modules
    # Learned modality switching; not in the paper, so off by default. When on, SWT is a prediction
    # target in both heads: the text head's SWT row after text, and one extra speech-head row
    # ("switch", id N+2) after speech. Generation with to="either" may then switch on its own.
    # (Rule in TextSpeechLM._loss.)
    predict_switch: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in ("dynamic", "fixed", "last"):
            raise ConfigError(f"speech.pooling must be 'dynamic', 'fixed' or 'last', got {self.pooling!r}")
        if self.num_units <= 0:
            raise ConfigError(f"speech.num_units must be positive, got {self.num_units}")
        for name in ("input_adapter_layers", "output_adapter_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"speech.{name} must be >= 0, got {getattr(self, name)}")
        if self.entropy_beta < 0:
            raise ConfigError(f"speech.entropy_beta must be >= 0, got {self.entropy_beta}")
        if self.entropy_beta > 0 and self.pooling != "dynamic":
            raise ConfigError("speech.entropy_beta > 0 needs speech.pooling=dynamic (the entropy is the selector's)")
        if self.rope_theta is not None and self.rope_theta <= 0:
            raise ConfigError(f"speech.rope_theta must be positive or null, got {self.rope_theta}")

    @property
    def eos_id(self) -> int:
        return self.num_units

    @property
    def pad_id(self) -> int:
        return self.num_units + 1

    @property
    def switch_id(self) -> int | None:
        """The speech head's "switch" row (predicts SWT after speech); None without predict_switch."""
        return self.num_units + 2 if self.predict_switch else None

    @property
    def vocab_size(self) -> int:
        return self.num_units + (3 if self.predict_switch else 2)

    @property
    def is_baseline(self) -> bool:
        return (self.input_adapter_layers == 0 and self.output_adapter_layers == 0
                and self.pooling == "last" and not self.residual)


@dataclass
class ModelConfig:
    """A text-speech LM: a backbone shape plus the speech modules."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)


# Paper Table 2: each ablation of SmolTolk as the speech-config switches it flips.
ABLATIONS: dict[str, dict[str, object]] = {
    "no-dynamic-pooling": {"pooling": "fixed", "entropy_beta": 0.0},
    "no-layer-pooling": {"pooling": "last", "entropy_beta": 0.0},
    "no-input-adapter": {"input_adapter_layers": 0},
    "no-output-adapter": {"output_adapter_layers": 0},
    "no-adapters": {"input_adapter_layers": 0, "output_adapter_layers": 0},
    "no-residual": {"residual": False},
}

BASELINE: dict[str, object] = {
    "input_adapter_layers": 0, "output_adapter_layers": 0, "pooling": "last",
    "residual": False, "entropy_beta": 0.0,
}
