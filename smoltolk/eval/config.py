"""The evaluation config: which benchmarks (and where their files are), how to score, on what.

Built from an optional YAML/JSON file, ``key=value`` overrides and the command line
(``--tasks swuggy=DIR`` is ``tasks.swuggy.path=DIR``); written, resolved, beside the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from smoltolk.errors import ConfigError


@dataclass
class TaskConfig:
    """A benchmark's files. ``units``: pre-computed speech units (see :mod:`smoltolk.eval.units`)."""

    path: str
    units: str | None = None


@dataclass
class CrossModalConfig:
    path: str
    units: str | None = None
    settings: list[str] = field(default_factory=lambda: ["T", "S", "T->S", "S->T"])
    # > 0: also score each ending after K other stories' contexts and report a calibrated accuracy (a diagnostic)
    calibration_contexts: int = 0


@dataclass
class ClozeConfig:
    path: str  # lexical_cloze.jsonl (smoltolk.world.diagnostics)
    settings: list[str] = field(default_factory=lambda: ["T", "S", "T->S", "S->T", "t", "t->S"])
    limit: int | None = None  # the first N stories only

    def __post_init__(self) -> None:
        from smoltolk.config import check_ranges

        check_ranges(self, "tasks.lexical_cloze", limit=(1, None))


@dataclass
class MMLUConfig:
    path: str
    max_per_subject: int | None = 1000


@dataclass
class TasksConfig:
    swuggy: TaskConfig | None = None
    sblimp: TaskConfig | None = None
    blimp_text: TaskConfig | None = None  # path: the sBLIMP gold.csv (its transcriptions, as text)
    sstorycloze: TaskConfig | None = None
    tstorycloze: TaskConfig | None = None
    sstorycloze_xmodal: CrossModalConfig | None = None
    tstorycloze_xmodal: CrossModalConfig | None = None
    speech_nll: TaskConfig | None = None
    mmlu: MMLUConfig | None = None
    # cross-modal diagnostics (smoltolk.eval.diagnostics): JSONL files with speech units inline
    lexical_cloze: ClozeConfig | None = None
    word_translation: TaskConfig | None = None
    speaker_context: TaskConfig | None = None
    salmon: TaskConfig | None = None  # SALMon's release folder (one folder per part)


@dataclass
class SpeechTokenizerConfig:
    """Audio -> units for benchmarks given as wavs: ``hubert:DIR`` / ``logmel[:RATE]`` + centroids."""

    features: str | None = None
    kmeans: str | None = None
    layer: int = 11
    batch_size: int = 8

    def __post_init__(self) -> None:
        if (self.features is None) != (self.kmeans is None):
            raise ConfigError("speech_tokenizer: give both features and kmeans (centroids), or neither")


@dataclass
class EvalConfig:
    tasks: TasksConfig = field(default_factory=TasksConfig)
    reduction: Literal["mean", "sum"] = "mean"  # per-item score of the pairwise tasks (MMLU has its own)
    batch_tokens: int = 2048  # positions per forward pass (CPU: ~2k is fastest; raise it on a GPU)
    layout: Literal["padded", "packed"] = "padded"
    pack_length: int = 1024  # row length of the packed layout
    share_prefixes: bool = True  # run a prefix shared by several items (a story's context) once
    text_bos: int | str = "auto"  # "auto": <|endoftext|> if the tokenizer has it, else bos / eos id; "none"; an id
    tokenizer: str | None = None  # tokenizer.json; default: <checkpoint>/tokenizer.json
    speech_tokenizer: SpeechTokenizerConfig = field(default_factory=SpeechTokenizerConfig)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.text_bos, str) and self.text_bos not in ("auto", "none"):
            raise ConfigError(f"text_bos: expected 'auto', 'none' or a token id, got {self.text_bos!r}")
        if self.batch_tokens < 1 or self.pack_length < 1:
            raise ConfigError("batch_tokens and pack_length must be positive")

    def active_tasks(self) -> dict[str, TaskConfig | CrossModalConfig | MMLUConfig]:
        return {name: cfg for name, cfg in vars(self.tasks).items() if cfg is not None}


TASK_NAMES = tuple(vars(TasksConfig()).keys())


def build_eval_config(path: str | None = None, tasks: list[str] | None = None, overrides: list[str] | None = None,
                      **settings: object) -> EvalConfig:
    """File (optional) <- ``key=value`` overrides <- ``NAME=PATH`` tasks (paths taken literally) <- settings
    given directly (not None), through :func:`smoltolk.config.load_config`."""
    from smoltolk.config import load_config

    paths: dict[str, object] = {}  # literal paths (not parsed as YAML: '#', ':' or 'no' stay as written)
    for spec in tasks or []:
        name, sep, value = spec.partition("=")
        if not sep or not value:
            raise ConfigError(f"--tasks {spec!r}: expected NAME=PATH with NAME one of {list(TASK_NAMES)}")
        if name not in TASK_NAMES:
            raise ConfigError(f"--tasks {spec!r}: unknown task {name!r}; tasks are {list(TASK_NAMES)}")
        paths[f"tasks.{name}.path"] = value
    return load_config(EvalConfig, path, list(overrides or []), {**paths, **settings}, where="eval config")
