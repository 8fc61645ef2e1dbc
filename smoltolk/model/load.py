"""Which kind of checkpoint a directory holds, and loading it to score or analyse: a smoltolk text-speech
checkpoint (:class:`~smoltolk.model.tslm.TextSpeechLM`) or a Hugging Face text LM (its backbone alone)."""

from __future__ import annotations

from pathlib import Path

import torch

from smoltolk.errors import CheckpointError
from smoltolk.files import read_json

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def checkpoint_kind(path: str | Path) -> str:
    """"smoltolk" (a text-speech checkpoint) or "hf" (a Hugging Face text LM); errors otherwise."""
    from smoltolk.model.tslm import CHECKPOINT_FORMAT

    meta = read_json(Path(path) / "config.json")
    if meta.get("format") == CHECKPOINT_FORMAT:
        return "smoltolk"
    if "model_type" in meta:
        return "hf"
    raise CheckpointError(f"{Path(path) / 'config.json'}: neither a smoltolk checkpoint nor a Hugging Face text LM")


def load_model(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """A TextSpeechLM, or a LlamaLM for a Hugging Face text LM (eval mode)."""
    from smoltolk.model.hf import load_hf_backbone
    from smoltolk.model.tslm import TextSpeechLM

    if checkpoint_kind(path) == "smoltolk":
        return TextSpeechLM.from_pretrained(path, dtype=DTYPES[dtype], device=device).eval()
    return load_hf_backbone(path, dtype=DTYPES[dtype], device=device).eval()


def checkpoint_names(checkpoints: list[str]) -> list[str]:
    """A short, unique name per checkpoint (its folder name; -2, -3 ... for repeats)."""
    names: list[str] = []
    for ckpt in checkpoints:
        base = Path(ckpt).resolve().name or "checkpoint"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def describe(path: str | Path) -> dict:
    """What a checkpoint directory holds (``smoltolk inspect``): its kind, config and parameter counts, or for a
    Hugging Face text LM its backbone config and whether a tokenizer.json is beside it."""
    from smoltolk.config import to_dict
    from smoltolk.model.hf_config import load_hf_config
    from smoltolk.model.tslm import count_parameters, read_model_config

    path = Path(path)
    if checkpoint_kind(path) == "smoltolk":
        cfg = read_model_config(path)
        return {"kind": "smoltolk text-speech LM", "config": to_dict(cfg), "parameters": count_parameters(cfg)}
    return {"kind": "Hugging Face text LM (backbone)", "config": to_dict(load_hf_config(path)),
            "tokenizer.json": (path / "tokenizer.json").is_file()}
