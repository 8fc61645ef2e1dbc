"""The training configuration tree (a recipe YAML maps onto :class:`TrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from smoltolk.config import check_ranges
from smoltolk.data.sampler import DataConfig, DatasetConfig
from smoltolk.errors import ConfigError
from smoltolk.model.config import BackboneConfig, SpeechConfig


@dataclass
class ModelSpec:
    """Where the model comes from: a Hugging Face backbone directory (the normal case), a preset's
    shape with random weights (tests, tiny runs), or a smoltolk checkpoint to continue from."""

    backbone_dir: str | None = None  # Hugging Face text LM (config.json + safetensors + tokenizer.json)
    preset: str | None = None  # smoltolk.presets name; random weights
    checkpoint: str | None = None  # a smoltolk checkpoint (model only; use run.resume for runs)
    backbone: BackboneConfig | None = None  # override of the preset's backbone shape
    speech: SpeechConfig | None = None  # None: the preset's / checkpoint's, or SmolTolk's defaults
    text_only: bool = False  # pretrain the text backbone alone (no speech modules)
    tokenizer: str | None = None  # tokenizer.json to keep in checkpoints (default: the backbone_dir's)

    def __post_init__(self) -> None:
        given = [k for k in ("backbone_dir", "preset", "checkpoint") if getattr(self, k)]
        if len(given) > 1:
            raise ConfigError(f"model: give one of backbone_dir, preset or checkpoint, got {given}")
        if not given and self.backbone is None:
            raise ConfigError("model: give backbone_dir (a Hugging Face text LM), preset, checkpoint or backbone")


@dataclass
class OptimConfig:
    """AdamW as the paper: betas (0.9, 0.95), weight decay 0.1 on >= 2-D tensors, clip 1.0."""

    lr: float = 3e-4  # backbone/text parameters: constant in both stages (paper: 3e-4; 1e-4 for 2B)
    speech_lr_mult_stage1: float = 10.0  # speech parameters in stage 1: trapezoid up to 10x lr
    speech_lr_mult_stage2: float = 1.0  # speech parameters in stage 2: constant lr x this
    warmup_steps: int = 100  # stage-1 trapezoid: linear warm-up ...
    decay_fraction: float = 0.2  # ... constant, then linear decay to 0 over the last 20% of stage 1
    text_warmup_steps: int = 0  # warm-up of the constant text rate (0 = none, as the paper)
    # stage 2's rates (both groups) decay linearly to 0 over its last this fraction (0 = constant, as the paper;
    # a short run ends on a cooled-down model instead of a noisy one)
    stage2_decay_fraction: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        check_ranges(self, "optim", decay_fraction=(0, 1), stage2_decay_fraction=(0, 1), warmup_steps=(0, None),
                     text_warmup_steps=(0, None),
                     speech_lr_mult_stage1=(0, None), speech_lr_mult_stage2=(0, None), weight_decay=(0, None),
                     grad_clip=(0, None), eps=(0, None))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")


@dataclass
class ScheduleConfig:
    stage1_steps: int = 1000  # frozen backbone, interleaved data (paper: ~3% of steps)
    stage2_steps: int = 15000  # everything trains on the mixture
    micro_batch: int = 8  # sequences per forward pass per process
    grad_accum: int = 1
    tokens_per_step: int | None = None  # if set, checked: micro_batch x grad_accum x world x context

    def __post_init__(self) -> None:
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.stage1_steps + self.stage2_steps == 0:
            raise ConfigError("schedule: stage1_steps and stage2_steps must be >= 0 and not both 0")
        if self.micro_batch < 1 or self.grad_accum < 1:
            raise ConfigError("schedule.micro_batch and schedule.grad_accum must be >= 1")

    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


@dataclass
class ValidationConfig:
    every: int = 0  # steps between validations (0 = only at the end)
    batches: int = 4  # micro-batches per stream
    datasets: list[DatasetConfig] = field(default_factory=list)  # one stream each (name = dataset name)
    seed: int = 12345
    # benchmarks scored at every validation, as `smoltolk eval` key=value overrides (e.g.
    # "tasks.lexical_cloze.path=world/bench/held_out/lexical_cloze.jsonl"); their metrics go to metrics.jsonl
    eval: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_ranges(self, "validation", every=(0, None), batches=(1, None), seed=(0, None))


@dataclass
class RunConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16 = fp32 master weights + bf16 autocast
    compile: bool = False
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: ddp under torchrun, else none
    checkpoint_every: int = 0  # steps (0 = only at the end)
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto (latest checkpoint in out_dir, if any) | never | a checkpoint path
    log_every: int = 1
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "smoltolk"
    on_nan: Literal["stop", "skip"] = "stop"
    max_skipped_steps: int = 10
    peak_flops: float | None = None  # per device (FLOP/s), for the MFU column (None: no MFU is reported)
    activation_checkpointing: bool = False  # recompute each decoder layer in the backward: less memory, ~1/3 more time
    loss_chunk: int | None = None  # make the heads' logits this many positions at a time (None: all at once)

    def __post_init__(self) -> None:
        check_ranges(self, "run", seed=(0, None), checkpoint_every=(0, None), keep_checkpoints=(0, None),
                     log_every=(1, None), max_skipped_steps=(0, None), peak_flops=(1, None), loss_chunk=(1, None))


@dataclass
class TrainConfig:
    model: ModelSpec = field(default_factory=lambda: ModelSpec(preset="tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    stage1_data: dict[str, float] = field(default_factory=lambda: {"interleaved": 1.0})  # stage-1 modality mix
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.model.text_only and self.schedule.stage1_steps:
            raise ConfigError("model.text_only pretrains a text LM: set schedule.stage1_steps=0")
        if self.model.text_only and any(d.modality != "text" for d in self.data.datasets):
            raise ConfigError("model.text_only pretrains a text LM: data.datasets may only hold text datasets, got "
                              f"{sorted({d.modality for d in self.data.datasets})}")
