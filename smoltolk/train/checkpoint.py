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
from smoltolk.model.io import atomic_directory, read_json, tied_names, write_safetensors

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
        write_safetensors(tensors, tmp / "optimizer.safetensors")
        write_safetensors({"cpu": torch.get_rng_state()} | (
            {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}), tmp / "rng.safetensors")
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "param_groups": groups}, indent=1) + "\n")
    return directory


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(model state, optimizer state in torch's full-state layout, train state) of a checkpoint."""
    from smoltolk.model.io import read_weights

    directory = Path(directory)
    train_state = read_json(directory / "train_state.json")
    missing = [k for k in TRAIN_STATE_KEYS if k not in train_state]
    if missing:
        raise CheckpointError(f"{directory / 'train_state.json'}: missing {', '.join(missing)}; {RESUME_ADVICE}")
    model_state = read_weights(directory)
    opt_path = directory / "optimizer.safetensors"
    if not opt_path.is_file():
        raise CheckpointError(f"{opt_path}: missing (a training checkpoint needs the optimizer state); "
                              f"{RESUME_ADVICE}")
    flat = _read(opt_path)
    state: dict[str, dict] = {}
    for key, value in flat.items():
        name, sep, sub = key.rpartition("/")
        if not sep:
            raise CheckpointError(f"{opt_path}: tensor {key!r} is not '<parameter>/<state key>' (not a smoltolk "
                                  f"optimizer state); {RESUME_ADVICE}")
        state.setdefault(name, {})[sub] = value
    groups = train_state.pop("param_groups")
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    rng_path = directory / "rng.safetensors"
    train_state["rng"] = _read(rng_path) if rng_path.is_file() else {}
    return model_state, {"state": state, "param_groups": groups}, train_state


TRAIN_STATE_KEYS = ("step", "tokens", "skipped", "samplers", "param_groups")
RESUME_ADVICE = ("resume from an earlier checkpoint (run.resume=<its directory>) or start afresh "
                 "(run.resume=never, or a new run.out_dir)")


def _read(path: Path) -> dict[str, torch.Tensor]:
    from smoltolk.model.io import _load_safetensors_file

    try:
        return _load_safetensors_file(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {RESUME_ADVICE}") from None


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
