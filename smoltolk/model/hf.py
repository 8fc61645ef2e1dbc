"""Hugging Face interop: read and write Llama-family checkpoint directories
(``config.json`` + ``model.safetensors`` or a sharded index) and their ``tokenizer.json``."""

from __future__ import annotations

from pathlib import Path

import torch

from smoltolk.errors import CheckpointError
from smoltolk.model.hf_config import hf_config_from_backbone, load_hf_config
from smoltolk.model.io import WEIGHTS, atomic_directory, load_into, meta_build, read_weights
from smoltolk.model.llama import LlamaLM


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
    """Write ``model`` as a Hugging Face directory of its family (atomically)."""
    directory = Path(directory)
    hf_config_from_backbone(model.config)  # refuses what the family's config cannot say, before anything is written
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
