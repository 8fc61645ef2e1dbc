"""Training checkpoints: one directory per step, written atomically, never a pickle.

    step-00000400/
        config.json, model.safetensors   the unwrapped model (loadable by TextSpeechLM.from_pretrained,
                                         or a Hugging Face directory for text-only pretraining)
        optimizer.safetensors            AdamW moments, keyed "<param name>/<state key>"
        train_state.json                 step, stage, tokens seen, sampler states, skipped steps,
                                         optimizer param groups, the resolved training config
        rng.safetensors                  torch RNG state(s)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from smoltolk.errors import CheckpointError
from smoltolk.model.io import atomic_directory, read_json, tied_names

STEP_DIR = re.compile(r"^step-(\d{8})$")


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) model state on CPU; a collective under FSDP (every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save(directory: Path, *, model: nn.Module, model_state: dict, optimizer_state: dict, train_state: dict,
         write_model) -> Path:
    """Write one checkpoint directory atomically (rank 0 only). ``write_model(dir, state)`` writes the
    model files (config.json + model.safetensors) in the model's own format."""
    from safetensors.torch import save_file

    tensors, groups = {}, []
    for name, st in optimizer_state.get("state", {}).items():
        for key, value in st.items():
            tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for group in optimizer_state.get("param_groups", []):
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    aliases = tied_names(model)
    model_state = {k: v for k, v in model_state.items() if k not in aliases}
    with atomic_directory(directory) as tmp:
        write_model(tmp, model_state)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file({"cpu": torch.get_rng_state()} | (
            {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}), str(tmp / "rng.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "param_groups": groups}, indent=1) + "\n")
    return directory


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(model state, optimizer state in torch's full-state layout, train state) of a checkpoint."""
    from smoltolk.model.io import read_weights

    directory = Path(directory)
    train_state = read_json(directory / "train_state.json")
    model_state = read_weights(directory)
    from safetensors.torch import load_file

    opt_path = directory / "optimizer.safetensors"
    if not opt_path.is_file():
        raise CheckpointError(f"{opt_path}: missing (a training checkpoint needs the optimizer state)")
    flat = load_file(str(opt_path))
    state: dict[str, dict] = {}
    for key, value in flat.items():
        name, sub = key.rsplit("/", 1)
        state.setdefault(name, {})[sub] = value
    groups = train_state.pop("param_groups")
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    rng = load_file(str(directory / "rng.safetensors")) if (directory / "rng.safetensors").is_file() else {}
    train_state["rng"] = rng
    return model_state, {"state": state, "param_groups": groups}, train_state


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name) and (p / "train_state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def prune(root: Path, keep: int, current: Path) -> None:
    """Keep the ``keep`` newest checkpoints up to ``current`` (never ``current`` itself)."""
    if keep <= 0:
        return
    older = [p for p in list_checkpoints(root) if int(STEP_DIR.match(p.name).group(1)) <= int(
        STEP_DIR.match(current.name).group(1))]
    for old in older[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"
